"""Hyper-parameter search (``tune``): an Optuna study over the configured estimator's search
space, scored by the task's cross-validation metric on the training split.

Why it works the way it does:

- The objective is the cross-validation ``train`` runs, on the rows ``train`` trains on (the
  same ``split_rows``): the test rows are never seen, so the test metrics ``train`` reports for
  the tuned parameters stay an honest estimate.
- The first trial of a study is the current configuration (the shipped defaults and
  ``model.params``), so the best trial is at least as good as what ``train`` fits today, by
  construction, not by luck.
- Trials report the running mean after each fold, and a trial whose running mean is worse
  than the median of earlier trials at the same fold is pruned (``tuning.pruning``).
- The study lives in ``tuning.storage``; it is created before any worker starts, and each
  worker (``--workers N`` processes here, or the same command on other machines pointed at the
  same storage) samples with its own seed and records each trial there.
- ``tune`` publishes nothing: ``--write`` puts the best parameters into the config's
  ``model.params`` (nothing else in the file changes), and ``train`` stays the one way a model
  is published.

Optuna and MLflow are imported inside the functions that use them.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from . import tracking
from .atomic import replace_text
from .config import (
    TASK_MODELS,
    Config,
    ModelConfig,
    SearchRange,
    config_from_dict,
    metric_direction,
)
from .data.extract import extract_training_frame
from .data.validate import validate_frame
from .errors import ConfigError, DataError, ProjectError, TrackingError
from .errortext import first_line, typed_first_line
from .features import check_trainable, frequent_categories, to_model_frame
from .model import (
    build_estimator,
    build_pipeline,
    estimator_params,
    fit_pipeline,
    listed_params,
)
from .tasks import Task, task_for
from .train import split_rows

if TYPE_CHECKING:
    from concurrent.futures import Future

    import optuna

logger = logging.getLogger(__name__)

# The ranges `tune` searches unless tuning.search_space replaces them (scikit-learn API names).
# They hold the shipped defaults where they can (a log range cannot hold LightGBM's reg_alpha 0:
# the first trial, the current parameters, keeps such a value as it is).
DEFAULT_SEARCH_SPACES: dict[str, dict[str, SearchRange]] = {
    "logistic_regression": {"C": SearchRange(low=1e-3, high=100.0, log=True)},
    "ridge": {"alpha": SearchRange(low=1e-3, high=1000.0, log=True)},
    "random_forest": {
        "n_estimators": SearchRange(low=100, high=500, step=50),
        "min_samples_leaf": SearchRange(low=1, high=20),
        "max_features": SearchRange(choices=["sqrt", 0.5, 1.0]),
    },
    "hist_gradient_boosting": {
        "learning_rate": SearchRange(low=0.01, high=0.3, log=True),
        "max_iter": SearchRange(low=100, high=500, step=50),
        "max_leaf_nodes": SearchRange(low=15, high=63),
        "min_samples_leaf": SearchRange(low=5, high=100),
    },
    "lightgbm": {
        "n_estimators": SearchRange(low=100, high=600, step=50),
        "learning_rate": SearchRange(low=0.01, high=0.3, log=True),
        "num_leaves": SearchRange(low=15, high=127),
        "min_child_samples": SearchRange(low=5, high=100),
        "subsample": SearchRange(low=0.5, high=1.0),
        "subsample_freq": SearchRange(choices=[1]),  # row subsampling only acts when > 0
        "colsample_bytree": SearchRange(low=0.5, high=1.0),
        "reg_alpha": SearchRange(low=1e-4, high=10.0, log=True),
        "reg_lambda": SearchRange(low=1e-4, high=10.0, log=True),
    },
    "xgboost": {
        "n_estimators": SearchRange(low=100, high=600, step=50),
        "learning_rate": SearchRange(low=0.01, high=0.3, log=True),
        "max_depth": SearchRange(low=3, high=10),
        "min_child_weight": SearchRange(low=0.5, high=20.0, log=True),
        "subsample": SearchRange(low=0.5, high=1.0),
        "colsample_bytree": SearchRange(low=0.5, high=1.0),
        "reg_alpha": SearchRange(low=1e-4, high=10.0, log=True),
        "reg_lambda": SearchRange(low=1e-4, high=10.0, log=True),
    },
}
# Pruning starts once this many trials finished, and never on a trial's first fold.
PRUNER_STARTUP_TRIALS = 5
PRUNER_WARMUP_FOLDS = 1
# Trial attributes (user attrs in the study): the estimator parameters a trial used, its CV
# summary, the command and process that ran it, whether it is the current parameters (and which
# searched parameters it left at their current value), the error that failed it.
PARAMS_ATTR = "model_params"
CV_ATTR = "cv_metrics"
RUN_ATTR = "tune_run"
WORKER_ATTR = "worker"  # host:pid of the process that ran the trial
CURRENT_ATTR = "current_params"
SKIP_ATTR = "not_searched"
ERROR_ATTR = "error"


class TrialError(Exception):
    """A trial's parameters could not be fitted or scored: the trial fails, the study goes on
    (a ``ProjectError`` instead stops the command: it is a problem with the data or config)."""


@dataclass(frozen=True)
class TrainingSplit:
    """The rows ``train`` trains on, model-ready, extracted and validated once per command."""

    x: pd.DataFrame
    y: np.ndarray
    frequent: dict[str, list[str]]
    source: str


@dataclass(frozen=True)
class TuneResult:
    """What one ``tune`` command did and found."""

    study_name: str
    storage: str  # shown without its password
    metric: str
    direction: str
    trials_run: int
    complete: int
    pruned: int
    failed: int
    study_trials: int
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    current_value: float | None
    current_trial: int | None
    run_id: str | None
    written: Path | None
    unchanged: bool  # model.params already are the best parameters
    seconds: float


@dataclass(frozen=True)
class TuningPlan:
    """What a ``tune`` command will do, settled (and checked) before any data is read."""

    model: str
    metric: str
    direction: str
    space: dict[str, SearchRange]
    current: dict[str, Any]  # the estimator's parameters as `train` builds it today
    study_name: str
    shown_storage: str
    trials: int
    workers: int


@dataclass(frozen=True)
class WorkerJob:
    """Everything one worker process needs (pickled to it): no data is read again there."""

    cfg: Config
    storage: str
    study_name: str
    space: dict[str, SearchRange]
    metric: str
    split: TrainingSplit
    run_tag: str
    seed: int
    trials: int
    timeout_s: float | None
    started: float  # time.time() when the command started (shared by its processes)
    worker: int  # 1, 2, ... with several workers; 0 when there is one


@dataclass
class _Progress:
    """One log line per finished trial, with the best value so far (readable in CI logs)."""

    job: WorkerJob
    done: int = 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from optuna.trial import TrialState

        self.done += 1
        state = trial.state.name.lower()
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            outcome = f"{self.job.metric} {trial.value:.4f}"
        elif trial.state == TrialState.PRUNED:
            outcome = f"after {len(trial.intermediate_values)} fold(s)"
        else:
            outcome = str(trial.user_attrs.get(ERROR_ATTR, ""))
        try:
            best = study.best_trial
            best_text = f"best {best.value:.4f} (trial {best.number})"
        except ValueError:  # no complete trial yet
            best_text = "no complete trial yet"
        who = f"worker {self.job.worker}: " if self.job.worker else ""
        logger.info(
            "%strial %d %s: %s | %s | %d/%d, %.0fs",
            who,
            trial.number,
            state,
            outcome,
            best_text,
            self.done,
            self.job.trials,
            time.time() - self.job.started,
        )


# -- search space -------------------------------------------------------------------------------


def search_space(cfg: Config, name: str) -> dict[str, SearchRange]:
    """The shipped ranges of estimator ``name`` with ``tuning.search_space[name]`` replacing or
    adding ranges."""
    return {**DEFAULT_SEARCH_SPACES.get(name, {}), **configured_spaces(cfg).get(name, {})}


def configured_spaces(cfg: Config) -> dict[str, dict[str, SearchRange]]:
    """``tuning.search_space`` keyed by estimator name."""
    return {str(name): dict(space) for name, space in cfg.tuning.search_space.items()}


def tuning_metric(cfg: Config) -> str:
    """``tuning.metric`` (checked), or the task's first cross-validation metric."""
    task = task_for(cfg.task)
    metric = cfg.tuning.metric or task.cv_metrics[0]
    if metric not in task.cv_metrics:
        raise ConfigError(
            f"tuning.metric {metric} is not a cross-validation metric of {cfg.task}: choose "
            f"one of {', '.join(task.cv_metrics)}"
        )
    return metric


