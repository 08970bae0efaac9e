"""Command line: ``python -m <package> data|validate|train|evaluate|predict|serve``.

Each command is a thin wrapper over one function. Heavy libraries are imported inside the
commands, so ``serve`` starts without loading MLflow, pandera or matplotlib. A user mistake
(bad config, bad data, no model) prints one ``error:`` message and exits with status 1.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .config import Config, load_config
from .errors import ProjectError
from .logging_config import configure_logging
from .settings import PACKAGE

logger = logging.getLogger(__name__)
app = typer.Typer(
    name=PACKAGE,
    help="Sample warehouse -> validation -> training -> evaluation -> batch and online serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="YAML config file.", envvar=f"{PACKAGE.upper()}_CONFIG"),
]
DEFAULT_CONFIG = Path("configs/config.yaml")


def _user_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn a ``ProjectError`` into ``error: <message>`` and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except ProjectError as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(code=1) from None

    return wrapper


def _load(config: Path) -> Config:
    configure_logging("info")
    return load_config(config)


@app.command()
@_user_errors
def data(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Build the seeded sample warehouse at data.url (SQLite file by default)."""
    from .data.extract import build_sample_warehouse

    cfg = _load(config)
    counts = build_sample_warehouse(cfg.data)
    summary = ", ".join(f"{table}: {rows} rows" for table, rows in counts.items())
    typer.echo(f"sample warehouse written to {cfg.data.url} ({summary})")


@app.command()
@_user_errors
def validate(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Extract the training table and check it against the schema."""
    from .data.extract import extract_training_frame
    from .data.validate import class_balance, validate_frame

    cfg = _load(config)
    frame = validate_frame(extract_training_frame(cfg), cfg)
    balance = class_balance(frame, cfg.data.target)
    typer.echo(
        f"data OK: {balance['rows']:.0f} rows, positive rate {balance['positive_rate']:.3f}, "
        f"{len(cfg.features.names)} features"
    )


@app.command()
@_user_errors
def train(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Train, evaluate, publish a new model version and log the run to MLflow."""
    from .train import train as run_training

    cfg = _load(config)
    result = run_training(cfg)
    m = result.metrics
    typer.echo(
        f"{cfg.model.name} model {result.version} published to {result.model_dir}\n"
        f"  test ROC-AUC {m['roc_auc']:.3f}  PR-AUC {m['pr_auc']:.3f}  F1 {m['f1']:.3f}  "
        f"precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
        f"threshold {result.threshold:.3f}\n"
        f"  reports in {cfg.paths.reports_dir}/"
        + (f"; MLflow run {result.run_id} at {cfg.tracking.uri}" if result.run_id else "")
    )


@app.command()
@_user_errors
def evaluate(
    config: ConfigOption = DEFAULT_CONFIG,
    version: Annotated[str | None, typer.Option(help="Model version (default: LATEST).")] = None,
) -> None:
    """Re-score a trained model on its holdout rows and rewrite reports/."""
    from .evaluate import evaluate as run_evaluation

    cfg = _load(config)
    result = run_evaluation(cfg, version)
    m = result.metrics
    typer.echo(
        f"model {result.version}: ROC-AUC {m['roc_auc']:.3f}  PR-AUC {m['pr_auc']:.3f}  "
        f"F1 {m['f1']:.3f}; {len(result.files)} report files in {cfg.paths.reports_dir}/"
    )


@app.command()
@_user_errors
def predict(
    input: Annotated[
        str,
        typer.Option(
            "--input", "-i", help="A .csv/.parquet file, or 'sql' for data.scoring_query."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write predictions (.csv or .parquet).")
    ],
    config: ConfigOption = DEFAULT_CONFIG,
    version: Annotated[str | None, typer.Option(help="Model version (default: LATEST).")] = None,
    chunk_size: Annotated[
        int | None, typer.Option(min=1, help="Rows per chunk (default: data.chunk_size).")
    ] = None,
) -> None:
    """Batch-score a file or the scoring query, chunk by chunk."""
    from .predict import predict_batch

    cfg = _load(config)
    summary = predict_batch(cfg, input, output, version=version, chunk_size=chunk_size)
    typer.echo(
        f"{summary.rows} rows scored in {summary.chunks} chunk(s) with model "
        f"{summary.model_version}: {summary.positives} predicted positive -> {summary.output}"
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
