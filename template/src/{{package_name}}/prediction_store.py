"""The prediction store: the tables the service writes every prediction to and ``monitor``
writes its drift reports to, defined once for both (any SQLAlchemy URL).

Every task is logged in the same columns: ``prediction`` holds the served label or value as
JSON (``"gold"``, ``1``, ``true``, ``3.25``: the type survives), ``score`` the number monitoring
compares (``answer_score``). A table an older version created with other columns
(``probability`` and an integer ``prediction``, before 0.5.0) is left as it is:
``layout_problem`` says what does not fit and ``incompatible_table`` what to do.

Only SQLAlchemy and the standard library: the lean serving process imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    inspect,
    make_url,
)

from .dburl import sqlite_file


def store_tables(table: str, drift_table: str) -> tuple[MetaData, Table, Table]:
    """The prediction log and drift report tables (``metadata.create_all`` creates both)."""
    metadata = MetaData()
    predictions = Table(
        table,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("logged_at", DateTime(timezone=True), nullable=False, index=True),
        Column("request_id", String(64), nullable=False),
        Column("model_version", String(128), nullable=False, index=True),
        Column("features", Text, nullable=False),  # JSON object: feature name -> value
        Column("prediction", Text, nullable=False),  # JSON: the served label or value
        Column("score", Float, nullable=True),  # see answer_score
        Column("latency_ms", Float, nullable=False),
    )
    drift = Table(
        drift_table,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("created_at", DateTime(timezone=True), nullable=False, index=True),
        Column("model_version", String(128), nullable=False),
        Column("status", String(32), nullable=False),
        Column("max_psi", Float, nullable=True),
        Column("n_rows", Integer, nullable=False),
        Column("report", Text, nullable=False),  # JSON: the whole drift report
    )
    return metadata, predictions, drift


def answer_score(answer: Mapping[str, Any]) -> float | None:
    """The number logged beside an API answer: the positive class's probability (binary), the
    predicted class's probability (multiclass), the predicted value (regression); None when
    the answer has none of these."""
    if "probability" in answer:
        return float(answer["probability"])
    probabilities = answer.get("probabilities")
    if isinstance(probabilities, Mapping):
        value = probabilities.get(str(answer["prediction"]))
        return None if value is None else float(value)
    prediction = answer.get("prediction")
    if isinstance(prediction, int | float) and not isinstance(prediction, bool):
        return float(prediction)
    return None


def layout_problem(bind: Engine | Connection, table: Table) -> str | None:
    """What keeps rows of ``table``'s layout from being written to (or read from) the table of
    that name in the store, e.g. one an older version created; None when it fits (or does not
    exist yet)."""
    inspector = inspect(bind)
    if not inspector.has_table(table.name):
        return None
    existing = {column["name"]: column for column in inspector.get_columns(table.name)}
    missing = [column.name for column in table.columns if column.name not in existing]
    unwritten = [
        name
        for name, column in existing.items()
        if name not in table.columns
        and not column.get("nullable", True)
        and column.get("default") is None
    ]
    problems = []
    if missing:
        problems.append(f"no column {', '.join(missing)}")
    if unwritten:
        problems.append(f"column {', '.join(unwritten)} required but no longer written")
    return "; ".join(problems) or None


def incompatible_table(table: str, url: str, problem: str) -> str:
    """One line: the table has another layout, and what to do about it."""
    database = sqlite_file(url)
    move = f"remove or rename {database}" if database is not None else f"drop or rename {table}"
    return (
        f"table '{table}' at {safe_url(url)} has the layout of an older version ({problem}): "
        f"point prediction_log.table at a new table (e.g. {table}_v2; it is created by the "
        f"service) or {move} to start a new log; the old rows are left as they are"
    )


def make_engine(url: str, *, create_folder: bool) -> Engine:
    """An engine for the store; ``create_folder`` makes a SQLite file's folder first."""
    database = sqlite_file(url)
    if create_folder and database is not None:
        # Like `data`: a fresh clone has no data/ folder yet.
        database.parent.mkdir(parents=True, exist_ok=True)
    # pool_pre_ping: a connection the server dropped (restart, idle timeout) is replaced
    # instead of failing the next batch.
    return create_engine(url, pool_pre_ping=True)


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # only for a log line
        return "<invalid URL>"