def study_name_for(cfg: Config, name: str) -> str:
    """``tuning.study_name`` for the configured estimator, else ``<project>-<task>-<name>``."""
    if name == cfg.model.name and cfg.tuning.study_name:
        return cfg.tuning.study_name
    return f"{cfg.project}-{cfg.task}-{name}"


def check_search_space(cfg: Config) -> None:
    """Refuse, before any work, a search range the estimators cannot take: an unknown
    parameter name, a value (an end of a range, a choice) the estimator refuses, a non-integer
    step on an integer range, a choice Optuna cannot store."""
    for name in TASK_MODELS[cfg.task]:
        space = configured_spaces(cfg).get(name)
        if not space:
            continue
        where = f"tuning.search_space.{name}"
        unknown = sorted(set(space) - estimator_params(name, cfg.task))
        if unknown:
            raise ConfigError(
                f"{where}: {', '.join(unknown)} not accepted by {name}; valid parameters: "
                f"{', '.join(listed_params(name, cfg.task))}"
            )
        for param, value_range in space.items():
            _check_range(cfg, name, param, value_range, f"{where}.{param}")


def _check_range(cfg: Config, name: str, param: str, value_range: SearchRange, where: str) -> None:
    if value_range.choices is not None:
        odd = [v for v in value_range.choices if not isinstance(v, bool | int | float | str)]
        if odd or None in value_range.choices:
            raise ConfigError(f"{where}: choices must be numbers, text or booleans, not {odd}")
        probes = list(value_range.choices)
    else:
        step = value_range.step
        if value_range.is_int and step is not None and not float(step).is_integer():
            raise ConfigError(f"{where}: an integer range needs a whole step (it is {step})")
        probes = [value_range.low, value_range.high]
    params = dict(cfg.model.params) if name == cfg.model.name else {}
    for value in probes:
        try:
            build_estimator(
                model_config(cfg, name, {**params, param: value}), cfg.training.seed, cfg.task
            )
        except ConfigError as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise ConfigError(f"{where}: {name} refuses {param}={value!r}: {reason}") from None


