"""Command line: ``python -m <package> data|validate|profile|train|tune|evaluate|predict|serve``;
an MLOps project adds its lifecycle commands (promote, rollback, registry, monitor, retrain,
simulate) and registers each trained model (``lifecycle/cli.py``, found by ``build_app``).

Each command is a thin wrapper over one function. Heavy libraries are imported inside the
commands, so ``serve`` starts without loading MLflow, pandera or matplotlib. A user mistake
(bad config, bad data, no model) prints one ``error:`` message and exits with status 1.
"""

from __future__ import annotations

import enum
import functools
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .config import TASK_METRICS, Config, load_config, project_module
from .config_base import PACKAGE
from .errors import ConfigError, ProjectError
from .logging_config import configure_logging

if TYPE_CHECKING:
    from .train import TrainResult

logger = logging.getLogger(__name__)
# The MLOps project's commands, in the package only MLOps projects have.
LIFECYCLE_COMMANDS_MODULE = "lifecycle.cli"
Command = Callable[..., None]
ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="YAML config file.", envvar=f"{PACKAGE.upper()}_CONFIG"),
]
DEFAULT_CONFIG = Path("configs/config.yaml")
PYSPARK_PANDAS_WARNING = "PySpark does not yet fully support pandas"


class Engine(enum.StrEnum):
    """Where ``predict`` scores: in this process, or inside Apache Spark."""

    local = "local"
    spark = "spark"


def user_errors(command: Command) -> Command:
    """Turn a ``ProjectError`` into ``error: <message>`` and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        # With the [spark] extra installed, pandera imports pyspark.pandas, which warns that
        # pandas 3 is not fully supported: noise in every command, Spark or not.
        warnings.filterwarnings("ignore", message=PYSPARK_PANDAS_WARNING, category=FutureWarning)
        try:
            command(*args, **kwargs)
        except ProjectError as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(code=1) from None

    return wrapper


def metric_summary(task: str, metrics: dict[str, float], baseline: dict[str, float]) -> str:
    """``test roc_auc 0.812 (baseline 0.500)  pr_auc ...``: the task's metrics, in one line."""
    parts = []
    for name in list(TASK_METRICS[task])[:5]:
        if name in metrics:
            base = baseline.get(name)
            parts.append(
                f"{name} {metrics[name]:.3f}"
                + (f" (baseline {base:.3f})" if base is not None else "")
            )
    return "test " + "  ".join(parts)


def echo_training(cfg: Config, result: TrainResult) -> None:
    """What ``train`` published, its test metrics, and where the reports and the run are."""
    typer.echo(
        f"{cfg.model.name} model {result.version} published to {result.model_dir}\n"
        f"  {metric_summary(cfg.task, result.metrics, result.baseline_metrics)}"
        + (f"  threshold {result.threshold:.3f}" if result.threshold is not None else "")
        + f"\n  reports in {cfg.paths.reports_dir}/"
        + (f"; MLflow run {result.run_id} at {cfg.tracking.uri}" if result.run_id else "")
    )


def _load(config: Path) -> Config:
    configure_logging("info")
    return load_config(config)


def data(
    config: ConfigOption = DEFAULT_CONFIG,
    if_used: Annotated[
        bool,
        typer.Option(
            "--if-used", help="Build the sample only if data.url reads it (CI); else do nothing."
        ),
    ] = False,
) -> None:
    """Build the seeded sample warehouse at data.sample.url. Your data.url is never written."""
    from .data.sample import build_sample_warehouse

    cfg = _load(config)
    if if_used and not cfg.data.uses_sample:
        typer.echo("data.url is not the sample warehouse: nothing to build")
        return
    counts = build_sample_warehouse(cfg.data.sample)
    summary = ", ".join(f"{table}: {rows} rows" for table, rows in counts.items())
    typer.echo(f"sample warehouse written to {cfg.data.sample.url} ({summary})")
    if not cfg.data.uses_sample:
        typer.echo("note: data.url points elsewhere, so training does not read the sample")


def validate(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Extract the training table and check it against the schema."""
    from .data.extract import extract_training_frame
    from .data.validate import target_summary, unused_columns, validate_frame
    from .features import check_trainable, to_model_frame
    from .tasks import task_for

    cfg = _load(config)
    raw = extract_training_frame(cfg)
    source = str(cfg.data.query)
    frame = validate_frame(raw, cfg, source=source)
    task_for(cfg.task).target(frame[cfg.data.target], cfg, source)
    check_trainable(to_model_frame(frame, cfg.features), cfg.features, source)
    typer.echo(
        f"data OK: {len(frame)} rows, {len(cfg.features.names)} features; {cfg.task} target "
        f"{cfg.data.target}: {target_summary(frame, cfg)}"
    )
    unused = unused_columns(raw, cfg)
    if unused:
        typer.echo(
            f"not used: {len(unused)} column(s) the query returns are not features, id, target "
            f"or leaky_columns: {', '.join(unused)} (add them to features: — `profile` "
            "proposes a section — or leave them out of the query)"
        )


def profile(
    config: ConfigOption = DEFAULT_CONFIG,
    write: Annotated[
        bool,
        typer.Option(
            "--write",
            help="Replace the config file's features: section with the proposal (its other "
            "lines and comments are kept).",
        ),
    ] = False,
    rows: Annotated[
        int | None,
        typer.Option(min=1, help="Profile at most this many rows of data.query (default 100000)."),
    ] = None,
) -> None:
    """Profile data.query (reports/profile.md, .html) and propose the features: section."""
    from .data.profile import run_profile, summary_lines

    configure_logging("info")
    result = run_profile(config, rows=rows, write=write)
    typer.echo("\n".join(summary_lines(result)))


def train(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Train, evaluate, publish a new model version and log the run to MLflow."""
    from .train import train as run_training

    cfg = _load(config)
    echo_training(cfg, run_training(cfg))


def tune(
    config: ConfigOption = DEFAULT_CONFIG,
    trials: Annotated[
        int | None,
        typer.Option(
            help="Trials this command runs, over all its workers (default: tuning.trials)."
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Local worker processes sharing the study (default 1).")
    ] = 1,
    write: Annotated[
        bool,
        typer.Option(
            "--write",
            help="Write the best parameters into the config file's model.params (its other "
            "lines and comments are kept); `train` then publishes a model with them.",
        ),
    ] = False,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Run no trials: fit each estimator of tuning.compare with its best known "
            "parameters under the same CV and write reports/leaderboard.md and .csv.",
        ),
    ] = False,
) -> None:
    """Search hyper-parameters (Optuna) on the training split's CV metric; --compare: the
    leaderboard of estimators. Publishes no model."""
    cfg = _load(config)
    if compare:
        if write or trials is not None or workers != 1:
            raise ConfigError(
                "--compare runs no trials: use it without --trials, --workers, --write"
            )
        from .leaderboard import compare as run_comparison

        board = run_comparison(cfg)
        typer.echo(board.table())
        typer.echo(
            f"leaderboard written to {', '.join(str(p) for p in board.files)}"
            + (f"; MLflow run {board.run_id}" if board.run_id else "")
        )
        return
    from .tune import summary_lines
    from .tune import tune as run_tuning

    result = run_tuning(cfg, config, trials=trials, workers=workers, write=write)
    typer.echo("\n".join(summary_lines(result, config)))


