"""Prometheus gauges from the newest drift report that ``monitor`` stored next to the
prediction log: PSI per feature and of the prediction, the status, and when it was created.

Only SQLAlchemy, prometheus_client and the standard library: the lean serving process runs it.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import Engine, inspect, select

from ..dburl import sqlite_file
from ..errortext import typed_first_line
from ..mlops_config import PredictionLogConfig
from ..prediction_store import make_engine, safe_url, store_tables
from .warning_throttle import WarningThrottle

logger = logging.getLogger(__name__)

# Drift report status -> value of the drift_status gauge.
DRIFT_STATUS_CODES = {"ok": 0, "warn": 1, "alert": 2, "insufficient_data": -1}
NO_REPORT = -1
# At most one warning per kind of problem in this many seconds.
WARNING_INTERVAL_S = 60.0


class DriftGauges:
    """Prometheus gauges from the newest drift report in the store (written by ``monitor``).

    ``refresh()`` does blocking I/O: call it from a worker thread (``asyncio.to_thread``).
    """

    def __init__(self, cfg: PredictionLogConfig, registry: CollectorRegistry) -> None:
        self.cfg = cfg
        _, _, self._drift = store_tables(cfg.table, cfg.drift_table)
        self._engine: Engine | None = None
        self._warnings = WarningThrottle(WARNING_INTERVAL_S, logger)
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
                safe_url(self.cfg.url),
                typed_first_line(exc),
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
            self._engine = make_engine(self.cfg.url, create_folder=False)
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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
