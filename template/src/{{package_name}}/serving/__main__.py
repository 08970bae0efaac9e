"""``python -m <package>.serving``: the API with only the runtime dependencies installed.

This is the container's entry point; ``python -m <package> serve`` does the same from the full
command line (which needs the [pipeline] extra).
"""

from __future__ import annotations

import argparse
import sys

from ..config import load_config
from ..config_base import PACKAGE
from ..errors import ProjectError
from .server import run_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {PACKAGE}.serving", description=__doc__)
    parser.add_argument("--config", "-c", default="configs/config.yaml", help="YAML config file")
    parser.add_argument("--host", help="bind address (default: serving.host)")
    parser.add_argument("--port", type=int, help="port (default: serving.port)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ProjectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    run_server(cfg, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