def current_params(cfg: Config, name: str) -> dict[str, Any]:
    """The constructor parameters ``train`` gives estimator ``name`` today (shipped defaults,
    and ``model.params`` for the configured estimator)."""
    params = dict(cfg.model.params) if name == cfg.model.name else {}
    estimator = build_estimator(model_config(cfg, name, params), cfg.training.seed, cfg.task)
    return dict(estimator.get_params(deep=False))


def in_range(value_range: SearchRange, value: Any) -> bool:
    """Whether ``value`` is a point of ``value_range`` (its type included: 1 is not True)."""
    if value_range.choices is not None:
        return any(type(v) is type(value) and v == value for v in value_range.choices)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    low, high = float(value_range.low or 0), float(value_range.high or 0)
    if value_range.is_int and not isinstance(value, int):
        return False
    if not low <= value <= high:
        return False
    if value_range.step is None:
        return True
    steps = (value - low) / value_range.step
    return math.isclose(steps, round(steps), abs_tol=1e-9)


def model_config(cfg: Config, name: str, params: Mapping[str, Any]) -> ModelConfig:
    """Estimator ``name`` with constructor ``params`` and the config's class weighting."""
    return ModelConfig.model_validate(
        {"name": name, "params": dict(params), "class_weight": cfg.model.class_weight}
    )


def with_model(cfg: Config, name: str, params: Mapping[str, Any]) -> Config:
    """``cfg`` with estimator ``name`` and constructor ``params`` (the class weighting kept)."""
    return cfg.model_copy(update={"model": model_config(cfg, name, params)})


# -- data and cross-validation ------------------------------------------------------------------


def training_split(cfg: Config, frame: pd.DataFrame | None = None) -> TrainingSplit:
    """Extract and validate the training table once, and keep the rows ``train`` trains on
    (``frame`` replaces the SQL extract: tests, notebooks)."""
    raw = extract_training_frame(cfg) if frame is None else frame
    source = "the training frame" if frame is not None else str(cfg.data.query)
    data = validate_frame(raw, cfg, source=source)
    task = task_for(cfg.task)
    target = task.target(data[cfg.data.target], cfg, source)
    features = to_model_frame(data, cfg.features)
    train_rows, _ = split_rows(data, target.y, cfg, task)
    x = features.iloc[train_rows]
    check_trainable(x, cfg.features, source)
    return TrainingSplit(
        x=x, y=target.y[train_rows], frequent=frequent_categories(x, cfg.features), source=source
    )


FoldCallback = Callable[[int, dict[str, list[float]]], None]


