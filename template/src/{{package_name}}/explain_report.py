"""The SHAP part of the reports: plots (``shap_*.png``), a markdown section and a JSON summary.

Drawn here, not with shap's own plot functions: those draw on pyplot's global figure, which a
library (or a server, or two threads) must not touch. Every figure is a fresh
``matplotlib.figure.Figure``, as in ``tasks.base.plot``.

For a multiclass model the summary and dependence plots show, for each row, the values for the
class the model predicted for it (what pushed it there); the bar plot and the table average
|SHAP| over rows and classes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .explain import Display, SampledExplanation
from .tasks.base import markdown_table

SUMMARY_FILE = "shap_summary.png"
BAR_FILE = "shap_bar.png"
DEPENDENCE_FILE = "shap_dependence_{input}.png"
# Categories a dependence plot shows (the most frequent); the rest are left out.
MAX_CATEGORIES = 20


def write_plots(
    reports_dir: Path,
    sampled: SampledExplanation,
    row_values: np.ndarray,
    display: dict[str, Display],
    *,
    max_features: int,
    dependence: int,
) -> list[Path]:
    """The summary (beeswarm-like), bar and dependence plots of the top inputs.

    ``row_values``: ``(rows, inputs)``, the values of each explained row's own output;
    ``display``: the inputs' values of the same rows."""
    explanation = sampled.explanation
    ranked = explanation.mean_abs()
    top = list(ranked.index[:max_features])
    column = {name: i for i, name in enumerate(explanation.features)}
    unit = f"SHAP value ({explanation.output})"
    files = [
        _figure(
            reports_dir / SUMMARY_FILE,
            f"SHAP values of {explanation.rows} test rows (top {len(top)} inputs)",
            len(top),
            lambda figure, axes: _summary(
                figure, axes, [row_values[:, column[n]] for n in top], top, display, unit
            ),
        ),
        _figure(
            reports_dir / BAR_FILE,
            "Mean |SHAP| per input",
            len(top),
            lambda _, axes: _bars(axes, ranked.iloc[: len(top)], explanation.output),
        ),
    ]
    for name in top[:dependence]:
        files.append(
            _figure(
                reports_dir / DEPENDENCE_FILE.format(input=name),
                f"SHAP dependence: {name}",
                0,
                lambda _, axes, name=name: _dependence(  # type: ignore[misc]
                    axes, display[name], row_values[:, column[name]], unit
                ),
            )
        )
    return files


def _figure(path: Path, title: str, labels: int, draw: Callable[[Figure, Any], object]) -> Path:
    """``tasks.base.plot`` with room for ``labels`` input names on the y axis."""
    figure = Figure(figsize=(7, max(4.5, 0.32 * labels + 1.5)), layout="constrained")
    axes = figure.subplots()
    draw(figure, axes)
    axes.set_title(title)
    figure.savefig(path, dpi=100)
    return path


def _summary(
    figure: Figure,
    axes: Any,
    values: list[np.ndarray],
    names: list[str],
    display: dict[str, Display],
    unit: str,
) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    rng = np.random.default_rng(0)
    positions = range(len(names) - 1, -1, -1)  # the most important input on top
    for y, name, shap_values in zip(positions, names, values, strict=True):
        spread = _spread(shap_values, rng)
        shown = display[name]
        if shown.kind in ("category", "length"):
            axes.scatter(shap_values, y + spread, s=8, color="0.55", alpha=0.7, linewidths=0)
            continue
        rank = pd.Series(shown.values.astype("float64")).rank(pct=True).to_numpy()
        known = ~np.isnan(rank)
        axes.scatter(
            shap_values[~known], y + spread[~known], s=8, color="0.8", alpha=0.7, linewidths=0
        )
        axes.scatter(
            shap_values[known],
            y + spread[known],
            s=8,
            c=rank[known],
            cmap="coolwarm",
            vmin=0,
            vmax=1,
            alpha=0.8,
            linewidths=0,
        )
    axes.axvline(0, color="0.4", linewidth=0.8)
    axes.set_yticks(list(positions), names)
    axes.set_xlabel(unit)
    colorbar = figure.colorbar(
        ScalarMappable(norm=Normalize(0, 1), cmap="coolwarm"), ax=axes, ticks=[0, 1], aspect=40
    )
    colorbar.ax.set_yticklabels(["low", "high"])
    colorbar.set_label("input value (grey: category, text or missing)")


