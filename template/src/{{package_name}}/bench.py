"""``python -m <package>.bench`` (``make bench``): how fast the service and batch scoring are.

Starts the service as its own process (one uvicorn worker, pinned to CPU 0 when there are two
or more), drives it from a separate process with wrk (pinned to CPU 1) at fixed concurrency, and
reports, as a table and ``reports/bench.json``:

- ``/predict`` requests/s, p50 and p99 latency; the same for a no-op endpoint of the same
  server (``/health``) and their ratio (how close the model path is to the framework's limit);
- ``/predict/batch`` rows/s; in-process ONNX scoring rows/s on one thread;
- cold start (process start -> first 200 from ``/ready``) and the serving process's RSS;
- batch-predict peak memory for two input sizes (chunked reading keeps it flat);
- the serving image's size when a container engine has it.

Numbers from a shared or noisy machine vary: compare ratios and repeated runs, not one value.
wrk comes from your package manager (``apt install wrk``, ``brew install wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import artifacts
from .benchkit import (
    free_port,
    image_size_mb,
    pin,
    run_wrk,
    start_server,
    status_kb,
)
from .config import Config, load_config
from .errors import DataError, ProjectError
from .serving.runtime import OnnxPredictor
from .settings import PACKAGE


def in_process_rows_per_s(predictor: OnnxPredictor, rows: int) -> float:
    """Rows/s of ``predict_columns`` on one thread over ``rows`` copies of the input example."""
    example = predictor.metadata.input_example
    columns = {name: [example[name]] * rows for name in example}
    predictor.predict_columns({name: values[:100] for name, values in columns.items()})
    best = 0.0
    for _ in range(3):  # best of three: the least disturbed run
        start = time.perf_counter()
        predictor.predict_columns(columns)
        best = max(best, rows / (time.perf_counter() - start))
    return best


def batch_peak_memory_mb(
    config: Path, cfg: Config, rows: int, chunk_size: int, work: Path
) -> dict[str, float | None]:
    """Peak RSS of ``python -m <package> predict`` over a CSV of ``rows`` rows."""
    import pandas as pd

    from .predict import SQL_SOURCE, iter_input

    # The first chunk of the scoring query is enough to repeat: a scoring table of any size
    # never has to fit in memory here.
    chunks = iter_input(SQL_SOURCE, cfg, min(rows, 50_000))
    try:
        base = next(chunks)
    except StopIteration:
        raise DataError(f"{cfg.data.scoring_query} returned no rows to benchmark with") from None
    finally:
        chunks.close()
    source = work / f"input_{rows}.csv"
    repeats = -(-rows // len(base))
    pd.concat([base] * repeats, ignore_index=True).head(rows).to_csv(source, index=False)
    command = [sys.executable, "-m", PACKAGE, "predict", "--config", str(config)]
    command += ["--input", str(source), "--output", str(work / f"output_{rows}.csv")]
    command += ["--chunk-size", str(chunk_size)]
    errors = work / f"stderr_{rows}.txt"
    start = time.perf_counter()
    with errors.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        # VmHWM is the child's own high-water mark since it started; ru_maxrss would also
        # count what this (bigger) process held when it forked the child.
        peak_kb = 0
        while process.poll() is None:
            peak_kb = max(peak_kb, status_kb(process.pid, "VmHWM") or 0)
            time.sleep(0.02)
    if process.returncode != 0:
        raise RuntimeError(f"batch predict failed: {errors.read_text()[-2000:]}")
    seconds = time.perf_counter() - start
    peak = peak_kb / 1024 if peak_kb else None
    return {
        "rows": float(rows),
        "chunk_size": float(chunk_size),
        "peak_rss_mb": peak,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {PACKAGE}.bench", description=__doc__)
    parser.add_argument("--config", "-c", type=Path, default=Path("configs/config.yaml"))
    parser.add_argument("--seconds", type=int, default=15, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--batch-rows", type=int, default=100, help="rows per /predict/batch")
    parser.add_argument(
        "--memory-rows",
        type=int,
        nargs=2,
        default=[10_000, 1_000_000],
        metavar=("SMALL", "LARGE"),
        help="batch-predict input sizes to compare",
    )
    parser.add_argument("--image", default=f"{PACKAGE.replace('_', '-')}:latest")
    parser.add_argument("--output", type=Path, default=Path("reports/bench.json"))
    args = parser.parse_args(argv)

    cfg = load_config(args.config)
    predictor = OnnxPredictor(
        artifacts.resolve_model_dir(cfg.paths.models_dir, cfg.serving.pinned_version)
    )
    example = predictor.metadata.input_example
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "pinned": bool(pin(0)),
        },
        "model_version": predictor.metadata.version,
        "model_name": predictor.metadata.model_name,
        "settings": {
            "seconds": args.seconds,
            "connections": args.connections,
            "batch_rows": args.batch_rows,
        },
    }
    results["in_process_rows_per_s"] = in_process_rows_per_s(predictor, 100_000)

    port = free_port()
    server, cold_start = start_server(args.config, port)
    try:
        results["cold_start_s"] = cold_start
        base = f"http://127.0.0.1:{port}"
        if shutil.which("wrk"):
            predict_body = json.dumps(example).encode()
            batch_body = json.dumps({"records": [example] * args.batch_rows}).encode()
            noop = run_wrk(f"{base}/health", args.seconds, args.connections)
            predict = run_wrk(f"{base}/predict", args.seconds, args.connections, predict_body)
            batch = run_wrk(f"{base}/predict/batch", args.seconds, args.connections, batch_body)
            results["noop"] = noop
            results["predict"] = predict
            results["predict_vs_noop"] = predict["requests_per_s"] / noop["requests_per_s"]
            results["batch_rows_per_s"] = batch["requests_per_s"] * args.batch_rows
            results["batch_non_2xx"] = batch["non_2xx"]
        else:
            results["http"] = "skipped: wrk not installed (apt install wrk / brew install wrk)"
        rss_kb = status_kb(server.pid, "VmRSS")
        results["serving_rss_mb"] = rss_kb / 1024 if rss_kb is not None else None
    finally:
        server.terminate()
        server.wait(timeout=15)

    with tempfile.TemporaryDirectory() as tmp:
        # The same chunk size for both runs: the peak should then not depend on the row count.
        chunk = min(args.memory_rows)
        results["batch_memory"] = [
            batch_peak_memory_mb(args.config, cfg, rows, chunk, Path(tmp))
            for rows in args.memory_rows
        ]
    results["image_size_mb"] = image_size_mb(args.image)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(format_table(results))
    print(f"\nwritten to {args.output}")
    return 0


def format_table(results: dict[str, Any]) -> str:
    """The results as a markdown table."""

    def fmt(value: Any, unit: str = "", digits: int = 0) -> str:
        return "n/a" if value is None else f"{value:,.{digits}f}{unit}"

    rows = [("CPUs", str(results["machine"]["cpus"]))]
    for name in ("predict", "noop"):
        if name in results:
            r = results[name]
            label = "/predict" if name == "predict" else "/health (no-op)"
            rows.append((f"{label} req/s", fmt(r["requests_per_s"])))
            rows.append((f"{label} p50 / p99", f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms"))
    if "predict_vs_noop" in results:
        rows.append(("/predict vs no-op", f"{results['predict_vs_noop']:.0%}"))
        rows.append(("/predict/batch rows/s", fmt(results["batch_rows_per_s"])))
    rows.append(("in-process scoring rows/s (1 thread)", fmt(results["in_process_rows_per_s"])))
    rows.append(("cold start (start -> /ready 200)", fmt(results["cold_start_s"], " s", 2)))
    rows.append(("serving RSS", fmt(results.get("serving_rss_mb"), " MB", 0)))
    for run in results["batch_memory"]:
        rows.append(
            (
                f"batch predict {run['rows']:,.0f} rows: peak RSS",
                f"{fmt(run['peak_rss_mb'], ' MB')} in {run['seconds']:.1f} s",
            )
        )
    rows.append(("serving image size", fmt(results.get("image_size_mb"), " MB", 0)))
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ProjectError as exc:  # no model yet, bad config: one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
