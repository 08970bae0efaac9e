"""What a database URL points at: the file behind a SQLite or DuckDB URL.

One home for the data sources (``data/extract.py``) and the prediction store
(``prediction_store.py``). SQLAlchemy's URL parsing and the standard library only: the lean
serving process imports it, so nothing here may pull in pandas.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import URL, make_url


def database_file(url: str | URL) -> Path | None:
    """The file behind a SQLite or DuckDB URL, or None (another database, or in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() not in ("sqlite", "duckdb"):
        return None
    if parsed.database in (None, "", ":memory:") or str(parsed.database).startswith(":memory:"):
        return None
    return Path(str(parsed.database))


def sqlite_file(url: str | URL) -> Path | None:
    """The file behind a SQLite URL, or None (another database, or in memory)."""
    parsed = make_url(url)
    return database_file(parsed) if parsed.get_backend_name() == "sqlite" else None