def _spread(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vertical offsets that widen where many rows have similar values (a beeswarm's look)."""
    if len(values) == 0:
        return np.zeros(0)
    counts, edges = np.histogram(values, bins=40)
    density = counts[np.clip(np.searchsorted(edges, values, side="right") - 1, 0, 39)]
    return rng.uniform(-0.4, 0.4, len(values)) * density / max(int(counts.max()), 1)


def _bars(axes: Any, ranked: pd.Series, output: str) -> None:
    ordered = ranked.iloc[::-1]
    axes.barh(list(ordered.index), ordered.to_numpy(), color="tab:blue")
    axes.set_xlabel(f"mean |SHAP| ({output})")


def _dependence(axes: Any, shown: Display, values: np.ndarray, unit: str) -> None:
    if shown.kind == "category":
        counts = pd.Series(shown.values).value_counts()
        categories = sorted(counts.index[:MAX_CATEGORIES], key=str)
        where = {category: i for i, category in enumerate(categories)}
        kept = np.array([value in where for value in shown.values], dtype=bool)
        x = np.array([where.get(value, -1) for value in shown.values], dtype=float)
        jitter = np.random.default_rng(0).uniform(-0.25, 0.25, len(x))
        axes.scatter(x[kept] + jitter[kept], values[kept], s=10, alpha=0.6, linewidths=0)
        axes.set_xticks(range(len(categories)), [str(c) for c in categories], rotation=30)
        axes.set_xlabel(shown.label)
    else:
        missing = pd.isna(shown.values)
        axes.scatter(shown.values[~missing], values[~missing], s=10, alpha=0.6, linewidths=0)
        note = f" ({int(missing.sum())} missing not shown)" if missing.any() else ""
        axes.set_xlabel(shown.label + note)
    axes.axhline(0, color="0.4", linewidth=0.8)
    axes.set_ylabel(unit)


def summary(
    sampled: SampledExplanation, row_values: np.ndarray, display: dict[str, Display]
) -> dict[str, Any]:
    """``metrics.json``'s ``shap`` entry: what was explained and each input's mean |SHAP|."""
    explanation = sampled.explanation
    base = explanation.base_values
    return {
        "explainer": explanation.method,
        "output": explanation.output,
        "rows_explained": explanation.rows,
        "rows_available": sampled.rows_available,
        "sampled": sampled.sampled,
        "seed": sampled.seed,
        "reference": sampled.reference,
        "detail": sampled.detail,
        "base_value": base.tolist() if base.ndim else float(base),
        "fallback_reason": sampled.fallback_reason,
        "mean_abs_shap": [
            {
                "feature": name,
                "mean_abs_shap": float(value),
                "direction": _direction(shown, row_values[:, i]),
            }
            for name, value in explanation.mean_abs().items()
            for i in [explanation.features.index(str(name))]
            for shown in [display[str(name)]]
        ],
    }


def _direction(shown: Display, values: np.ndarray) -> float | None:
    """Spearman correlation of an input's value and its SHAP value (numbers and times): +1
    when higher values always push the output up, -1 down; None for categories and texts."""
    if shown.kind in ("category", "length"):
        return None
    numbers = pd.Series(shown.values.astype("float64") if shown.kind == "number" else shown.values)
    if shown.kind == "time":
        numbers = pd.Series(pd.to_datetime(shown.values).asi8, dtype="float64")
        numbers[pd.isna(shown.values)] = np.nan
    pair = pd.DataFrame({"x": numbers.to_numpy(float), "y": values}).dropna()
    if len(pair) < 3 or pair["x"].nunique() < 2 or pair["y"].nunique() < 2:
        return None
    return float(pair["x"].rank().corr(pair["y"].rank()))


def markdown(sampled: SampledExplanation, shap_json: dict[str, Any], max_features: int) -> str:
    """The report's SHAP section."""
    rows = shap_json["mean_abs_shap"]
    total = sum(row["mean_abs_shap"] for row in rows) or 1.0
    table = markdown_table(
        ["input", "mean abs SHAP", "share", "higher value (Spearman of value, SHAP)"],
        [
            [
                row["feature"],
                f"{row['mean_abs_shap']:.4g}",
                f"{row['mean_abs_shap'] / total:.1%}",
                "" if row["direction"] is None else f"{row['direction']:+.2f}",
            ]
            for row in rows[:max_features]
        ],
    )
    fallback = f"\n> Fallback: {sampled.fallback_reason}.\n" if sampled.fallback_reason else ""
    more = f" (top {max_features} of {len(rows)})" if len(rows) > max_features else ""
    return f"""Explainer: {sampled.detail}. Explained: {sampled.describe()}.
Each input's value sums the SHAP values of the columns the model derives from it (one-hot
categories, TF-IDF terms, datetime parts; half of an interaction to each of its two inputs).
{fallback}
{table}

Inputs{more} by mean |SHAP|; share: of the total; the last column says whether higher values
of a numeric input push the output up (+) or down (-).
"""
