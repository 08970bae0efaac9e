"""Monitoring: compare the most recent logged predictions with the champion's drift reference.

``load_window`` reads the last ``monitoring.window`` rows of the prediction log;
``run_monitoring`` compares every feature and the model's outputs (probabilities, class mix or
predicted values, by task) with the reference (``drift.py``) and writes a report folder
``reports/monitoring/<UTC time>/`` (drift.json, drift.md, drift.html and plots) plus
``latest.json``, which the service exports as gauges;
``store_result`` keeps one row per run in the drift table next to the log.

With fewer than ``monitoring.min_rows`` rows the statistics are mostly noise: the report says
``insufficient_data`` and never alerts.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sqlalchemy import create_engine, insert, inspect, make_url, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ..atomic import replace_copy
from ..errors import DataError
from ..errortext import first_line
from ..inputs import MISSING_CATEGORY
from ..mlops_config import MlopsConfig
from ..prediction_store import (
    incompatible_table,
    layout_problem,
    sqlite_file,
    store_tables,
)
from ..settings import PACKAGE
from .drift import (
    BINARY,
    MULTICLASS,
    OTHER,
    REGRESSION,
    STATUS_ORDER,
    BinaryPredictionProfile,
    PredictionProfile,
    Predictions,
    Thresholds,
    compare_categorical,
    compare_numeric,
    compare_predictions,
    label_text,
    worst_status,
)

JSON_FILE = "drift.json"
MARKDOWN_FILE = "drift.md"
HTML_FILE = "drift.html"
PREDICTION_PLOT = "prediction.png"
LATEST_FILE = "latest.json"
INSUFFICIENT = "insufficient_data"
PLOTTED_FEATURES = 3  # histograms for the features with the highest PSI
HOLDOUT = "reference (holdout)"  # the legend of the model's outputs on its holdout rows
# What the prediction PSI measures, and what to look at when only the outputs moved, by task.
PREDICTION_MEASURES = {
    BINARY: "the probabilities",
    MULTICLASS: "the predicted class mix",
    REGRESSION: "the predicted values",
}
OUTPUT_CHECKS = {
    BINARY: "at whether the positive rate still matches the business's capacity.",
    MULTICLASS: "at which classes gained or lost share (see Predictions) and whether the "
    "business can absorb that mix.",
    REGRESSION: "at whether the level of the predicted values (mean, median) still makes sense "
    "for the business.",
}

CurrentValues = dict[str, np.ndarray | list[str]]


@dataclass(frozen=True)
class MonitoringResult:
    """One monitoring run: the overall status, the report (drift.json) and the files written."""

    status: str
    report: dict[str, Any]
    files: list[Path]

    @property
    def max_psi(self) -> float | None:
        value = self.report.get("max_psi")
        return None if value is None else float(value)


def load_window(cfg: MlopsConfig) -> pd.DataFrame:
    """The most recent ``monitoring.window`` logged predictions, oldest first, with the logged
    features expanded into one column each."""
    settings = cfg.prediction_log
    url = _parse_url(settings.url)
    where = url.render_as_string(hide_password=True)
    hint = (
        "start the service with prediction_log.enabled (or send it traffic with "
        f"`python -m {PACKAGE} simulate`), and check prediction_log.url"
    )
    database = sqlite_file(url)
    if database is not None and not database.is_file():
        raise DataError(f"no predictions logged yet at {where}: the file does not exist; {hint}")
    _, predictions, _ = store_tables(settings.table, settings.drift_table)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(settings.table):
                raise DataError(
                    f"no predictions logged yet at {where}: there is no table "
                    f"'{settings.table}'; {hint}"
                )
            problem = layout_problem(connection, predictions)
            if problem is not None:
                raise DataError(incompatible_table(settings.table, settings.url, problem))
            newest_first = (
                select(predictions)
                .order_by(predictions.c.logged_at.desc(), predictions.c.id.desc())
                .limit(cfg.monitoring.window)
            )
            rows = [dict(row) for row in connection.execute(newest_first).mappings()]
    except SQLAlchemyError as exc:
        raise DataError(f"cannot read the prediction log at {where}: {first_line(exc)}") from None
    finally:
        engine.dispose()
    return _window_frame(rows[::-1], [column.name for column in predictions.columns])


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
        plots = (
            []
            if report["status"] == INSUFFICIENT
            else _plots(directory, report, reference, current, predictions)
        )
        _write_json(directory / JSON_FILE, report)
        (directory / MARKDOWN_FILE).write_text(markdown_report(report, plots), encoding="utf-8")
        (directory / HTML_FILE).write_text(html_report(report, directory, plots), encoding="utf-8")
        return [JSON_FILE, MARKDOWN_FILE, HTML_FILE, *plots]

    files = _publish(cfg.monitoring.reports_dir, now, write)
    return MonitoringResult(status=report["status"], report=report, files=files)


def store_result(cfg: MlopsConfig, result: MonitoringResult) -> int:
    """Insert the report into the drift table (created if missing); return the row id."""
    settings = cfg.prediction_log
    url = _parse_url(settings.url)
    database = sqlite_file(url)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    metadata, _, drift_table = store_tables(settings.table, settings.drift_table)
    report = result.report
    engine = create_engine(url)
    try:
        metadata.create_all(engine, tables=[drift_table])
        with engine.begin() as connection:
            inserted = connection.execute(
                insert(drift_table).values(
                    created_at=datetime.fromisoformat(report["created_at"]),
                    model_version=report["model_version"],
                    status=result.status,
                    max_psi=result.max_psi,
                    n_rows=report["rows"],
                    report=json.dumps(report, sort_keys=True, allow_nan=False),
                )
            )
            row_id = inserted.inserted_primary_key
    except SQLAlchemyError as exc:
        where = url.render_as_string(hide_password=True)
        raise DataError(f"cannot store the drift report at {where}: {first_line(exc)}") from None
    finally:
        engine.dispose()
    return int(row_id[0]) if row_id else 0


def current_values(reference: Mapping[str, Any], window: pd.DataFrame) -> CurrentValues:
    """Each reference feature's values in ``window``, prepared as the reference was: numbers
    as float32-representable floats (NaN for missing or unreadable), categories as strings
    with missing values as ``"missing"``. A feature absent from the log counts as missing."""
    values: CurrentValues = {}
    for name, profile in reference["features"].items():
        column = window[name] if name in window else pd.Series([None] * len(window), dtype=object)
        if profile["kind"] == "numeric":
            numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            # The reference went through the same float32 rounding as the model's inputs; a
            # value sitting on a bin edge must land in the same bin on both sides.
            values[name] = numbers.astype(np.float32).astype(np.float64)
        else:
            values[name] = [MISSING_CATEGORY if _is_missing(v) else str(v) for v in column]
    return values


def version_predictions(window: pd.DataFrame, model_version: str) -> Predictions:
    """The outputs logged by ``model_version``: its scores and its predicted labels as text
    (the log's ``prediction`` column is JSON). Another version's outputs (before a promotion)
    say nothing about this model's reference."""
    if window.empty or "prediction" not in window:
        return Predictions(np.empty(0))
    rows = window
    if "model_version" in window:
        rows = window[window["model_version"].astype(str) == model_version]
    scores = (
        pd.to_numeric(rows["score"], errors="coerce").to_numpy(dtype=np.float64)
        if "score" in rows
        else np.full(len(rows), np.nan)
    )
    labels = [label_text(_from_json(value)) for value in rows["prediction"]]
    return Predictions(scores, labels)


def build_report(
    cfg: MlopsConfig,
    reference: Mapping[str, Any],
    window: pd.DataFrame,
    current: CurrentValues,
    predictions: Predictions,
    now: datetime,
) -> dict[str, Any]:
    """The drift report (drift.json): per-feature comparisons, prediction shift, status.

    ``insufficient_data`` reports have no feature entries and no ``prediction``; a report
    without ``prediction`` otherwise means no logged row came from the reference's version.
    """
    settings = cfg.monitoring
    thresholds = Thresholds(settings.psi_warn, settings.psi_alert, settings.p_value)
    report: dict[str, Any] = {
        "status": INSUFFICIENT,
        "model_version": str(reference["model_version"]),
        "rows": len(window),
        "window": _window_span(window),
        "features": {},
        "max_psi": None,
        "thresholds": {
            "psi_warn": settings.psi_warn,
            "psi_alert": settings.psi_alert,
            "p_value": settings.p_value,
            "min_rows": settings.min_rows,
            "window": settings.window,
        },
        "reference": {"rows": reference["rows"], "created_at": reference.get("created_at")},
        "created_at": now.isoformat(timespec="seconds"),
    }
    if len(window) < settings.min_rows:
        report["message"] = (
            f"{len(window)} logged predictions, fewer than monitoring.min_rows "
            f"({settings.min_rows}): too few for a drift verdict"
        )
        return report

    features: dict[str, dict[str, Any]] = {}
    for name, profile in reference["features"].items():
        values = current[name]
        if profile["kind"] == "numeric":
            assert isinstance(values, np.ndarray)
            features[name] = compare_numeric(profile, values, thresholds).as_dict()
        else:
            assert isinstance(values, list)
            features[name] = compare_categorical(profile, values, thresholds).as_dict()
    prediction = _prediction_entry(
        reference["prediction"], predictions, thresholds, settings.min_rows
    )
    statuses = [entry["status"] for entry in features.values()]
    psis = [entry["psi"] for entry in features.values()]
    if prediction is not None:
        report["prediction"] = prediction
        psis.append(prediction["psi"])
        if prediction["status"] != INSUFFICIENT:
            statuses.append(prediction["status"])
    report.update(status=worst_status(statuses), features=features, max_psi=max(psis))
    return report


def ranked_features(report: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Features by severity, then PSI, the most drifted first."""
    return sorted(
        report["features"].items(),
        key=lambda item: (STATUS_ORDER[item[1]["status"]], item[1]["psi"]),
        reverse=True,
    )


def next_steps(report: Mapping[str, Any]) -> list[str]:
    """What an operator should do about this report, most important first."""
    status = report["status"]
    thresholds = report["thresholds"]
    if status == INSUFFICIENT:
        return [
            f"Wait for more traffic: a verdict needs at least {thresholds['min_rows']} logged "
            "predictions (monitoring.min_rows).",
            "If traffic is flowing, check that the service logs it (prediction_log.enabled) "
            "to the database monitoring reads (prediction_log.url).",
        ]
    by_status: dict[str, list[str]] = {"alert": [], "warn": []}
    for name, entry in ranked_features(report):
        if entry["status"] in by_status:
            by_status[entry["status"]].append(name)
    steps: list[str] = []
    if by_status["alert"]:
        steps += [
            f"Major shift (PSI >= {thresholds['psi_alert']}) in: "
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
            f"Moderate shift (PSI >= {thresholds['psi_warn']}) in: "
            f"{', '.join(by_status['warn'])}. Watch the next reports; look for an upstream "
            "change or a seasonal pattern before retraining."
        )
    prediction = report.get("prediction") or {"status": INSUFFICIENT, "rows": 0}
    if prediction["status"] in ("warn", "alert") and not by_status["alert"]:
        steps.append(
            "The model's outputs moved more than any single input: look at combinations of "
            f"inputs, and {OUTPUT_CHECKS[prediction.get('task', BINARY)]}"
        )
    if prediction["status"] == INSUFFICIENT:
        steps.append(
            f"Only {prediction['rows']} logged predictions are from model "
            f"{report['model_version']}: the prediction shift has no verdict yet (a recent "
            "promotion?)."
        )
    return steps or ["Nothing to do: logged inputs and predictions look like the training data."]


def markdown_report(report: Mapping[str, Any], plots: Sequence[str]) -> str:
    """drift.md: the report for people."""
    lines = [f"# Drift report: {report['status']}", "", _summary(report), ""]
    if report["status"] == INSUFFICIENT:
        lines += [f"> {report['message']}", ""]
    if report["features"]:
        lines += [
            "## Features",
            "",
            "| feature | kind | PSI | test | statistic | p-value | status |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in _feature_rows(report)]
        lines += ["", _significance_note(report), ""]
    prediction = report.get("prediction")
    if prediction is not None:
        lines += [
            "## Predictions",
            "",
            "| | reference (holdout) | current |",
            "|---|---|---|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in _prediction_rows(prediction)]
        lines += ["", _prediction_verdict(prediction), ""]
    lines += ["## What to do next", ""]
    lines += [f"- {step}" for step in next_steps(report)]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def html_report(report: Mapping[str, Any], directory: Path, plots: Sequence[str]) -> str:
    """drift.html: the same content as drift.md, one self-contained file (plots embedded)."""
    escape = html.escape
    parts = [
        f"<h1>Drift report: {escape(report['status'])}</h1>",
        f"<p>{escape(_summary(report))}</p>",
    ]
    if report["status"] == INSUFFICIENT:
        parts.append(f"<p><strong>{escape(report['message'])}</strong></p>")
    if report["features"]:
        header = ("feature", "kind", "PSI", "test", "statistic", "p-value", "status")
        parts += [
            "<h2>Features</h2>",
            _html_table(header, _feature_rows(report)),
            f"<p>{escape(_significance_note(report))}</p>",
        ]
    prediction = report.get("prediction")
    if prediction is not None:
        parts += [
            "<h2>Predictions</h2>",
            _html_table(("", "reference (holdout)", "current"), _prediction_rows(prediction)),
            f"<p>{escape(_prediction_verdict(prediction))}</p>",
        ]
    steps = "".join(f"<li>{escape(step)}</li>" for step in next_steps(report))
    parts += ["<h2>What to do next</h2>", f"<ul>{steps}</ul>"]
    for name in plots:
        encoded = base64.b64encode((directory / name).read_bytes()).decode("ascii")
        parts.append(f'<img alt="{escape(name)}" src="data:image/png;base64,{encoded}">')
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em}"
        ".alert{background:#fdd}.warn{background:#ffd}img{max-width:100%;display:block}"
    )
    title = escape(f"Drift report {report['model_version']} {report['created_at']}")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{style}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def _prediction_entry(
    profile: PredictionProfile, predictions: Predictions, thresholds: Thresholds, min_rows: int
) -> dict[str, Any] | None:
    """The prediction shift (None: no logged row of the reference's model version); fewer
    rows than ``min_rows`` are compared but get no verdict."""
    try:
        entry = compare_predictions(profile, predictions, thresholds).as_dict()
    except ValueError:  # nothing logged by this version
        return None
    if entry["rows"] < min_rows:
        entry["status"] = INSUFFICIENT
    return entry


def _window_frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    base = pd.DataFrame(rows, columns=columns).drop(columns="features")
    try:
        features = pd.DataFrame([json.loads(row["features"]) for row in rows], index=base.index)
    except (TypeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"the prediction log has a row whose features are not JSON: {exc}"
        ) from None
    frame = pd.concat([base, features.drop(columns=base.columns, errors="ignore")], axis=1)
    # SQLite returns naive datetimes; the log always writes UTC.
    frame["logged_at"] = pd.to_datetime(frame["logged_at"], utc=True)
    return frame


def _window_span(window: pd.DataFrame) -> dict[str, str | None]:
    if window.empty or "logged_at" not in window:
        return {"first_logged_at": None, "last_logged_at": None}
    logged = pd.to_datetime(window["logged_at"], utc=True)
    return {
        "first_logged_at": logged.min().isoformat(),
        "last_logged_at": logged.max().isoformat(),
    }


def _summary(report: Mapping[str, Any]) -> str:
    window = report["window"]
    span = (
        f" logged from {window['first_logged_at']} to {window['last_logged_at']}"
        if window["first_logged_at"]
        else ""
    )
    return (
        f"Model {report['model_version']}: {report['rows']} predictions{span}, compared with "
        f"{report['reference']['rows']} training rows. Created {report['created_at']}."
    )


def _significance_note(report: Mapping[str, Any]) -> str:
    return (
        f"*: p-value below monitoring.p_value ({report['thresholds']['p_value']}), a "
        "significant difference. With many rows even negligible shifts are significant, so "
        "PSI sets the status."
    )


def _feature_rows(report: Mapping[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for name, entry in ranked_features(report):
        label = name
        if entry.get("unseen_categories"):
            label += f" (new: {', '.join(entry['unseen_categories'])})"
        rows.append(
            (
                label,
                entry["kind"],
                _number(entry["psi"]),
                entry["test"],
                _number(entry["statistic"]),
                f"{entry['p_value']:.3g}" + (" *" if entry["significant"] else ""),
                entry["status"],
            )
        )
    return rows


def _prediction_rows(prediction: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The prediction table's rows: reference (holdout) and current, by task."""
    task = prediction.get("task", BINARY)
    if task == REGRESSION:
        return [
            (
                "mean prediction",
                _value(prediction["reference_mean"]),
                _value(prediction["current_mean"]),
            ),
            (
                "median prediction",
                _value(prediction["reference_median"]),
                _value(prediction["current_median"]),
            ),
        ]
    if task == MULTICLASS:
        reference, current = prediction["reference_shares"], prediction["current_shares"]
        rows: list[tuple[str, ...]] = [
            (
                f"share predicted {name}",
                _number(reference.get(name, 0.0)),
                _number(current.get(name, 0.0)),
            )
            for name in [*reference, *(name for name in current if name not in reference)]
        ]
        mean = prediction["current_mean_probability"]
        rows.append(
            (
                "mean probability of the predicted class",
                _number(prediction["reference_mean_probability"]),
                "-" if mean is None else _number(mean),
            )
        )
        return rows
    return [
        (
            "positive rate",
            _number(prediction["reference_positive_rate"]),
            _number(prediction["current_positive_rate"]),
        ),
        (
            "mean probability",
            _number(prediction["reference_mean_probability"]),
            _number(prediction["current_mean_probability"]),
        ),
    ]


def _prediction_verdict(prediction: Mapping[str, Any]) -> str:
    """One sentence: what was compared, its PSI and status (and the test, where there is one)."""
    what = PREDICTION_MEASURES[prediction.get("task", BINARY)]
    verdict = f"PSI of {what}: {_number(prediction['psi'])} ({prediction['status']})"
    if "p_value" in prediction:
        test = "chi-square" if prediction["test"] == "chi2" else "KS"
        verdict += f"; {test} p-value {prediction['p_value']:.3g}"
    return verdict + "."


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    # Rows ending in a status are coloured by it (see the style in html_report).
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join(
        (f'<tr class="{row[-1]}">' if row[-1] in STATUS_ORDER else "<tr>")
        + "".join(f"<td>{html.escape(cell)}</td>" for cell in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _number(value: float) -> str:
    return f"{value:.4f}"


def _value(value: float) -> str:
    """A predicted value: four significant digits, whatever its scale."""
    return f"{value:.4g}"


def _plots(
    directory: Path,
    report: Mapping[str, Any],
    reference: Mapping[str, Any],
    current: CurrentValues,
    predictions: Predictions,
) -> list[str]:
    names = []
    for name, entry in ranked_features(report)[:PLOTTED_FEATURES]:
        profile = reference["features"][name]
        file_name = f"feature_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"
        title = f"{name}: PSI {entry['psi']:.3f} ({entry['status']})"
        values = current[name]
        if profile["kind"] == "numeric":
            assert isinstance(values, np.ndarray)
            sample = np.asarray(profile["sample"], dtype=np.float64)
            _plot(
                directory / file_name,
                title,
                partial(_histograms, reference=sample, current=values, label=name),
            )
        else:
            assert isinstance(values, list)
            fractions = profile["fractions"]
            _plot(
                directory / file_name,
                title,
                partial(_category_bars, reference=fractions, current=values),
            )
        names.append(file_name)
    prediction = report.get("prediction")
    if prediction is not None:
        profile = reference["prediction"]
        title = f"PSI {prediction['psi']:.3f} ({prediction['status']})"
        draw: Callable[[Any], None]
        if profile["task"] == MULTICLASS:
            title = f"Predicted class: {title}"
            draw = partial(
                _category_bars,
                reference=profile["fractions"],
                current=predictions.labels,
                reference_label=HOLDOUT,
            )
        elif profile["task"] == REGRESSION:
            title = f"Predicted value: {title}"
            draw = partial(
                _histograms,
                reference=np.asarray(profile["sample"], dtype=np.float64),
                current=predictions.scores,
                label="predicted value",
                reference_label=HOLDOUT,
            )
        else:
            title = f"Predicted probability: {title}"
            draw = partial(
                _probability_histograms, profile=profile, probabilities=predictions.scores
            )
        _plot(directory / PREDICTION_PLOT, title, draw)
        names.append(PREDICTION_PLOT)
    return names


def _plot(path: Path, title: str, draw: Callable[[Any], None]) -> None:
    # The object API, not pyplot: no global figure state, nothing left open.
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    draw(axes)
    axes.set_title(title)
    figure.savefig(path, dpi=90)


def _histograms(
    axes: Any,
    reference: np.ndarray,
    current: np.ndarray,
    label: str,
    reference_label: str = "reference (training)",
) -> None:
    present = current[~np.isnan(current)]
    combined = np.concatenate([reference, present])
    if combined.size == 0:
        axes.text(0.5, 0.5, "no values", ha="center", transform=axes.transAxes)
        return
    # The central 99% sets the range, so one extreme value does not squash the picture.
    low, high = np.percentile(combined, [0.5, 99.5])
    high = high if high > low else low + 1.0
    bins = np.linspace(low, high, 31)
    for values, legend in ((reference, reference_label), (present, "current (logged)")):
        if values.size:
            axes.hist(
                np.clip(values, low, high),
                bins=bins,
                density=True,
                histtype="step",
                linewidth=1.5,
                label=legend,
            )
    axes.set_xlabel(label)
    axes.set_ylabel("density")
    axes.legend()


def _category_bars(
    axes: Any,
    reference: Mapping[str, float],
    current: list[str],
    reference_label: str = "reference (training)",
) -> None:
    counts = pd.Series(current, dtype=object).map(lambda v: v if v in reference else OTHER)
    shares = counts.value_counts(normalize=True)
    names = [*reference, *([OTHER] if OTHER in shares else [])]
    positions = np.arange(len(names))
    axes.barh(
        positions - 0.2,
        [reference.get(n, 0.0) for n in names],
        height=0.4,
        label=reference_label,
    )
    axes.barh(
        positions + 0.2,
        [float(shares.get(n, 0.0)) for n in names],
        height=0.4,
        label="current (logged)",
    )
    axes.set_yticks(positions, names)
    axes.set_xlabel("fraction of rows")
    axes.legend()


def _probability_histograms(
    axes: Any, profile: BinaryPredictionProfile, probabilities: np.ndarray
) -> None:
    bins = np.linspace(0.0, 1.0, 21)
    axes.hist(
        profile["sample"],
        bins=bins,
        density=True,
        histtype="step",
        linewidth=1.5,
        label=HOLDOUT,
    )
    axes.hist(
        probabilities[~np.isnan(probabilities)],
        bins=bins,
        density=True,
        histtype="step",
        linewidth=1.5,
        label="current (logged)",
    )
    axes.axvline(profile["threshold"], color="grey", linestyle="--", label="threshold")
    axes.set_xlabel("probability")
    axes.legend()


def _publish(reports_dir: Path, now: datetime, write: Callable[[Path], list[str]]) -> list[Path]:
    """Let ``write`` fill a temporary folder, rename it to ``reports_dir/<UTC time>`` and copy
    its drift.json to ``latest.json``; nothing is visible unless everything was written."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".drift-", dir=reports_dir))
    try:
        staging.chmod(0o755)  # mkdtemp folders are private; reports are for everyone
        names = write(staging)
        final = _free_name(reports_dir, f"{now:%Y%m%dT%H%M%SZ}")
        staging.replace(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    latest = reports_dir / LATEST_FILE
    replace_copy(final / JSON_FILE, latest)
    return [*(final / name for name in names), latest]


def _free_name(parent: Path, stem: str) -> Path:
    candidate, suffix = parent / stem, 1
    while candidate.exists():
        suffix += 1
        candidate = parent / f"{stem}-{suffix}"
    return candidate


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.write_text(
        json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8"
    )


def _parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise DataError(
            f"prediction_log.url '{url}' is not a database URL (e.g. sqlite:///data/x.db)"
        ) from None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _from_json(value: Any) -> Any:
    """A logged prediction (JSON text) as the value it was; anything else as it is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)
