"""Extraction: run the SQL files in ``sql/`` through SQLAlchemy, reading in chunks.

One code path for every source. The database URL comes from the config (``data.url``):

- a database: SQLite (the sample), PostgreSQL (``postgresql+psycopg://user:pw@host/db``, the
  ``postgres`` extra) or any other SQLAlchemy URL; the queries stick to SQL that SQLite and
  PostgreSQL both accept;
- files: ``duckdb:///:memory:`` with ``data.tables`` naming CSV/Parquet files (one file, a
  folder or a glob) that the queries read as tables, so the same SQL runs on files and on a
  warehouse; the SQL may also call DuckDB's ``read_parquet(...)``/``read_csv(...)`` itself;
- a DuckDB database file: ``duckdb:///data/warehouse.duckdb``.

Every source is opened read-only (SQLite ``mode=ro``, DuckDB ``read_only``), and a missing
database file is an error, never a new empty database where the config points.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ..config import Config, DataConfig
from ..config_base import PACKAGE
from ..dburl import database_file
from ..errors import DataError
from ..errortext import first_line

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
# The table a file input is read as (batch predict of a CSV/Parquet file, folder or glob).
INPUT_TABLE = "input_rows"


def make_engine(
    url: str, *, writable: bool = False, tables: Mapping[str, str] | None = None
) -> Engine:
    """Create an engine for ``url``: read-only for a SQLite or DuckDB file unless ``writable``.

    A data source is only ever read: a SQLite file is opened in SQLite's read-only mode and a
    DuckDB file with ``read_only``, so no query, bug or driver quirk can change it, and a
    missing file is an error rather than a new empty database created where the config
    points. Only the sample builder asks for ``writable`` (its own database, whose folder it
    creates). ``tables`` (DuckDB only) maps table names to CSV/Parquet files, folders or
    globs, created as views on every connection.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DataError(f"'{url}' is not a database URL (e.g. sqlite:///data/x.db)") from None
    connect_args: dict[str, Any] = {}
    database = database_file(parsed)
    if database is not None and writable:
        database.parent.mkdir(parents=True, exist_ok=True)
    elif database is not None:
        if not database.is_file():
            kind = "SQLite" if parsed.get_backend_name() == "sqlite" else "DuckDB"
            raise DataError(f"no {kind} database at {database} (from {url})")
        if parsed.get_backend_name() == "sqlite":
            # file: URI with mode=ro (SQLite's read-only open); the path is quoted for the URI.
            parsed = parsed.set(
                database=f"file:{quote(str(database.resolve()))}",
                query={**parsed.query, "mode": "ro", "uri": "true"},
            )
        else:
            connect_args["read_only"] = True
    views = file_views(tables or {})
    if views and parsed.get_backend_name() != "duckdb":
        raise DataError(f"data.tables needs a DuckDB data.url (duckdb:///:memory:), not {url}")
    try:
        engine = create_engine(parsed, connect_args=connect_args)
    except (ImportError, SQLAlchemyError) as exc:
        shown = parsed.render_as_string(hide_password=True)
        raise DataError(f"cannot use database URL {shown}: {exc}") from None
    if views:

        @event.listens_for(engine, "connect")
        def _create_views(dbapi_connection: Any, _record: Any) -> None:
            # Temporary views: they live in the connection's memory, so this works on a
            # read-only database file too, and nothing is stored.
            for name, reader in views.items():
                dbapi_connection.execute(f'CREATE TEMP VIEW "{name}" AS SELECT * FROM {reader}')

    return engine


def file_views(tables: Mapping[str, str]) -> dict[str, str]:
    """``{name: DuckDB reader expression}`` for ``data.tables``; every spec checked first."""
    return {name: file_reader(spec, f"data.tables.{name}") for name, spec in tables.items()}


