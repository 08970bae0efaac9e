"""Command line: ``python -m <package> data|validate|train|evaluate|predict|serve``.

Each command is a thin wrapper over one function. Heavy libraries are imported inside the
commands, so ``serve`` starts without loading torch or MLflow. A user mistake (bad config, bad
data, no model) prints one ``error:`` message and exits with status 1.

Distributed training is the same command under torchrun:
``torchrun --nproc_per_node=2 -m <package> train``; only rank 0 prints.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .config import Config, load_config
from .config_base import PACKAGE
from .errors import ProjectError
from .logging_config import configure_logging

logger = logging.getLogger(__name__)
app = typer.Typer(
    name=PACKAGE,
    help="Image folder -> validation -> CNN training -> ONNX model -> batch and online serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="YAML config file.", envvar=f"{PACKAGE.upper()}_CONFIG"),
]
VersionOption = Annotated[
    str | None, typer.Option("--version", help="Model version (default: LATEST).")
]
DEFAULT_CONFIG = Path("configs/config.yaml")


def is_main_process() -> bool:
    """Rank 0 under torchrun, or not distributed at all (no torch import: ``serve`` runs
    without torch)."""
    return os.environ.get("RANK", "0") == "0"


def _user_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn a ``ProjectError`` into ``error: <message>`` and exit status 1 (printed by rank 0
    only under torchrun, so the message appears once)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except ProjectError as exc:
            if is_main_process():
                typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(code=1) from None

    return wrapper


def _load(config: Path) -> Config:
    configure_logging("info" if is_main_process() else "warning")
    return load_config(config)


@app.command()
@_user_errors
def data(
    config: ConfigOption = DEFAULT_CONFIG,
    resplit: Annotated[
        bool, typer.Option(help="Rewrite the split manifest even if one exists.")
    ] = False,
    if_used: Annotated[
        bool,
        typer.Option("--if-used", help="Write the sample only if data.root is the sample (CI)."),
    ] = False,
) -> None:
    """Write the sample digits to data.sample.root (if empty) and data.root's split manifest.

    Your own image folder (data.root) is only ever read."""
    from .data.sample import prepare_dataset

    cfg = _load(config)
    typer.echo(prepare_dataset(cfg.data, resplit=resplit, if_used=if_used))


@app.command()
@_user_errors
def validate(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Check every image and the manifest; print the class balance."""
    from .data.validate import validate_dataset

    cfg = _load(config)
    report = validate_dataset(cfg.data)
    typer.echo(
        f"data OK: {len(report.rows)} images in {len(report.classes)} classes "
        f"under {cfg.data.root}/ (fingerprint {report.fingerprint[:12]})\n{report.summary()}"
    )


@app.command()
@_user_errors
def train(
    config: ConfigOption = DEFAULT_CONFIG,
    resume: Annotated[
        bool, typer.Option(help="Continue from checkpoints/last.pt and its MLflow run.")
    ] = False,
) -> None:
    """Train, evaluate, export to ONNX, publish a new model version and log to MLflow."""
    from .train import train as run_training

    cfg = _load(config)
    try:
        result = run_training(cfg, resume=resume)
    except KeyboardInterrupt:
        if is_main_process():
            typer.echo(f"interrupted: continue with `python -m {PACKAGE} train --resume`", err=True)
        raise typer.Exit(code=130) from None
    if not is_main_process():
        return
    m = result.metrics
    typer.echo(
        f"model {result.version} published to {result.model_dir}\n"
        f"  test accuracy {m['accuracy']:.4f}  macro F1 {m['macro_f1']:.4f}  "
        f"best val accuracy {m['best_val_accuracy']:.4f} (epoch {result.best_epoch} of "
        f"{len(result.history)})  {result.parameter_count} parameters"
        + (f"  {result.world_size} processes" if result.world_size > 1 else "")
        + f"\n  reports in {cfg.paths.reports_dir}/"
        + (f"; MLflow run {result.run_id} at {cfg.tracking.uri}" if result.run_id else "")
    )


@app.command()
@_user_errors
def evaluate(config: ConfigOption = DEFAULT_CONFIG, version: VersionOption = None) -> None:
    """Re-score a published model (ONNX) on the test split and rewrite reports/."""
    from .evaluate import evaluate as run_evaluation

    cfg = _load(config)
    result = run_evaluation(cfg, version)
    m = result.metrics
    typer.echo(
        f"model {result.version}: test accuracy {m['accuracy']:.4f}  macro F1 "
        f"{m['macro_f1']:.4f}; {len(result.files)} report files in {cfg.paths.reports_dir}/"
    )


@app.command()
@_user_errors
def predict(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the CSV.")],
    input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="An image folder, or a manifest CSV (path column) of images [default: data.root].",
        ),
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    version: VersionOption = None,
) -> None:
    """Batch-classify images with the published ONNX model into a CSV."""
    from .predict import predict_images

    cfg = _load(config)
    summary = predict_images(cfg, input or cfg.data.root, output, version=version)
    typer.echo(
        f"{summary.rows} images classified with model {summary.model_version} -> {summary.output}"
    )


@app.command()
@_user_errors
def serve(
    config: ConfigOption = DEFAULT_CONFIG,
    host: Annotated[str | None, typer.Option(help="Bind address (default: serving.host).")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: serving.port).")
    ] = None,
) -> None:
    """Start the HTTP API (uvicorn, one worker; scale with more containers)."""
    from .serving.server import run_server

    run_server(load_config(config), host, port)


def main() -> None:
    """Console-script entry point."""
    app()
