"""Extraction: run the SQL files in ``sql/`` through SQLAlchemy, reading in chunks.

The database URL comes from the config (``data.url``), so the same queries run against the
embedded SQLite warehouse and against PostgreSQL (``postgresql+psycopg://user:pw@host/db``)
unchanged: the queries stick to SQL that both accept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ..config import Config, DataConfig
from ..errors import DataError
from ..settings import PACKAGE
from . import sample


def make_engine(url: str) -> Engine:
    """Create an engine; a SQLite file's folder is created so ``data`` works on a fresh clone."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DataError(
            f"data.url '{url}' is not a database URL (e.g. sqlite:///data/x.db)"
        ) from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        return create_engine(parsed)
    except (ImportError, SQLAlchemyError) as exc:
        raise DataError(f"cannot use database URL {parsed!r}: {exc}") from None


def read_query(path: Path) -> str:
    """Read a SQL file; a missing file is a config mistake with a clear message."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"SQL file not found: {path} (see data.query in the config)") from None


def iter_query(engine: Engine, sql: str, chunk_size: int) -> Iterator[pd.DataFrame]:
    """Yield the query result in chunks of ``chunk_size`` rows, so memory stays bounded."""
    try:
        with engine.connect() as connection:
            yield from pd.read_sql_query(text(sql), connection, chunksize=chunk_size)
    except (SQLAlchemyError, pd.errors.DatabaseError) as exc:
        # pandas >= 3 wraps the driver error in its own DatabaseError: report the original.
        cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) and exc.__cause__ else exc
        first_line = str(cause).splitlines()[0]
        raise DataError(
            f"query failed on {engine.url!r}: {first_line} "
            f"(run `python -m {PACKAGE} data` to build the sample warehouse, or check data.url)"
        ) from None


def extract_training_frame(cfg: Config) -> pd.DataFrame:
    """Run ``data.query`` and return the whole training table."""
    engine = make_engine(cfg.data.url)
    try:
        chunks = list(iter_query(engine, read_query(cfg.data.query), cfg.data.chunk_size))
    finally:
        engine.dispose()
    if not chunks:
        raise DataError(f"{cfg.data.query} returned no rows from {engine.url!r}")
    frame = pd.concat(chunks, ignore_index=True)
    if frame.empty:
        raise DataError(f"{cfg.data.query} returned no rows from {engine.url!r}")
    return frame


def build_sample_warehouse(cfg: DataConfig) -> dict[str, int]:
    """Write the seeded sample tables to ``cfg.url``; return the row count of each table.

    For a SQLite file the warehouse is written next to the target and moved into place, so an
    interrupted run never leaves a half-written database behind.
    """
    tables = sample.build_tables(cfg.sample)
    parsed = make_url(cfg.url)
    target = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if target and target != ":memory:":
        partial = Path(f"{target}.partial")
        partial.unlink(missing_ok=True)
        engine = make_engine(
            parsed.set(database=str(partial)).render_as_string(hide_password=False)
        )
        try:
            sample.write_tables(tables, engine)
        finally:
            engine.dispose()
        partial.replace(target)
    else:
        engine = make_engine(cfg.url)
        try:
            sample.write_tables(tables, engine)
        finally:
            engine.dispose()
    return {name: len(frame) for name, frame in tables.items()}
