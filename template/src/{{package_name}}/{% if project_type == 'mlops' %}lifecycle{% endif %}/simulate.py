"""Traffic simulation: send a fresh batch of customers to a running service, optionally drifted.

The batch is built the way the training data is: a sample warehouse with another seed, read
through ``data.scoring_query``. With ``drift=True`` it then moves the way a real population
does after a price change:

- ``monthly_charges``: every plan costs 40% more;
- ``plan``: 40% of standard and premium customers move down to basic (and pay basic prices);
- ``tenure_months``: a campaign brought in new customers, so tenure is about halved;
- ``payment_method``: a payment provider stopped reporting it for 15% more customers.

Every value stays inside the feature bounds of the config (the API refuses anything else), so
the drift shows up in ``monitor``, not as 422s. The service logs what it scores; ``make
monitor`` then compares that traffic with the champion's training reference.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..data.extract import iter_query, make_engine, read_query
from ..data.sample import PLAN_PRICE, build_sample_warehouse
from ..errors import ProjectError
from ..settings import PACKAGE

logger = logging.getLogger(__name__)

# What drift=True changes, for the README and `simulate --help`.
SHIFTS: dict[str, str] = {
    "monthly_charges": "+40% on every plan",
    "plan": "40% of standard/premium customers move to basic",
    "tenure_months": "halved (a wave of new customers)",
    "payment_method": "missing for 15% more customers",
}
SHIFTED_FEATURES = tuple(SHIFTS)
PRICE_RISE = 1.4
DOWNGRADE_SHARE = 0.4
TENURE_FACTOR = 0.5
EXTRA_MISSING_PAYMENT = 0.15


@dataclass(frozen=True)
class SimulationSummary:
    """What one simulation sent and what the service answered."""

    url: str
    rows: int  # records sent
    requests: int
    failures: int  # requests answered with a non-2xx status (or an unreadable body)
    first_error: str | None
    scored: int  # records in successful answers
    positives: int  # of those, predicted positive
    model_versions: tuple[str, ...]
    drift: bool
    elapsed_s: float

    @property
    def positive_rate(self) -> float:
        return self.positives / self.scored if self.scored else 0.0

    def __str__(self) -> str:
        kind = "drifted" if self.drift else "undrifted"
        lines = [
            f"sent {self.rows} {kind} records to {self.url} in {self.requests} requests "
            f"({self.elapsed_s:.1f}s)",
            f"  scored {self.scored}, predicted positive {self.positives} "
            f"({self.positive_rate:.1%}), model version(s): "
            f"{', '.join(self.model_versions) or 'none'}",
        ]
        if self.failures:
            lines.append(f"  {self.failures} requests failed; first: {self.first_error}")
        if self.drift:
            lines.append(f"  shifted: {', '.join(SHIFTED_FEATURES)}")
        return "\n".join(lines)


def shifted_features() -> tuple[str, ...]:
    """The features ``drift=True`` moves."""
    return SHIFTED_FEATURES


def simulate(
    cfg: Config,
    url: str,
    *,
    rows: int = 2000,
    drift: bool = True,
    seed: int = 7,
    batch_size: int = 200,
    timeout_s: float = 10.0,
) -> SimulationSummary:
    """Build ``rows`` records and POST them to ``{url}/predict/batch`` in chunks of
    ``batch_size`` (at most ``serving.max_batch_size``). A service that does not answer ends
    the run with a ``ProjectError``; error answers are counted and the run goes on."""
    if rows < 1:
        raise ProjectError(f"simulate: rows must be at least 1, got {rows}")
    if batch_size < 1:
        raise ProjectError(f"simulate: batch_size must be at least 1, got {batch_size}")
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ProjectError(f"simulate: '{url}' is not an http(s) URL (e.g. http://127.0.0.1:8000)")
    records = build_records(cfg, rows=rows, drift=drift, seed=seed)
    size = min(batch_size, cfg.serving.max_batch_size)
    requests = failures = scored = positives = 0
    first_error: str | None = None
    versions: set[str] = set()
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
        positives += sum(1 for p in predictions if p.get("prediction") == 1)
        versions.update(str(p["model_version"]) for p in predictions if "model_version" in p)
    summary = SimulationSummary(
        url=base,
        rows=len(records),
        requests=requests,
        failures=failures,
        first_error=first_error,
        scored=scored,
        positives=positives,
        model_versions=tuple(sorted(versions)),
        drift=drift,
        elapsed_s=time.perf_counter() - started,
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


def build_records(cfg: Config, *, rows: int, drift: bool, seed: int) -> list[dict[str, Any]]:
    """``rows`` API records (feature name -> value, None for missing), drifted if asked."""
    frame = _scoring_frame(cfg, rows, seed)
    missing = [name for name in cfg.features.names if name not in frame.columns]
    if missing:
        raise ProjectError(
            f"simulate: {cfg.data.scoring_query} does not return {', '.join(missing)} from the "
            "sample warehouse; simulate builds traffic from the sample data's features"
        )
    frame = frame[cfg.features.names].head(rows).copy()
    if drift:
        frame = _drift(frame, cfg, np.random.default_rng(seed + 1))
    return _to_records(frame, cfg)


def _scoring_frame(cfg: Config, rows: int, seed: int) -> pd.DataFrame:
    """The scoring query run on a throwaway sample warehouse with ``seed``."""
    with tempfile.TemporaryDirectory(prefix="simulate-") as folder:
        sample = cfg.data.sample.model_copy(
            update={
                "url": f"sqlite:///{Path(folder) / 'warehouse.db'}",
                "n_customers": max(rows, 100),
                "seed": seed,
            }
        )
        build_sample_warehouse(sample)
        engine = make_engine(sample.url)
        try:
            chunks = list(
                iter_query(engine, read_query(cfg.data.scoring_query), cfg.data.chunk_size)
            )
        finally:
            engine.dispose()
    return pd.concat(chunks, ignore_index=True)


def _drift(frame: pd.DataFrame, cfg: Config, rng: np.random.Generator) -> pd.DataFrame:
    """Shift the features in ``SHIFTS`` that the config has (see the module docstring)."""
    n = len(frame)
    columns = set(frame.columns)
    if "plan" in columns:
        downgrade = frame["plan"].isin(["standard", "premium"]).to_numpy() & (
            rng.random(n) < DOWNGRADE_SHARE
        )
        frame.loc[downgrade, "plan"] = "basic"
        if "monthly_charges" in columns:
            repriced = PLAN_PRICE["basic"] * rng.lognormal(0, 0.15, size=int(downgrade.sum()))
            frame.loc[downgrade, "monthly_charges"] = repriced.round(2)
    if "monthly_charges" in columns:
        frame["monthly_charges"] = (frame["monthly_charges"] * PRICE_RISE).round(2)
    if "tenure_months" in columns:
        frame["tenure_months"] = (frame["tenure_months"] * TENURE_FACTOR).round()
    nullable = {f.name for f in cfg.features.categorical if f.nullable}
    if "payment_method" in nullable:
        lost = rng.random(n) < EXTRA_MISSING_PAYMENT
        frame["payment_method"] = frame["payment_method"].astype(object)
        frame.loc[lost, "payment_method"] = None
    return frame


def _to_records(frame: pd.DataFrame, cfg: Config) -> list[dict[str, Any]]:
    """JSON-ready records: numbers clipped to the config's bounds and typed as the API expects
    (strict: an int feature takes a JSON integer), NaN as None."""
    columns: dict[str, list[Any]] = {}
    for feature in cfg.features.numeric:
        values = pd.to_numeric(frame[feature.name], errors="coerce").astype(float)
        values = values.clip(lower=feature.min, upper=feature.max)
        cast = int if feature.dtype == "int" else float
        columns[feature.name] = [
            None if math.isnan(v) else cast(round(v) if cast is int else v) for v in values.tolist()
        ]
    for categorical in cfg.features.categorical:
        columns[categorical.name] = [
            v if isinstance(v, str) else None for v in frame[categorical.name].tolist()
        ]
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


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
