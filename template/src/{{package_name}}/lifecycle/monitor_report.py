"""The drift report: what one monitoring run found, as typed values.

``build_report`` compares the logged window with the champion's reference (``drift.py``) and
returns a ``DriftReport``; ``DriftReport.as_dict`` is the drift.json contract (the file, the
drift table's ``report`` column and ``latest.json``, which the service exports as gauges).
``ranked_features`` and ``next_steps`` are what the command line and the rendered reports
(``monitor_render.py``) say about it.

With fewer than ``monitoring.min_rows`` rows the statistics are mostly noise: the report says
``insufficient_data``, carries a message instead of comparisons and never alerts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..config_base import PACKAGE
from ..mlops_config import MlopsConfig
from .drift import (
    BINARY,
    MULTICLASS,
    REGRESSION,
    STATUS_ORDER,
    FeatureDrift,
    PredictionDrift,
    PredictionProfile,
    Predictions,
    Status,
    Thresholds,
    compare_categorical,
    compare_numeric,
    compare_predictions,
    worst_status,
)

INSUFFICIENT: Literal["insufficient_data"] = "insufficient_data"
# A verdict: a drift status, or no verdict for lack of rows.
Verdict = Literal["ok", "warn", "alert", "insufficient_data"]
# Each reference feature's values in the window, prepared as the reference was
# (``monitor_data.current_values``): numbers as an array, categories as text.
CurrentValues = dict[str, np.ndarray | list[str]]
# What to look at when only the model's outputs moved, by task.
OUTPUT_CHECKS = {
    BINARY: "at whether the positive rate still matches the business's capacity.",
    MULTICLASS: "at which classes gained or lost share (see Predictions) and whether the "
    "business can absorb that mix.",
    REGRESSION: "at whether the level of the predicted values (mean, median) still makes sense "
    "for the business.",
}


@dataclass(frozen=True)
class WindowSpan:
    """When the window's first and last predictions were logged (None: an empty window)."""

    first_logged_at: str | None
    last_logged_at: str | None


@dataclass(frozen=True)
class ReportThresholds:
    """The monitoring settings the report was made with."""

    psi_warn: float
    psi_alert: float
    p_value: float
    min_rows: int
    window: int


@dataclass(frozen=True)
class ReferenceSummary:
    """The reference compared with: its training rows and when it was built."""

    rows: int
    created_at: str | None


@dataclass(frozen=True)
class OutputShift:
    """How the model's outputs moved (``drift``) and the verdict on it: ``insufficient_data``
    when fewer than ``monitoring.min_rows`` logged rows came from the reference's version."""

    drift: PredictionDrift
    status: Verdict

    def as_dict(self) -> dict[str, Any]:
        return {**self.drift.as_dict(), "status": self.status}


@dataclass(frozen=True)
class DriftReport:
    """One monitoring run's findings (drift.json).

    An ``insufficient_data`` report has a ``message``, no feature comparisons and no
    ``prediction``; otherwise a report without ``prediction`` means that no logged row came
    from the reference's model version.
    """

    status: Verdict
    model_version: str
    rows: int
    window: WindowSpan
    thresholds: ReportThresholds
    reference: ReferenceSummary
    created_at: datetime  # whole seconds, UTC
    features: dict[str, FeatureDrift] = field(default_factory=dict)
    max_psi: float | None = None
    prediction: OutputShift | None = None
    message: str | None = None  # why there is no verdict (insufficient_data only)

    @property
    def created(self) -> str:
        """``created_at`` as the report spells it (ISO 8601, whole seconds)."""
        return self.created_at.isoformat(timespec="seconds")

    def as_dict(self) -> dict[str, Any]:
        """The report as drift.json holds it."""
        report: dict[str, Any] = {
            "status": self.status,
            "model_version": self.model_version,
            "rows": self.rows,
            "window": {
                "first_logged_at": self.window.first_logged_at,
                "last_logged_at": self.window.last_logged_at,
            },
            "features": {name: entry.as_dict() for name, entry in self.features.items()},
            "max_psi": self.max_psi,
            "thresholds": {
                "psi_warn": self.thresholds.psi_warn,
                "psi_alert": self.thresholds.psi_alert,
                "p_value": self.thresholds.p_value,
                "min_rows": self.thresholds.min_rows,
                "window": self.thresholds.window,
            },
            "reference": {
                "rows": self.reference.rows,
                "created_at": self.reference.created_at,
            },
            "created_at": self.created,
        }
        if self.prediction is not None:
            report["prediction"] = self.prediction.as_dict()
        if self.message is not None:
            report["message"] = self.message
        return report


