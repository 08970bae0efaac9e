"""Extraction: run the SQL files in ``sql/`` through SQLAlchemy, reading in chunks.

The database URL comes from the config (``data.url``), so the same queries run against the
embedded SQLite warehouse and against PostgreSQL (``postgresql+psycopg://user:pw@host/db``)
unchanged: the queries stick to SQL that both accept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from sqlalchemy import URL, Engine, create_engine, make_url, text
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ..config import Config, DataConfig
from ..errors import DataError
from ..settings import PACKAGE


def make_engine(url: str, *, writable: bool = False) -> Engine:
    """Create an engine for ``url``; read-only for a SQLite file unless ``writable``.

    A data source is only ever read: a SQLite file is opened in SQLite's read-only mode, so no
    query, bug or driver quirk can change it, and a missing file is an error rather than a new
    empty database created where the config points. Only the sample builder asks for
    ``writable`` (its own database, whose folder it creates).
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DataError(f"'{url}' is not a database URL (e.g. sqlite:///data/x.db)") from None
    database = sqlite_file(parsed)
    if database is not None and writable:
        database.parent.mkdir(parents=True, exist_ok=True)
    elif database is not None:
        if not database.is_file():
            raise DataError(f"no SQLite database at {database} (from {url})")
        # file: URI with mode=ro (SQLite's read-only open); the path is quoted for the URI.
        parsed = parsed.set(
            database=f"file:{quote(str(database.resolve()))}",
            query={**parsed.query, "mode": "ro", "uri": "true"},
        )
    try:
        return create_engine(parsed)
    except (ImportError, SQLAlchemyError) as exc:
        shown = parsed.render_as_string(hide_password=True)
        raise DataError(f"cannot use database URL {shown}: {exc}") from None


def sqlite_file(url: URL) -> Path | None:
    """The file behind a SQLite URL, or None (another database, or in memory)."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(str(url.database))


def source_engine(cfg: DataConfig) -> Engine:
    """A read-only engine on ``data.url``; if that is the sample and it is not built yet, an
    error that says how to build it."""
    try:
        database = sqlite_file(make_url(cfg.url))
    except ArgumentError:
        database = None  # make_engine reports the bad URL
    if cfg.uses_sample and database is not None and not database.exists():
        raise DataError(
            f"data.url is the sample warehouse ({cfg.url}), which is not built yet: run "
            f"`make data` (python -m {PACKAGE} data), or point data.url at your database"
        )
    return make_engine(cfg.url)


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
            "(check data.url and the query's tables and columns)"
        ) from None


def extract_training_frame(cfg: Config) -> pd.DataFrame:
    """Run ``data.query`` and return the whole training table."""
    engine = source_engine(cfg.data)
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
