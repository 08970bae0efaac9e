"""`make demo`: install a rendered project, run its pipeline, serve it, send one prediction.

Usage: python hooks/demo.py PROJECT_DIR [--port PORT] [--python PYTHON]

--python uses an existing interpreter that already has the project's dependencies (the
template tests do this) instead of `make install`.

Every step is what a user would type in the project (`make install`, `make data`, `make train`,
`make serve`), so the demo fails where a user would.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from httpcheck import NotReadyError, http, wait_ready


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--python", help="interpreter with the project installed (skips install)")
    args = parser.parse_args()
    project = args.project.resolve()

    overrides = [f"PYTHON={args.python}"] if args.python else []

    def make(*targets: str) -> None:
        print(f"demo: make {' '.join(targets)}", flush=True)
        subprocess.run(["make", *targets, *overrides], cwd=project, check=True)

    if not args.python:
        make("install")
    make("data")
    make("train")
    base = f"http://127.0.0.1:{args.port}"
    print(f"demo: make serve PORT={args.port}", flush=True)
    server = subprocess.Popen(
        ["make", "serve", f"PORT={args.port}", *overrides],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # so the server and make stop together below
    )
    try:
        try:
            wait_ready(f"{base}/ready", server)
        except NotReadyError as error:
            raise SystemExit(f"demo: {error}") from None
        _, metadata = http("GET", f"{base}/metadata")
        example = metadata["input_example"]
        status, prediction = http("POST", f"{base}/predict", example)
        print(f"demo: POST {base}/predict")
        print(json.dumps(example, indent=2))
        print(f"demo: -> {status}")
        print(json.dumps(prediction, indent=2))
        return 0 if status == 200 else 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=15)
        print("demo: server stopped")


if __name__ == "__main__":
    sys.exit(main())
