"""A small filter language for tables of text cells: ``radpipe manifest --where`` and ``selection.json``'s ``where``.

Run folders and command lines are shared, so a filter is never handed to pandas (``DataFrame.query``
resolves ``@`` variables and attributes, which runs code): it is parsed with :func:`ast.parse` and
only these forms are accepted, then evaluated by this module on the table's cells:

* a bare name is a column of the table; values are quoted text (``'CT'``), numbers, ``True`` / ``False``;
* comparisons ``== != < <= > >=`` between a column and a value (or two columns), chained ones
  (``20 <= n_slices <= 400``) included; ``column in [value, ...]`` and ``column not in [...]``;
* ``contains(column, 'text')`` (substring, ignoring case) and ``matches(column, 'regex')``
  (:func:`re.search`, ignoring case);
* ``and``, ``or``, ``not`` and parentheses.

A number compares numerically with cells that parse as numbers (a cell that does not, empty ones
included, never matches a numeric comparison, ``!=`` included); text compares as text, exactly
(case included); ``True`` / ``False`` match cells reading true/1/yes or false/0/no. Anything
else (attributes, ``@`` variables, subscripts, other calls, arithmetic, lambdas, comprehensions,
f-strings ...) is refused by a :class:`FilterError` naming the part.

>>> import pandas as pd
>>> index = pd.DataFrame({"modality": ["CT", "MR", "CT"], "n_slices": ["40", "30", "x"]})
>>> filter_mask(index, "modality == 'CT' and n_slices >= 20").tolist()
[True, False, False]
>>> filter_mask(index, "modality in ['CT', 'MR'] and not contains(modality, 'm')").tolist()
[True, False, True]
>>> parse_filter("modality.upper() == 'CT'")
Traceback (most recent call last):
...
pipeline.manifest.filters.FilterError: filter "modality.upper() == 'CT'": 'modality.upper()' (function call) ...
"""
from __future__ import annotations

import ast
import difflib
import functools
import io
import operator
import re
import tokenize
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

USAGE = "use column == value, in [...], contains(column, 'text'), matches(column, 'regex'), and / or / not"
FUNCTIONS = ("contains", "matches")
MAX_CHARS = 1000
MAX_DEPTH = 40
TRUE_WORDS = frozenset({"true", "1", "yes", "y"})
FALSE_WORDS = frozenset({"false", "0", "no", "n"})

_COMPARE: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Eq: ("==", operator.eq), ast.NotEq: ("!=", operator.ne), ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le), ast.Gt: (">", operator.gt), ast.GtE: (">=", operator.ge),
}
_COMPARE_BY_SYMBOL = dict(_COMPARE.values())
_FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_REFUSED: dict[type, str] = {
    ast.Attribute: "attribute access", ast.Subscript: "subscript", ast.Lambda: "lambda",
    ast.ListComp: "comprehension", ast.SetComp: "comprehension", ast.DictComp: "comprehension",
    ast.GeneratorExp: "comprehension", ast.JoinedStr: "f-string", ast.FormattedValue: "f-string",
    ast.NamedExpr: "assignment", ast.IfExp: "conditional expression", ast.Set: "set", ast.Dict: "dict",
    ast.Starred: "unpacking", ast.Slice: "slice", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
}
_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
              ast.Pow: "**", ast.MatMult: "@", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^",
              ast.LShift: "<<", ast.RShift: ">>", ast.Invert: "~"}


class FilterError(ConfigError):
    """A filter expression is not in the filter language, or names a column the table does not have."""


@dataclass(frozen=True)
class _Column:
    name: str


@dataclass(frozen=True)
class _Value:
    value: str | float | bool


@dataclass(frozen=True)
class _Compare:
    op: str
    left: _Column
    right: _Column | _Value


@dataclass(frozen=True)
class _In:
    column: _Column
    values: tuple[_Value, ...]
    negated: bool


@dataclass(frozen=True)
class _Text:
    function: str
    column: _Column
    needle: str
    pattern: re.Pattern[str] | None = None


@dataclass(frozen=True)
class _Logic:
    op: str  # "and", "or", "not"
    parts: tuple[_Node, ...]


