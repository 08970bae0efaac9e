"""Data profile of the training query, and the ``features:`` section it suggests.

``python -m <package> profile`` reads at most ``--rows`` rows of ``data.query``, describes every
column (type, missing share, distinct values, range and quantiles, top values, how well it alone
predicts the target) in ``reports/profile.md`` and ``reports/profile.html``, and proposes the
config's ``features:`` section from what it saw: numbers with a range that covers every observed
value plus a margin, true/false and 0/1 columns as booleans, dates and timestamps as datetime
features, strings with few distinct values as categories (every observed value), strings with
many values as high-cardinality categories (``unknown: other`` with a ``min_frequency``) or, when
they average several words, as free text; ``nullable`` wherever values were missing. Columns
that must not be features are listed with the reason instead: the id and the target,
``data.leaky_columns``, columns unique per row (likely IDs), near-perfect single-column
predictors of the target (likely leaks), constant or empty columns and unsupported types.

``profile --write`` replaces only the lines of the config's ``features:`` section: every other
line, comments included, stays byte for byte. The new section is written by PyYAML, the library
that reads the config, so values it would read as something else (``yes``, ``no``, ``null``,
``1.0`` as a category) are quoted. The result is validated as a whole config, and the proposed
features are checked against the profiled rows, before anything is written; files are replaced
atomically.

The target is handled by one function, ``profile_target``, for each task: the leak score of a
column is its ROC-AUC alone against the target (binary), against each of the most frequent
classes (multiclass, the best one counts), or against "above the median" (regression).
"""

from __future__ import annotations

import html
import math
import numbers
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from ..atomic import replace_text
from ..config import Config, as_label, config_from_dict, usable_feature_name
from ..config_base import PACKAGE, read_yaml
from ..errors import ConfigError, DataError
from .extract import iter_training_chunks

DEFAULT_ROWS = 100_000
# More distinct strings than this: free text or an ID-like code, not a category.
MAX_CATEGORIES = 50
# Strings with more distinct values are free text when they average this many words (judged on
# this many of them), else a high-cardinality categorical (unknown: other, min_frequency).
TEXT_MIN_WORDS = 3
TEXT_SAMPLE = 1000
# min_frequency proposed for a high-cardinality column: a value seen fewer times than this in
# training is grouped with unknown ones.
MIN_FREQUENCY = 10
# A multiclass target's classes listed in the summary, and scored against for leaks.
MAX_SHOWN_CLASSES = 10
MAX_LEAK_CLASSES = 10
# A single column that separates the classes this well is almost always known only after the
# outcome (or is the target in disguise).
LEAK_ROC_AUC = 0.99
# Proposed ranges: the observed min and max, widened by this share of the observed span.
RANGE_MARGIN = 0.1
QUANTILES = (0.01, 0.25, 0.5, 0.75, 0.99)
TOP_VALUES = 5
MARKDOWN_REPORT = "profile.md"
HTML_REPORT = "profile.html"

Kind = Literal[
    "numeric", "boolean", "categorical", "many_values", "text", "datetime", "empty", "other"
]

# Dates and timestamps stored as text (SQLite has no date type): 2024-01-31, 2024-01-31 12:00:00,
# 2024-01-31T12:00:00.5+01:00.
_ISO_DATE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
# A line with its ending, split where YAML breaks lines.
_LINE = re.compile(
    r"[^\r\n\x85\u2028\u2029]*(?:\r\n|[\r\n\x85\u2028\u2029])|[^\r\n\x85\u2028\u2029]+$"
)
# Stands in for the features section while the rest of the config is validated: profiling is
# how a stale or missing section gets replaced, so it must not need a valid one.
_PLACEHOLDER_FEATURES = {"numeric": [{"name": "profile_placeholder_feature"}]}


@dataclass(frozen=True)
class TargetProfile:
    """The target column: its task and how often each value occurs."""

    name: str
    task: str
    counts: dict[str, int]  # classification: rows per class (most frequent first)
    summary: str = ""  # regression: the values' range

    def describe(self) -> str:
        """E.g. ``0: 3,900 (78.0%), 1: 1,100 (22.0%)``, or the range of a numeric target."""
        if self.summary:
            return self.summary
        total = sum(self.counts.values()) or 1
        shown = list(self.counts.items())[:MAX_SHOWN_CLASSES]
        more = len(self.counts) - len(shown)
        return ", ".join(f"{value}: {n:,} ({n / total:.1%})" for value, n in shown) + (
            f", and {more} more classes" if more > 0 else ""
        )


@dataclass(frozen=True)
class ColumnProfile:
    """One column of the query: what it holds and whether it is proposed as a feature.

    ``reason`` is None for a proposed feature and says why otherwise (``excluded_as``: the
    short label of that reason, e.g. ``likely ID``). ``minimum``, ``maximum``,
    ``quantiles`` and ``integral`` describe numeric and boolean columns; ``categories`` lists
    every observed value of a categorical one; ``top`` the most frequent values of the others.
    ``target_auc`` is the ROC-AUC of the column alone as a predictor of the target (0.5: none;
    1: perfect), when it could be computed.
    """

    name: str
    dtype: str
    kind: Kind
    rows: int
    missing: int
    distinct: int
    excluded_as: str | None = None
    reason: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    quantiles: dict[float, float] = field(default_factory=dict)
    integral: bool = False
    categories: list[str] = field(default_factory=list)
    top: list[tuple[str, int]] = field(default_factory=list)
    target_auc: float | None = None

    @property
    def proposed(self) -> bool:
        return self.reason is None

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class DataProfile:
    """The profiled rows of ``data.query``: every column in query order, the target, notes."""

    query: str
    source: str
    rows: int
    more_rows: bool
    id_column: str
    target: TargetProfile
    columns: list[ColumnProfile]
    notes: list[str]

    @property
    def proposed(self) -> list[ColumnProfile]:
        return [column for column in self.columns if column.proposed]

    @property
    def excluded(self) -> list[ColumnProfile]:
        return [column for column in self.columns if not column.proposed]


