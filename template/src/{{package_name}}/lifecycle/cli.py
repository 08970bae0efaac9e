"""Lifecycle commands, added to the project's command line by ``cli.build_app``: ``train``
(which here also registers the model) and promote, rollback, registry, monitor, retrain,
simulate. Heavy libraries are imported inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..cli import DEFAULT_CONFIG, Command, ConfigOption, echo_training
from ..logging_config import configure_logging
from ..mlops_config import MlopsConfig, load_mlops_config
from .shifts import DRIFT_RULES

if TYPE_CHECKING:
    from .drift import PredictionDrift
    from .promotion import Decision

# `monitor` exit status when drift reaches the alert threshold (1 stays "error").
ALERT_EXIT_CODE = 3


def _load(config: Path) -> MlopsConfig:
    configure_logging("info")
    return load_mlops_config(config)


def echo_decision(decision: Decision) -> None:
    """One line with the outcome, then one line per check or reason."""
    typer.echo(
        f"{decision.action}: {decision.outcome} (champion: version {decision.champion_before}"
        f" -> {decision.champion_after})"
    )
    for check in decision.checks:
        typer.echo(f"  [{'pass' if check.passed else 'FAIL'}] {check.detail}")
    if not decision.checks:
        for reason in decision.reasons:
            typer.echo(f"  {reason}")
    if decision.record is not None:
        typer.echo(f"  decision recorded in {decision.record}")


def output_shift(drift: PredictionDrift) -> str:
    """How the model's outputs moved, in a few words: what moved from where to where."""
    if drift.task == "regression":
        return (
            f"mean prediction {drift.reference_mean:.4g} -> {drift.current_mean:.4g}, "
            f"median {drift.reference_median:.4g} -> {drift.current_median:.4g}"
        )
    if drift.task == "multiclass_classification":
        reference, current = drift.reference_shares, drift.current_shares
        # In the report's order (not a set's), so a tie names the same class on every run.
        moved = max(
            [*reference, *(name for name in current if name not in reference)],
            key=lambda name: abs(current.get(name, 0.0) - reference.get(name, 0.0)),
        )
        return (
            f"largest change: share predicted {moved} {reference.get(moved, 0.0):.1%} -> "
            f"{current.get(moved, 0.0):.1%}"
        )
    return f"positive rate {drift.reference_positive_rate:.1%} -> {drift.current_positive_rate:.1%}"


def train(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Train, evaluate, publish a model version, log the run and register it as challenger."""
    from .retrain import train_and_register

    cfg = _load(config)
    result, registered = train_and_register(cfg)
    echo_training(cfg, result)
    role = "champion (first version)" if registered.champion else cfg.registry.challenger_alias
    typer.echo(
        f"  registered as {cfg.registry.model_name} version {registered.registry_version}: "
        f"{role}" + ("" if registered.champion else "; run `promote` to gate it")
    )


def promote(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Gate the challenger against the champion on the same holdout; promote if it passes."""
    from .promotion import promote as run_gate

    echo_decision(run_gate(_load(config)))


def rollback(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Point the champion alias back at the previous champion."""
    from .promotion import rollback as run_rollback

    echo_decision(run_rollback(_load(config)))


def registry_versions(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """List registered versions with their aliases, metric and last gate decision."""
    from .registry import list_versions

    cfg = _load(config)
    rows = list_versions(cfg)
    if not rows:
        typer.echo(f"no versions of '{cfg.registry.model_name}' registered yet: run `train`")
        return
    typer.echo(f"{'version':>7}  {'aliases':<22} {cfg.registry_metric:>8}  {'decision':<13} model")
    for row in rows:
        typer.echo(
            f"{row['version']:>7}  {','.join(row['aliases']) or '-':<22} "
            f"{row['metric'][:8]:>8}  {row['decision'] or '-':<13} {row['model_version']}"
        )


def monitor(
    config: ConfigOption = DEFAULT_CONFIG,
    version: Annotated[
        str | None,
        typer.Option(help="Registry version whose reference to compare with (default: champion)."),
    ] = None,
) -> None:
    """Compare recent logged traffic with the champion's training reference (drift).

    Exit status: 0 ok or warn, 3 alert (a scheduler can retrain), 1 error."""
    from . import registry
    from .monitor_data import store_report
    from .monitoring import run_monitoring
    from .reference import REFERENCE_FILE, read_reference

    cfg = _load(config)
    mlflow = registry.client(cfg)
    if version is None:
        found = registry.require_alias(cfg, cfg.registry.champion_alias, mlflow)
    else:
        with registry.registry_errors(cfg, f"find version {version}"):
            found = mlflow.get_model_version(cfg.registry.model_name, version)
    with registry.fetched(cfg, found) as bundle:
        reference = read_reference(bundle / REFERENCE_FILE)
    result = run_monitoring(cfg, reference)
    report = result.report
    store_report(cfg, report)
    typer.echo(
        f"drift {report.status} on {report.rows} logged predictions vs the reference of "
        f"version {found.version}"
    )
    drifted = {name: item for name, item in report.features.items() if item.status != "ok"}
    for name, item in sorted(drifted.items(), key=lambda kv: -kv[1].psi):
        typer.echo(f"  {name}: PSI {item.psi:.3f} ({item.status})")
    if report.prediction is not None:
        drift = report.prediction.drift
        typer.echo(f"  prediction: PSI {drift.psi:.3f} ({output_shift(drift)})")
    if result.files:
        typer.echo(f"  reports in {result.files[0].parent}/")
    if report.status == "alert":
        raise typer.Exit(code=ALERT_EXIT_CODE)


def retrain(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Extract fresh data, validate, train a challenger, register it, run the gate."""
    from .retrain import retrain as run_loop

    cfg = _load(config)
    result = run_loop(cfg)
    metric = cfg.registry_metric
    value = result.trained.metrics.get(metric, float("nan"))
    typer.echo(
        f"trained model {result.trained.version} (test {metric} {value:.3f}), "
        f"registry version {result.registered.registry_version}"
    )
    if result.decision is None:
        typer.echo("  first registered version: it is the champion")
    else:
        echo_decision(result.decision)


def simulate(
    url: Annotated[str, typer.Option(help="Base URL of the running service.")] = (
        "http://127.0.0.1:8000"
    ),
    config: ConfigOption = DEFAULT_CONFIG,
    rows: Annotated[int, typer.Option(min=1, help="Records to send.")] = 2000,
    drift: Annotated[
        bool,
        typer.Option(
            help=f"Shift a few features: {DRIFT_RULES} (--no-drift: the rows as they are)."
        ),
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of the sample and of the drift.")] = 7,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Records per request (at most serving.max_batch_size).")
    ] = 200,
) -> None:
    """Send a random sample of the scoring rows (data.scoring_query), drifted by default,
    through the service's /predict/batch; `monitor` then compares it with the reference."""
    from .simulate import simulate as send

    summary = send(_load(config), url, rows=rows, drift=drift, seed=seed, batch_size=batch_size)
    typer.echo(str(summary))


# Added to the project's commands by cli.build_app: ``train`` replaces the tabular one.
COMMANDS: dict[str, Command] = {
    "train": train,
    "promote": promote,
    "rollback": rollback,
    "registry": registry_versions,
    "monitor": monitor,
    "retrain": retrain,
    "simulate": simulate,
}
