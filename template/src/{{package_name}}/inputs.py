"""Raw feature values -> the exported model's inputs, one definition for every path.

Training and batch predict (pandas, via ``features.to_model_frame``) and the service (ONNX
Runtime, via ``scoring``) all go through these functions, so a timestamp or a missing
value reaches the model identically whichever way it came in. NumPy only: the serving process
imports this module, and nothing here imports pandas or scikit-learn.

- numeric and boolean columns: float32-representable numbers, missing -> NaN (the model
  computes in float32; starting both sides from the same values keeps tree splits identical);
- categorical columns: text, missing -> ``"missing"``;
- datetime columns: the configured parts (``days`` since 2000-01-01, and sine/cosine pairs of
  hour of day, day of week and month), each a model input ``<name>__<part>``;
- text columns: text, missing -> ``""`` (TF-IDF inside the model turns it into terms).
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np

from .config import DatetimeFeature, FeaturesConfig

MISSING_CATEGORY = "missing"
MISSING_TEXT = ""
# "days" counts from here: float32 keeps it to within a minute until 2044.
DATETIME_REFERENCE = np.datetime64("2000-01-01T00:00:00", "s")
SECONDS_PER_DAY = 86_400
# The model inputs of each datetime part: one trend, or a cyclical (sine, cosine) pair.
PART_INPUTS: dict[str, tuple[str, ...]] = {
    "days": ("days",),
    "hour": ("hour_sin", "hour_cos"),
    "day_of_week": ("dow_sin", "dow_cos"),
    "month": ("month_sin", "month_cos"),
}

InputKind = Literal["float", "string"]


def datetime_inputs(feature: DatetimeFeature) -> list[str]:
    """The model input names derived from a datetime feature, e.g. ``signup__days``."""
    return [f"{feature.name}__{part}" for kind in feature.parts for part in PART_INPUTS[kind]]


def model_inputs(features: FeaturesConfig) -> list[tuple[str, InputKind]]:
    """The exported model's inputs in graph order: (name, float or string)."""
    inputs: list[tuple[str, InputKind]] = [(f.name, "float") for f in features.numeric]
    inputs += [(f.name, "string") for f in features.categorical]
    inputs += [(f.name, "float") for f in features.boolean]
    inputs += [(name, "float") for f in features.datetime for name in datetime_inputs(f)]
    inputs += [(f.name, "string") for f in features.text]
    return inputs


def float_column(values: Iterable[Any]) -> np.ndarray:
    """Numbers (or booleans) as float64 holding float32-representable values; None -> NaN."""
    array = np.asarray(
        [np.nan if _is_missing(v) else float(v) for v in values]
        if not isinstance(values, np.ndarray) or values.dtype == object
        else values,
        dtype=np.float64,
    )
    return array.astype(np.float32).astype(np.float64)


def text_column(values: Iterable[Any], missing: str) -> np.ndarray:
    """Values as an object array of text; missing values become ``missing``."""
    return np.array([missing if _is_missing(v) else str(v) for v in values], dtype=object)


def to_datetime64(values: Iterable[Any]) -> np.ndarray:
    """Timestamps as ``datetime64[s]`` in UTC: ``datetime`` objects (naive ones are taken as
    UTC, aware ones converted), ``date`` objects (midnight), ISO 8601 text, ``datetime64``
    values; None -> NaT. Exact and independent of the machine's time zone (``timegm``, not
    ``timestamp``)."""
    if isinstance(values, np.ndarray) and np.issubdtype(values.dtype, np.datetime64):
        return values.astype("datetime64[s]")
    seconds: list[int | None] = []
    for value in values:
        if _is_missing(value):
            seconds.append(None)
        elif isinstance(value, dt.datetime):
            seconds.append(calendar.timegm(value.utctimetuple()))
        elif isinstance(value, dt.date):
            seconds.append(calendar.timegm(value.timetuple()))
        elif isinstance(value, str):  # ISO 8601, "Z" or an offset allowed (Python 3.11+)
            seconds.append(calendar.timegm(dt.datetime.fromisoformat(value).utctimetuple()))
        else:
            seconds.append(int(np.datetime64(value, "s").astype(np.int64)))
    return np.array(
        [np.datetime64("NaT") if s is None else np.datetime64(s, "s") for s in seconds],
        dtype="datetime64[s]",
    )


def datetime_parts(stamps: np.ndarray, parts: Iterable[str]) -> dict[str, np.ndarray]:
    """The derived inputs of ``datetime64`` values (keys as in ``PART_INPUTS``), float32-
    representable float64; NaT -> NaN in every part."""
    stamps = stamps.astype("datetime64[s]")
    missing = np.isnat(stamps)
    seconds = (stamps - DATETIME_REFERENCE).astype(np.int64)
    day = stamps.astype("datetime64[D]")
    second_of_day = (stamps - day).astype(np.int64)
    day_of_week = (day.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    month = stamps.astype("datetime64[M]").astype(np.int64) % 12
    turn = 2 * np.pi
    cycles = {
        "hour": second_of_day / SECONDS_PER_DAY,
        "day_of_week": day_of_week / 7,
        "month": month / 12,
    }
    derived: dict[str, np.ndarray] = {}
    for part in parts:
        if part == "days":
            derived["days"] = seconds / SECONDS_PER_DAY
        else:
            short = PART_INPUTS[part][0].removesuffix("_sin")
            derived[f"{short}_sin"] = np.sin(turn * cycles[part])
            derived[f"{short}_cos"] = np.cos(turn * cycles[part])
    for name, values in derived.items():
        rounded = values.astype(np.float32).astype(np.float64)
        rounded[missing] = np.nan
        derived[name] = rounded
    return derived


def model_columns(features: FeaturesConfig, columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The model's inputs (names of ``model_inputs``) as 1-D arrays from raw columns (the API's
    validated records, or ``features.raw_columns`` of a frame): float64 holding float32 values,
    or object arrays of text."""
    derived: dict[str, np.ndarray] = {}
    for numeric in features.numeric:
        derived[numeric.name] = float_column(columns[numeric.name])
    for categorical in features.categorical:
        derived[categorical.name] = text_column(columns[categorical.name], MISSING_CATEGORY)
    for boolean in features.boolean:
        derived[boolean.name] = float_column(columns[boolean.name])
    for stamp in features.datetime:
        parts = datetime_parts(to_datetime64(columns[stamp.name]), stamp.parts)
        for part_name, values in parts.items():
            derived[f"{stamp.name}__{part_name}"] = values
    for text in features.text:
        derived[text.name] = text_column(columns[text.name], MISSING_TEXT)
    return derived


def onnx_feeds(
    model_frame: Mapping[str, Any] | Any, inputs: list[tuple[str, InputKind]]
) -> dict[str, np.ndarray]:
    """ONNX Runtime feeds ((n, 1) float32 or object arrays) from model input columns."""
    feeds: dict[str, np.ndarray] = {}
    for name, kind in inputs:
        values = np.asarray(model_frame[name])
        feeds[name] = values.astype(np.float32) if kind == "float" else values.astype(object)
        feeds[name] = feeds[name].reshape(-1, 1)
    return feeds


def _is_missing(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and value != value)
        or (isinstance(value, np.datetime64) and np.isnat(value))
    )