def build_report(
    cfg: MlopsConfig,
    reference: Mapping[str, Any],
    window: pd.DataFrame,
    current: CurrentValues,
    predictions: Predictions,
    now: datetime,
) -> DriftReport:
    """Compare every reference feature's ``current`` values and the reference version's
    ``predictions`` with ``reference``; ``window`` gives the row count and time span."""
    settings = cfg.monitoring
    base = DriftReport(
        status=INSUFFICIENT,
        model_version=str(reference["model_version"]),
        rows=len(window),
        window=_window_span(window),
        thresholds=ReportThresholds(
            psi_warn=settings.psi_warn,
            psi_alert=settings.psi_alert,
            p_value=settings.p_value,
            min_rows=settings.min_rows,
            window=settings.window,
        ),
        reference=ReferenceSummary(rows=reference["rows"], created_at=reference.get("created_at")),
        created_at=now.replace(microsecond=0),
    )
    if len(window) < settings.min_rows:
        return replace(
            base,
            message=f"{len(window)} logged predictions, fewer than monitoring.min_rows "
            f"({settings.min_rows}): too few for a drift verdict",
        )

    thresholds = Thresholds(settings.psi_warn, settings.psi_alert, settings.p_value)
    features: dict[str, FeatureDrift] = {}
    for name, profile in reference["features"].items():
        values = current[name]
        if profile["kind"] == "numeric":
            assert isinstance(values, np.ndarray)
            features[name] = compare_numeric(profile, values, thresholds)
        else:
            assert isinstance(values, list)
            features[name] = compare_categorical(profile, values, thresholds)
    prediction = _output_shift(reference["prediction"], predictions, thresholds, settings.min_rows)
    statuses: list[Status] = [entry.status for entry in features.values()]
    psis = [entry.psi for entry in features.values()]
    if prediction is not None:
        psis.append(prediction.drift.psi)
        if prediction.status != INSUFFICIENT:  # a verdict: the comparison's own status
            statuses.append(prediction.drift.status)
    return replace(
        base,
        status=worst_status(statuses),
        features=features,
        max_psi=max(psis),
        prediction=prediction,
    )


def ranked_features(report: DriftReport) -> list[tuple[str, FeatureDrift]]:
    """Features by severity, then PSI, the most drifted first."""
    return sorted(
        report.features.items(),
        key=lambda item: (STATUS_ORDER[item[1].status], item[1].psi),
        reverse=True,
    )


def next_steps(report: DriftReport) -> list[str]:
    """What an operator should do about this report, most important first."""
    thresholds = report.thresholds
    if report.status == INSUFFICIENT:
        return [
            f"Wait for more traffic: a verdict needs at least {thresholds.min_rows} logged "
            "predictions (monitoring.min_rows).",
            "If traffic is flowing, check that the service logs it (prediction_log.enabled) "
            "to the database monitoring reads (prediction_log.url).",
        ]
    by_status: dict[str, list[str]] = {"alert": [], "warn": []}
    for name, entry in ranked_features(report):
        if entry.status in by_status:
            by_status[entry.status].append(name)
    steps: list[str] = []
    if by_status["alert"]:
        steps += [
            f"Major shift (PSI >= {thresholds.psi_alert}) in: "
            f"{', '.join(by_status['alert'])}. First rule out a data problem upstream (a unit "
            "or scale change, a renamed or new category, a broken join filling in missing "
            "values): compare the plots below. Fix the pipeline rather than retrain on it.",
            "If the population really changed, retrain on recent data and let the promotion "
            f"gate decide: `python -m {PACKAGE} retrain`.",
            "When outcomes for the shifted traffic are known, check the champion's real "
            "accuracy on them: drift says the inputs changed, not that the model got worse.",
        ]
    if by_status["warn"]:
        steps.append(
            f"Moderate shift (PSI >= {thresholds.psi_warn}) in: "
            f"{', '.join(by_status['warn'])}. Watch the next reports; look for an upstream "
            "change or a seasonal pattern before retraining."
        )
    prediction = report.prediction
    if prediction is not None and prediction.status in ("warn", "alert") and not by_status["alert"]:
        steps.append(
            "The model's outputs moved more than any single input: look at combinations of "
            f"inputs, and {OUTPUT_CHECKS[prediction.drift.task]}"
        )
    if prediction is None or prediction.status == INSUFFICIENT:
        rows = 0 if prediction is None else prediction.drift.rows
        steps.append(
            f"Only {rows} logged predictions are from model {report.model_version}: the "
            "prediction shift has no verdict yet (a recent promotion?)."
        )
    return steps or ["Nothing to do: logged inputs and predictions look like the training data."]


def _output_shift(
    profile: PredictionProfile, predictions: Predictions, thresholds: Thresholds, min_rows: int
) -> OutputShift | None:
    """The prediction shift (None: no logged row of the reference's model version); fewer
    rows than ``min_rows`` are compared but get no verdict."""
    try:
        drift = compare_predictions(profile, predictions, thresholds)
    except ValueError:  # nothing logged by this version
        return None
    return OutputShift(drift, INSUFFICIENT if drift.rows < min_rows else drift.status)


def _window_span(window: pd.DataFrame) -> WindowSpan:
    if window.empty or "logged_at" not in window:
        return WindowSpan(first_logged_at=None, last_logged_at=None)
    logged = pd.to_datetime(window["logged_at"], utc=True)
    return WindowSpan(
        first_logged_at=logged.min().isoformat(), last_logged_at=logged.max().isoformat()
    )