@dataclass(frozen=True)
class FeatureProposal:
    """The proposed ``features:`` section (YAML-ready) and what it changes worth saying."""

    features: dict[str, Any]
    notes: list[str]


@dataclass(frozen=True)
class ProfileResult:
    """What ``run_profile`` did: the profile, the proposal, the reports, the config it wrote."""

    profile: DataProfile
    proposal: FeatureProposal
    reports: list[Path]
    config_path: Path
    written: bool


def run_profile(
    config_path: Path,
    *,
    rows: int | None = None,
    write: bool = False,
    environ: Mapping[str, str] | None = None,
) -> ProfileResult:
    """Profile ``data.query``, write the reports and, with ``write``, the config's features.

    Everything that can fail is checked before the first file is written: the proposal must
    make a valid config and pass the data checks on the very rows it was profiled on.
    """
    env = os.environ if environ is None else environ
    cfg, raw = load_profile_config(config_path, env)
    frame, more_rows = read_profile_frame(cfg, rows or DEFAULT_ROWS)
    profile = profile_frame(frame, cfg, more_rows=more_rows)
    if write and more_rows:
        # A config written from the first rows only would refuse later rows outside their
        # ranges: before writing, the proposed columns' ranges, categories and nullability
        # are extended over the whole table, streamed chunk by chunk.
        profile = cover_whole_table(profile, cfg, skip=len(frame))
    proposal = propose_features(profile, raw.get("features"))
    check_proposal(frame, raw, proposal.features, env, config_path)
    new_text = (
        updated_config_text(config_path, proposal.features, environ=env, header=_header(profile))
        if write
        else None
    )
    reports = write_profile_reports(profile, proposal, cfg.paths.reports_dir)
    if new_text is not None:
        _replace_file(config_path, new_text)
    return ProfileResult(profile, proposal, reports, config_path, new_text is not None)


def load_profile_config(
    path: Path, environ: Mapping[str, str] | None = None
) -> tuple[Config, dict[str, Any]]:
    """The config to profile with, and the file's raw mapping.

    Every section but ``features`` is validated as usual (environment overrides included): the
    returned config carries a placeholder feature instead of the file's section, which
    ``raw["features"]`` holds as written (it may be stale, invalid or absent).
    """
    raw = read_yaml(path)
    env = os.environ if environ is None else environ
    return config_from_dict({**raw, "features": _PLACEHOLDER_FEATURES}, env, path), raw


