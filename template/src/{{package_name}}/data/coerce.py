"""How a raw column is read as each feature type, the same for validation and the model.

Booleans arrive as true/false, 1/0 or their text ("true", "0", ...); timestamps as SQL
dates/timestamps or ISO 8601 text (with or without an offset: naive times are UTC). A value
that cannot be read is reported by validation with its row, never silently turned into a
missing value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TRUE_TEXT = frozenset({"true", "1", "t", "yes", "y"})
FALSE_TEXT = frozenset({"false", "0", "f", "no", "n"})


def boolean_value(value: object) -> float | None:
    """1.0 / 0.0 for a boolean-like value, NaN for a missing one, None if it is not one."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return float("nan")
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating) and value in (0, 1):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in TRUE_TEXT:
            return 1.0
        if text in FALSE_TEXT:
            return 0.0
    return None


def parse_booleans(series: pd.Series) -> np.ndarray:
    """1.0/0.0/NaN for a boolean column; ``ValueError`` naming the first unreadable value."""
    values = [boolean_value(v) for v in series.astype(object)]
    bad = [i for i, v in enumerate(values) if v is None]
    if bad:
        raise ValueError(f"{series.iloc[bad[0]]!r} is not true/false")
    return np.asarray(values, dtype=np.float64)


def unreadable_booleans(series: pd.Series) -> pd.Series:
    """True where a present value is not boolean-like (for validation reports)."""
    return series.astype(object).map(lambda v: boolean_value(v) is None)


def parse_datetimes(series: pd.Series) -> np.ndarray:
    """``datetime64[s]`` UTC values (NaT for missing); ``ValueError`` for unreadable text."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        stamps = series.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(series):
        stamps = series
    else:
        text = series.astype(object).where(series.notna(), None)
        stamps = pd.to_datetime(text, utc=True, format="ISO8601").dt.tz_localize(None)
    return stamps.to_numpy(dtype="datetime64[s]")


def unreadable_datetimes(series: pd.Series) -> pd.Series:
    """True where a present value does not parse as an ISO 8601 date/time."""
    if pd.api.types.is_datetime64_any_dtype(series):
        return pd.Series(False, index=series.index)
    text = series.astype(object).where(series.notna(), None)
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    return pd.Series(parsed.isna().to_numpy() & series.notna().to_numpy(), index=series.index)