def cross_validate(
    pipeline: Pipeline,
    task: Task,
    x: pd.DataFrame,
    y: np.ndarray,
    cfg: Config,
    on_fold: FoldCallback | None = None,
) -> dict[str, list[float]]:
    """The task's fold metrics, fold by fold, with ``train``'s folds (same splitter, seed and
    order); ``on_fold(step, folds so far)`` runs after each fold (it may stop the loop by
    raising: pruning)."""
    splitter = task.splitter(cfg.training.cv_folds, cfg.training.seed, cfg.training.split == "time")
    width = int(y.max()) + 1 if task.is_classifier else 1
    folds: dict[str, list[float]] = {name: [] for name in task.cv_metrics}
    for step, (fit_idx, val_idx) in enumerate(splitter.split(x, y)):
        model = fit_pipeline(clone(pipeline), x.iloc[fit_idx], y[fit_idx], cfg.model.class_weight)
        scores = task.scores(model, x.iloc[val_idx])
        if scores.ndim == 2 and scores.shape[1] < width:
            raise DataError(
                "a time-ordered cross-validation fold was trained without every class: "
                "rare classes appear late in the data; use training.split: random or fewer "
                "training.cv_folds"
            )
        fold = task.metrics(y[val_idx], scores, None)
        for name in folds:
            folds[name].append(float(fold[name]))
        if on_fold is not None:
            on_fold(step, folds)
    return folds


def cv_summary(folds: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """``cv_<metric>_mean`` and ``cv_<metric>_std``, named as ``train`` names them."""
    summary: dict[str, float] = {}
    for name, values in folds.items():
        summary[f"cv_{name}_mean"] = float(np.mean(values))
        summary[f"cv_{name}_std"] = float(np.std(values))
    return summary


# -- storage ------------------------------------------------------------------------------------


def shown_storage(url: str) -> str:
    """The storage URL without its password, for messages, logs and MLflow."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage at ``url`` (its tables created on first use), or one ``ConfigError``
    line saying why it cannot be opened."""
    import optuna

    sqlite = url.startswith("sqlite")
    # SQLite: several worker processes write one file; wait for its lock rather than fail.
    engine_kwargs = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as exc:  # SQLAlchemy, the driver or Optuna: all mean "cannot open it"
        hint = " (its folder must exist)" if sqlite else ""
        raise ConfigError(
            f"tuning.storage {shown_storage(url)} cannot be opened{hint}: {first_line(exc)}"
        ) from None


def storage_exists(url: str) -> bool:
    """False for a SQLite file that does not exist (reading it would create it)."""
    from sqlalchemy.exc import ArgumentError

    from .dburl import sqlite_file

    try:
        path = sqlite_file(url)
    except ArgumentError:
        return True  # let open_storage say what is wrong with it
    return path is None or path.is_file()


def open_study(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    *,
    model: str,
    metric: str,
    direction: str,
    shown: str,
) -> optuna.Study:
    """Create the study, or load it if it exists; refuse one made for another estimator or
    metric (its trials would not be comparable)."""
    import optuna

    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction="maximize" if direction == "max" else "minimize",
        load_if_exists=True,
    )
    attrs = study.user_attrs
    if not attrs:
        study.set_user_attr("model", model)
        study.set_user_attr("metric", metric)
        return study
    made_for = (attrs.get("model"), attrs.get("metric"))
    if made_for != (model, metric) or study.direction.name.lower() != (
        "maximize" if direction == "max" else "minimize"
    ):
        raise ConfigError(
            f"study {study_name} in {shown} tunes {made_for[0]} on {made_for[1]}, not {model} "
            f"on {metric}: set tuning.study_name to start a new study"
        )
    return study