_Node = _Compare | _In | _Text | _Logic


@dataclass(frozen=True)
class RowFilter:
    """A parsed filter (:func:`parse_filter`); :meth:`mask` evaluates it on a table.

    Attributes:
        text: the expression as written.
        columns: the column names it uses.
    """

    text: str
    columns: frozenset[str]
    _tree: _Node | None = field(default=None, repr=False, compare=False)

    def mask(self, frame: pd.DataFrame) -> pd.Series:
        """The rows of ``frame`` the filter keeps, as a boolean Series aligned with ``frame``.

        Raises:
            FilterError: the filter names a column ``frame`` does not have.
        """
        import pandas as pd

        missing = [c for c in sorted(self.columns) if c not in frame.columns]
        if missing:
            raise FilterError(f"filter {self.text!r}: {_unknown(missing, [str(c) for c in frame.columns])}")
        if self._tree is None:
            return pd.Series(True, index=frame.index, dtype=bool)
        return _evaluate(self._tree, _Cells(frame)).astype(bool)


def parse_filter(text: str) -> RowFilter:
    """Parse a filter expression (see the module docstring); an empty one keeps every row.

    Raises:
        FilterError: the expression is not valid Python syntax, uses a form outside the
            language (the message names the part), is too long or too deeply nested, or
            holds a pattern that is not a regular expression.
    """
    text = str(text)
    if not text.strip():
        return RowFilter(text, frozenset())
    if len(text) > MAX_CHARS:
        raise FilterError(f"filter {text[:60]!r}...: longer than {MAX_CHARS} characters; write a shorter filter")
    _refuse_tokens(text)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        where = f" at column {e.offset}" if isinstance(e, SyntaxError) and e.offset else ""
        reason = e.msg if isinstance(e, SyntaxError) else " ".join(str(e).split())
        raise FilterError(f"filter {text!r}: not a valid expression ({reason}{where}); {USAGE}") from e
    builder = _Builder(text.strip(), text)
    node = builder.condition(tree.body, 0)
    return RowFilter(text, frozenset(builder.columns), node)


def filter_mask(frame: pd.DataFrame, text: str) -> pd.Series:
    """The rows of ``frame`` (text cells) that ``text`` keeps, as a boolean Series aligned with ``frame``.

    Raises:
        FilterError: see :func:`parse_filter` and :meth:`RowFilter.mask`.
    """
    return parse_filter(text).mask(frame)


