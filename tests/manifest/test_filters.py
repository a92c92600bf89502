from __future__ import annotations

import pandas as pd
import pytest

from pipeline.errors import ConfigError, PipelineError
from pipeline.manifest.filters import USAGE, FilterError, filter_mask, parse_filter

#: a scan index as radpipe reads it: text cells, one unparsable and one empty number
FRAME = pd.DataFrame(
    {
        "modality": ["CT", "MR", "CT", "CR", ""],
        "n_slices": ["40", "30", "x", "1", ""],
        "series_description": ["Abdomen 5.0 B30f", "T1 AX", "scout", "Chest PA", "Topogram"],
        "series_number": ["2", "1", "3", "1", ""],
        "contrast": ["true", "false", "True", "", "maybe"],
    },
    index=[10, 11, 12, 13, 14],
)


def _rows(text: str) -> list[int]:
    mask = filter_mask(FRAME, text)
    assert mask.dtype == bool and list(mask.index) == list(FRAME.index)
    return [i - 10 for i in FRAME.index[mask]]


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        ("modality == 'CT'", [0, 2]),
        ('modality == "CT"', [0, 2]),
        ("modality in ['CT']", [0, 2]),  # what predict builds from the run's intensity preset
        ('modality in ["CT", "MR"]', [0, 1, 2]),
        ("modality in ('CT', 'MR')", [0, 1, 2]),
        ("modality not in ['CT', 'MR']", [3, 4]),
        ("modality != 'CT'", [1, 3, 4]),
        ("modality == ''", [4]),
        ('n_slices >= 20 and modality == "CT"', [0]),  # 'x' is not a number: never matches a numeric comparison
        ("not (series_description == 'scout')", [0, 1, 3, 4]),
        ("n_slices < 35", [1, 3]),
        ("n_slices != 30", [0, 3]),
        ("n_slices == 40.0", [0]),
        ("n_slices > -1", [0, 1, 3]),
        ("20 <= n_slices", [0, 1]),
        ("10 < n_slices <= 40", [0, 1]),
        ("series_number in [1, 2]", [0, 1, 3]),
        ("series_number not in [1, 2]", [2]),
        ("series_number == '1'", [1, 3]),
        ("series_description < 'B'", [0]),
        ("contains(series_description, 'ABD')", [0]),
        ("matches(series_description, '^(scout|topogram)$')", [2, 4]),
        ("contrast == True", [0, 2]),
        ("contrast != True", [1]),
        ("modality == 'CT' or contains(series_description, 'chest')", [0, 2, 3]),
        ("not contains(series_description, 'scout') and not modality == ''", [0, 1, 3]),
        ("(modality == 'CT' or modality == 'MR') and not n_slices < 35", [0, 2]),  # 'x' < 35 is false: not -> true
        ("", [0, 1, 2, 3, 4]),
    ],
)
def test_accepted_forms_give_the_right_rows(text, rows):
    assert _rows(text) == rows