def trial_params(trial: optuna.trial.FrozenTrial, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """The estimator parameters a trial used (its record, or its sampled values over
    ``fixed``)."""
    recorded = trial.user_attrs.get(PARAMS_ATTR)
    if isinstance(recorded, dict):
        return dict(recorded)
    return {**fixed, **trial.params}


# -- the search ---------------------------------------------------------------------------------


def _suggest(trial: optuna.Trial, name: str, value_range: SearchRange) -> Any:
    if value_range.choices is not None:
        return trial.suggest_categorical(name, value_range.choices)
    low, high = value_range.low, value_range.high
    assert low is not None  # SearchRange checks both ends are there
    assert high is not None
    if value_range.is_int:
        step = int(value_range.step or 1)
        return trial.suggest_int(name, int(low), int(high), step=step, log=value_range.log)
    return trial.suggest_float(
        name, float(low), float(high), step=value_range.step, log=value_range.log
    )


def _objective(job: WorkerJob) -> Callable[[optuna.Trial], float]:
    import optuna

    task = task_for(job.cfg.task)
    name = job.cfg.model.name

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(RUN_ATTR, job.run_tag)
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        not_searched = set(trial.user_attrs.get(SKIP_ATTR, []))
        params = dict(job.cfg.model.params)
        for param, value_range in job.space.items():
            if param not in not_searched:
                params[param] = _suggest(trial, param, value_range)
        trial.set_user_attr(PARAMS_ATTR, params)
        pipeline = build_pipeline(with_model(job.cfg, name, params), job.split.frequent)

        # The current parameters are never pruned: their score is what the best must beat.
        prunable = not trial.user_attrs.get(CURRENT_ATTR)

        def report(step: int, folds: dict[str, list[float]]) -> None:
            trial.report(float(np.mean(folds[job.metric])), step)
            if prunable and trial.should_prune():
                raise optuna.TrialPruned

        try:
            folds = cross_validate(pipeline, task, job.split.x, job.split.y, job.cfg, report)
        except optuna.TrialPruned:
            raise
        except ProjectError as exc:
            if not isinstance(exc, ConfigError):  # the data, not these parameters: stop
                raise
            # LightGBM and XGBoost check their parameters only when fitting.
            trial.set_user_attr(ERROR_ATTR, first_line(exc)[:300])
            raise TrialError(first_line(exc)) from exc
        except Exception as exc:  # the estimator's own error for these parameters
            trial.set_user_attr(ERROR_ATTR, typed_first_line(exc)[:300])
            raise TrialError(typed_first_line(exc)) from exc
        summary = cv_summary(folds)
        trial.set_user_attr(CV_ATTR, summary)
        return summary[f"cv_{job.metric}_mean"]

    return objective


def run_worker(job: WorkerJob) -> int:
    """Run ``job.trials`` trials (or until ``job.timeout_s``) of the study; return how many
    finished. The entry point of each worker process (and of the only one when there is one)."""
    import optuna

    if not logging.getLogger().handlers:  # a spawned worker: log the trials like the parent
        from .logging_config import configure_logging

        configure_logging("info")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our one line per trial replaces it
    storage = open_storage(job.storage)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(
            n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_FOLDS
        )
        if job.cfg.tuning.pruning
        else optuna.pruners.NopPruner()
    )
    study = optuna.load_study(
        study_name=job.study_name,
        storage=storage,
        # constant_liar: parallel workers do not all sample next to the same running trial.
        sampler=optuna.samplers.TPESampler(seed=job.seed, constant_liar=True),
        pruner=pruner,
    )
    progress = _Progress(job)
    study.optimize(
        _objective(job),
        n_trials=job.trials,
        timeout=job.timeout_s,
        catch=(TrialError,),
        callbacks=[progress],
    )
    return progress.done