def read_profile_frame(cfg: Config, rows: int = DEFAULT_ROWS) -> tuple[pd.DataFrame, bool]:
    """The first ``rows`` rows of ``data.query``, read chunk by chunk, and whether it has more."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, not {rows}")
    chunks: list[pd.DataFrame] = []
    taken = 0
    more_rows = False
    stream = iter_training_chunks(cfg, min(rows, cfg.data.chunk_size))
    try:
        for chunk in stream:
            if taken == rows:
                more_rows = not chunk.empty
                break
            part = chunk.iloc[: rows - taken]
            chunks.append(part)
            taken += len(part)
            if len(chunk) > len(part):
                more_rows = True
                break
    finally:
        # A generator: closing it now ends the query and disposes of its engine.
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    if taken == 0:
        raise DataError(f"{cfg.data.query} returned no rows from {shown_url(cfg.data.url)}")
    return pd.concat(chunks, ignore_index=True), more_rows


def profile_frame(frame: pd.DataFrame, cfg: Config, *, more_rows: bool = False) -> DataProfile:
    """Describe every column of ``frame`` (rows of ``data.query``) and decide which are features.

    Raises ``DataError`` for rows that cannot be trained on at all: none, no id or target
    column, a column name twice, a target that is not binary 0/1.
    """
    where = f"{cfg.data.query} on {shown_url(cfg.data.url)}"
    if frame.empty:
        raise DataError(f"{cfg.data.query} returned no rows from {shown_url(cfg.data.url)}")
    names = [str(name) for name in frame.columns]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(
            f"{where} returns column(s) {', '.join(repeated)} more than once: alias them apart"
        )
    frame = frame.set_axis(names, axis=1).reset_index(drop=True)
    absent = [
        f"'{name}' ({key})"
        for key, name in (("data.id_column", cfg.data.id_column), ("data.target", cfg.data.target))
        if name not in names
    ]
    if absent:
        raise DataError(
            f"{where} has no column {' and no column '.join(absent)}; "
            f"its columns: {_listing(names)}"
        )
    target, labels = profile_target(frame[cfg.data.target], cfg, where)
    columns = [_profile_column(frame[name], name, labels, cfg) for name in names]
    notes = _profile_notes(frame, cfg, target, more_rows)
    return DataProfile(
        query=str(cfg.data.query),
        source=shown_url(cfg.data.url),
        rows=len(frame),
        more_rows=more_rows,
        id_column=cfg.data.id_column,
        target=target,
        columns=columns,
        notes=notes,
    )


def cover_whole_table(profile: DataProfile, cfg: Config, *, skip: int) -> DataProfile:
    """``profile`` with each proposed column's min/max, missing count and categories extended
    over the rows of ``data.query`` after the first ``skip`` (the profiled ones), read in chunks
    so memory stays bounded. A categorical column that turns out to have more than
    ``MAX_CATEGORIES`` values becomes a high-cardinality one. Statistics that describe the
    distribution (quantiles, top values, leak scores) stay those of the profiled rows."""
    columns = {column.name: column for column in profile.proposed}
    minimum = {name: c.minimum for name, c in columns.items() if c.kind != "categorical"}
    maximum = {name: c.maximum for name, c in columns.items() if c.kind != "categorical"}
    integral = {name: c.integral for name, c in columns.items()}
    missing = {name: c.missing for name, c in columns.items()}
    categories = {name: set(c.categories) for name, c in columns.items() if c.kind == "categorical"}
    seen = total = 0
    for chunk in iter_training_chunks(cfg):
        start = max(0, skip - seen)
        seen += len(chunk)
        rest = chunk.iloc[start:]
        total += len(rest)
        for name in columns.keys() & set(map(str, rest.columns)):
            series = rest[name]
            missing[name] += int(series.isna().sum())
            if name in categories:
                categories[name].update(str(value) for value in series.dropna().unique())
                continue
            values = _as_float(series).dropna()
            if values.empty:
                continue
            low, high = float(values.min()), float(values.max())
            before_low, before_high = minimum[name], maximum[name]
            minimum[name] = low if before_low is None else min(before_low, low)
            maximum[name] = high if before_high is None else max(before_high, high)
            finite = values[np.isfinite(values)]
            integral[name] = integral[name] and bool((finite % 1 == 0).all())
    updated = []
    for column in profile.columns:
        if column.name not in columns:
            updated.append(column)
        elif column.name in categories and len(categories[column.name]) > MAX_CATEGORIES:
            # Too many values to list over the whole table: propose it as high-cardinality.
            updated.append(
                replace(
                    column,
                    kind="many_values",
                    categories=[],
                    rows=column.rows + total,
                    missing=missing[column.name],
                )
            )
        else:
            extended: dict[str, Any] = {
                "rows": column.rows + total,
                "missing": missing[column.name],
            }
            if column.name in categories:
                extended["categories"] = sorted(categories[column.name])
            elif column.kind == "numeric":
                extended.update(
                    minimum=minimum[column.name],
                    maximum=maximum[column.name],
                    integral=integral[column.name],
                )
            updated.append(replace(column, **extended))
    note = (
        f"ranges, categories and nullability of the proposed features cover all "
        f"{profile.rows + total:,} rows (the other statistics: the first {profile.rows:,})"
    )
    notes = [n for n in profile.notes if not n.startswith("only the first")]
    return replace(profile, columns=updated, notes=[*notes, note])


def profile_target(series: pd.Series, cfg: Config, where: str) -> tuple[TargetProfile, np.ndarray]:
    """Check the target for the config's task and describe it; return it with the 0/1
    indicator columns the leak scores are measured against (one per column of the array).

    Binary: the two labels (more is an error naming multiclass); multiclass: one indicator per
    class, for the ``MAX_LEAK_CLASSES`` most frequent; regression: "above the median" (a
    non-numeric target is an error). This is the one place a new task extends.
    """
    name = cfg.data.target
    missing = int(series.isna().sum())
    if missing:
        raise DataError(
            f"target '{name}' is missing in {missing:,} of {len(series):,} rows of {where}: "
            "every training row needs a label (filter them out in the query)"
        )
    if cfg.task == "regression":
        numeric = pd.to_numeric(series, errors="coerce").astype("float64")
        if numeric.isna().any() or pd.api.types.is_bool_dtype(series):
            shown = ", ".join(repr(v) for v in series[numeric.isna()].astype(str).unique()[:5])
            raise DataError(
                f"target '{name}' in {where} is not numeric (e.g. {shown or 'true/false'}): "
                "regression predicts a number; for labels set task: binary_classification or "
                "multiclass_classification"
            )
        values = numeric.to_numpy()
        summary = (
            f"numeric: mean {values.mean():.4g}, min {values.min():.4g}, median "
            f"{np.median(values):.4g}, max {values.max():.4g}"
        )
        above = (values > np.median(values)).astype("int64").reshape(-1, 1)
        return TargetProfile(name=name, task=cfg.task, counts={}, summary=summary), above
    text = series.map(lambda value: str(as_label(value)))
    # Most frequent first; ties in label order, so the description is stable.
    counts = text.value_counts().sort_index().sort_values(ascending=False, kind="stable")
    if cfg.task == "binary_classification" and len(counts) > 2:
        shown = ", ".join(repr(value) for value in counts.index[:8])
        raise DataError(
            f"target '{name}' in {where} has {len(counts)} classes ({shown}): set task: "
            "multiclass_classification, or regression for a number"
        )
    classes = counts.index[: 1 if len(counts) <= 2 else MAX_LEAK_CLASSES]
    indicators = np.column_stack([(text == label).to_numpy(dtype="int64") for label in classes])
    profile = TargetProfile(
        name=name, task=cfg.task, counts={str(k): int(v) for k, v in counts.items()}
    )
    return profile, indicators


def propose_features(
    profile: DataProfile, previous: Mapping[str, Any] | None = None
) -> FeatureProposal:
    """The ``features:`` section for the proposed columns.

    ``previous`` is the config's current section as written (any shape): a feature's
    ``description`` is kept when its column is still proposed, and ``interactions`` whose two
    columns are still numeric features are kept; the others are dropped, with a note.
    """
    descriptions, interactions, previous_names = _previous_section(previous)
    groups: dict[str, list[dict[str, Any]]] = {group: [] for group in FEATURE_GROUPS}
    for column in profile.proposed:
        entry: dict[str, Any] = {"name": column.name}
        group = PROPOSED_GROUP[column.kind]
        if column.kind == "categorical":
            entry["categories"] = list(column.categories)
        elif column.kind == "many_values":
            entry["unknown"] = "other"
            entry["min_frequency"] = max(2, min(MIN_FREQUENCY, column.rows // 100))
        elif column.kind == "numeric":
            low, high = _bounds(column)
            if column.integral:
                entry["dtype"] = "int"
            entry.update({"min": low, "max": high})
        if column.missing and column.kind != "text":  # text: nullable by default
            entry["nullable"] = True
        if descriptions.get(column.name):
            entry["description"] = descriptions[column.name]
        groups[group].append(entry)
    numeric = groups["numeric"]
    if not any(groups.values()):
        labels = [column.excluded_as or "" for column in profile.excluded]
        counts = ", ".join(f"{labels.count(label)} {label}" for label in dict.fromkeys(labels))
        example = next(
            (c for c in profile.excluded if c.excluded_as not in ("id column", "target")), None
        )
        raise DataError(
            f"no column of {profile.query} can be a feature ({counts})"
            + (f"; e.g. {example.name}: {example.reason}" if example else "")
        )
    numeric_names = {entry["name"] for entry in numeric}
    kept: list[list[str]] = []
    notes: list[str] = []
    for left, right in interactions:
        gone = [name for name in (left, right) if name not in numeric_names]
        if gone:
            verb = "is not a proposed numeric feature" if len(gone) == 1 else "are not proposed"
            notes.append(f"interaction [{left}, {right}] dropped: {' and '.join(gone)} {verb}")
        else:
            kept.append([left, right])
    proposed = {entry["name"] for entries in groups.values() for entry in entries}
    columns = {column.name for column in profile.columns}
    absent = [name for name in previous_names if name not in columns]
    if absent:
        notes.append(
            f"previous features the query does not return (dropped): {_listing(absent, 8)}"
        )
    excluded = [name for name in previous_names if name in columns and name not in proposed]
    if excluded:
        notes.append(f"previous features now excluded (see why above): {_listing(excluded, 8)}")
    features: dict[str, Any] = {group: entries for group, entries in groups.items() if entries}
    features["interactions"] = kept
    return FeatureProposal(features=features, notes=notes)


def check_proposal(
    frame: pd.DataFrame,
    raw: Mapping[str, Any],
    features: Mapping[str, Any],
    environ: Mapping[str, str],
    source: object,
) -> Config:
    """The config with ``features``, after checking it is valid and accepts the profiled rows'
    feature columns (ranges, categories, nullability); raises otherwise."""
    from .validate import validate_frame  # pandera: imported only when a proposal is checked

    cfg = config_from_dict({**raw, "features": dict(features)}, environ, source)
    validate_frame(frame, cfg, with_target=False, with_id=False)
    return cfg


def features_yaml(features: Mapping[str, Any], header: str = "", newline: str = "\n") -> str:
    """The ``features:`` section as YAML text: one flow mapping per feature, as the shipped
    config writes them, with ``header`` as a comment under ``features:``."""
    body: dict[str, Any] = {}
    for key, value in features.items():
        if key in FEATURE_GROUPS and isinstance(value, list):
            body[key] = [_FlowMapping(v) if isinstance(v, Mapping) else v for v in value]
        elif key == "interactions" and isinstance(value, list):
            body[key] = [_FlowSequence(v) if isinstance(v, list | tuple) else v for v in value]
        else:  # left for the config validation to refuse
            body[key] = value
    text = yaml.dump(
        {"features": body},
        Dumper=_SectionDumper,
        sort_keys=False,
        allow_unicode=True,
        width=120,
    )
    lines = text.splitlines()
    comments = [f"  # {line}".rstrip() for line in header.splitlines()]
    lines[1:1] = comments
    if "  interactions:" in lines:
        at = lines.index("  interactions:")
        lines.insert(at, "  # Derived inside the pipeline: products of numeric pairs.")
    return newline.join(lines) + newline


def updated_config_text(
    config_path: Path,
    features: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    header: str = "",
) -> str:
    """The config file's text with its ``features:`` section replaced by ``features``.

    Only the section's lines change: the lines before its key and from the next top-level key
    on (with the blank and comment lines just before that key) are kept byte for byte. A file
    without the section gets it appended. The result must load into a valid config (with the
    environment's overrides, as ``load_config`` does) and differ from the old one only in
    ``features``; ``ConfigError`` otherwise.
    """
    try:
        # newline="": the file's own line endings, so the lines kept are kept byte for byte.
        with config_path.open(encoding="utf-8", newline="") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {config_path}") from None
    lines = _split_lines(text)
    newline = "\r\n" if "\r\n" in text else "\n"
    section = features_yaml(features, header, newline)
    span = _features_span(text, lines, config_path)
    if span is None:
        separator = "" if not text or text.endswith(("\n", "\r")) else newline
        new_text = text + separator + ("" if not text.strip() else newline) + section
    else:
        start, end = span
        new_text = "".join(lines[:start]) + section + "".join(lines[end:])
    _check_rewrite(text, new_text, features, environ, config_path)
    return new_text


def write_features_section(
    config_path: Path,
    features: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    header: str = "",
) -> None:
    """Replace the config file's ``features:`` section in place (see ``updated_config_text``),
    atomically: a file that fails the checks is left exactly as it was."""
    _replace_file(
        config_path, updated_config_text(config_path, features, environ=environ, header=header)
    )


def write_profile_reports(
    profile: DataProfile, proposal: FeatureProposal, reports_dir: Path
) -> list[Path]:
    """Write ``profile.md`` and a self-contained ``profile.html`` into ``reports_dir``."""
    written = []
    for name, text in (
        (MARKDOWN_REPORT, render_markdown(profile, proposal)),
        (HTML_REPORT, render_html(profile, proposal)),
    ):
        path = reports_dir / name
        _replace_file(path, text)
        written.append(path)
    return written


def summary_lines(result: ProfileResult, command: str = f"python -m {PACKAGE}") -> list[str]:
    """What the ``profile`` command prints."""
    profile, features = result.profile, result.proposal.features
    counts = ", ".join(
        f"{len(features[group])} {group}" for group in FEATURE_GROUPS if features.get(group)
    )
    lines = [
        f"profiled {profile.rows:,} rows of {profile.query} ({profile.source}), "
        f"{len(profile.columns)} columns"
        + ("; the query returns more rows (--rows to read more)" if profile.more_rows else ""),
        f"target {profile.target.name}: {profile.target.describe()}",
        f"proposed features: {counts}, {len(features['interactions'])} interaction(s) kept",
    ]
    if profile.excluded:
        lines.append("excluded columns:")
        lines.extend(f"  {column.name}: {column.reason}" for column in profile.excluded)
    notes = [*profile.notes, *result.proposal.notes]
    if notes:
        lines.append("notes:")
        lines.extend(f"  {note}" for note in notes)
    lines.append(f"reports: {', '.join(str(path) for path in result.reports)}")
    if result.written:
        lines.append(f"{result.config_path}: features: section written (the rest is unchanged)")
    else:
        lines.append(
            f"to apply it: {command} profile --write --config {result.config_path} "
            "(or `make profile WRITE=1`)"
        )
    return lines


def render_markdown(profile: DataProfile, proposal: FeatureProposal) -> str:
    """The profile as Markdown."""
    out = [
        f"# Data profile of `{profile.query}`",
        "",
        f"- source: `{profile.source}`",
        f"- rows profiled: {profile.rows:,}"
        + (" (the first rows only: the query returns more)" if profile.more_rows else ""),
        f"- columns: {len(profile.columns)} ({len(profile.proposed)} proposed as features)",
        f"- target `{profile.target.name}` ({profile.target.task}): {profile.target.describe()}",
        f"- id column: `{profile.id_column}`",
        "",
    ]
    notes = [*profile.notes, *proposal.notes]
    if notes:
        out += ["## Notes", "", *(f"- {_md(note)}" for note in notes), ""]
    out += [
        "## Columns",
        "",
        "| " + " | ".join(_COLUMN_HEADINGS) + " |",
        "|" + "|".join("---" for _ in _COLUMN_HEADINGS) + "|",
    ]
    out += ["| " + " | ".join(_md(cell) for cell in _cells(c)) + " |" for c in profile.columns]
    out += ["", "## Excluded columns", ""]
    out += [f"- `{c.name}`: {_md(c.reason or '')}" for c in profile.excluded] or ["- none"]
    out += [
        "",
        "## Proposed `features:` section",
        "",
        "```yaml",
        features_yaml(proposal.features).rstrip("\n"),
        "```",
        "",
        f"Apply it with `python -m {PACKAGE} profile --write` (comments and other sections of "
        "the config are kept).",
        "",
    ]
    return "\n".join(out)


def render_html(profile: DataProfile, proposal: FeatureProposal) -> str:
    """The profile as one self-contained HTML page (inline style, no scripts)."""
    e = html.escape
    notes = [*profile.notes, *proposal.notes]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Data profile of {e(profile.query)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Data profile of <code>{e(profile.query)}</code></h1>",
        "<ul>",
        f"<li>source: <code>{e(profile.source)}</code></li>",
        f"<li>rows profiled: {profile.rows:,}"
        + (" (the first rows only: the query returns more)" if profile.more_rows else "")
        + "</li>",
        f"<li>columns: {len(profile.columns)} ({len(profile.proposed)} proposed as features)</li>",
        f"<li>target <code>{e(profile.target.name)}</code> ({e(profile.target.task)}): "
        f"{e(profile.target.describe())}</li>",
        f"<li>id column: <code>{e(profile.id_column)}</code></li>",
        "</ul>",
    ]
    if notes:
        parts += ["<h2>Notes</h2><ul>", *(f"<li>{e(note)}</li>" for note in notes), "</ul>"]
    parts += ["<h2>Columns</h2>", "<table><thead><tr>"]
    parts += [f"<th>{e(heading)}</th>" for heading in _COLUMN_HEADINGS]
    parts += ["</tr></thead><tbody>"]
    for column in profile.columns:
        css = "proposed" if column.proposed else "excluded"
        cells = "".join(f"<td>{e(cell)}</td>" for cell in _cells(column))
        parts.append(f'<tr class="{css}">{cells}</tr>')
    parts += ["</tbody></table>", "<h2>Excluded columns</h2><ul>"]
    parts += [f"<li><code>{e(c.name)}</code>: {e(c.reason or '')}</li>" for c in profile.excluded]
    parts += ["</ul>" if profile.excluded else "<li>none</li></ul>"]
    parts += [
        "<h2>Proposed <code>features:</code> section</h2>",
        f"<pre>{e(features_yaml(proposal.features))}</pre>",
        f"<p>Apply it with <code>python -m {e(PACKAGE)} profile --write</code> (comments and "
        "other sections of the config are kept).</p>",
        "</body></html>",
        "",
    ]
    return "\n".join(parts)


def shown_url(url: str) -> str:
    """A database URL as it may be printed: without its password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    # Rendering escapes characters (duckdb:///:memory: becomes %3Amemory%3A): only when needed.
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


# -- columns ----------------------------------------------------------------------------------


def _profile_column(series: pd.Series, name: str, labels: np.ndarray, cfg: Config) -> ColumnProfile:
    rows = len(series)
    missing = int(series.isna().sum())
    kind, values, detail = _classify(series)
    stats: dict[str, Any] = {}
    if values is not None:  # numeric or boolean, as float64 with NaN for missing
        present = values.dropna()
        finite = present[np.isfinite(present)]
        stats["minimum"] = float(present.min()) if len(present) else None
        stats["maximum"] = float(present.max()) if len(present) else None
        if len(present):
            quantiles = np.quantile(present.to_numpy(), QUANTILES)
            stats["quantiles"] = dict(zip(QUANTILES, (float(q) for q in quantiles), strict=True))
        stats["integral"] = bool(
            len(finite) == len(present) and (finite % 1 == 0).all() and _integer_typed(series)
        )
        distinct = int(present.nunique())
    else:
        distinct = _distinct(series)
    if kind == "categorical":
        stats["categories"] = sorted(str(value) for value in series.dropna().unique())
    if kind in ("categorical", "many_values", "text", "boolean", "datetime", "other"):
        counts = series.dropna().astype(str).value_counts().head(TOP_VALUES)
        stats["top"] = [(str(value), int(n)) for value, n in counts.items()]
    auc = None
    if name not in (cfg.data.id_column, cfg.data.target):
        if values is not None:
            auc = _numeric_auc(values.to_numpy(dtype="float64"), labels)
        elif kind in ("categorical", "many_values"):
            auc = _category_auc(series, labels)
    profile = ColumnProfile(
        name=name,
        dtype=str(series.dtype),
        kind=kind,
        rows=rows,
        missing=missing,
        distinct=distinct,
        target_auc=auc,
        **stats,
    )
    exclusion = _exclusion(profile, detail, cfg)
    if exclusion is None:
        return profile
    return replace(profile, excluded_as=exclusion[0], reason=exclusion[1])


def _classify(series: pd.Series) -> tuple[Kind, pd.Series | None, str]:
    """The column's kind; its values as float64 (NaN: missing) when numeric or boolean; a detail
    for kinds that cannot be features."""
    present = series.dropna()
    if present.empty:
        return "empty", None, ""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean", _as_float(series), ""
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime", None, ""
    if pd.api.types.is_timedelta64_dtype(dtype):
        return "other", None, "durations: convert to a number in the query (e.g. seconds)"
    if pd.api.types.is_numeric_dtype(dtype):
        values = _as_float(series)
        return _numeric_kind(values), values, ""
    try:  # the distinct values are enough to tell the kind, and far fewer than the rows
        distinct = pd.unique(present.to_numpy(dtype=object))
    except TypeError:  # unhashable values (lists, dicts from JSON columns)
        distinct = present.to_numpy(dtype=object)
    types = {type(value) for value in distinct}
    if all(issubclass(t, str) for t in types):
        if all(_ISO_DATE.fullmatch(value) for value in distinct):
            return "datetime", None, ""
        if len(distinct) <= MAX_CATEGORIES:
            return "categorical", None, ""
        # Many distinct strings: prose (several words each) or codes with a long tail.
        sample = distinct[:TEXT_SAMPLE]
        words = float(np.mean([len(str(value).split()) for value in sample]))
        return ("text" if words >= TEXT_MIN_WORDS else "many_values"), None, ""
    if all(issubclass(t, bool | np.bool_) for t in types):
        return "boolean", _as_float(series), ""
    if all(issubclass(t, numbers.Number) for t in types):  # Decimal from NUMERIC columns too
        values = _as_float(series)
        return _numeric_kind(values), values, ""
    if all(issubclass(t, date | time | pd.Timestamp) for t in types):
        return "datetime", None, ""
    names = ", ".join(sorted(t.__name__ for t in types))
    return "other", None, f"values of type {names}: cast it to one number or string type"


def _numeric_kind(values: pd.Series) -> Kind:
    present = values.dropna()
    return "boolean" if set(present.unique()) == {0.0, 1.0} else "numeric"


def _as_float(series: pd.Series) -> pd.Series:
    """The values as float64, NaN for missing (numbers, booleans and nullable types alike)."""
    if not (
        pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype)
    ):
        series = pd.to_numeric(series, errors="coerce")  # Python objects: Decimal, bool, int
    return pd.Series(series.to_numpy(dtype="float64", na_value=np.nan), index=series.index)


