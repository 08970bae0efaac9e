"""The benchmark harness every project type's ``benchmarks/bench.py`` (``make bench``) shares:
the command line, a pinned service process and its cold start, wrk runs and their parsing,
Open Inference Protocol request bodies, a child process's peak memory, the container image's
size, and the results file and table.

It lives outside ``src/`` so it never ships in the serving image. Standard library only, and it
knows the package only by the name ``bench.py`` passes in (wrk, taskset and a container engine
are optional external tools).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

WRK_POST_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local f = io.open(os.getenv("BENCH_BODY_FILE"), "rb")
wrk.body = f:read("*a")
f:close()
"""
WRK_MISSING = "skipped: wrk not installed (apt install wrk / brew install wrk)"


def argument_parser(
    package: str,
    description: str | None,
    *,
    unit: str,
    batch_rows: int,
    memory_rows: tuple[int, int],
) -> argparse.ArgumentParser:
    """The options of every project type's bench; ``unit`` names what is scored (rows,
    images)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=description)
    parser.add_argument("--config", "-c", type=Path, default=Path("configs/config.yaml"))
    parser.add_argument("--seconds", type=int, default=15, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--batch-rows", type=int, default=batch_rows, help=f"{unit} per /predict/batch"
    )
    parser.add_argument(
        "--memory-rows",
        type=int,
        nargs=2,
        default=list(memory_rows),
        metavar=("SMALL", "LARGE"),
        help="batch-predict input sizes to compare",
    )
    parser.add_argument("--image", default=f"{package.replace('_', '-')}:latest")
    parser.add_argument("--output", type=Path, default=Path("reports/bench.json"))
    return parser


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pinned": bool(pin(0)),
    }


def best_rate(run: Callable[[], object], count: int) -> float:
    """``count`` divided by the fastest of three calls of ``run``: the least disturbed one.
    Warm the code path up before calling this."""
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        run()
        best = max(best, count / (time.perf_counter() - start))
    return best


def measure_service(
    package: str, config: Path, drive: Callable[[str], dict[str, Any]]
) -> dict[str, Any]:
    """Start the service, time its cold start, let ``drive`` load it (given its base URL) when
    wrk is installed, and read the service's memory; stop it whatever happens."""
    port = free_port()
    server, cold_start = start_server(package, config, port)
    results: dict[str, Any] = {}
    try:
        results["cold_start_s"] = cold_start
        if shutil.which("wrk"):
            results.update(drive(f"http://127.0.0.1:{port}"))
        else:
            results["http"] = WRK_MISSING
        rss_kb = status_kb(server.pid, "VmRSS")
        results["serving_rss_mb"] = rss_kb / 1024 if rss_kb is not None else None
    finally:
        server.terminate()
        server.wait(timeout=15)
    return results


def peak_memory(command: Sequence[str], errors: Path) -> tuple[float | None, float]:
    """Run ``command`` (its stderr to ``errors``); return its peak RSS in MB (None where /proc
    is unavailable) and its seconds."""
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
    return (peak_kb / 1024 if peak_kb else None), seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(cpu: int) -> list[str]:
    """A taskset prefix pinning to ``cpu`` when possible (Linux, two or more CPUs)."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


def get_json(url: str) -> Any:
    """The JSON answer of a GET."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def oip_infer_body(
    metadata: Mapping[str, Any], rows: int, values: Callable[[str], list[Any]]
) -> bytes:
    """An Open Inference Protocol inference request of ``rows`` rows, as JSON tensors: every
    input of the model ``metadata`` (``GET /v2/models/<name>``) holding ``values(name)``, one
    row's values flat, once per row."""
    inputs = [
        {
            "name": spec["name"],
            "shape": [rows if dim == -1 else dim for dim in spec["shape"]],
            "datatype": spec["datatype"],
            "data": values(spec["name"]) * rows,
        }
        for spec in metadata["inputs"]
    ]
    return json.dumps({"inputs": inputs}).encode()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def status_kb(pid: int, field: str) -> int | None:
    """A memory field (VmRSS, VmHWM) of a process from /proc, in kB; None where unavailable."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"{field}:\s+(\d+) kB", status)
    return int(match.group(1)) if match else None


def start_server(package: str, config: Path, port: int) -> tuple[subprocess.Popen[bytes], float]:
    """Start the service; return it and the seconds from process start to /ready == 200."""
    command = [*pin(0), sys.executable, "-m", f"{package}.serving", "--config", str(config)]
    command += ["--port", str(port)]
    env = {**os.environ, f"{package.upper()}_SERVING__LOG_LEVEL": "warning"}
    start = time.perf_counter()
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = start + 60
    while time.perf_counter() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the service exited: {server.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if http_status(f"http://127.0.0.1:{port}/ready") == 200:
                return server, time.perf_counter() - start
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.005)
    server.terminate()
    raise RuntimeError("the service did not become ready within 60 s")


def run_wrk(
    url: str,
    seconds: int,
    connections: int,
    body: bytes | None = None,
    content_type: str = "application/json",
) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) from one wrk run on CPU 1."""
    command = [*pin(1), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        if body is not None:
            (Path(tmp) / "body").write_bytes(body)
            (Path(tmp) / "post.lua").write_text(WRK_POST_SCRIPT)
            env["BENCH_BODY_FILE"] = str(Path(tmp) / "body")
            env["BENCH_CONTENT_TYPE"] = content_type
            command[-1:-1] = ["-s", str(Path(tmp) / "post.lua")]
        out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": latency_ms(out, "50%"),
        "p99_ms": latency_ms(out, "99%"),
        "non_2xx": float(m.group(1))
        if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out))
        else 0.0,
    }


