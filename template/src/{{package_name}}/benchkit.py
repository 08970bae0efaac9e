"""Measurement tools shared by every project type's ``bench.py``: a pinned service process,
wrk runs and their parsing, process memory from /proc, the container image's size.

Standard library only (wrk, taskset and a container engine are optional external tools).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .settings import PACKAGE

WRK_POST_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local f = io.open(os.getenv("BENCH_BODY_FILE"), "rb")
wrk.body = f:read("*a")
f:close()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(cpu: int) -> list[str]:
    """A taskset prefix pinning to ``cpu`` when possible (Linux, two or more CPUs)."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


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


def start_server(config: Path, port: int) -> tuple[subprocess.Popen[bytes], float]:
    """Start the service; return it and the seconds from process start to /ready == 200."""
    command = [*pin(0), sys.executable, "-m", f"{PACKAGE}.serving", "--config", str(config)]
    command += ["--port", str(port)]
    env = {**os.environ, f"{PACKAGE.upper()}_SERVING__LOG_LEVEL": "warning"}
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
