"""Prediction logging: every served prediction is written to a SQL store, off the request path.

The tables are defined once in ``prediction_store``; ``monitor`` reads them and the service
writes them.

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

Every task is logged in the same columns (see ``prediction_store``). A table an older version
created with other columns is left as it is: the writer says once what to do and counts the
rows it cannot log as ``incompatible_table``.

The drift gauges are in ``drift_gauges``, the warning throttle both use in
``warning_throttle``.

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
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import Engine

from ..errortext import typed_first_line
from ..mlops_config import PredictionLogConfig
from ..prediction_store import (
    incompatible_table,
    layout_problem,
    make_engine,
    safe_url,
    store_tables,
)
from .warning_throttle import WarningThrottle

logger = logging.getLogger(__name__)

# Why a served prediction was not logged (label values of prediction_log_dropped_total).
DROP_REASONS = ("queue_full", "store_error", "invalid_row", "shutdown", "incompatible_table")
WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A store that keeps failing is retried after a growing pause, up to this long; rows queued
# meanwhile wait (up to queue_size) and are written once it recovers.
MAX_RETRY_PAUSE_S = 30.0
# At most one warning per kind of problem in this many seconds; the next one says how many
# rows were dropped in between.
WARNING_INTERVAL_S = 60.0


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
        self._warnings = WarningThrottle(WARNING_INTERVAL_S, logger)

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
                typed_first_line(exc),
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
            self._engine = make_engine(self.cfg.url, create_folder=True)
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
        return safe_url(self.cfg.url)


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