def _unknown(missing: list[str], columns: list[str]) -> str:
    parts = []
    for name in missing:
        close = difflib.get_close_matches(name, columns, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; text values go in quotes: {name!r}"
        parts.append(f"unknown column {name!r}{hint}")
    return f"{'; '.join(parts)}; columns: {', '.join(columns)}"


def _refuse_tokens(text: str) -> None:
    """Refuse pandas-only syntax that Python's parser would only call a syntax error: ``@name`` and backticks."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return  # ast.parse reports it
    for i, token in enumerate(tokens):
        if token.type == tokenize.OP and token.string == "@":
            after = tokens[i + 1].string if i + 1 < len(tokens) and tokens[i + 1].type == tokenize.NAME else ""
            raise FilterError(f"filter {text!r}: {'@' + after!r} (a pandas @-variable) is not allowed; {USAGE}")
        if token.type == tokenize.ERRORTOKEN and token.string == "`":
            raise FilterError(f"filter {text!r}: '`' (backtick-quoted column names) is not allowed; "
                              "name a column as the scan index spells it, e.g. series_description")


class _Builder:
    """Turns an accepted :mod:`ast` tree into the filter's own nodes; refuses everything else."""

    def __init__(self, source: str, text: str) -> None:
        self.source, self.text = source, text
        self.columns: set[str] = set()

    def refuse(self, node: ast.AST | None, what: str, part: str | None = None) -> FilterError:
        if part is None and node is not None:
            part = ast.get_source_segment(self.source, node) or ast.unparse(node)
        part = " ".join(str(part).split())
        shown = part if len(part) <= 80 else part[:77] + "..."
        return FilterError(f"filter {self.text!r}: {shown!r} ({what}) is not allowed; {USAGE}")

    def condition(self, node: ast.AST, depth: int) -> _Node:
        """A node that is true or false per row: a comparison, a call, and / or / not."""
        if depth > MAX_DEPTH:
            raise FilterError(f"filter {self.text!r}: nested too deeply (over {MAX_DEPTH} levels); simplify it")
        if isinstance(node, ast.BoolOp):
            op = "and" if isinstance(node.op, ast.And) else "or"
            return _Logic(op, tuple(self.condition(v, depth + 1) for v in node.values))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return _Logic("not", (self.condition(node.operand, depth + 1),))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Name):
            raise self.refuse(node, f"a column alone is not a condition; compare it: {node.id} == value")
        if isinstance(node, (ast.Constant, ast.List, ast.Tuple)):
            raise self.refuse(node, "a value alone is not a condition; compare a column with it")
        raise self.disallowed(node)

    def disallowed(self, node: ast.AST) -> FilterError:
        """The error naming a node outside the language."""
        if isinstance(node, (ast.BinOp, ast.UnaryOp)):
            symbol = _OPERATORS.get(type(node.op), "-")
            hint = {"&": "; use and", "|": "; use or", "~": "; use not"}.get(symbol, "")
            return self.refuse(node, f"operator {symbol!r}{hint}")
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
                return self.refuse(node, f"{node.func.id}() is already true or false; use it without comparing it")
            if isinstance(node.func, ast.Name):
                return self.refuse(node, f"call of {node.func.id}(); only contains() and matches() are allowed")
            return self.refuse(node, "function call")
        if isinstance(node, ast.Constant):
            return self.refuse(node, f"constant {node.value!r}" if node.value is None or node.value is ...
                               else f"constant of type {type(node.value).__name__}")
        return self.refuse(node, _REFUSED.get(type(node), type(node).__name__.lower()))

    def operand(self, node: ast.AST) -> _Column | _Value | tuple[_Value, ...]:
        """A comparison operand: a column, a value, or a list / tuple of values."""
        if isinstance(node, ast.Name):
            self.columns.add(node.id)
            return _Column(node.id)
        if isinstance(node, (ast.List, ast.Tuple)):
            values = []
            for element in node.elts:
                value = self.operand(element)
                if not isinstance(value, _Value):
                    what = "a column inside a list" if isinstance(value, _Column) else "a list inside a list"
                    raise self.refuse(element, f"{what}; list quoted values: [{'CT'!r}, {'MR'!r}]")
                values.append(value)
            return tuple(values)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) \
                and isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float):
            number = float(node.operand.value)
            return _Value(-number if isinstance(node.op, ast.USub) else number)
        if isinstance(node, ast.Constant) and type(node.value) in (str, int, float, bool):
            value = node.value
            return _Value(float(value) if type(value) in (int, float) else value)
        raise self.disallowed(node)

    def compare(self, node: ast.Compare) -> _Node:
        """A (possibly chained) comparison: each adjacent pair, joined by ``and``."""
        for op in node.ops:
            if isinstance(op, (ast.Is, ast.IsNot)):
                raise self.refuse(None, "identity comparison; use == or !=", "is not" if isinstance(op, ast.IsNot)
                                  else "is")
        operands = [self.operand(node.left), *(self.operand(c) for c in node.comparators)]
        parts: list[_Node] = []
        for op, left, right in zip(node.ops, operands, operands[1:]):
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(left, _Column) or not isinstance(right, tuple):
                    raise self.refuse(node, "'in' needs a list of values on the right, e.g. modality in "
                                            "['CT', 'MR']; for text inside a cell use contains(column, 'text')")
                parts.append(_In(left, right, isinstance(op, ast.NotIn)))
                continue
            symbol = _COMPARE[type(op)][0]
            if isinstance(left, tuple) or isinstance(right, tuple):
                raise self.refuse(node, "a list goes only after 'in' / 'not in'")
            if isinstance(left, _Value):
                if isinstance(right, _Value):
                    raise self.refuse(node, "a comparison of two values; compare a column with a value")
                left, right, symbol = right, left, _FLIPPED[symbol]
            if isinstance(right, _Value) and isinstance(right.value, bool) and symbol not in ("==", "!="):
                raise self.refuse(node, "True / False compare only with == and !=")
            parts.append(_Compare(symbol, left, right))
        return parts[0] if len(parts) == 1 else _Logic("and", tuple(parts))

    def call(self, node: ast.Call) -> _Text:
        """``contains(column, 'text')`` or ``matches(column, 'regex')``."""
        name = node.func.id if isinstance(node.func, ast.Name) else ""
        if name not in FUNCTIONS:
            raise self.disallowed(node)
        args = node.args
        if node.keywords or len(args) != 2 or not isinstance(args[0], ast.Name) \
                or not (isinstance(args[1], ast.Constant) and isinstance(args[1].value, str)):
            what = "text" if name == "contains" else "regular expression"
            raise self.refuse(node, f"{name}() takes a column and a quoted {what}: {name}(column, '...')")
        column, needle = _Column(args[0].id), args[1].value
        self.columns.add(column.name)
        if name == "contains":
            return _Text(name, column, needle)
        try:
            pattern = re.compile(needle, re.IGNORECASE)
        except re.error as e:
            part = ast.get_source_segment(self.source, node) or ast.unparse(node)
            raise FilterError(f"filter {self.text!r}: {part}: {needle!r} is not a regular expression ({e}); "
                              "fix the pattern (Python re syntax)") from e
        return _Text(name, column, needle, pattern)