def test_cells_are_stripped_and_missing_cells_are_empty_text():
    frame = pd.DataFrame({"modality": [" CT ", None, float("nan")], "n_slices": [" 12", None, "3"]})
    assert list(filter_mask(frame, "modality == 'CT'")) == [True, False, False]
    assert list(filter_mask(frame, "modality == ''")) == [False, True, True]
    assert list(filter_mask(frame, "n_slices > 10")) == [True, False, False]
    assert filter_mask(frame.iloc[:0], "modality == 'CT'").empty


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("x.y == 1", "'x.y' (attribute access)"),
        ("@pd.io.common.os.system('id') == 0 or modality == 'CT'", "'@pd' (a pandas @-variable)"),
        ("modality[0] == 'C'", "'modality[0]' (subscript)"),
        ("len(modality) == 2", "'len(modality)' (call of len(); only contains() and matches() are allowed)"),
        ("__import__('os').system('id') == 0", "\"__import__('os').system('id')\" (function call)"),
        ("modality == (lambda: 'CT')", "\"lambda: 'CT'\" (lambda)"),
        ("modality in [m for m in ['CT']]", "\"[m for m in ['CT']]\" (comprehension)"),
        ("modality == f'{modality}'", "\"f'{modality}'\" (f-string)"),
        ("n_slices ** 2 > 4", "'n_slices ** 2' (operator '**')"),
        ("modality == 'CT' & n_slices > 1", "\"'CT' & n_slices\" (operator '&'; use and)"),
        ("~(modality == 'CT')", "\"~(modality == 'CT')\" (operator '~'; use not)"),
        ("(m := 'CT') == modality", "\"m := 'CT'\" (assignment)"),
        ("modality == ('CT' if n_slices else 'MR')", "\"'CT' if n_slices else 'MR'\" (conditional expression)"),
        ("modality in {'CT'}", "\"{'CT'}\" (set)"),
        ("modality == {'a': 1}", "\"{'a': 1}\" (dict)"),
        ("modality is None", "'is' (identity comparison; use == or !=)"),
        ("contains(modality, 'C') == True", "\"contains(modality, 'C')\" (contains() is already true or false"),
        ("modality == None", "'None' (constant None)"),
        ("modality in [series_description]",
         "'series_description' (a column inside a list; list quoted values: ['CT', 'MR'])"),
        ("modality", "'modality' (a column alone is not a condition"),
        ("'CT'", "\"'CT'\" (a value alone is not a condition"),
        ("contains(modality)", "'contains(modality)' (contains() takes a column and a quoted text"),
        ("contains('CT', modality)", "\"contains('CT', modality)\" (contains() takes a column and a quoted text"),
        ("matches(modality, pattern='C')", "\"matches(modality, pattern='C')\" (matches() takes a column"),
        ("modality in 'CT'", "'in' needs a list of values on the right"),
        ("'CT' == 'CT'", "\"'CT' == 'CT'\" (a comparison of two values"),
        ("n_slices > True", "'n_slices > True' (True / False compare only with == and !=)"),
        ("`series description` == 'x'", "backtick-quoted column names"),
    ],
)
def test_refused_constructs_are_named(text, part):
    with pytest.raises(FilterError) as e:
        parse_filter(text)
    message = str(e.value)
    assert message.startswith(f"filter {text!r}: ") and part in message and "\n" not in message
    assert isinstance(e.value, ConfigError) and isinstance(e.value, PipelineError)


def test_refusal_message_names_the_part_and_the_allowed_forms():
    with pytest.raises(FilterError) as e:
        parse_filter("x.y == 1")
    assert str(e.value) == f"filter 'x.y == 1': 'x.y' (attribute access) is not allowed; {USAGE}"
    assert USAGE == ("use column == value, in [...], contains(column, 'text'), matches(column, 'regex'), "
                     "and / or / not")


def test_syntax_errors_regexes_length_and_depth_are_clear_errors():
    with pytest.raises(FilterError, match=r"filter \"modality === 'CT'\": not a valid expression"):
        parse_filter("modality === 'CT'")
    with pytest.raises(FilterError, match=r"matches\(modality, '\('\): '\(' is not a regular expression"):
        parse_filter("matches(modality, '(')")
    with pytest.raises(FilterError, match="longer than 1000 characters"):
        parse_filter("modality == 'CT' or " * 60 + "modality == 'MR'")
    with pytest.raises(FilterError, match="nested too deeply"):
        parse_filter("not " * 60 + "modality == 'CT'")
    with pytest.raises(FilterError, match="not a valid expression"):
        parse_filter("modality == 'CT'\x00")


def test_unknown_columns_are_listed_with_a_close_match():
    with pytest.raises(FilterError) as e:
        filter_mask(FRAME, "modalty == 'CT' and n_slices > 2")
    assert str(e.value) == (
        "filter \"modalty == 'CT' and n_slices > 2\": unknown column 'modalty' (did you mean 'modality'?); "
        "columns: modality, n_slices, series_description, series_number, contrast"
    )
    with pytest.raises(FilterError, match=r"unknown column 'CT'; text values go in quotes: 'CT'; columns: modality"):
        filter_mask(FRAME, "modality == CT")


def test_a_parsed_filter_is_reusable_and_names_its_columns():
    rule = parse_filter("modality == 'CT' and contains(series_description, 'abd')")
    assert rule.columns == frozenset({"modality", "series_description"})
    assert list(rule.mask(FRAME)) == [True, False, False, False, False]
    assert rule.text == "modality == 'CT' and contains(series_description, 'abd')"


def test_hostile_expressions_run_nothing(tmp_path):
    marker = tmp_path / "marker"
    for text in (
        f"@pd.io.common.os.system('touch {marker}') == 0 or modality == \"CT\"",
        f"__import__('os').system('touch {marker}') == 0",
        f"modality.__class__.__init__.__globals__['os'].system('touch {marker}') == 0",
        f"contains(modality, __import__('os').system('touch {marker}'))",
    ):
        with pytest.raises(FilterError, match="is not allowed"):
            filter_mask(FRAME, text)
    assert not marker.exists()
