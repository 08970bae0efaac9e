"""Validation at the IO boundary: a pandera schema generated from the feature config.

Types, ranges, allowed categories, nullability, a unique id and a binary target are checked
before anything is trained or scored. All failures are collected (``lazy=True``) and turned into
a short readable report, so a bad extract stops the run with what to fix, not a traceback.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from ..config import Config
from ..errors import DataValidationError

MAX_REPORT_LINES = 20


def build_schema(
    cfg: Config, *, with_target: bool = True, with_id: bool = True
) -> pa.DataFrameSchema:
    """The schema for training rows (``with_target``) or scoring rows (without)."""
    columns: dict[str, pa.Column] = {}
    if with_id:
        columns[cfg.data.id_column] = pa.Column(unique=True, nullable=False)
    for feature in cfg.features.numeric:
        checks = []
        if feature.min is not None:
            checks.append(pa.Check.ge(feature.min))
        if feature.max is not None:
            checks.append(pa.Check.le(feature.max))
        # Integers with missing values arrive as floats; range checks do the real work.
        columns[feature.name] = pa.Column(
            float, checks=checks, nullable=feature.nullable, coerce=True
        )
    for categorical in cfg.features.categorical:
        # No dtype check: the allowed values are the real check, and a column that is entirely
        # missing in one chunk arrives as float, which a str dtype check would wrongly refuse.
        columns[categorical.name] = pa.Column(
            None, checks=[pa.Check.isin(categorical.categories)], nullable=categorical.nullable
        )
    if with_target:
        columns[cfg.data.target] = pa.Column(int, checks=[pa.Check.isin([0, 1])], coerce=True)
    return pa.DataFrameSchema(columns, strict=False, coerce=False)


def validate_frame(
    frame: pd.DataFrame, cfg: Config, *, with_target: bool = True, with_id: bool = True
) -> pd.DataFrame:
    """Return the validated (type-coerced) frame, or raise ``DataValidationError``."""
    schema = build_schema(cfg, with_target=with_target, with_id=with_id)
    try:
        validated: pd.DataFrame = schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        raise DataValidationError(
            f"data validation failed: {len(exc.failure_cases)} problem(s) in {len(frame)} rows",
            failure_report(exc.failure_cases),
        ) from None
    if with_target:
        positives = int(validated[cfg.data.target].sum())
        if positives == 0 or positives == len(validated):
            raise DataValidationError(
                "data validation failed: the target has a single class",
                f"  - {cfg.data.target}: {positives} positives in {len(validated)} rows; "
                "a classifier needs both classes",
            )
    return validated


def failure_report(failure_cases: pd.DataFrame) -> str:
    """Group pandera's failure cases into one line per (column, check) with examples."""
    cases = failure_cases.fillna({"column": "(table)", "check": "(schema)"})
    lines = []
    for (column, check), group in cases.groupby(["column", "check"], sort=True, dropna=False):
        examples = ", ".join(
            f"row {index}: {value!r}"
            for index, value in zip(
                group["index"].head(3), group["failure_case"].head(3), strict=True
            )
        )
        lines.append(f"  - {column}: fails {check} in {len(group)} row(s) ({examples})")
    if len(lines) > MAX_REPORT_LINES:
        hidden = len(lines) - MAX_REPORT_LINES
        lines = [*lines[:MAX_REPORT_LINES], f"  ... and {hidden} more"]
    return "\n".join(lines)


def class_balance(frame: pd.DataFrame, target: str) -> dict[str, float]:
    """Row count and positive rate, for the validation summary."""
    return {"rows": float(len(frame)), "positive_rate": float(frame[target].mean())}