def resolve_files(spec: str, label: str) -> list[Path]:
    """The files a CSV/Parquet spec names: one file, a folder (every CSV/Parquet file in it,
    recursively) or a glob (``data/events/*.parquet``, ``**`` for subfolders), sorted."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _kind(p) is not None)
        if not files:
            raise DataError(f"{label}: no .csv or .parquet files in folder {spec}")
    elif glob.has_magic(spec):
        # glob.glob: Path.glob takes no absolute patterns, and a spec may be absolute.
        matches = glob.glob(spec, recursive=True)  # noqa: PTH207
        files = sorted(Path(p) for p in matches if Path(p).is_file())
        if not files:
            raise DataError(f"{label}: no files match {spec}")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{label}: no file, folder or glob match at {spec}")
    kinds = {_kind(p) for p in files}
    if None in kinds:
        odd = next(p for p in files if _kind(p) is None)
        raise DataError(f"{label}: {odd} is not a .csv or .parquet file")
    if len(kinds) > 1:
        raise DataError(f"{label}: {spec} mixes CSV and Parquet files; name one kind")
    return files


def output_clashes(output: Path, spec: str) -> bool:
    """Whether writing ``output`` (a file, or a folder of files as Spark writes one) would
    replace data that ``spec`` (a file, folder or glob) reads, hold it, or be read back by it:
    the spec's file itself, anything inside its folder, a folder around it, or a path its glob
    matches (folders included, since Spark's output is one)."""
    forms = {output.absolute(), output.resolve()}
    if glob.has_magic(spec):
        patterns = {str(Path(spec).absolute())}
        return any(
            fnmatch.fnmatchcase(str(path), pattern)
            for form in forms
            for path in (form, *form.parents)
            for pattern in patterns
        )
    bases = {Path(spec).absolute(), Path(spec).resolve()}
    return any(
        target == base or base in target.parents or target in base.parents
        for target in forms
        for base in bases
    )


def file_reader(spec: str, label: str) -> str:
    """The DuckDB table function reading ``spec``, after checking every file has the same
    columns (a file with another schema is named, rather than failing mid-read)."""
    files = resolve_files(spec, label)
    parquet = _kind(files[0]) == "parquet"
    first = _columns(files[0], parquet=parquet, label=label)
    for other in files[1:]:
        columns = _columns(other, parquet=parquet, label=label)
        if columns != first:
            raise DataError(
                f"{label}: {other} has columns ({_describe(columns)}), unlike {files[0]} "
                f"({_describe(first)}); every file of a table needs the same columns"
            )
    listed = ", ".join("'" + str(p).replace("'", "''") + "'" for p in files)
    return f"read_parquet([{listed}])" if parquet else f"read_csv([{listed}])"


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    return None


def _columns(path: Path, *, parquet: bool, label: str) -> list[tuple[str, str]]:
    """(name, type) of a Parquet file's columns, or (name, "") of a CSV file's header."""
    try:
        if parquet:
            schema = pq.read_schema(path)
            return [(field.name, str(field.type)) for field in schema]
        opener: Any = open
        if path.name.lower().endswith(".gz"):
            import gzip

            opener = gzip.open
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            sample = handle.read(65536)
        if not sample.strip():
            raise DataError(f"{label}: {path} is empty")
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        header = next(csv.reader(sample.splitlines(), dialect))
        return [(name.strip(), "") for name in header]
    except (OSError, UnicodeDecodeError, csv.Error, pa.ArrowException) as exc:
        kind = "Parquet" if parquet else "CSV"
        raise DataError(f"{label}: {path} cannot be read as {kind}: {exc}") from None


def _describe(columns: list[tuple[str, str]], limit: int = 8) -> str:
    shown = [f"{name} {kind}".strip() for name, kind in columns[:limit]]
    if len(columns) > limit:
        shown.append(f"... {len(columns) - limit} more")
    return ", ".join(shown)


def source_engine(cfg: DataConfig) -> Engine:
    """A read-only engine on ``data.url``; if that is the sample and it is not built yet, an
    error that says how to build it."""
    try:
        database = database_file(make_url(cfg.url))
    except ArgumentError:
        database = None  # make_engine reports the bad URL
    if cfg.uses_sample and database is not None and not database.exists():
        raise DataError(
            f"data.url is the sample warehouse ({cfg.url}), which is not built yet: run "
            f"`make data` (python -m {PACKAGE} data), or point data.url at your database"
        )
    return make_engine(cfg.url, tables=cfg.tables)


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
    except DataError:
        raise
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        shown = engine.url.render_as_string(hide_password=True)
        raise DataError(
            f"query failed on {shown}: {_driver_message(exc)} "
            "(check data.url, data.tables and the query's tables and columns)"
        ) from None


def _is_database_error(exc: BaseException) -> bool:
    """An error of the database or its driver (pandas >= 3 wraps them in its own class)."""
    if isinstance(exc, SQLAlchemyError | pd.errors.DatabaseError):
        return True
    # DuckDB raises its own errors from a view's file reader (e.g. a CSV row that does not
    # parse), outside SQLAlchemy's wrapping.
    return type(exc).__module__.split(".")[0] in ("duckdb", "_duckdb")


def _driver_message(exc: BaseException) -> str:
    """The first line of what the database or its driver said (pandas and SQLAlchemy wrap
    it)."""
    cause = exc
    while isinstance(cause, pd.errors.DatabaseError | SQLAlchemyError) and cause.__cause__:
        cause = cause.__cause__
    orig = getattr(cause, "orig", None)
    return first_line(orig if isinstance(orig, BaseException) else cause)


def iter_files(spec: str, chunk_size: int, label: str) -> Iterator[pd.DataFrame]:
    """Chunks of CSV/Parquet rows (a file, folder or glob), read through DuckDB like a table."""
    engine = make_engine("duckdb:///:memory:", tables={INPUT_TABLE: spec})
    try:
        yield from iter_query(engine, f'SELECT * FROM "{INPUT_TABLE}"', chunk_size)
    except DataError as exc:
        raise DataError(str(exc).replace(f"data.tables.{INPUT_TABLE}", label)) from None
    finally:
        engine.dispose()


def iter_source_query(cfg: DataConfig, query: Path, chunk_size: int) -> Generator[pd.DataFrame]:
    """Run the SQL file ``query`` on ``data.url`` and yield its rows in chunks of
    ``chunk_size``; the connection is closed when the caller stops reading."""
    engine = source_engine(cfg)
    try:
        yield from iter_query(engine, read_query(query), chunk_size)
    finally:
        engine.dispose()


def iter_training_chunks(cfg: Config, chunk_size: int | None = None) -> Iterator[pd.DataFrame]:
    """Run ``data.query`` and yield its rows in chunks (``chunk_size`` or ``data.chunk_size``)."""
    yield from iter_source_query(cfg.data, cfg.data.query, chunk_size or cfg.data.chunk_size)


def extract_training_frame(cfg: Config) -> pd.DataFrame:
    """Run ``data.query`` and return the whole training table."""
    chunks = list(iter_training_chunks(cfg))
    frame = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()
    if frame.empty:
        engine = source_engine(cfg.data)  # no connection: only its URL, as the driver sees it
        engine.dispose()
        raise DataError(f"{cfg.data.query} returned no rows from {engine.url!r}")
    return frame
