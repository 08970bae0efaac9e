"""Training: validate the images -> train the CNN (checkpointed, resumable, optionally
distributed) -> quality gate -> test evaluation -> ONNX export + parity check -> publish a
versioned model -> MLflow.

``train(cfg)`` is the same function whether it runs in one process or in every process of
``torchrun --nproc_per_node=N -m <package> train``: rank 0 validates the data, writes the
checkpoints, logs to MLflow and publishes; all ranks compute. This module is the training loop;
``checkpoints`` saves and restores its state (``--resume``) and ``publish`` turns the best
epoch into a model version.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from . import checkpoints, distributed, tracking
from .checkpoints import BEST_CHECKPOINT, LAST_CHECKPOINT
from .config import Config
from .data.dataset import ImageDataset, ManifestRow, load_pixels
from .data.validate import DatasetReport, validate_dataset
from .distributed import DistributedContext
from .errors import ConfigError, TrackingError
from .model import build_model, cross_entropy, parameter_count
from .publish import publish_best

logger = logging.getLogger(__name__)

NORMALIZATION_SAMPLE = 2000  # training images used to measure the pixel mean and std

EpochCallback = Callable[[dict[str, float]], None]


@dataclass(frozen=True)
class TrainResult:
    """What one training run produced (the same on every rank)."""

    version: str
    model_dir: Path
    metrics: dict[str, float]  # test split, PyTorch model before export
    history: list[dict[str, float]]  # one entry per epoch: epoch, train_loss, val_loss, ...
    best_epoch: int
    parameter_count: int
    onnx_parity: dict[str, float | int | bool]
    report_files: list[Path]
    run_id: str | None
    world_size: int


def select_device(setting: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA, then Apple MPS, then CPU; a forced device must be available."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if setting == "auto":
        setting = "cuda" if cuda else "mps" if mps else "cpu"
    if (setting == "cuda" and not cuda) or (setting == "mps" and not mps):
        raise ConfigError(
            f"training.device is '{setting}' but no such device is available here (use auto or cpu)"
        )
    return torch.device(f"cuda:{local_rank}" if setting == "cuda" else setting)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed every generator; with ``deterministic`` make PyTorch pick reproducible kernels
    (and raise on an operation that has none, rather than silently vary)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this before its first use to be deterministic (harmless elsewhere).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def train(
    cfg: Config, resume: bool = False, *, on_epoch_end: EpochCallback | None = None
) -> TrainResult:
    """Run the whole training pipeline; ``resume`` continues from ``last.pt`` (and its MLflow
    run). ``on_epoch_end`` is called on every rank with each epoch's metrics."""
    device = select_device(cfg.training.device, int(os.environ.get("LOCAL_RANK", "0")))
    ctx = distributed.setup(device.type)
    try:
        result = _train(cfg, ctx, device, resume, on_epoch_end)
        # Every rank completes its last collective before any rank tears the group down, so
        # no rank's destroy_process_group closes connections a peer is still using.
        distributed.barrier(ctx)
        return result
    finally:
        distributed.cleanup(ctx)