def _integer_typed(series: pd.Series) -> bool:
    """Whether integral values came as integers: an integer column, or one that holds missing
    values (integer columns with NULLs arrive as floats). A float column without missing
    values that happens to hold whole numbers (a REAL or NUMERIC column) stays float."""
    if pd.api.types.is_integer_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        return True
    if pd.api.types.is_float_dtype(series.dtype):
        return bool(series.isna().any())
    present = series.dropna()
    return all(isinstance(value, int | np.integer) for value in present)


def _distinct(series: pd.Series) -> int:
    present = series.dropna()
    try:
        return int(present.nunique())
    except TypeError:  # unhashable values (lists, dicts from JSON columns)
        return int(present.astype(str).nunique())


def _exclusion(column: ColumnProfile, detail: str, cfg: Config) -> tuple[str, str] | None:
    """Why ``column`` is not proposed as a feature, as (a short label, the reason), or None."""
    if column.name == cfg.data.id_column:
        return "id column", "the id column (data.id_column)"
    if column.name == cfg.data.target:
        return "target", "the target (data.target)"
    if column.name in cfg.data.leaky_columns:
        return "leaky", "listed in data.leaky_columns (known only after the outcome)"
    if column.kind == "empty":
        return "empty", "entirely missing"
    if column.distinct == 1:
        value = column.top[0][0] if column.top else _number(column.minimum)
        where = " that has one" if column.missing else ""
        return "constant", f"a single value ({value}) in every row{where}"
    if column.kind == "other":
        return "unsupported type", detail
    id_like = column.kind in ("categorical", "many_values", "text") or (
        column.kind == "numeric" and column.integral
    )
    if id_like and column.missing == 0 and column.rows > 1 and column.distinct == column.rows:
        return "likely ID", (
            "unique per row: likely an ID (add it to features by hand if it is a real feature)"
        )
    if column.target_auc is not None and column.target_auc >= LEAK_ROC_AUC:
        return "likely leak", (
            f"likely leak: alone it predicts {cfg.data.target} with ROC-AUC "
            f"{column.target_auc:.3f}; if it is known only after the outcome, add it to "
            "data.leaky_columns, else add it to features by hand"
        )
    if not usable_feature_name(column.name):
        return "unusable name", (
            "its name cannot be a model input and API field (letters, digits and _, starting "
            f'with a letter): alias it in the query, e.g. "{column.name}" AS '
            f"{_alias(column.name)}"
        )
    return None


