"""HTTP helpers shared by `make demo` (hooks/demo.py) and the template tests: one JSON request,
and waiting for a freshly started server to answer. Standard library only, so the demo runs
with any Python and the tests need nothing extra."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any


class NotReadyError(RuntimeError):
    """The server exited, or did not answer 200 in time; the message says which."""


def http(method: str, url: str, body: object | None = None) -> tuple[int, Any]:
    """One JSON request; (status, decoded body) for 2xx and error statuses alike."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _decode(response.read())
    except urllib.error.HTTPError as error:
        return error.code, _decode(error.read())


def _decode(raw: bytes) -> Any:
    # MLflow's /health answers plain "OK": such bodies come back as text.
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode(errors="replace")


def wait_ready(
    url: str,
    process: subprocess.Popen[Any] | None = None,
    *,
    timeout: float = 60,
    interval: float = 0.2,
) -> Any:
    """Poll ``url`` with GET until it answers 200 and return its body. Raises NotReadyError
    (with the process's last output when it captured any) if ``process`` exits first or the
    time runs out; connection errors before that only mean "not yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise NotReadyError(
                f"the process serving {url} exited with status {process.returncode}"
                f"{_last_output(process)}"
            )
        try:
            status, body = http("GET", url)
            if status == 200:
                return body
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(interval)
    raise NotReadyError(f"{url} did not answer 200 within {timeout:.0f} s")


def _last_output(process: subprocess.Popen[Any]) -> str:
    if process.stdout is None:
        return ""
    output = process.stdout.read()
    text = output.decode(errors="replace") if isinstance(output, bytes) else str(output)
    return f":\n{text[-3000:]}" if text else ""