def _train(
    cfg: Config,
    ctx: DistributedContext,
    device: torch.device,
    resume: bool,
    on_epoch_end: EpochCallback | None,
) -> TrainResult:
    tc = cfg.training
    checkpoints_dir = cfg.paths.checkpoints_dir
    report = distributed.run_on_main(ctx, lambda: validate_dataset(cfg.data))
    if ctx.is_main:
        logger.info(
            "data OK: %d images, %d classes\n%s",
            len(report.rows),
            len(report.classes),
            report.summary(),
        )
    checkpoint = (
        checkpoints.load_last(checkpoints_dir / LAST_CHECKPOINT, cfg, report) if resume else None
    )
    if checkpoint is None and ctx.is_main:
        for name in (BEST_CHECKPOINT, LAST_CHECKPOINT):  # never resume into an older run
            (checkpoints_dir / name).unlink(missing_ok=True)

    seed_everything(tc.seed + ctx.rank, tc.deterministic)
    model = build_model(cfg.model, len(report.classes), cfg.data.channels)
    if checkpoint is None:
        stats = distributed.run_on_main(ctx, lambda: _pixel_statistics(cfg, report))
        model.set_normalization(*stats)
    else:
        model.load_state_dict(checkpoint["model"])
    model.to(device)
    n_parameters = parameter_count(model)
    if ctx.is_main:
        logger.info(
            "model: %d parameters; training on %s%s%s",
            n_parameters,
            device,
            f" x {ctx.world_size} processes" if ctx.enabled else "",
            " with mixed precision" if device.type == "cuda" and tc.mixed_precision else "",
        )

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay
    )
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=tc.epochs)
        if tc.scheduler == "cosine"
        else None
    )
    amp = device.type == "cuda" and tc.mixed_precision
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    network: nn.Module = model
    if ctx.enabled:
        network = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    train_set = _dataset(cfg, report, report.split("train"))
    sampler: DistributedSampler[Any] = DistributedSampler(
        train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=tc.seed
    )
    loader_options: dict[str, Any] = {
        "batch_size": tc.batch_size,
        "num_workers": tc.num_workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": tc.num_workers > 0,
        # The loaders draw worker seeds from their own generator, not from the global one
        # that dropout uses, so a resumed run replays exactly.
        "generator": torch.Generator().manual_seed(tc.seed),
    }
    train_loader = DataLoader(train_set, sampler=sampler, **loader_options)
    # Each rank scores its own slice of the validation set; the sums are combined.
    val_rows = report.split("val")[ctx.rank :: ctx.world_size]
    val_loader = DataLoader(_dataset(cfg, report, val_rows), shuffle=False, **loader_options)

    state = _TrainingState()
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        state = _TrainingState.from_checkpoint(checkpoint)

    run = tracking.TrackedRun(cfg.tracking)  # ranks other than 0 keep this no-op run

    def open_tracking() -> str | None:
        nonlocal run
        run = tracking.open_run(
            cfg.tracking,
            run_name=f"train-{datetime.now(UTC):%Y%m%dT%H%M%S}",
            resume_run_id=state.run_id,
        )
        if state.run_id is None:
            run.log_params(_params(cfg, report, n_parameters, ctx, device))
        return run.run_id

    try:
        # Before the first epoch: an unreachable tracker stops every rank now, not after
        # training.
        state.run_id = distributed.run_on_main(ctx, open_tracking)
        if checkpoint is not None:
            checkpoints.restore_rng(checkpoint["rng"], ctx.rank, device)
            logger.info("resuming after epoch %d of %d", state.epoch, tc.epochs)
        while not state.finished:
            epoch = state.epoch + 1
            sampler.set_epoch(epoch)
            lr = float(optimizer.param_groups[0]["lr"])
            train_loss = _train_epoch(
                cfg, ctx, network, train_loader, optimizer, scaler, device, amp, epoch
            )
            if scheduler is not None:
                scheduler.step()
            distributed.sync_buffers(ctx, model)
            val_loss, val_accuracy = _validate(ctx, model, val_loader, device)
            record = {
                "epoch": float(epoch),
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "lr": lr,
            }
            improved = state.update(record, tc.early_stopping_patience, tc.epochs)
            rng_states = distributed.gather(ctx, checkpoints.rng_state(device))
            if ctx.is_main:
                logger.info(
                    "epoch %d/%d: train loss %.4f, val loss %.4f, val accuracy %.4f%s",
                    epoch,
                    tc.epochs,
                    train_loss,
                    val_loss,
                    val_accuracy,
                    " (best)" if improved else "",
                )
                if improved:
                    checkpoints.save(
                        checkpoints_dir / BEST_CHECKPOINT,
                        checkpoints.best_payload(model, cfg, report, record),
                    )
                last = checkpoints.last_payload(
                    model, optimizer, scheduler, scaler, cfg, report, state.as_dict(), rng_states
                )
                checkpoints.save(checkpoints_dir / LAST_CHECKPOINT, last)
                run.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)
            if on_epoch_end is not None:
                on_epoch_end(record)
        if state.stopped_early and ctx.is_main:
            logger.info("early stopping: no improvement for %d epochs", tc.early_stopping_patience)
        distributed.barrier(ctx)
        result = distributed.run_on_main(
            ctx, lambda: _finish(cfg, ctx, report, state, run, device, n_parameters)
        )
    except BaseException as exc:
        if ctx.is_main:
            _close_quietly(run, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    return result


class _TrainingState:
    """Progress that a checkpoint must carry for ``--resume`` to continue exactly."""

    def __init__(self) -> None:
        self.epoch = 0
        self.best: dict[str, float] | None = None
        self.bad_epochs = 0
        self.history: list[dict[str, float]] = []
        self.finished = False
        self.stopped_early = False
        self.run_id: str | None = None

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> _TrainingState:
        state = cls()
        for name in ("epoch", "best", "bad_epochs", "history", "finished", "stopped_early"):
            setattr(state, name, checkpoint[name])
        state.run_id = checkpoint["mlflow_run_id"]
        return state

    def as_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "finished": self.finished,
            "stopped_early": self.stopped_early,
            "mlflow_run_id": self.run_id,
        }

    def update(self, record: dict[str, float], patience: int, epochs: int) -> bool:
        """Record an epoch; return whether it is the best so far (higher validation accuracy,
        ties broken by lower validation loss)."""
        self.epoch = int(record["epoch"])
        self.history.append(record)
        best = self.best
        improved = best is None or (record["val_accuracy"], -record["val_loss"]) > (
            best["val_accuracy"],
            -best["val_loss"],
        )
        if improved:
            self.best, self.bad_epochs = record, 0
        else:
            self.bad_epochs += 1
        self.stopped_early = self.bad_epochs >= patience and self.epoch < epochs
        self.finished = self.stopped_early or self.epoch >= epochs
        return improved


