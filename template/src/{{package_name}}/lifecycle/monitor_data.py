"""Monitoring's side of the prediction store: read the logged predictions, store the results.

``load_window`` reads the last ``monitoring.window`` rows of the prediction log;
``current_values`` and ``version_predictions`` prepare them as the reference was prepared;
``store_report`` keeps one row per monitoring run in the drift table next to the log.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, insert, inspect, make_url, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ..config_base import PACKAGE
from ..dburl import sqlite_file
from ..errors import DataError
from ..errortext import first_line
from ..inputs import MISSING_CATEGORY
from ..mlops_config import MlopsConfig
from ..prediction_store import incompatible_table, layout_problem, store_tables
from .drift import Predictions, label_text
from .monitor_report import CurrentValues, DriftReport


def load_window(cfg: MlopsConfig) -> pd.DataFrame:
    """The most recent ``monitoring.window`` logged predictions, oldest first, with the logged
    features expanded into one column each."""
    settings = cfg.prediction_log
    url = _parse_url(settings.url)
    where = url.render_as_string(hide_password=True)
    hint = (
        "start the service with prediction_log.enabled (or send it traffic with "
        f"`python -m {PACKAGE} simulate`), and check prediction_log.url"
    )
    database = sqlite_file(url)
    if database is not None and not database.is_file():
        raise DataError(f"no predictions logged yet at {where}: the file does not exist; {hint}")
    _, predictions, _ = store_tables(settings.table, settings.drift_table)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(settings.table):
                raise DataError(
                    f"no predictions logged yet at {where}: there is no table "
                    f"'{settings.table}'; {hint}"
                )
            problem = layout_problem(connection, predictions)
            if problem is not None:
                raise DataError(incompatible_table(settings.table, settings.url, problem))
            newest_first = (
                select(predictions)
                .order_by(predictions.c.logged_at.desc(), predictions.c.id.desc())
                .limit(cfg.monitoring.window)
            )
            rows = [dict(row) for row in connection.execute(newest_first).mappings()]
    except SQLAlchemyError as exc:
        raise DataError(f"cannot read the prediction log at {where}: {first_line(exc)}") from None
    finally:
        engine.dispose()
    return _window_frame(rows[::-1], [column.name for column in predictions.columns])


def current_values(reference: Mapping[str, Any], window: pd.DataFrame) -> CurrentValues:
    """Each reference feature's values in ``window``, prepared as the reference was: numbers
    as float32-representable floats (NaN for missing or unreadable), categories as strings
    with missing values as ``"missing"``. A feature absent from the log counts as missing."""
    values: CurrentValues = {}
    for name, profile in reference["features"].items():
        column = window[name] if name in window else pd.Series([None] * len(window), dtype=object)
        if profile["kind"] == "numeric":
            numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            # The reference went through the same float32 rounding as the model's inputs; a
            # value sitting on a bin edge must land in the same bin on both sides.
            values[name] = numbers.astype(np.float32).astype(np.float64)
        else:
            values[name] = [MISSING_CATEGORY if _is_missing(v) else str(v) for v in column]
    return values


def version_predictions(window: pd.DataFrame, model_version: str) -> Predictions:
    """The outputs logged by ``model_version``: its scores and its predicted labels as text
    (the log's ``prediction`` column is JSON). Another version's outputs (before a promotion)
    say nothing about this model's reference."""
    if window.empty or "prediction" not in window:
        return Predictions(np.empty(0))
    rows = window
    if "model_version" in window:
        rows = window[window["model_version"].astype(str) == model_version]
    scores = (
        pd.to_numeric(rows["score"], errors="coerce").to_numpy(dtype=np.float64)
        if "score" in rows
        else np.full(len(rows), np.nan)
    )
    labels = [label_text(_from_json(value)) for value in rows["prediction"]]
    return Predictions(scores, labels)


def store_report(cfg: MlopsConfig, report: DriftReport) -> int:
    """Insert the report into the drift table (created if missing); return the row id."""
    settings = cfg.prediction_log
    url = _parse_url(settings.url)
    database = sqlite_file(url)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    metadata, _, drift_table = store_tables(settings.table, settings.drift_table)
    engine = create_engine(url)
    try:
        metadata.create_all(engine, tables=[drift_table])
        with engine.begin() as connection:
            inserted = connection.execute(
                insert(drift_table).values(
                    created_at=report.created_at,
                    model_version=report.model_version,
                    status=report.status,
                    max_psi=report.max_psi,
                    n_rows=report.rows,
                    report=json.dumps(report.as_dict(), sort_keys=True, allow_nan=False),
                )
            )
            row_id = inserted.inserted_primary_key
    except SQLAlchemyError as exc:
        where = url.render_as_string(hide_password=True)
        raise DataError(f"cannot store the drift report at {where}: {first_line(exc)}") from None
    finally:
        engine.dispose()
    return int(row_id[0]) if row_id else 0


def _window_frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    base = pd.DataFrame(rows, columns=columns).drop(columns="features")
    try:
        features = pd.DataFrame([json.loads(row["features"]) for row in rows], index=base.index)
    except (TypeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"the prediction log has a row whose features are not JSON: {exc}"
        ) from None
    frame = pd.concat([base, features.drop(columns=base.columns, errors="ignore")], axis=1)
    # SQLite returns naive datetimes; the log always writes UTC.
    frame["logged_at"] = pd.to_datetime(frame["logged_at"], utc=True)
    return frame


def _parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise DataError(
            f"prediction_log.url '{url}' is not a database URL (e.g. sqlite:///data/x.db)"
        ) from None


def _from_json(value: Any) -> Any:
    """A logged prediction (JSON text) as the value it was; anything else as it is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)
