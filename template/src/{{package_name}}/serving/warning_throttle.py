"""At most one warning per kind of problem per interval, so a store that is down does not
flood the service's log; the next warning says how many rows were dropped in between."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any


class WarningThrottle:
    """At most one warning per kind per interval to ``logger``; skipped rows are added to the
    next one."""

    def __init__(self, interval_s: float, logger: logging.Logger) -> None:
        self.interval_s = interval_s
        self.logger = logger
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
            self.logger.warning(
                f"prediction log: %d rows dropped ({kind}){since}; {message}",
                rows,
                *args,
                extra={"dropped_rows": rows, "reason": kind},
            )
        else:
            self.logger.warning(message, *args)