def _dataset(cfg: Config, report: DatasetReport, rows: list[ManifestRow]) -> ImageDataset:
    return ImageDataset(cfg.data.root, rows, report.classes, cfg.data.image_size, cfg.data.channels)


def _pixel_statistics(cfg: Config, report: DatasetReport) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of (a seeded sample of) the training images."""
    rows = report.split("train")
    if len(rows) > NORMALIZATION_SAMPLE:
        picked = np.random.default_rng(cfg.training.seed).choice(
            len(rows), NORMALIZATION_SAMPLE, replace=False
        )
        rows = [rows[i] for i in sorted(picked)]
    pixels = load_pixels(cfg.data.root, rows, cfg.data.image_size, cfg.data.channels)
    return pixels.mean(axis=(0, 2, 3)).tolist(), pixels.std(axis=(0, 2, 3)).tolist()


def _train_epoch(
    cfg: Config,
    ctx: DistributedContext,
    network: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, int]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    amp: bool,
    epoch: int,
) -> float:
    network.train()
    total, count = 0.0, 0
    progress = tqdm(
        loader,
        desc=f"epoch {epoch}/{cfg.training.epochs}",
        leave=False,
        disable=not (ctx.is_main and sys.stderr.isatty()),
    )
    for pixels, labels in progress:
        pixels = pixels.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            logits = network(pixels)
        loss = cross_entropy(logits, labels)
        scaler.scale(loss).backward()
        if cfg.training.grad_clip_norm is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(network.parameters(), cfg.training.grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.item()) * len(labels)
        count += len(labels)
        progress.set_postfix(loss=f"{loss.item():.4f}")
    total, count_sum = distributed.all_reduce_sum(ctx, [total, float(count)], device)
    return total / max(count_sum, 1.0)


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    """float16 autocast on CUDA when training.mixed_precision is on; a no-op otherwise."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.float16)


def _validate(
    ctx: DistributedContext,
    model: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, int]],
    device: torch.device,
) -> tuple[float, float]:
    """Validation loss and accuracy over all ranks' slices (the plain module, not the DDP
    wrapper: its forward would wait for the other ranks)."""
    model.eval()
    loss_sum, correct, count = 0.0, 0.0, 0.0
    with torch.inference_mode():
        for pixels, labels in loader:
            pixels, labels = pixels.to(device), labels.to(device)
            logits = model(pixels)
            loss_sum += float(cross_entropy(logits, labels).item()) * len(labels)
            correct += float((logits.argmax(dim=1) == labels).sum().item())
            count += len(labels)
    loss_sum, correct, count = distributed.all_reduce_sum(ctx, [loss_sum, correct, count], device)
    return loss_sum / max(count, 1.0), correct / max(count, 1.0)


def _finish(
    cfg: Config,
    ctx: DistributedContext,
    report: DatasetReport,
    state: _TrainingState,
    run: tracking.TrackedRun,
    device: torch.device,
    n_parameters: int,
) -> TrainResult:
    """Rank 0: publish the best epoch (gate, test evaluation, export, reports, MLflow)."""
    assert state.best is not None  # at least one epoch ran
    published = publish_best(
        cfg,
        report,
        best=state.best,
        history=state.history,
        epochs_trained=state.epoch,
        n_parameters=n_parameters,
        run=run,
        device=device,
    )
    return TrainResult(
        version=published.version,
        model_dir=published.model_dir,
        metrics=published.metrics,
        history=list(state.history),
        best_epoch=int(state.best["epoch"]),
        parameter_count=n_parameters,
        onnx_parity=published.onnx_parity,
        report_files=published.report_files,
        run_id=run.run_id,
        world_size=ctx.world_size,
    )


def _params(
    cfg: Config,
    report: DatasetReport,
    n_parameters: int,
    ctx: DistributedContext,
    device: torch.device,
) -> dict[str, Any]:
    sections = cfg.model_dump(mode="json", include={"data", "model", "training", "export"})
    return {
        **tracking.flatten(sections),
        "classes": ",".join(report.classes),
        "n_train": len(report.split("train")),
        "n_val": len(report.split("val")),
        "n_test": len(report.split("test")),
        "parameter_count": n_parameters,
        "world_size": ctx.world_size,
        "device": device.type,
        "torch": torch.__version__,
    }


def _close_quietly(run: tracking.TrackedRun, status: str) -> None:
    """End the MLflow run after a failure without hiding the failure itself."""
    try:
        run.finish(status)
    except TrackingError as exc:
        logger.warning("%s", exc)
