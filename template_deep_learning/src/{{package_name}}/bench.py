"""``python -m <package>.bench`` (``make bench``): how fast the service and batch scoring are.

Starts the service as its own process (one uvicorn worker, pinned to CPU 0 when there are two
or more), drives it from a separate process with wrk (pinned to CPU 1) at fixed concurrency, and
reports, as a table and ``reports/bench.json``:

- ``/predict`` (the model's ``input_example`` as JSON pixels) requests/s, p50 and p99 latency;
  the same for a no-op endpoint of the same server (``/health``) and their ratio (how close the
  model path is to the framework's limit);
- ``/predict/image`` (the same image as a PNG upload) requests/s and latency;
- ``/predict/batch`` images/s; in-process ONNX scoring images/s on one thread;
- cold start (process start -> first 200 from ``/ready``) and the serving process's RSS;
- batch-predict (``predict_images``) peak memory for two input sizes (chunked scoring keeps it
  flat);
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
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import artifacts
from .benchkit import (
    free_port,
    image_size_mb,
    pin,
    run_wrk,
    start_server,
    status_kb,
)
from .config import load_config
from .errors import ProjectError
from .imaging import encode_png
from .serving.runtime import OnnxPredictor, to_chw
from .settings import PACKAGE

MULTIPART_BOUNDARY = "bench-boundary-7d0c1e"
# In-process scoring works on at most this many float32 values at once (256 MB).
MAX_IN_PROCESS_VALUES = 64_000_000


def multipart_body(png: bytes) -> bytes:
    """A ``multipart/form-data`` body with ``png`` in the ``file`` field."""
    head = (
        f"--{MULTIPART_BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="example.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    )
    return head.encode() + png + f"\r\n--{MULTIPART_BOUNDARY}--\r\n".encode()


def in_process_images_per_s(predictor: OnnxPredictor, example: np.ndarray, rows: int) -> float:
    """Images/s of ``predict`` on one thread over ``rows`` copies of the input example."""
    rows = max(1, min(rows, MAX_IN_PROCESS_VALUES // example.size))
    batch = np.repeat(example[np.newaxis], rows, axis=0)
    predictor.predict(batch[:100])
    best = 0.0
    for _ in range(3):  # best of three: the least disturbed run
        start = time.perf_counter()
        predictor.predict(batch)
        best = max(best, rows / (time.perf_counter() - start))
    return best


def batch_peak_memory_mb(
    config: Path, png: bytes, rows: int, work: Path
) -> dict[str, float | None]:
    """Peak RSS of ``predict_images`` in a fresh process over a manifest of ``rows`` images.

    The manifest lists 100 distinct files again and again: what grows is the row count, which
    is what chunked scoring must keep out of memory."""
    images = work / "images"
    if not images.is_dir():
        images.mkdir()
        for index in range(100):
            (images / f"{index:03d}.png").write_bytes(png)
    source = work / f"manifest_{rows}.csv"
    paths = [str(images / f"{index % 100:03d}.png") for index in range(rows)]
    source.write_text("path\n" + "\n".join(paths) + "\n", encoding="utf-8")
    output = work / f"predictions_{rows}.csv"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from {PACKAGE}.config import load_config
        from {PACKAGE}.predict import predict_images
        predict_images(load_config({str(config)!r}), Path({str(source)!r}), Path({str(output)!r}))
        """
    )
    errors = work / f"stderr_{rows}.txt"
    start = time.perf_counter()
    with errors.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=stderr
        )
        # VmHWM is the child's own high-water mark since it started; ru_maxrss would also
        # count what this (bigger) process held when it forked the child.
        peak_kb = 0
        while process.poll() is None:
            peak_kb = max(peak_kb, status_kb(process.pid, "VmHWM") or 0)
            time.sleep(0.02)
    if process.returncode != 0:
        raise RuntimeError(f"batch predict failed: {errors.read_text()[-2000:]}")
    seconds = time.perf_counter() - start
    return {
        "rows": float(rows),
        "peak_rss_mb": peak_kb / 1024 if peak_kb else None,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {PACKAGE}.bench", description=__doc__)
    parser.add_argument("--config", "-c", type=Path, default=Path("configs/config.yaml"))
    parser.add_argument("--seconds", type=int, default=15, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--batch-rows", type=int, default=64, help="images per /predict/batch")
    parser.add_argument(
        "--in-process-rows", type=int, default=10_000, help="images per in-process call"
    )
    parser.add_argument(
        "--memory-rows",
        type=int,
        nargs=2,
        default=[1_000, 50_000],
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
    meta = predictor.metadata
    example = to_chw(meta.input_example, meta.channels)
    png = encode_png(example)
    batch_rows = min(args.batch_rows, cfg.serving.max_batch_size)
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "pinned": bool(pin(0)),
        },
        "model_version": meta.version,
        "model": {
            "image_size": meta.image_size,
            "channels": meta.channels,
            "classes": len(meta.classes),
            "parameters": meta.parameter_count,
        },
        "settings": {
            "seconds": args.seconds,
            "connections": args.connections,
            "batch_rows": batch_rows,
        },
    }
    results["in_process_images_per_s"] = in_process_images_per_s(
        predictor, example, args.in_process_rows
    )

    port = free_port()
    server, cold_start = start_server(args.config, port)
    try:
        results["cold_start_s"] = cold_start
        base = f"http://127.0.0.1:{port}"
        if shutil.which("wrk"):
            predict_body = json.dumps({"pixels": meta.input_example}).encode()
            records = [{"pixels": meta.input_example}] * batch_rows
            batch_body = json.dumps({"records": records}).encode()
            noop = run_wrk(f"{base}/health", args.seconds, args.connections)
            predict = run_wrk(f"{base}/predict", args.seconds, args.connections, predict_body)
            image = run_wrk(
                f"{base}/predict/image",
                args.seconds,
                args.connections,
                multipart_body(png),
                f"multipart/form-data; boundary={MULTIPART_BOUNDARY}",
            )
            batch = run_wrk(f"{base}/predict/batch", args.seconds, args.connections, batch_body)
            results["noop"] = noop
            results["predict"] = predict
            results["predict_image"] = image
            results["predict_vs_noop"] = predict["requests_per_s"] / noop["requests_per_s"]
            results["batch_images_per_s"] = batch["requests_per_s"] * batch_rows
            results["non_2xx"] = predict["non_2xx"] + image["non_2xx"] + batch["non_2xx"]
        else:
            results["http"] = "skipped: wrk not installed (apt install wrk / brew install wrk)"
        rss_kb = status_kb(server.pid, "VmRSS")
        results["serving_rss_mb"] = rss_kb / 1024 if rss_kb is not None else None
    finally:
        server.terminate()
        server.wait(timeout=15)

    with tempfile.TemporaryDirectory() as tmp:
        results["batch_memory"] = [
            batch_peak_memory_mb(args.config, png, rows, Path(tmp)) for rows in args.memory_rows
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

    model = results["model"]
    rows = [
        ("CPUs", str(results["machine"]["cpus"])),
        ("model input", f"{model['channels']} x {model['image_size']} x {model['image_size']}"),
    ]
    labels = {
        "predict": "/predict (JSON pixels)",
        "predict_image": "/predict/image (PNG upload)",
        "noop": "/health (no-op)",
    }
    for name, label in labels.items():
        if name in results:
            r = results[name]
            rows.append((f"{label} req/s", fmt(r["requests_per_s"])))
            rows.append((f"{label} p50 / p99", f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms"))
    if "predict_vs_noop" in results:
        rows.append(("/predict vs no-op", f"{results['predict_vs_noop']:.0%}"))
        rows.append(("/predict/batch images/s", fmt(results["batch_images_per_s"])))
        rows.append(("non-2xx responses", fmt(results["non_2xx"])))
    rows.append(("in-process scoring images/s (1 thread)", fmt(results["in_process_images_per_s"])))
    rows.append(("cold start (start -> /ready 200)", fmt(results["cold_start_s"], " s", 2)))
    rows.append(("serving RSS", fmt(results.get("serving_rss_mb"), " MB", 0)))
    for run in results["batch_memory"]:
        rows.append(
            (
                f"batch predict {run['rows']:,.0f} images: peak RSS",
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