def latency_ms(wrk_output: str, percentile: str) -> float:
    match = re.search(rf"{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\b", wrk_output)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def image_size_mb(image: str) -> float | None:
    for engine in ("docker", "podman"):
        if shutil.which(engine) is None:
            continue
        result = subprocess.run(
            [engine, "image", "inspect", "--format", "{{.Size}}", image],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0 and result.stdout.strip().isdigit():
            return int(result.stdout.strip()) / 1e6
    return None


def fmt(value: Any, unit: str = "", digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{unit}"


def format_table(
    results: Mapping[str, Any],
    *,
    unit: str,
    endpoints: Mapping[str, str],
    model_rows: Sequence[tuple[str, str]] = (),
) -> str:
    """The results as a markdown table. ``unit`` names what is scored (``rows`` reads
    ``in_process_rows_per_s`` and ``batch_rows_per_s``); ``endpoints`` maps the wrk results'
    keys to their labels, in table order."""
    rows = [("CPUs", str(results["machine"]["cpus"])), *model_rows]
    for name, label in endpoints.items():
        if name in results:
            r = results[name]
            rows.append((f"{label} req/s", fmt(r["requests_per_s"])))
            rows.append((f"{label} p50 / p99", f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms"))
    if "predict_vs_noop" in results:
        rows.append(("/predict vs no-op", f"{results['predict_vs_noop']:.0%}"))
        rows.append((f"/predict/batch {unit}/s", fmt(results[f"batch_{unit}_per_s"])))
        if "oip_vs_predict" in results:
            rows.append(
                ("OIP infer vs /predict (req/s, one each)", f"{results['oip_vs_predict']:.0%}")
            )
            rows.append((f"OIP infer {unit}/s (batches)", fmt(results[f"oip_batch_{unit}_per_s"])))
            rows.append(("OIP infer vs /predict/batch", f"{results['oip_batch_vs_batch']:.0%}"))
        if "non_2xx" in results:
            rows.append(("non-2xx responses", fmt(results["non_2xx"])))
    rows.append(
        (f"in-process scoring {unit}/s (1 thread)", fmt(results[f"in_process_{unit}_per_s"]))
    )
    rows.append(("cold start (start -> /ready 200)", fmt(results["cold_start_s"], " s", 2)))
    rows.append(("serving RSS", fmt(results.get("serving_rss_mb"), " MB", 0)))
    for run in results["batch_memory"]:
        rows.append(
            (
                f"batch predict {run['rows']:,.0f} {unit}: peak RSS",
                f"{fmt(run['peak_rss_mb'], ' MB')} in {run['seconds']:.1f} s",
            )
        )
    rows.append(("serving image size", fmt(results.get("image_size_mb"), " MB", 0)))
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    return "\n".join(lines)


def report(results: Mapping[str, Any], output: Path, table: str) -> None:
    """Write ``results`` as JSON to ``output`` and print the table."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table)
    print(f"\nwritten to {output}")