def _run_workers(jobs: list[WorkerJob]) -> None:
    """One job in this process; several in as many fresh (spawned) processes."""
    if len(jobs) == 1:
        run_worker(jobs[0])
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a fresh interpreter per worker (fork would copy this process's open database
    # connections and threads).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=context) as pool:
        first = pool.submit(run_worker, jobs[0])
        if jobs[0].storage.startswith("sqlite"):
            _wait_for_queue_taken(jobs[0], first)
        futures = [first, *(pool.submit(run_worker, job) for job in jobs[1:])]
        errors = [future.exception() for future in futures]
    for error in errors:
        if error is not None:
            if isinstance(error, ProjectError):
                raise error
            raise ProjectError(f"a tune worker failed: {typed_first_line(error)}") from error


def _wait_for_queue_taken(job: WorkerJob, worker: Future[int], poll_s: float = 0.1) -> None:
    """Wait until a worker has taken the study's queued trial (the current parameters), or
    ``worker`` has ended. SQLite has no row locks (Optuna's SELECT ... FOR UPDATE is a no-op
    there): workers starting together could each take the same queued trial and run it twice,
    leaving the study a trial short (seen in CI). PostgreSQL and MySQL lock the row."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=job.study_name, storage=open_storage(job.storage))
    while not worker.done() and study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        time.sleep(poll_s)


def plan_tuning(cfg: Config, trials: int | None = None, workers: int = 1) -> TuningPlan:
    """Check the tuning settings (budget, metric, search space) and settle the plan; every
    mistake is a ``ConfigError`` before any data is read or anything is written."""
    trials = cfg.tuning.trials if trials is None else trials
    if trials < 1 or workers < 1:
        raise ConfigError("--trials and --workers must be at least 1")
    metric = tuning_metric(cfg)
    check_search_space(cfg)
    return TuningPlan(
        model=cfg.model.name,
        metric=metric,
        direction=metric_direction(cfg.task, metric),
        space=search_space(cfg, cfg.model.name),
        current=current_params(cfg, cfg.model.name),
        study_name=study_name_for(cfg, cfg.model.name),
        shown_storage=shown_storage(cfg.tuning.storage),
        trials=trials,
        workers=min(workers, trials),
    )


def start_study(cfg: Config, plan: TuningPlan) -> optuna.Study:
    """Open (or create) the study before any worker starts, with the current parameters
    queued as its next trial: the best trial can then only be as good or better. A parameter
    whose current value lies outside its range keeps that value in this trial only."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial replaces its log
    study = open_study(
        open_storage(cfg.tuning.storage),
        plan.study_name,
        model=plan.model,
        metric=plan.metric,
        direction=plan.direction,
        shown=plan.shown_storage,
    )
    searched = {
        name: plan.current[name]
        for name, value_range in plan.space.items()
        if name in plan.current and in_range(value_range, plan.current[name])
    }
    study.enqueue_trial(
        searched,
        user_attrs={CURRENT_ATTR: True, SKIP_ATTR: sorted(set(plan.space) - set(searched))},
        skip_if_exists=True,
    )
    return study


def worker_jobs(
    cfg: Config, plan: TuningPlan, split: TrainingSplit, run_tag: str, already: int
) -> list[WorkerJob]:
    """The trial budget split over the workers, each with its own seed: ``training.seed``
    plus its index plus the ``already`` trials in the study, so a later command (or another
    machine) joining the study does not repeat the first random trials."""
    count = plan.workers
    base, extra = divmod(plan.trials, count)
    started = time.time()
    timeout = cfg.tuning.timeout_minutes * 60 if cfg.tuning.timeout_minutes else None
    return [
        WorkerJob(
            cfg=cfg,
            storage=cfg.tuning.storage,
            study_name=plan.study_name,
            space=plan.space,
            metric=plan.metric,
            split=split,
            run_tag=run_tag,
            seed=cfg.training.seed + already + index,
            trials=base + (1 if index < extra else 0),
            timeout_s=timeout,
            started=started,
            worker=index + 1 if count > 1 else 0,
        )
        for index in range(count)
    ]


def tune(
    cfg: Config,
    config_path: Path | None = None,
    *,
    trials: int | None = None,
    workers: int = 1,
    write: bool = False,
    frame: pd.DataFrame | None = None,
) -> TuneResult:
    """Run the study for the configured estimator and log it to MLflow (one parent run, a
    nested run per trial of this command); with ``write``, put the best parameters into
    ``config_path``'s ``model.params``. ``frame`` replaces the SQL extract (tests)."""
    started = time.monotonic()
    if write and config_path is None:
        raise ConfigError("--write needs the config file to write to")
    plan = plan_tuning(cfg, trials, workers)
    split = training_split(cfg, frame)
    study = start_study(cfg, plan)
    run_tag = uuid.uuid4().hex
    jobs = worker_jobs(cfg, plan, split, run_tag, len(study.get_trials(deepcopy=False)))
    logger.info(
        "tuning %s on %d training rows: %d trial(s), %d worker(s), cv %s, study %s in %s",
        plan.model,
        len(split.y),
        plan.trials,
        plan.workers,
        plan.metric,
        plan.study_name,
        plan.shown_storage,
    )
    _run_workers(jobs)
    return _finish(cfg, plan, run_tag, config_path if write else None, len(split.y), started)


def _finish(
    cfg: Config,
    plan: TuningPlan,
    run_tag: str,
    write_to: Path | None,
    rows: int,
    started: float,
) -> TuneResult:
    """Read the study back: write the best parameters (when asked), log this command's trials
    to MLflow, and say what happened."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=plan.study_name, storage=open_storage(cfg.tuning.storage))
    everything = study.get_trials(deepcopy=False)
    mine = [t for t in everything if t.user_attrs.get(RUN_ATTR) == run_tag]
    complete = [t for t in everything if t.state == TrialState.COMPLETE]
    # The trial of the current parameters: this command's first, or an earlier trial with the
    # same values (then Optuna did not run them again).
    configured = dict(cfg.model.params)
    current = next(
        (t for t in complete if _same_params(trial_params(t, {}), configured, plan.current)),
        None,
    )
    best = study.best_trial if complete else None
    best_params = {} if best is None else trial_params(best, configured)
    written = None
    if write_to is not None and best is not None and best_params != configured:
        write_model_params(write_to, best_params)
        written = write_to
    run_id = None
    if cfg.tracking.enabled:
        try:
            run_id = _log_to_mlflow(cfg, plan, study, mine, rows)
        except TrackingError as exc:
            kept = f"; model.params written to {written}" if written else ""
            raise TrackingError(
                f"the trials are in study {plan.study_name} at {plan.shown_storage}{kept}, "
                f"but {exc}"
            ) from exc
    if best is None or best.value is None:
        reasons = sorted(
            {str(t.user_attrs[ERROR_ATTR]) for t in mine if ERROR_ATTR in t.user_attrs}
        )
        raise ConfigError(
            f"no trial of study {plan.study_name} completed"
            + (f"; e.g. {reasons[0]}" if reasons else "")
            + ": check tuning.search_space and tuning.timeout_minutes"
        )
    states = [t.state for t in mine]
    return TuneResult(
        study_name=plan.study_name,
        storage=plan.shown_storage,
        metric=plan.metric,
        direction=plan.direction,
        trials_run=len(mine),
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        study_trials=len(everything),
        best_trial=best.number,
        best_value=float(best.value),
        best_params=best_params,
        current_value=None if current is None or current.value is None else float(current.value),
        current_trial=None if current is None else current.number,
        run_id=run_id,
        written=written,
        unchanged=best_params == configured,
        seconds=time.monotonic() - started,
    )


def summary_lines(result: TuneResult, config_path: Path) -> list[str]:
    """What ``tune`` prints: the trials, the best and current scores, and the parameters (and
    what to do with them)."""
    lines = [
        f"study {result.study_name} ({result.storage}): {result.trials_run} trial(s) in "
        f"{result.seconds:.0f}s ({result.complete} complete, {result.pruned} pruned, "
        f"{result.failed} failed); {result.study_trials} in the study",
        f"  best cv {result.metric} {result.best_value:.4f} (trial {result.best_trial})"
        + (
            f"; current parameters {result.current_value:.4f} (trial {result.current_trial})"
            if result.current_value is not None
            else ""
        ),
    ]
    if result.run_id:
        lines.append(f"  MLflow run {result.run_id}")
    params = params_yaml(result.best_params)
    if result.unchanged:
        lines.append(f"  model.params already give the best parameters: {params}")
    elif result.written is not None:
        lines.append(
            f"  wrote model.params: {params} to {result.written}; `train` publishes a model "
            "with them"
        )
    else:
        lines += [
            f"  best model.params: {params}",
            f"  to use them, set model.params in {config_path} to that (or run tune with "
            "--write), then train",
        ]
    return lines


def _same_params(
    best: Mapping[str, Any], configured: dict[str, Any], current: dict[str, Any]
) -> bool:
    """Whether ``best`` gives the estimator what the config gives it today."""
    return all(current.get(key, configured.get(key)) == value for key, value in best.items())


def _log_to_mlflow(
    cfg: Config,
    plan: TuningPlan,
    study: optuna.Study,
    trials: list[optuna.trial.FrozenTrial],
    rows: int,
) -> str:
    """One parent run for the command, a nested run per trial it ran (state and status
    included), the study's best so far on the parent."""
    from optuna.trial import TrialState

    status = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED"}
    children = []
    for trial in trials:
        error = trial.user_attrs.get(ERROR_ATTR)
        children.append(
            tracking.ChildRun(
                name=f"trial-{trial.number}",
                params=trial_params(trial, cfg.model.params),
                metrics=dict(trial.user_attrs.get(CV_ATTR) or {}),
                steps={f"cv_{plan.metric}_running_mean": dict(trial.intermediate_values)},
                tags={
                    "trial_number": str(trial.number),
                    "state": trial.state.name.lower(),
                    "current_params": str(bool(trial.user_attrs.get(CURRENT_ATTR))).lower(),
                    **({"error": str(error)} if error else {}),
                },
                status=status.get(trial.state, "FAILED"),
            )
        )
    params: dict[str, Any] = {
        "task": cfg.task,
        "model": cfg.model.name,
        "metric": plan.metric,
        "direction": plan.direction,
        "study": study.study_name,
        "storage": plan.shown_storage,
        "workers": plan.workers,
        "trials": len(trials),
        "pruning": cfg.tuning.pruning,
        "cv_folds": cfg.training.cv_folds,
        "seed": cfg.training.seed,
        "training_rows": rows,
    }
    metrics: dict[str, float] = {
        "trials_complete": float(sum(t.state == TrialState.COMPLETE for t in trials)),
        "trials_pruned": float(sum(t.state == TrialState.PRUNED for t in trials)),
        "trials_failed": float(sum(t.state == TrialState.FAIL for t in trials)),
    }
    tags = {"command": "tune", "study": study.study_name}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    if best is not None and best.value is not None:
        metrics[f"best_cv_{plan.metric}"] = float(best.value)
        params.update({f"best.{k}": v for k, v in trial_params(best, cfg.model.params).items()})
        tags["best_trial"] = str(best.number)
    return tracking.log_run(
        cfg.tracking,
        run_name=f"tune-{cfg.model.name}",
        params=params,
        metrics=metrics,
        tags=tags,
        children=children,
    )


# -- writing model.params -----------------------------------------------------------------------


def flow_params(value: str) -> str:
    """``{params: <value>}``: the model section as one YAML flow mapping, for messages."""
    return "{params: " + value + "}"


def params_yaml(params: Mapping[str, Any]) -> str:
    """``{C: 0.42, max_iter: 2000}``: one flow mapping, values as YAML reads them back."""
    text = yaml.safe_dump(dict(params), default_flow_style=True, width=10**6, sort_keys=False)
    return text.strip()


def updated_params_text(config_path: Path, params: Mapping[str, Any]) -> str:
    """The config file's text with ``model.params`` set to ``params``: only that value (or, when
    there is none, one new line) changes; every other line and comment is kept byte for byte.
    The result must read back as the old file with only ``model.params`` changed and be a valid
    config (with the environment's overrides); ``ConfigError`` otherwise."""
    try:
        with config_path.open(encoding="utf-8", newline="") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {config_path}") from None
    newline = "\r\n" if "\r\n" in text else "\n"
    value = params_yaml(params)
    by_hand = "edit it by hand: model: " + flow_params(value)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {config_path} is not valid YAML: {exc}") from None
    if not isinstance(root, yaml.MappingNode) or root.flow_style:
        raise ConfigError(
            f"config file {config_path} is not a block mapping of sections: {by_hand}"
        )
    model = next((v for k, v in root.value if k.value == "model"), None)
    if model is None:
        separator = "" if not text or text.endswith(("\n", "\r")) else newline
        new_text = f"{text}{separator}model:{newline}  params: {value}{newline}"
    elif not isinstance(model, yaml.MappingNode) or model.flow_style or not model.value:
        raise ConfigError(f"config file {config_path}: model: is not a block mapping: {by_hand}")
    else:
        entry = next(((k, v) for k, v in model.value if k.value == "params"), None)
        if entry is None:
            indent = model.value[0][0].start_mark.column
            at = _line_end(text, _last_line_index(text, model))
            new_text = text[:at] + f"{' ' * indent}params: {value}{newline}" + text[at:]
        else:
            key, node = entry
            if node.start_mark.line == key.start_mark.line and (
                not isinstance(node, yaml.CollectionNode) or node.flow_style
            ):
                # `params: {}  # comment` on one line: replace the value only, keeping the
                # comment where it was when the new value leaves room for it.
                start, end = node.start_mark.index, node.end_mark.index
                gap = len(text[end:]) - len(text[end:].lstrip(" "))
                if text[end + gap : end + gap + 1] == "#":
                    room = end + gap - start - len(value)
                    value += " " * max(2, room) if room >= 2 else "  "
                    end += gap
                new_text = text[:start] + value + text[end:]
            else:
                # A block mapping under `params:`: its lines become the one flow mapping.
                start = key.start_mark.index
                end = _line_end(text, _last_line_index(text, node))
                new_text = text[:start] + f"params: {value}{newline}" + text[end:]
    _check_params_rewrite(text, new_text, params, config_path, by_hand)
    return new_text


def _last_line_index(text: str, node: yaml.Node) -> int:
    """The text index of the last character of ``node``'s content (block nodes' end marks
    point past trailing blank and comment lines)."""
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    else:
        return max(node.end_mark.index - 1, node.start_mark.index)
    if node.flow_style or not children:
        return max(node.end_mark.index - 1, node.start_mark.index)
    return max(_last_line_index(text, child) for child in children)


def _line_end(text: str, index: int) -> int:
    """The index just past the line break of the line holding ``index``."""
    end = text.find("\n", index)
    return len(text) if end < 0 else end + 1


def _check_params_rewrite(
    old_text: str, new_text: str, params: Mapping[str, Any], source: Path, by_hand: str
) -> None:
    old = yaml.safe_load(old_text) or {}
    new = yaml.safe_load(new_text) or {}
    expected = {**old, "model": {**(old.get("model") or {}), "params": dict(params)}}
    if new != expected:
        raise ConfigError(f"cannot rewrite model.params of {source} safely: {by_hand}")
    config_from_dict(new, os.environ, source)


def write_model_params(config_path: Path, params: Mapping[str, Any]) -> None:
    """Set ``model.params`` in the config file, atomically, keeping its other lines, its
    comments and its permissions (a link is followed: the file it points at is replaced)."""
    new_text = updated_params_text(config_path, params)
    try:
        replace_text(config_path.resolve(), new_text, keep_mode=True)
    except OSError as exc:  # a read-only mount (the compose trainer), no permission
        raise ConfigError(
            f"cannot write {config_path} ({exc.strerror or first_line(exc)}): set it by hand: "
            f"model: {flow_params(params_yaml(params))}"
        ) from None
