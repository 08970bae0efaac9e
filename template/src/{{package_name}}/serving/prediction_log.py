"""Prediction logging: every served prediction is written to a SQL store, off the request path.

The tables are defined here once; ``monitor`` reads them and the service writes them.

``PredictionLog.submit`` runs on the event loop for every scored request, so it only appends
to an in-memory queue (a few microseconds, no I/O, never raises). One writer thread drains the
queue in batches with one multi-row INSERT per transaction. When the store is slow or down the
service keeps answering: the queue is bounded, and what cannot be queued or written is dropped
and counted (``prediction_log_dropped_total{reason}``) rather than slowing predictions down.
Losing log rows is the intended trade-off: monitoring works on samples, predictions must not
wait for a database.

A store that fails is reconnected from scratch on the next attempt (after a pause that doubles
up to ``MAX_RETRY_PAUSE_S``): the connection pool is dropped, and what the project owns is
created again (a SQLite file's folder, the tables), so logging resumes by itself once the
store is back, e.g. after ``data/`` was deleted under a running service or the database
restarted.

Every task is logged in the same columns: ``prediction`` holds the served label or value as
JSON (``"gold"``, ``1``, ``true``, ``3.25``: the type survives), ``score`` the number monitoring
compares (binary: the positive class's probability; multiclass: the predicted class's
probability; regression: the predicted value). A table an older version created with other
columns (``probability`` and an integer ``prediction``, before 0.5.0) is left as it is: the
writer says once what to do and counts the rows it cannot log as ``incompatible_table``.

``DriftGauges`` exports the newest drift report (written by ``monitor``) as Prometheus gauges.

Only SQLAlchemy, prometheus_client and the standard library are used here: this module runs in
the lean serving process.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
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
    select,
)
from sqlalchemy.engine import URL

from ..config import PredictionLogConfig

logger = logging.getLogger(__name__)

# Why a served prediction was not logged (label values of prediction_log_dropped_total).
DROP_REASONS = ("queue_full", "store_error", "invalid_row", "shutdown", "incompatible_table")
# Drift report status -> value of the drift_status gauge.
DRIFT_STATUS_CODES = {"ok": 0, "warn": 1, "alert": 2, "insufficient_data": -1}
NO_REPORT = -1
WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A store that keeps failing is retried after a growing pause, up to this long; rows queued
# meanwhile wait (up to queue_size) and are written once it recovers.
MAX_RETRY_PAUSE_S = 30.0
# At most one warning per kind of problem in this many seconds; the next one says how many
# rows were dropped in between.
WARNING_INTERVAL_S = 60.0


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
        f"table '{table}' at {_safe_url(url)} has the layout of an older version ({problem}): "
        f"point prediction_log.table at a new table (e.g. {table}_v2; it is created by the "
        f"service) or {move} to start a new log; the old rows are left as they are"
    )


class IncompatibleTableError(Exception):
    """The log table exists with a layout these rows do not fit (see ``layout_problem``)."""


class PredictionLog:
    """A bounded queue of prediction rows and the one thread that writes them to the store.

    ``start()`` once at service startup, ``submit(rows)`` per scored request (on the event
    loop), ``close()`` at shutdown (blocking: call it in a worker thread from async code).
    The caller hands the row dicts over: it must not change them after ``submit``.
    """

    def __init__(self, cfg: PredictionLogConfig, registry: CollectorRegistry) -> None:
        self.cfg = cfg
        self._metadata, self._table, _ = store_tables(cfg.table, cfg.drift_table)
        # (submit time, rows) chunks; _pending counts their rows. One lock guards both.
        self._chunks: deque[tuple[float, list[dict[str, Any]]]] = deque()
        self._pending = 0
        self._cond = threading.Condition(threading.Lock())
        self._closing = False
        self._abandoned = False  # close() gave up waiting: the writer must stop
        self._unreported_full = 0  # queue_full drops not yet warned about (by the writer)
        self._thread: threading.Thread | None = None
        self._engine: Engine | None = None
        self._tables_ready = False
        self._failing = False
        # An incompatible table: rows are dropped (and counted) until this time, then the table
        # is checked again; the error is logged once per incompatibility.
        self._incompatible_until = -math.inf
        self._incompatible_reported = False
        self._warnings = _WarningThrottle(WARNING_INTERVAL_S)

        self.written = Counter(
            "prediction_log_written_total",
            "Predictions written to the prediction log",
            registry=registry,
        )
        self.dropped = Counter(
            "prediction_log_dropped_total",
            "Predictions served but not logged, by reason",
            ["reason"],
            registry=registry,
        )
        self.queue_rows = Gauge(
            "prediction_log_queue_rows",
            "Predictions waiting to be written to the prediction log",
            registry=registry,
        )
        # Read at scrape time: submit() pays nothing for the gauge.
        self.queue_rows.set_function(lambda: self._pending)
        self.write_seconds = Histogram(
            "prediction_log_write_seconds",
            "Time to write one batch to the prediction log",
            buckets=WRITE_BUCKETS,
            registry=registry,
        )
        # Children created up front: every reason is exported (as 0) from the start.
        self._dropped = {reason: self.dropped.labels(reason) for reason in DROP_REASONS}

    def start(self) -> None:
        """Start the writer thread (once). The store is first touched there, so a store that
        is down at startup neither delays nor fails the service."""
        if not self.cfg.enabled or self._thread is not None or self._closing:
            return
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def submit(self, rows: list[dict[str, Any]]) -> None:
        """Queue scored rows (request_id, model_version, features, prediction, score,
        latency_ms); ``logged_at`` is now. Never blocks on I/O and never raises: rows that do
        not fit in the queue are dropped and counted as ``queue_full``."""
        if not rows or not self.cfg.enabled:
            return
        try:
            count = len(rows)
            now = time.time()
            with self._cond:
                if self._closing:
                    overflow, reason = count, "shutdown"
                else:
                    room = self.cfg.queue_size - self._pending
                    accepted = rows if count <= room else rows[: max(room, 0)]
                    overflow, reason = count - len(accepted), "queue_full"
                    if accepted:
                        before = self._pending
                        self._chunks.append((now, accepted))
                        self._pending += len(accepted)
                        # Wake the writer only when a full batch is ready; otherwise it
                        # wakes on its flush interval.
                        if before < self.cfg.batch_size <= self._pending:
                            self._cond.notify()
                    if overflow:
                        self._unreported_full += overflow
            if overflow:
                self._dropped[reason].inc(overflow)
        except Exception:  # logging must never fail a prediction
            self._dropped["invalid_row"].inc(len(rows) if isinstance(rows, list) else 1)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds), then stop the writer.
        Rows still queued after that are dropped and counted as ``shutdown``."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            self._abandoned = True
            left = self._pending
            self._chunks.clear()
            self._pending = 0
            self._cond.notify_all()
        if left:
            self._dropped["shutdown"].inc(left)
            logger.warning(
                "prediction log: %d queued rows not written within %.1fs of shutdown",
                left,
                timeout,
                extra={"dropped_rows": left, "reason": "shutdown"},
            )
        self._warnings.flush()
        if thread is None or not thread.is_alive():
            self._dispose()

    # The writer thread.

    def _run(self) -> None:
        pause = 0.0
        while True:
            with self._cond:
                self._wait_for_batch(pause)
                if self._abandoned:
                    break
                batch = self._take(self.cfg.batch_size)
                if not batch and self._closing:
                    break
                unreported_full, self._unreported_full = self._unreported_full, 0
            if unreported_full:
                self._warnings.warn(
                    "queue_full",
                    unreported_full,
                    "the store does not keep up (queue_size %d)",
                    self.cfg.queue_size,
                )
            if not batch:
                continue
            if self._write(batch):
                pause = 0.0
            else:
                pause = min(max(2 * pause, self.cfg.flush_interval_s), MAX_RETRY_PAUSE_S)
        self._warnings.flush()
        self._dispose()

    def _wait_for_batch(self, pause: float) -> None:
        """Wait (holding the condition) for a full batch or the flush interval; after a store
        error, wait ``pause`` first. Closing ends any wait: what is queued is flushed."""
        now = time.monotonic()
        if pause:
            resume = now + pause
            while not self._closing and now < resume:
                self._cond.wait(resume - now)
                now = time.monotonic()
        deadline = now + self.cfg.flush_interval_s
        while not self._closing and self._pending < self.cfg.batch_size and now < deadline:
            self._cond.wait(deadline - now)
            now = time.monotonic()

    def _take(self, limit: int) -> list[tuple[float, dict[str, Any]]]:
        """Pop up to ``limit`` rows, oldest first (caller holds the condition)."""
        batch: list[tuple[float, dict[str, Any]]] = []
        while self._chunks and len(batch) < limit:
            stamp, rows = self._chunks.popleft()
            room = limit - len(batch)
            if len(rows) > room:
                self._chunks.appendleft((stamp, rows[room:]))
                rows = rows[:room]
            batch.extend((stamp, row) for row in rows)
        self._pending -= len(batch)
        return batch

    def _write(self, batch: list[tuple[float, dict[str, Any]]]) -> bool:
        """Insert one batch in one transaction; False (batch dropped) when the store fails."""
        params = []
        for stamp, row in batch:
            try:
                params.append(_table_row(stamp, row))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self._dropped["invalid_row"].inc()
                self._warnings.warn("invalid_row", 1, "cannot log row: %r", exc)
        if not params:
            return True
        if time.monotonic() < self._incompatible_until:
            self._dropped["incompatible_table"].inc(len(params))
            return True
        started = time.perf_counter()
        try:
            engine = self._store()
            with engine.begin() as connection:
                connection.execute(self._table.insert(), params)
        except IncompatibleTableError as exc:
            # Not a store failure: retrying soon or reconnecting cannot help. Rows are dropped
            # at once (so the queue does not fill up) and the table is checked again later.
            self._dropped["incompatible_table"].inc(len(params))
            self._incompatible_until = time.monotonic() + MAX_RETRY_PAUSE_S
            self._failing = True
            if not self._incompatible_reported:
                self._incompatible_reported = True
                logger.error(
                    "prediction log: predictions are not logged: %s",
                    exc,
                    extra={"reason": "incompatible_table"},
                )
            return True
        except Exception as exc:  # the writer survives anything the store raises
            self._dropped["store_error"].inc(len(params))
            self._failing = True
            # Start over on the next attempt: pooled connections may point at a deleted
            # SQLite file (writes then fail for good) or a restarted server, and the folder
            # or tables may be gone.
            self._dispose()
            self._tables_ready = False
            self._warnings.warn(
                "store_error",
                len(params),
                "cannot write to %s: %s",
                self._url_for_logs(),
                _first_line(exc),
            )
            return False
        self.write_seconds.observe(time.perf_counter() - started)
        self.written.inc(len(params))
        if self._failing:
            self._failing = False
            self._incompatible_reported = False
            logger.info("prediction log: writing to %s again", self._url_for_logs())
        return True

    def _store(self) -> Engine:
        """The engine, with the SQLite folder and the tables created on first use and after
        every store error (retried until it works). An existing table of another layout is
        an ``IncompatibleTableError``: it is never changed."""
        if self._engine is None:
            self._engine = _make_engine(self.cfg.url, create_folder=True)
        if not self._tables_ready:
            self._metadata.create_all(self._engine, checkfirst=True)
            problem = layout_problem(self._engine, self._table)
            if problem is not None:
                raise IncompatibleTableError(
                    incompatible_table(self.cfg.table, self.cfg.url, problem)
                )
            self._tables_ready = True
        return self._engine

    def _dispose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    def _url_for_logs(self) -> str:
        return _safe_url(self.cfg.url)


class DriftGauges:
    """Prometheus gauges from the newest drift report in the store (written by ``monitor``).

    ``refresh()`` does blocking I/O: call it from a worker thread (``asyncio.to_thread``).
    """

    def __init__(self, cfg: PredictionLogConfig, registry: CollectorRegistry) -> None:
        self.cfg = cfg
        _, _, self._drift = store_tables(cfg.table, cfg.drift_table)
        self._engine: Engine | None = None
        self._warnings = _WarningThrottle(WARNING_INTERVAL_S)
        self._features: set[str] = set()
        self.psi = Gauge(
            "drift_psi",
            "Population stability index of each feature (and of the prediction) in the newest "
            "drift report",
            ["feature"],
            registry=registry,
        )
        self.status = Gauge(
            "drift_status",
            "Newest drift report: 0 ok, 1 warn, 2 alert, -1 insufficient data or no report",
            registry=registry,
        )
        self.timestamp = Gauge(
            "drift_report_timestamp_seconds",
            "When the newest drift report was created (Unix time; 0: no report)",
            registry=registry,
        )
        self.status.set(NO_REPORT)

    def refresh(self) -> None:
        """Read the newest report and update the gauges. Never raises: a store that is down
        or has no report yet leaves the gauges as they were."""
        try:
            row = self._newest_report()
        except Exception as exc:  # monitoring must not break the service
            self._warnings.warn(
                "drift_read",
                0,
                "cannot read drift reports from %s: %s",
                _safe_url(self.cfg.url),
                _first_line(exc),
            )
            return
        if row is None:
            return
        try:
            report = json.loads(row.report)
            self._show(report, row.created_at)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            self._warnings.warn(
                "drift_report", 0, "drift report %s is not readable: %s", row.id, exc
            )

    def close(self) -> None:
        """Release the store connection."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    def _newest_report(self) -> Any:
        database = sqlite_file(self.cfg.url)
        if database is not None and not database.is_file():
            # Connecting would create an empty database file.
            logger.debug("no drift reports yet: %s does not exist", database)
            return None
        if self._engine is None:
            self._engine = _make_engine(self.cfg.url, create_folder=False)
        with self._engine.connect() as connection:
            if not inspect(connection).has_table(self.cfg.drift_table):
                logger.debug("no drift reports yet: no table %s", self.cfg.drift_table)
                return None
            query = (
                select(self._drift)
                .order_by(self._drift.c.created_at.desc(), self._drift.c.id.desc())
                .limit(1)
            )
            return connection.execute(query).first()

    def _show(self, report: dict[str, Any], created_at: datetime) -> None:
        values: dict[str, Any] = {}
        for name, result in (report.get("features") or {}).items():
            values[str(name)] = result.get("psi")
        values["prediction"] = (report.get("prediction") or {}).get("psi")
        shown = {name: float(v) for name, v in values.items() if _is_number(v)}
        for name in self._features - shown.keys():
            self.psi.remove(name)  # a feature the newest report no longer has
        for name, value in shown.items():
            self.psi.labels(name).set(value)
        self._features = set(shown)
        self.status.set(DRIFT_STATUS_CODES.get(str(report.get("status")), NO_REPORT))
        if created_at.tzinfo is None:  # SQLite returns naive datetimes: stored as UTC
            created_at = created_at.replace(tzinfo=UTC)
        self.timestamp.set(created_at.timestamp())


