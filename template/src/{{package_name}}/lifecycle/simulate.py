"""Traffic simulation: send a sample of the project's own scoring rows to a running service,
optionally drifted.

The traffic is a seeded random sample of ``data.scoring_query`` on ``data.url``, read-only and
in chunks of ``data.chunk_size``. Each row gets a random key and the ``rows`` smallest keys stay,
so memory holds the sample and one chunk whatever the table's size, and the sample does not
depend on the chunk size. A table with fewer rows than asked for is sent whole, then rows are
drawn again. Rows the API would refuse (a value outside the config's bounds or categories, or
missing where the feature is not nullable) are left out and counted.

Without drift the traffic looks like the data the model was trained on, so ``monitor`` says
``ok``. With ``drift=True`` a few of the configured features move, whatever they are (the
numbers are in ``shifts.py``):

- numeric: the first two features whose values vary move by one standard deviation, toward the
  side with more room before the config's ``max`` or ``min`` (and clipped to them: the API
  refuses anything outside);
- categorical: in the first feature with two or more categories, 60% of the rows of the other
  categories move to its least frequent category;
- missing values: the first nullable feature not moved above (else the first nullable one)
  goes missing for 15% more rows.

Any one of these moves is a major shift (PSI well above ``monitoring.psi_alert``), so
``monitor`` alerts on a few hundred drifted rows. The summary lists what moved, and by how
much, and what the service answered: the rows predicted as each class (classification) or the
mean, lowest and highest predicted value (regression). The service logs what it scores;
``make monitor`` then compares that traffic with the champion's training reference.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..config import MAX_CATEGORY_LENGTH, NumericFeature
from ..config_base import PACKAGE
from ..data.coerce import boolean_value, parse_datetimes, unreadable_datetimes
from ..data.extract import iter_source_query
from ..errors import ProjectError
from ..mlops_config import MlopsConfig
from ..records import api_records
from .shifts import CATEGORY_SHARE, EXTRA_MISSING, NUMERIC_SHIFTED, SHIFT_SD

logger = logging.getLogger(__name__)
# Bytes of a batch request that are not records: {"records": [...]}, with room to spare.
BODY_ENVELOPE_BYTES = 64
REGRESSION = "regression"
SHOWN_CLASSES = 5  # the summary names this many of the most predicted classes


@dataclass(frozen=True)
class Traffic:
    """The records to send, and the scoring rows they were drawn from."""

    records: list[dict[str, Any]]
    source_rows: int  # scoring rows the API accepts (the sample's population)
    left_out: int  # scoring rows with a value the API would refuse
    shifts: dict[str, str] = field(default_factory=dict)  # feature -> what drift did to it


@dataclass(frozen=True)
class SimulationSummary:
    """What one simulation sent and what the service answered."""

    url: str
    rows: int  # records sent
    requests: int
    failures: int  # requests answered with a non-2xx status (or an unreadable body)
    first_error: str | None
    scored: int  # records in successful answers
    # Classification: scored records per predicted label (as text), most frequent first.
    predicted: dict[str, int]
    # Regression: the mean, lowest and highest predicted value (None: classification, or
    # nothing scored).
    values: tuple[float, float, float] | None
    model_versions: tuple[str, ...]
    drift: bool
    elapsed_s: float
    source_rows: int  # scoring rows the records were sampled from
    left_out: int  # scoring rows left out: the API would refuse them
    shifts: dict[str, str]  # feature -> what drift did to it

    def outputs(self) -> str:
        """What the service predicted, in a few words."""
        if self.values is not None:
            mean, low, high = self.values
            return f"mean prediction {mean:.4g} (from {low:.4g} to {high:.4g})"
        if not self.predicted:
            return "nothing predicted"
        total = sum(self.predicted.values())
        shown = list(self.predicted.items())[:SHOWN_CLASSES]
        text = ", ".join(f"{label} {n} ({n / total:.1%})" for label, n in shown)
        others = len(self.predicted) - len(shown)
        return f"predicted {text}" + (f" and {others} more classes" if others else "")

    def __str__(self) -> str:
        kind = "drifted" if self.drift else "undrifted"
        lines = [
            f"sent {self.rows} {kind} records to {self.url} in {self.requests} requests "
            f"({self.elapsed_s:.1f}s)",
            f"  sampled from {self.source_rows} scoring rows (data.scoring_query)"
            + (
                f"; {self.left_out} rows left out: the API would refuse their values"
                if self.left_out
                else ""
            ),
            f"  scored {self.scored}, {self.outputs()}; model version(s): "
            f"{', '.join(self.model_versions) or 'none'}",
        ]
        if self.failures:
            lines.append(f"  {self.failures} requests failed; first: {self.first_error}")
        if self.drift:
            lines.append("  shifted:" if self.shifts else "  shifted: nothing (no feature varies)")
            lines += [f"    {name}: {change}" for name, change in self.shifts.items()]
        return "\n".join(lines)


def simulate(
    cfg: MlopsConfig,
    url: str,
    *,
    rows: int = 2000,
    drift: bool = True,
    seed: int = 7,
    batch_size: int = 200,
    timeout_s: float = 10.0,
) -> SimulationSummary:
    """Sample ``rows`` records from the scoring rows (drifted if asked) and POST them to
    ``{url}/predict/batch`` in chunks of ``batch_size`` (fewer if the service's limits,
    ``serving.max_batch_size`` and ``serving.max_body_bytes``, need it). A service that does
    not answer ends the run with a ``ProjectError``; error answers are counted and the run
    goes on."""
    if rows < 1:
        raise ProjectError(f"simulate: rows must be at least 1, got {rows}")
    if batch_size < 1:
        raise ProjectError(f"simulate: batch_size must be at least 1, got {batch_size}")
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ProjectError(f"simulate: '{url}' is not an http(s) URL (e.g. http://127.0.0.1:8000)")
    traffic = build_traffic(cfg, rows=rows, drift=drift, seed=seed)
    records = traffic.records
    size = records_per_request(records, cfg, batch_size)
    requests = failures = scored = 0
    first_error: str | None = None
    versions: set[str] = set()
    labels: Counter[str] = Counter()
    values: list[float] = []
    started = time.perf_counter()
    for offset in range(0, len(records), size):
        chunk = records[offset : offset + size]
        requests += 1
        status, answer = _post(f"{base}/predict/batch", {"records": chunk}, timeout_s, base)
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if not 200 <= status < 300 or not isinstance(predictions, list):
            failures += 1
            if first_error is None:
                first_error = f"HTTP {status}: {_detail(answer)}"
            continue
        scored += len(predictions)
        if cfg.task == REGRESSION:
            values.extend(_numbers(predictions))
        else:
            labels.update(str(p.get("prediction")) for p in predictions if isinstance(p, dict))
        versions.update(str(p["model_version"]) for p in predictions if "model_version" in p)
    summary = SimulationSummary(
        url=base,
        rows=len(records),
        requests=requests,
        failures=failures,
        first_error=first_error,
        scored=scored,
        predicted=dict(labels.most_common()),
        values=(statistics.fmean(values), min(values), max(values)) if values else None,
        model_versions=tuple(sorted(versions)),
        drift=drift,
        elapsed_s=time.perf_counter() - started,
        source_rows=traffic.source_rows,
        left_out=traffic.left_out,
        shifts=traffic.shifts,
    )
    logger.info(
        "simulate: %d records in %d requests to %s (%d failed) in %.1fs",
        summary.rows,
        summary.requests,
        base,
        failures,
        summary.elapsed_s,
    )
    return summary


def records_per_request(records: list[dict[str, Any]], cfg: MlopsConfig, batch_size: int) -> int:
    """``batch_size``, or fewer so a request stays within ``serving.max_batch_size`` records
    and ``serving.max_body_bytes`` (a wide table's records are long)."""
    longest = max((len(json.dumps(record, allow_nan=False)) for record in records), default=1)
    # Each record also takes a comma; the envelope {"records": []} a few bytes more.
    fitting = (cfg.serving.max_body_bytes - BODY_ENVELOPE_BYTES) // (longest + 2)
    return max(1, min(batch_size, cfg.serving.max_batch_size, fitting))


def build_traffic(cfg: MlopsConfig, *, rows: int, drift: bool, seed: int) -> Traffic:
    """``rows`` API records (feature name -> value, None for missing) sampled from the scoring
    rows with ``seed``, drifted if asked. The same seed gives the same records."""
    sample, accepted, refused = sample_scoring_rows(cfg, rows, np.random.default_rng(seed))
    shifts: dict[str, str] = {}
    if drift:
        sample, shifts = drift_frame(sample, cfg, np.random.default_rng(seed + 1))
    return Traffic(api_records(sample, cfg.features), accepted, refused, shifts)


def sample_scoring_rows(
    cfg: MlopsConfig, rows: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, int, int]:
    """A uniform random sample of ``rows`` scoring rows the API accepts, in random order (all
    of them, then more drawn again, if there are fewer), as ``normalized`` values; with the
    number of rows accepted and left out."""
    names = cfg.features.names
    kept: pd.DataFrame | None = None
    keys = np.empty(0)
    accepted = refused = 0
    chunks = iter_source_query(cfg.data, cfg.data.scoring_query, cfg.data.chunk_size)
    try:
        for chunk in chunks:
            missing = [name for name in names if name not in chunk.columns]
            if missing:
                raise ProjectError(
                    f"simulate: data.scoring_query ({cfg.data.scoring_query}) does not return "
                    f"the feature(s) {', '.join(missing)}: simulate sends the scoring rows' "
                    "features, so the query must select every feature in the config"
                )
            values, valid = normalized(chunk, cfg)
            refused += int((~valid).sum())
            values = values[valid]
            accepted += len(values)
            # Keys for the rows in order: the same draws whatever the chunk size.
            chunk_keys = rng.random(len(values))
            kept = values if kept is None else pd.concat([kept, values], ignore_index=True)
            keys = np.concatenate([keys, chunk_keys])
            if len(kept) > rows:
                smallest = np.argpartition(keys, rows - 1)[:rows]
                kept, keys = kept.iloc[smallest].reset_index(drop=True), keys[smallest]
    finally:
        chunks.close()  # disconnects when the loop stops early (an error)
    if kept is None or kept.empty:
        where = f"data.scoring_query ({cfg.data.scoring_query})"
        if refused:
            raise ProjectError(
                f"simulate: all {refused} rows of {where} have a value the API refuses (outside "
                "the config's min/max or categories, or missing where the feature is not "
                "nullable): make the features section of the config describe the data"
            )
        raise ProjectError(
            f"simulate: {where} returned no rows: simulate sends a sample of the scoring rows"
        )
    sample = kept.iloc[np.argsort(keys)].reset_index(drop=True)
    if len(sample) < rows:
        again = rng.integers(0, len(sample), size=rows - len(sample))
        sample = pd.concat([sample, sample.iloc[again]], ignore_index=True)
    return sample, accepted, refused


def normalized(chunk: pd.DataFrame, cfg: MlopsConfig) -> tuple[pd.DataFrame, np.ndarray]:
    """The feature columns as the API takes them (numbers as floats, whole numbers for an int
    feature, NaN for missing; categories and text as strings, booleans as 1.0/0.0, timestamps
    as ISO 8601 text, None for missing), and which rows the API would accept (every value
    within the config's bounds, categories and lengths, and readable as its type)."""
    rows = len(chunk)
    valid = np.ones(rows, dtype=bool)
    columns: dict[str, Any] = {}
    for feature in cfg.features.numeric:
        raw = chunk[feature.name]
        numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        if feature.dtype == "int":
            numbers = np.round(numbers)
        missing = np.isnan(numbers)
        valid &= ~(missing & raw.notna().to_numpy())  # text where a number should be
        valid &= ~np.isinf(numbers)
        if not feature.nullable:
            valid &= ~missing
        low, high = _bounds(feature)
        with np.errstate(invalid="ignore"):
            valid &= missing | ((numbers >= low) & (numbers <= high))
        columns[feature.name] = numbers
    for categorical in cfg.features.categorical:
        allowed = set(categorical.categories)
        labels = np.array(
            [None if pd.isna(value) else str(value) for value in chunk[categorical.name]],
            dtype=object,
        )
        if categorical.unknown == "other":  # any text the API accepts
            known = np.array(
                [label is not None and len(label) <= MAX_CATEGORY_LENGTH for label in labels],
                dtype=bool,
            )
        else:
            known = np.array([label in allowed for label in labels], dtype=bool)
        absent = np.array([label is None for label in labels], dtype=bool)
        valid &= known | (absent & categorical.nullable)
        columns[categorical.name] = labels
    for boolean in cfg.features.boolean:
        flags = [boolean_value(value) for value in chunk[boolean.name].astype(object)]
        readable = np.array([flag is not None for flag in flags], dtype=bool)
        values = np.array([np.nan if flag is None else flag for flag in flags], dtype=np.float64)
        missing = np.isnan(values) & readable
        valid &= readable & (~missing | boolean.nullable)
        columns[boolean.name] = values
    for stamp in cfg.features.datetime:
        raw = chunk[stamp.name].reset_index(drop=True)
        unreadable = unreadable_datetimes(raw).to_numpy()
        stamps = parse_datetimes(raw.where(~unreadable, None))
        valid &= ~unreadable & (~np.isnat(stamps) | stamp.nullable)
        columns[stamp.name] = [None if np.isnat(value) else f"{value}Z" for value in stamps]
    for text in cfg.features.text:
        documents = [None if pd.isna(value) else str(value) for value in chunk[text.name]]
        fits = np.array(
            [doc is None or len(doc) <= text.max_length for doc in documents], dtype=bool
        )
        valid &= fits & np.array([doc is not None or text.nullable for doc in documents])
        columns[text.name] = np.array(documents, dtype=object)
    return pd.DataFrame(columns, index=range(rows)), valid


def drift_frame(
    frame: pd.DataFrame, cfg: MlopsConfig, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Move the features the drift rule picks (see the module docstring); return the drifted
    copy and, per moved feature, what changed."""
    frame = frame.copy()
    rows = len(frame)
    shifts: dict[str, str] = {}
    for feature in cfg.features.numeric:
        if len(shifts) == NUMERIC_SHIFTED:
            break
        change = _shift_numeric(frame, feature)
        if change is not None:
            shifts[feature.name] = change
    for categorical in cfg.features.categorical:
        if len(categorical.categories) < 2:
            continue
        labels = frame[categorical.name].to_numpy(dtype=object).copy()
        counts = {name: int(np.sum(labels == name)) for name in categorical.categories}
        rarest = min(categorical.categories, key=counts.__getitem__)
        movable = np.array([label is not None and label != rarest for label in labels])
        moved = movable & (rng.random(rows) < CATEGORY_SHARE)
        labels[moved] = rarest
        frame[categorical.name] = labels
        shifts[categorical.name] = (
            f"{int(moved.sum())} rows ({moved.mean():.0%}) moved to '{rarest}', the rarest category"
        )
        break
    numeric_names = {f.name for f in cfg.features.numeric}
    nullable = [f.name for f in cfg.features.numeric if f.nullable]
    nullable += [c.name for c in cfg.features.categorical if c.nullable]
    candidates = [name for name in nullable if name not in shifts] or nullable
    if candidates:
        name = candidates[0]
        present = frame[name].notna().to_numpy()
        lost = present & (rng.random(rows) < EXTRA_MISSING)
        if name in numeric_names:
            frame.loc[lost, name] = np.nan
        else:
            frame.loc[lost, name] = None
        change = f"missing for {lost.mean():.0%} more rows"
        shifts[name] = f"{shifts[name]}; {change}" if name in shifts else change
    return frame, shifts


def _shift_numeric(frame: pd.DataFrame, feature: NumericFeature) -> str | None:
    """Move ``feature`` by ``SHIFT_SD`` standard deviations toward the bound with more room,
    clipped to the bounds; None (nothing changed) when its values do not vary."""
    values = frame[feature.name].to_numpy(dtype=np.float64)
    present = values[~np.isnan(values)]
    spread = float(present.std()) if present.size > 1 else 0.0
    if spread == 0.0:
        return None
    step = SHIFT_SD * spread
    if feature.dtype == "int":
        step = max(1.0, float(round(step)))
    low, high = _bounds(feature)
    median = float(np.median(present))
    if high - median < median - low:
        step = -step
    frame[feature.name] = np.clip(values + step, low, high)
    clipped = int(np.sum((present + step < low) | (present + step > high)))
    held = f", {clipped} values held at the bound" if clipped else ""
    return f"{step:+.6g} ({SHIFT_SD:g} standard deviation{held})"


def _bounds(feature: NumericFeature) -> tuple[float, float]:
    """The values the API takes for ``feature`` (whole numbers within them for an int)."""
    low = -math.inf if feature.min is None else feature.min
    high = math.inf if feature.max is None else feature.max
    if feature.dtype == "int":
        low, high = float(math.ceil(low)), float(math.floor(high))
    return low, high


def _numbers(predictions: list[Any]) -> list[float]:
    """The predicted values of regression answers (anything else left out)."""
    return [
        float(p["prediction"])
        for p in predictions
        if isinstance(p, dict)
        and isinstance(p.get("prediction"), int | float)
        and not isinstance(p.get("prediction"), bool)
    ]


def _post(url: str, payload: dict[str, Any], timeout_s: float, base: str) -> tuple[int, Any]:
    """POST JSON; (status, parsed body or text). No answer at all is a ``ProjectError``."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload, allow_nan=False).encode(),
        headers={"Content-Type": "application/json", "X-Request-ID": uuid.uuid4().hex},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, _parse(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _parse(exc.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ProjectError(
            f"no service at {base}: {reason}; start it with `make serve` "
            f"(or `python -m {PACKAGE} serve`) and check the URL"
        ) from None


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace")[:200]


def _detail(answer: Any) -> str:
    if isinstance(answer, dict) and "detail" in answer:
        return str(answer["detail"])
    return str(answer)[:200] or "empty answer"