def _alias(name: str) -> str:
    alias = re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_").lower() or "column"
    alias = alias if alias[0].isalpha() else f"c_{alias}"
    return f"{alias}_" if hasattr(BaseModel, alias) else alias


def _profile_notes(
    frame: pd.DataFrame, cfg: Config, target: TargetProfile, more_rows: bool
) -> list[str]:
    notes = []
    if more_rows:
        notes.append(
            f"only the first {len(frame):,} rows were profiled: ranges and categories come "
            "from them (profile --rows N reads more)"
        )
    ids = frame[cfg.data.id_column]
    if ids.isna().any():
        notes.append(
            f"id column '{cfg.data.id_column}' is missing in {int(ids.isna().sum()):,} rows: "
            "validate requires an id in every row"
        )
    duplicated = int(ids.dropna().duplicated().sum())
    if duplicated:
        notes.append(
            f"id column '{cfg.data.id_column}' repeats {duplicated:,} value(s): validate "
            "requires one row per id"
        )
    if target.counts and len(target.counts) < 2:
        notes.append(
            f"the target has a single class ({target.describe()}): training needs both; "
            "leaks were not checked"
        )
    return notes


# -- ranges and leak scores -------------------------------------------------------------------


def _bounds(column: ColumnProfile) -> tuple[float | None, float | None]:
    """min/max covering every observed value, widened by ``RANGE_MARGIN`` of the span, kept at
    or above 0 when every value is, rounded outwards (to whole numbers for integer columns, to
    two significant digits of the span otherwise). An infinite value leaves that side open."""
    low, high = column.minimum, column.maximum
    if low is None or high is None:
        return None, None
    finite = [value for value in (low, high) if math.isfinite(value)]
    span = high - low if len(finite) == 2 else abs(finite[0]) if finite else 0.0
    margin = RANGE_MARGIN * (span or 1.0)
    lower = low - margin
    if low >= 0:
        lower = max(lower, 0.0)
    upper = high + margin
    if column.integral:
        return (
            math.floor(lower) if math.isfinite(low) else None,
            math.ceil(upper) if math.isfinite(high) else None,
        )
    step = 10.0 ** (math.floor(math.log10(span or 1.0)) - 1)
    return (
        _round_to(lower, step, down=True) if math.isfinite(low) else None,
        _round_to(upper, step, down=False) if math.isfinite(high) else None,
    )


