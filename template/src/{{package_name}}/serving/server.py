"""Start the HTTP service with uvicorn: one worker process (scale out with more containers or
processes, one per core). Shared by ``python -m <package> serve`` and ``python -m
<package>.serving``."""

from __future__ import annotations

from ..config import Config
from ..logging_config import configure_logging


def run_server(cfg: Config, host: str | None = None, port: int | None = None) -> None:
    """Serve until interrupted. uvicorn picks uvloop and httptools when installed."""
    import uvicorn

    from .app import create_app

    configure_logging(cfg.serving.log_level, json_lines=True)
    uvicorn.run(
        create_app(cfg),
        host=host or cfg.serving.host,
        port=port or cfg.serving.port,
        log_config=None,
        access_log=False,  # the app logs one JSON line per request with its latency
    )
