"""How values read once they leave the analysis: numbers, p-values and CSV cells.

One place for the report's tables and running text, the charts' hovers, the dashboard and
every CSV the project writes. Imports nothing heavy.
"""

from __future__ import annotations

import re
from typing import Any

# Columns of result tables that hold p-values or counts (formatted as such wherever they appear).
P_COLUMNS = frozenset({"p", "p_holm", "p_bh", "tost_p", "p_adjusted"})
COUNT_COLUMNS = frozenset({"n", "nobs", "n_participants", "n_stimuli", "hits", "false_alarms", "n_ai", "n_human",
                           "n_items", "n_pairs", "participants", "trials", "count", "position"})


def is_missing(x: Any) -> bool:
    """None, NaN, pd.NA or NaT (without importing pandas: NaN != NaN, and bool(pd.NA) raises)."""
    if x is None:
        return True
    try:
        return bool(x != x)
    except (TypeError, ValueError):
        return True


def format_p(p: Any) -> str:
    """APA-style p: '< .001', else three decimals without the leading zero; '' when missing."""
    if is_missing(p):
        return ""
    p = float(p)
    if p < 0.001:
        return "< .001"
    return f"{p:.3f}".lstrip("0") if p < 1 else "1.000"


def p_equals(p: Any, name: str = "p") -> str:
    """'p = .046' or 'p < .001' for running text and hovers (format_p alone would give 'p = < .001')."""
    text = format_p(p)
    if not text:
        return f"{name} not computed"
    return f"{name} {text}" if text.startswith("<") else f"{name} = {text}"


def plain_number(x: Any) -> str:
    """A scale end, anchor or bound as people write it: 3, 2.5, 0.25; '' when missing."""
    if is_missing(x):
        return ""
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:g}"


def format_number(x: Any, column: str = "") -> str:
    """A cell of a result table: counts as integers, df to one decimal, other numbers to three
    (one from 100 on), booleans as yes/no, p-values by `format_p` when `column` names one."""
    if isinstance(x, (list, tuple)):
        return str(x)
    if is_missing(x):
        return ""
    if column in P_COLUMNS and not isinstance(x, bool) and _is_number(x):
        return format_p(x)
    if type(x).__name__ in ("bool", "bool_"):
        return "yes" if x else "no"
    if _is_integer(x):
        return str(int(x))
    if _is_number(x):
        x = float(x)
        if column in COUNT_COLUMNS and x.is_integer():
            return str(int(x))
        if column == "df":
            return f"{x:.1f}"
        if x in (float("inf"), float("-inf")):
            return str(x)
        return f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"
    return str(x)


def _is_integer(x: Any) -> bool:
    return isinstance(x, int) or type(x).__name__.startswith(("int", "uint"))


def _is_number(x: Any) -> bool:
    return _is_integer(x) or isinstance(x, float) or type(x).__name__.startswith("float")


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# ---------------------------------------------------------------------------------------------
# CSV cells a spreadsheet would run

# Excel, LibreOffice and Google Sheets evaluate a cell that starts with one of these as a formula
# (OWASP "CSV injection"); a participant's free text such as =HYPERLINK(...) would then run on the
# researcher's machine. Such text cells get a leading apostrophe, which spreadsheets show as text.
# Cells that already start with apostrophes before such a character get one more, so that
# `unneutralise` gives back exactly what was stored. Only text columns are touched: a number
# column's -2 stays the number -2.
FORMULA_START = r"^'*[=+\-@\t\r]"
_FORMULA = re.compile(FORMULA_START)
_ESCAPED = re.compile(r"^'(?='*[=+\-@\t\r])")


def neutralise(text: Any) -> Any:
    """`text` with a leading apostrophe if a spreadsheet would read it as a formula."""
    if isinstance(text, str) and _FORMULA.match(text):
        return "'" + text
    return text


def unneutralise(text: Any) -> Any:
    """The inverse of `neutralise`, for reading back a CSV this project wrote."""
    if isinstance(text, str):
        return _ESCAPED.sub("", text, count=1)
    return text


def csv_safe(df):
    """A copy of a DataFrame whose text cells are neutralised (numbers, booleans, dates untouched)."""
    import pandas as pd

    out = df.copy()
    for c in out.columns:
        s = out[c]
        if pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s):
            out[c] = s.map(neutralise, na_action="ignore")
    return out