def _round_to(value: float, step: float, *, down: bool) -> float:
    """``value`` rounded down (or up) to a multiple of ``step`` (a power of ten), as an int when
    it is a whole number, so the config reads ``max: 1100`` rather than ``max: 1100.0``."""
    digits = max(0, -math.floor(math.log10(step)))
    rounded = round((math.floor if down else math.ceil)(value / step) * step, digits)
    # Floating point can land a hair on the wrong side of ``value``: step once more.
    while (rounded > value) if down else (rounded < value):
        rounded = round(rounded - step if down else rounded + step, digits)
    return int(rounded) if rounded.is_integer() and abs(rounded) < 2**53 else rounded


def _best_auc(scores: np.ndarray, indicators: np.ndarray) -> float | None:
    """The highest ROC-AUC of ``scores`` over the target's indicator columns."""
    known = [
        auc
        for auc in (_roc_auc(scores, indicators[:, k]) for k in range(indicators.shape[1]))
        if auc is not None
    ]
    return max(known) if known else None


def _roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC-AUC of ``scores`` for 0/1 ``labels`` (ties count half), folded so that 1 - AUC
    counts as well as AUC; None without both classes."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    auc = (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    return float(max(auc, 1.0 - auc))


def _numeric_auc(values: np.ndarray, labels: np.ndarray) -> float | None:
    """The raw values' ROC-AUC; missing values ranked lowest and then highest, keeping the
    better, so a value that is present only for one class (a cancellation amount) counts."""
    if not np.isnan(values).any():
        return _best_auc(values, labels)
    scores = [_best_auc(np.nan_to_num(values, nan=fill), labels) for fill in (-np.inf, np.inf)]
    known = [score for score in scores if score is not None]
    return max(known) if known else None