def evaluate(
    config: ConfigOption = DEFAULT_CONFIG,
    version: Annotated[str | None, typer.Option(help="Model version (default: LATEST).")] = None,
) -> None:
    """Re-score a trained model on its holdout rows and rewrite reports/."""
    from .evaluate import evaluate as run_evaluation

    cfg = _load(config)
    result = run_evaluation(cfg, version)
    typer.echo(
        f"model {result.version}: {metric_summary(result.task, result.metrics, result.baseline)}"
        f"; {len(result.files)} report files in {cfg.paths.reports_dir}/"
    )


def predict(
    input: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="A .csv/.parquet file, folder or glob, 'sql' for data.scoring_query; with "
            "--engine spark also an hdfs://, s3a://... URI or table:<name> of the Spark catalog.",
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="Where to write predictions: a .csv or .parquet file; with --engine spark a "
            "<name>.parquet folder (a path or URI).",
        ),
    ],
    config: ConfigOption = DEFAULT_CONFIG,
    version: Annotated[str | None, typer.Option(help="Model version (default: LATEST).")] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Rows per chunk (default: data.chunk_size); with Spark, rows per Arrow batch "
            "(default: Spark's spark.sql.execution.arrow.maxRecordsPerBatch, 10000).",
        ),
    ] = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Add each row's SHAP contributions: top_<k>_feature/top_<k>_shap for the "
            "evaluation.explain_top_k largest, and shap_<input> per input.",
        ),
    ] = False,
    engine: Annotated[
        Engine,
        typer.Option(
            help="local: this process, chunk by chunk. spark: inside Apache Spark (the [spark] "
            "extra and Java 17+; see docs/spark.md)."
        ),
    ] = Engine.local,
    spark_master: Annotated[
        str | None,
        typer.Option(
            help="Spark master URL with --engine spark, e.g. local[4] (default: spark-submit's, "
            "else local[*]).",
            envvar=f"{PACKAGE.upper()}_SPARK_MASTER",
        ),
    ] = None,
) -> None:
    """Batch-score files, a table or the scoring query: chunk by chunk here, or with Spark."""
    cfg = _load(config)
    if engine is Engine.spark:
        if explain:
            raise ConfigError(
                "--explain needs the scikit-learn pipeline and runs with --engine local only: "
                "explain a sample of the rows locally"
            )
        from .spark_scoring import predict_spark

        result = predict_spark(
            cfg, input, output, version=version, chunk_size=chunk_size, master=spark_master
        )
        typer.echo(
            f"{result.rows} rows scored by Spark ({result.master}) in {result.batches} Arrow "
            f"batch(es) on {result.worker_processes} worker process(es) with model "
            f"{result.model_version} ({result.predictions}) -> {result.output}"
        )
        return
    from .predict import predict_batch

    summary = predict_batch(
        cfg, input, Path(output), version=version, chunk_size=chunk_size, explain=explain
    )
    typer.echo(
        f"{summary.rows} rows scored in {summary.chunks} chunk(s) with model "
        f"{summary.model_version} ({summary.predictions}) -> {summary.output}"
    )


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


# The commands in the order ``--help`` lists them.
COMMANDS: dict[str, Command] = {
    "data": data,
    "validate": validate,
    "profile": profile,
    "train": train,
    "tune": tune,
    "evaluate": evaluate,
    "predict": predict,
    "serve": serve,
}


def build_app() -> typer.Typer:
    """The command line of this project: the commands above, and in an MLOps project its
    lifecycle commands (its ``train`` also registers the model; listed where ``train`` is)."""
    commands = dict(COMMANDS)
    lifecycle = project_module(LIFECYCLE_COMMANDS_MODULE)
    if lifecycle is not None:
        commands.update(lifecycle.COMMANDS)
    app = typer.Typer(
        name=PACKAGE,
        help="Sample warehouse -> validation -> training -> evaluation -> batch and online "
        "serving.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    for command_name, command in commands.items():
        app.command(name=command_name)(user_errors(command))
    return app


def main() -> None:
    """Console-script entry point."""
    build_app()()
