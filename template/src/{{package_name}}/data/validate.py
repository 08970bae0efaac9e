"""Validation at the IO boundary: a pandera schema generated from the feature config.

Types, ranges, allowed categories, nullability, a unique id and a present target are checked
before anything is trained or scored (what the target must hold depends on the task: see
``tasks/``). All failures are collected (``lazy=True``) and turned into
a short readable report, so a bad extract stops the run with what to fix, not a traceback.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pandas as pd

with warnings.catch_warnings():
    # With pyspark installed (the `spark` extra), pandera imports pyspark.pandas, which warns on
    # every import that it does not fully support pandas 3: noise on stderr of every command,
    # about a module no command here uses (Spark scoring goes through Arrow, not pyspark.pandas).
    warnings.filterwarnings(
        "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
    )
    import pandera.pandas as pa
from pandera.errors import SchemaErrors

from ..config import Config
from ..errors import DataError, DataValidationError
from .coerce import unreadable_booleans, unreadable_datetimes

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
        checks = [] if categorical.unknown == "other" else [_in_categories(categorical.categories)]
        columns[categorical.name] = pa.Column(None, checks=checks, nullable=categorical.nullable)
    for boolean in cfg.features.boolean:
        columns[boolean.name] = pa.Column(
            None, checks=[_readable(unreadable_booleans, "true/false")], nullable=boolean.nullable
        )
    for stamp in cfg.features.datetime:
        columns[stamp.name] = pa.Column(
            None,
            checks=[_readable(unreadable_datetimes, "an ISO 8601 date/time")],
            nullable=stamp.nullable,
        )
    for text in cfg.features.text:
        # The API's limit too: batch predict must not score what the service would refuse.
        too_long = pa.Check(
            lambda series, limit=text.max_length: series.map(lambda v: len(str(v)) <= limit),
            element_wise=False,
            name="max_length",
            error=f"at most {text.max_length} characters (max_length)",
            ignore_na=True,
        )
        columns[text.name] = pa.Column(None, checks=[too_long], nullable=text.nullable)
    return pa.DataFrameSchema(columns, strict=False, coerce=False)


def required_columns(cfg: Config, *, with_target: bool = True, with_id: bool = True) -> list[str]:
    """The columns the data must have: the id, every feature, the target."""
    columns = [cfg.data.id_column] if with_id else []
    columns += cfg.features.names
    if with_target:
        columns.append(cfg.data.target)
        order = cfg.training.order_column
        if cfg.training.split == "time" and order and order not in columns:
            columns.append(order)
    return columns


def unused_columns(frame: pd.DataFrame, cfg: Config) -> list[str]:
    """Columns the data has that the config does not use (neither id, target, feature nor a
    declared leaky column): worth a look, since they are silently left out of the model."""
    known = {
        cfg.data.id_column,
        cfg.data.target,
        *cfg.features.names,
        *cfg.data.leaky_columns,
        cfg.training.order_column,
    }
    return [str(column) for column in frame.columns if column not in known]


def check_columns(
    frame: pd.DataFrame,
    cfg: Config,
    *,
    with_target: bool = True,
    with_id: bool = True,
    source: str = "the data",
) -> None:
    """Raise one ``DataError`` naming every required column ``source`` lacks, and what it has."""
    present = set(map(str, frame.columns))
    missing = [
        column
        for column in required_columns(cfg, with_target=with_target, with_id=with_id)
        if column not in present
    ]
    if missing:
        roles = {
            cfg.data.id_column: "data.id_column",
            cfg.data.target: "data.target",
            str(cfg.training.order_column): "training.order_column",
        }
        named = ", ".join(f"{c} ({roles.get(c, 'feature')})" for c in missing)
        has = ", ".join(map(str, frame.columns[:MAX_REPORT_LINES]))
        more = len(frame.columns) - MAX_REPORT_LINES
        has += f", ... {more} more" if more > 0 else ""
        raise DataError(f"{source} lacks column(s) {named}; it has: {has}")


def _in_categories(categories: list[str]) -> pa.Check:
    """The allowed values, compared as text (as the model sees them): a source that returns
    a code column as integers (``3``) matches the category ``"3"``."""
    allowed = set(categories)
    return pa.Check(
        lambda series: series.map(lambda value: str(value) in allowed),
        element_wise=False,
        name="isin",
        error=f"isin({sorted(allowed)})",
    )


def _readable(unreadable: Callable[[pd.Series], pd.Series], what: str) -> pa.Check:
    """Present values must read as ``what`` (missing ones are the nullable check's)."""
    return pa.Check(
        lambda series: ~unreadable(series),
        element_wise=False,
        name="readable",
        error=f"readable as {what}",
        ignore_na=True,
    )


def validate_frame(
    frame: pd.DataFrame,
    cfg: Config,
    *,
    with_target: bool = True,
    with_id: bool = True,
    source: str = "the data",
) -> pd.DataFrame:
    """Return the validated (type-coerced) frame, or raise ``DataValidationError``.

    ``source`` names where the rows came from in the messages (e.g. the query file).
    """
    check_columns(frame, cfg, with_target=with_target, with_id=with_id, source=source)
    if with_target:
        check_target_present(frame, cfg, source)
    schema = build_schema(cfg, with_target=with_target, with_id=with_id)
    try:
        validated: pd.DataFrame = schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        raise DataValidationError(
            f"data validation failed: {len(exc.failure_cases)} problem(s) in {len(frame)} rows",
            failure_report(exc.failure_cases),
        ) from None
    return validated


def check_target_present(frame: pd.DataFrame, cfg: Config, source: str) -> None:
    """A training row without a label cannot be used: say how many and which, up front."""
    target = cfg.data.target
    missing = frame[target].isna()
    if missing.any():
        ids = cfg.data.id_column
        examples = (
            frame.loc[missing, ids].head(3).tolist()
            if ids in frame.columns
            else frame.index[missing][:3].tolist()
        )
        raise DataError(
            f"{source}: the target {target} is missing in {int(missing.sum())} of {len(frame)} "
            f"rows (e.g. {ids} {', '.join(map(str, examples))}); leave unlabelled rows out in "
            f"the query (WHERE {target} IS NOT NULL)"
        )


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


def target_summary(frame: pd.DataFrame, cfg: Config) -> str:
    """The target at a glance, for the validation summary: class shares, or the value range."""
    values = frame[cfg.data.target]
    if cfg.is_classification:
        shares = values.astype(str).value_counts(normalize=True).head(10)
        return ", ".join(f"{label} {share:.1%}" for label, share in shares.items())
    numbers = pd.to_numeric(values, errors="coerce")
    return f"mean {numbers.mean():.4g}, min {numbers.min():.4g}, max {numbers.max():.4g}"
