"""Monitoring: compare the most recent logged predictions with the champion's drift reference.

``run_monitoring`` reads the window (``monitor_data.py``), builds the report
(``monitor_report.py``), renders it (``monitor_render.py``) and publishes a report folder
``reports/monitoring/<UTC time>/`` (drift.json, drift.md, drift.html and plots) plus
``latest.json``, which the service exports as gauges; ``monitor_data.store_report`` keeps one
row per run in the drift table next to the log.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import publish_directory, replace_copy
from ..mlops_config import MlopsConfig
from .monitor_data import current_values, load_window, version_predictions
from .monitor_render import html_report, markdown_report, plots
from .monitor_report import INSUFFICIENT, DriftReport, build_report

JSON_FILE = "drift.json"
MARKDOWN_FILE = "drift.md"
HTML_FILE = "drift.html"
LATEST_FILE = "latest.json"


@dataclass(frozen=True)
class MonitoringResult:
    """One monitoring run: the report and the files written (the folder's, then latest.json)."""

    report: DriftReport
    files: list[Path]


def run_monitoring(
    cfg: MlopsConfig,
    reference: Mapping[str, Any],
    window: pd.DataFrame | None = None,
    now: datetime | None = None,
) -> MonitoringResult:
    """Compare ``window`` (default: ``load_window(cfg)``) with ``reference`` and write the
    report folder. Nothing is visible until every file is written."""
    now = _utc(now or datetime.now(UTC))
    frame = load_window(cfg) if window is None else window
    current = current_values(reference, frame)
    predictions = version_predictions(frame, str(reference["model_version"]))
    report = build_report(cfg, reference, frame, current, predictions, now)

    def write(directory: Path) -> list[str]:
        drawn = (
            []
            if report.status == INSUFFICIENT
            else plots(directory, report, reference, current, predictions)
        )
        text = json.dumps(report.as_dict(), indent=2, sort_keys=True, allow_nan=False)
        (directory / JSON_FILE).write_text(text + "\n", encoding="utf-8")
        (directory / MARKDOWN_FILE).write_text(markdown_report(report, drawn), encoding="utf-8")
        (directory / HTML_FILE).write_text(html_report(report, directory, drawn), encoding="utf-8")
        return [JSON_FILE, MARKDOWN_FILE, HTML_FILE, *drawn]

    files = _publish(cfg.monitoring.reports_dir, now, write)
    return MonitoringResult(report=report, files=files)


def _publish(reports_dir: Path, now: datetime, write: Callable[[Path], list[str]]) -> list[Path]:
    """Let ``write`` fill a temporary folder, rename it to ``reports_dir/<UTC time>`` and copy
    its drift.json to ``latest.json``; nothing is visible unless everything was written."""
    names: list[str] = []

    def fill(folder: Path) -> None:
        names.extend(write(folder))

    final = publish_directory(
        reports_dir,
        lambda: _free_name(reports_dir, f"{now:%Y%m%dT%H%M%SZ}").name,
        fill,
        prefix=".drift-",
    )
    latest = reports_dir / LATEST_FILE
    replace_copy(final / JSON_FILE, latest)
    return [*(final / name for name in names), latest]


def _free_name(parent: Path, stem: str) -> Path:
    candidate, suffix = parent / stem, 1
    while candidate.exists():
        suffix += 1
        candidate = parent / f"{stem}-{suffix}"
    return candidate


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
