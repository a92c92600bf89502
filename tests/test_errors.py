from __future__ import annotations

import pytest

from pipeline import errors


@pytest.mark.parametrize(
    "cls, builtin",
    [
        (errors.ConfigError, ValueError),
        (errors.ManifestError, ValueError),
        (errors.DicomReadError, OSError),
        (errors.ImageReadError, OSError),
        (errors.UnknownModelError, KeyError),
        (errors.WeightsError, ValueError),
        (errors.RunError, ValueError),
    ],
)
def test_hierarchy(cls, builtin):
    e = cls("what; where; fix")
    assert isinstance(e, errors.PipelineError) and isinstance(e, builtin)


def test_unknown_model_message_is_not_quoted():
    assert str(errors.UnknownModelError("no model 'resnt18'")) == "no model 'resnt18'"


def test_format_problems_caps_at_limit():
    text = errors.format_problems([f"p{i}" for i in range(25)])
    assert text.startswith("25 problem(s): p0; p1")
    assert "p19" in text and "p20" not in text and "and 5 more" in text


def test_pipeline_error_in_follows_raise_from_only():
    from pipeline.errors import ImageReadError, pipeline_error_in

    try:
        try:
            raise ImageReadError("x.png: damaged")
        except ImageReadError as inner:
            raise RuntimeError("applying transform") from inner
    except RuntimeError as e:
        assert str(pipeline_error_in(e)) == "x.png: damaged"
    try:
        try:
            raise ImageReadError("x.png: damaged")
        except ImageReadError:
            raise KeyError("a bug while handling it")  # the case under test: no "from"
    except KeyError as e:
        assert pipeline_error_in(e) is None  # the bug keeps its traceback
    text = RuntimeError("Caught RuntimeError in DataLoader worker process 1.\nOriginal Traceback:\n"
                        "transforms.limits.ImageTooLargeError: big.png: over the limit\n")
    assert str(pipeline_error_in(text)) == "big.png: over the limit"
    assert pipeline_error_in(RuntimeError("pipeline.errors is a module name, no error here")) is None