def _category_auc(series: pd.Series, labels: np.ndarray) -> float | None:
    """ROC-AUC of each row's category target rate (missing values: a category of their own),
    the best over the target's indicator columns."""
    keys = series.astype(object).where(series.notna(), "\x00missing").astype(str).to_numpy()
    aucs = []
    for k in range(labels.shape[1]):
        rates = pd.Series(labels[:, k], dtype="float64").groupby(keys).transform("mean")
        aucs.append(_roc_auc(rates.to_numpy(), labels[:, k]))
    known = [auc for auc in aucs if auc is not None]
    return max(known) if known else None


# The config's feature groups, and the group each proposed kind of column goes to.
FEATURE_GROUPS = ("numeric", "categorical", "boolean", "datetime", "text")
PROPOSED_GROUP: dict[str, str] = {
    "numeric": "numeric",
    "categorical": "categorical",
    "many_values": "categorical",
    "boolean": "boolean",
    "datetime": "datetime",
    "text": "text",
}


# -- config text ------------------------------------------------------------------------------


class _FlowMapping(dict[str, Any]):
    """A mapping written on one line: ``{name: age, dtype: int, min: 0, max: 120}``."""


class _FlowSequence(list[Any]):
    """A sequence written on one line: ``[tenure_months, monthly_charges]``."""