class _WarningThrottle:
    """At most one warning per kind per interval; skipped rows are added to the next one."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._rows: dict[str, int] = {}
        self._pending: dict[str, tuple[str, tuple[Any, ...]]] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def warn(self, kind: str, rows: int, message: str, *args: Any) -> None:
        with self._lock:
            self._rows[kind] = self._rows.get(kind, 0) + rows
            self._pending[kind] = (message, args)
            now = time.monotonic()
            if now - self._last.get(kind, -math.inf) < self.interval_s:
                return
            self._last[kind] = now
            self._emit(kind)

    def flush(self) -> None:
        """Log what was held back (at shutdown)."""
        with self._lock:
            for kind in list(self._pending):
                self._emit(kind)

    def _emit(self, kind: str) -> None:
        message, args = self._pending.pop(kind)
        rows = self._rows.pop(kind, 0)
        since = " since the last warning" if kind in self._warned else ""
        self._warned.add(kind)
        if rows:
            logger.warning(
                f"prediction log: %d rows dropped ({kind}){since}; {message}",
                rows,
                *args,
                extra={"dropped_rows": rows, "reason": kind},
            )
        else:
            logger.warning(message, *args)


def _table_row(stamp: float, row: dict[str, Any]) -> dict[str, Any]:
    """A queued row as table values; the features as a JSON object (NaN/inf are refused by
    the API before they get here, and would be refused here too)."""
    return {
        "logged_at": datetime.fromtimestamp(stamp, UTC),
        "request_id": str(row["request_id"])[:64],
        "model_version": str(row["model_version"])[:128],
        "features": json.dumps(row["features"], allow_nan=False, separators=(",", ":")),
        "prediction": json.dumps(row["prediction"], allow_nan=False),
        "score": None if row["score"] is None else float(row["score"]),
        "latency_ms": float(row["latency_ms"]),
    }


def sqlite_file(url: str | URL) -> Path | None:
    """The database file of a SQLite URL; None for other stores and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database)
    return None


def _make_engine(url: str, *, create_folder: bool) -> Engine:
    database = sqlite_file(url)
    if create_folder and database is not None:
        # Like `data`: a fresh clone has no data/ folder yet.
        database.parent.mkdir(parents=True, exist_ok=True)
    # pool_pre_ping: a connection the server dropped (restart, idle timeout) is replaced
    # instead of failing the next batch.
    return create_engine(url, pool_pre_ping=True)


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # only for a log line
        return "<invalid URL>"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