class _Cells:
    """A table's columns as stripped text and as numbers, each computed once."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._text: dict[str, pd.Series] = {}
        self._numbers: dict[str, pd.Series] = {}

    def text(self, name: str) -> pd.Series:
        if name not in self._text:
            column = self.frame[name]
            self._text[name] = column.where(column.notna(), "").astype(str).str.strip()
        return self._text[name]

    def numbers(self, name: str) -> pd.Series:
        import pandas as pd

        if name not in self._numbers:
            self._numbers[name] = pd.to_numeric(self.text(name), errors="coerce")
        return self._numbers[name]


def _compare_value(cells: _Cells, column: str, symbol: str, value: str | float | bool) -> pd.Series:
    compare = _COMPARE_BY_SYMBOL[symbol]
    if isinstance(value, bool):
        words = cells.text(column).str.lower()
        same = words.isin(TRUE_WORDS if value else FALSE_WORDS)
        return same if symbol == "==" else words.isin(FALSE_WORDS if value else TRUE_WORDS)
    if isinstance(value, float):
        numbers = cells.numbers(column)
        return compare(numbers, value) & numbers.notna()
    return compare(cells.text(column), value)


def _evaluate(node: _Node, cells: _Cells) -> pd.Series:
    """The boolean Series of one node."""
    import numpy as np
    import pandas as pd

    if isinstance(node, (_Logic, _In)):
        if isinstance(node, _Logic):
            masks = [_evaluate(part, cells) for part in node.parts]
            if node.op == "not":
                return ~masks[0]
            every = node.op == "and"
        else:  # in: any value equal; not in: every value different
            every = node.negated
            masks = [_compare_value(cells, node.column.name, "!=" if every else "==", v.value) for v in node.values]
        start = pd.Series(every, index=cells.frame.index, dtype=bool)
        return functools.reduce(operator.and_ if every else operator.or_, masks, start)
    if isinstance(node, _Text):
        text = cells.text(node.column.name)
        if node.pattern is not None:
            return pd.Series([bool(node.pattern.search(v)) for v in text], index=text.index, dtype=bool)
        return text.str.contains(node.needle, case=False, regex=False).astype(bool)
    if isinstance(node.right, _Value):
        return _compare_value(cells, node.left.name, node.op, node.right.value)
    compare = _COMPARE_BY_SYMBOL[node.op]
    left_n, right_n = cells.numbers(node.left.name), cells.numbers(node.right.name)
    both = left_n.notna() & right_n.notna()
    as_text = compare(cells.text(node.left.name), cells.text(node.right.name))
    return pd.Series(np.where(both, compare(left_n, right_n), as_text), index=cells.frame.index, dtype=bool)
