"""Checks shared by the analysis functions that take tables."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from study.errors import Problem, UserError


def require_columns(df: pd.DataFrame, columns: Iterable[str], message: str) -> None:
    """Raise UserError(message) naming each of `columns` missing from df, beside the columns it has."""
    missing = [c for c in dict.fromkeys(columns) if c not in df.columns]
    if missing:
        present = ", ".join(map(str, df.columns))
        raise UserError(message, [Problem(f"column {c}", "not found; columns are: " + present) for c in missing])
