"""The drift report for people: drift.md, drift.html (plots embedded) and the PNG plots.

``plots`` draws the most drifted features and the model's outputs against the reference;
``markdown_report`` and ``html_report`` say the same thing, with ``next_steps`` from the report.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .drift import (
    BINARY,
    MULTICLASS,
    OTHER,
    REGRESSION,
    STATUS_ORDER,
    BinaryPredictionDrift,
    BinaryPredictionProfile,
    MulticlassPredictionDrift,
    Predictions,
    RegressionPredictionDrift,
)
from .monitor_report import (
    INSUFFICIENT,
    CurrentValues,
    DriftReport,
    OutputShift,
    next_steps,
    ranked_features,
)

PREDICTION_PLOT = "prediction.png"
PLOTTED_FEATURES = 3  # histograms for the features with the highest PSI
HOLDOUT = "reference (holdout)"  # the legend of the model's outputs on its holdout rows
# What the prediction PSI measures, by task.
PREDICTION_MEASURES = {
    BINARY: "the probabilities",
    MULTICLASS: "the predicted class mix",
    REGRESSION: "the predicted values",
}


def markdown_report(report: DriftReport, plots: Sequence[str]) -> str:
    """drift.md: the report for people."""
    lines = [f"# Drift report: {report.status}", "", _summary(report), ""]
    if report.status == INSUFFICIENT:
        lines += [f"> {report.message}", ""]
    if report.features:
        lines += [
            "## Features",
            "",
            "| feature | kind | PSI | test | statistic | p-value | status |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in _feature_rows(report)]
        lines += ["", _significance_note(report), ""]
    if report.prediction is not None:
        lines += [
            "## Predictions",
            "",
            "| | reference (holdout) | current |",
            "|---|---|---|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in _prediction_rows(report.prediction)]
        lines += ["", _prediction_verdict(report.prediction), ""]
    lines += ["## What to do next", ""]
    lines += [f"- {step}" for step in next_steps(report)]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def html_report(report: DriftReport, directory: Path, plots: Sequence[str]) -> str:
    """drift.html: the same content as drift.md, one self-contained file (plots embedded)."""
    escape = html.escape
    parts = [
        f"<h1>Drift report: {escape(report.status)}</h1>",
        f"<p>{escape(_summary(report))}</p>",
    ]
    if report.status == INSUFFICIENT:
        parts.append(f"<p><strong>{escape(str(report.message))}</strong></p>")
    if report.features:
        header = ("feature", "kind", "PSI", "test", "statistic", "p-value", "status")
        parts += [
            "<h2>Features</h2>",
            _html_table(header, _feature_rows(report)),
            f"<p>{escape(_significance_note(report))}</p>",
        ]
    if report.prediction is not None:
        parts += [
            "<h2>Predictions</h2>",
            _html_table(
                ("", "reference (holdout)", "current"), _prediction_rows(report.prediction)
            ),
            f"<p>{escape(_prediction_verdict(report.prediction))}</p>",
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
    title = escape(f"Drift report {report.model_version} {report.created}")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{style}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def plots(
    directory: Path,
    report: DriftReport,
    reference: Mapping[str, Any],
    current: CurrentValues,
    predictions: Predictions,
) -> list[str]:
    """Draw the most drifted features and the model's outputs into ``directory``; return the
    file names."""
    names = []
    for name, entry in ranked_features(report)[:PLOTTED_FEATURES]:
        profile = reference["features"][name]
        file_name = f"feature_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"
        title = f"{name}: PSI {entry.psi:.3f} ({entry.status})"
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
    prediction = report.prediction
    if prediction is not None:
        profile = reference["prediction"]
        title = f"PSI {prediction.drift.psi:.3f} ({prediction.status})"
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


def _summary(report: DriftReport) -> str:
    window = report.window
    span = (
        f" logged from {window.first_logged_at} to {window.last_logged_at}"
        if window.first_logged_at
        else ""
    )
    return (
        f"Model {report.model_version}: {report.rows} predictions{span}, compared with "
        f"{report.reference.rows} training rows. Created {report.created}."
    )


def _significance_note(report: DriftReport) -> str:
    return (
        f"*: p-value below monitoring.p_value ({report.thresholds.p_value}), a "
        "significant difference. With many rows even negligible shifts are significant, so "
        "PSI sets the status."
    )


def _feature_rows(report: DriftReport) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for name, entry in ranked_features(report):
        label = name
        if entry.unseen_categories:
            label += f" (new: {', '.join(entry.unseen_categories)})"
        rows.append(
            (
                label,
                entry.kind,
                _number(entry.psi),
                entry.test,
                _number(entry.statistic),
                f"{entry.p_value:.3g}" + (" *" if entry.significant else ""),
                entry.status,
            )
        )
    return rows


def _prediction_rows(prediction: OutputShift) -> list[tuple[str, ...]]:
    """The prediction table's rows: reference (holdout) and current, by task."""
    drift = prediction.drift
    if isinstance(drift, RegressionPredictionDrift):
        return [
            ("mean prediction", _value(drift.reference_mean), _value(drift.current_mean)),
            ("median prediction", _value(drift.reference_median), _value(drift.current_median)),
        ]
    if isinstance(drift, MulticlassPredictionDrift):
        reference, current = drift.reference_shares, drift.current_shares
        rows: list[tuple[str, ...]] = [
            (
                f"share predicted {name}",
                _number(reference.get(name, 0.0)),
                _number(current.get(name, 0.0)),
            )
            for name in [*reference, *(name for name in current if name not in reference)]
        ]
        mean = drift.current_mean_probability
        rows.append(
            (
                "mean probability of the predicted class",
                _number(drift.reference_mean_probability),
                "-" if mean is None else _number(mean),
            )
        )
        return rows
    return [
        (
            "positive rate",
            _number(drift.reference_positive_rate),
            _number(drift.current_positive_rate),
        ),
        (
            "mean probability",
            _number(drift.reference_mean_probability),
            _number(drift.current_mean_probability),
        ),
    ]


def _prediction_verdict(prediction: OutputShift) -> str:
    """One sentence: what was compared, its PSI and status (and the test, where there is one)."""
    drift = prediction.drift
    what = PREDICTION_MEASURES[drift.task]
    verdict = f"PSI of {what}: {_number(drift.psi)} ({prediction.status})"
    if not isinstance(drift, BinaryPredictionDrift):  # the others carry a test
        test = "chi-square" if drift.test == "chi2" else "KS"
        verdict += f"; {test} p-value {drift.p_value:.3g}"
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