class _SectionDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, indenting block sequences under their key as the shipped config
    does (``  numeric:`` then ``    - {...}``)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


_SectionDumper.add_representer(
    _FlowMapping,
    lambda dumper, data: dumper.represent_mapping(
        "tag:yaml.org,2002:map", data.items(), flow_style=True
    ),
)
_SectionDumper.add_representer(
    _FlowSequence,
    lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True),
)


def _header(profile: DataProfile) -> str:
    rows = f"{profile.rows:,} rows" + (" (the first rows)" if profile.more_rows else "")
    return textwrap.fill(
        f"Proposed by `{PACKAGE} profile` from {rows} of {profile.query}: ranges are the "
        f"observed values widened by {RANGE_MARGIN:.0%} of their span, categories every "
        "observed value.",
        width=94,
        break_on_hyphens=False,
        break_long_words=False,
    )


def _split_lines(text: str) -> list[str]:
    """Lines with their endings, split where YAML breaks lines (not on form feeds and the like,
    as ``str.splitlines`` does), so the line numbers agree with PyYAML's marks."""
    return _LINE.findall(text)


def _features_span(text: str, lines: Sequence[str], source: Path) -> tuple[int, int] | None:
    """The line range ``[start, end)`` of the top-level ``features`` entry, without the blank and
    comment lines at its end (they introduce the next section); None if there is none."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {source} is not valid YAML: {exc}") from None
    if not isinstance(root, yaml.MappingNode) or root.flow_style:
        raise ConfigError(
            f"config file {source}: the features section can only be rewritten in a block "
            "mapping of sections (one `key:` per line)"
        )
    keys = [key for key, _ in root.value]
    starts = [key.start_mark.line for key in keys]
    found = [i for i, key in enumerate(keys) if key.value == "features"]
    if not found:
        return None
    if len(found) > 1:
        raise ConfigError(f"config file {source} has more than one features: section")
    index = found[0]
    start = starts[index]
    end = starts[index + 1] if index + 1 < len(starts) else len(lines)
    if start == end or any(line == start for line in starts[index + 1 :]):
        raise ConfigError(f"config file {source}: features: shares a line with another key")
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1
    return start, end


def _check_rewrite(
    old_text: str,
    new_text: str,
    features: Mapping[str, Any],
    environ: Mapping[str, str] | None,
    source: Path,
) -> None:
    old = yaml.safe_load(old_text) or {}
    new = yaml.safe_load(new_text)
    if not isinstance(new, dict) or not isinstance(old, dict):
        raise ConfigError(f"config file {source} must contain a mapping of sections")
    if new.get("features") != _plain(features) or {
        k: v for k, v in new.items() if k != "features"
    } != {k: v for k, v in old.items() if k != "features"}:
        raise ConfigError(
            f"cannot rewrite the features section of {source} safely: the edited file would "
            "read differently (edit it by hand, using the proposal in the profile report)"
        )
    config_from_dict(new, os.environ if environ is None else environ, source)


def _plain(value: Any) -> Any:
    """``value`` as YAML reads it back: mappings as dicts, tuples as lists."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _replace_file(path: Path, text: str) -> None:
    """Write ``text`` over ``path`` atomically, keeping its permissions (a link is followed:
    the file it points at is replaced)."""
    replace_text(path.resolve(), text, keep_mode=True)


def _previous_section(
    previous: Mapping[str, Any] | None,
) -> tuple[dict[str, str], list[tuple[str, str]], list[str]]:
    """Descriptions by name, interaction pairs and feature names from the config's current
    section, read leniently: whatever does not have the expected shape is ignored."""
    descriptions: dict[str, str] = {}
    names: list[str] = []
    interactions: list[tuple[str, str]] = []
    if not isinstance(previous, Mapping):
        return descriptions, interactions, names
    for key in FEATURE_GROUPS:
        entries = previous.get(key)
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
                names.append(entry["name"])
                if isinstance(entry.get("description"), str) and entry["description"]:
                    descriptions[entry["name"]] = entry["description"]
    pairs = previous.get("interactions")
    for pair in pairs if isinstance(pairs, list) else []:
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(n, str) for n in pair):
            interactions.append((pair[0], pair[1]))
    return descriptions, interactions, names


# -- report helpers ---------------------------------------------------------------------------

_COLUMN_HEADINGS = (
    "column",
    "read as",
    "kind",
    "missing",
    "distinct",
    "min",
    "p1 / p25 / p50 / p75 / p99",
    "max",
    "top values",
    "target ROC-AUC",
    "decision",
)

_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}"
    "table{border-collapse:collapse;font-size:.9rem}"
    "th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}tr.excluded td{color:#777}"
    "pre{background:#f6f6f6;padding:1rem;overflow:auto}"
)


def _cells(column: ColumnProfile) -> list[str]:
    quantiles = " / ".join(_number(column.quantiles.get(q)) for q in QUANTILES)
    top = ", ".join(f"{value} ({n:,})" for value, n in column.top)
    if column.kind == "categorical" and len(column.categories) > len(column.top):
        top += f", ... ({len(column.categories)} values)"
    auc = "" if column.target_auc is None else f"{column.target_auc:.3f}"
    kind = column.kind + (" (int)" if column.kind == "numeric" and column.integral else "")
    return [
        column.name,
        column.dtype,
        kind,
        f"{column.missing:,} ({column.missing_share:.1%})",
        f"{column.distinct:,}",
        _number(column.minimum),
        quantiles if column.quantiles else "",
        _number(column.maximum),
        top,
        auc,
        "feature" if column.proposed else f"excluded: {column.reason}",
    ]


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.4g}"


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _listing(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
