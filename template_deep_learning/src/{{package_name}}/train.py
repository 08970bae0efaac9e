"""Training: validate the images -> train the CNN (checkpointed, resumable, optionally
distributed) -> quality gate -> test evaluation -> ONNX export + parity check -> publish a
versioned model -> MLflow.

``train(cfg)`` is the same function whether it runs in one process or in every process of
``torchrun --nproc_per_node=N -m <package> train``: rank 0 validates the data, writes the
checkpoints, logs to MLflow and publishes; all ranks compute. The quality gate, the export and
its parity check all run before anything is written to the models directory, so a bad run
never changes the model being served.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import PIL
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from . import artifacts, distributed, export, tracking
from .config import Config
from .data.dataset import ImageDataset, ManifestRow, iter_pixel_batches, load_pixels
from .data.validate import DatasetReport, validate_dataset
from .distributed import DistributedContext
from .errors import ConfigError, ModelNotFoundError, ModelQualityError, TrackingError
from .evaluate import HISTORY_FILE, write_reports
from .model import ConvNet, build_model, cross_entropy, parameter_count
from .ortsession import runtime_version
from .versioning import git_commit

logger = logging.getLogger(__name__)

BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
CHECKPOINT_FORMAT = 1
NORMALIZATION_SAMPLE = 2000  # training images used to measure the pixel mean and std
SCORING_BATCH = 256

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
    checkpoints = cfg.paths.checkpoints_dir
    report = distributed.run_on_main(ctx, lambda: validate_dataset(cfg.data))
    if ctx.is_main:
        logger.info(
            "data OK: %d images, %d classes\n%s",
            len(report.rows),
            len(report.classes),
            report.summary(),
        )
    checkpoint = _load_checkpoint(checkpoints / LAST_CHECKPOINT, cfg, report) if resume else None
    if checkpoint is None and ctx.is_main:
        for name in (BEST_CHECKPOINT, LAST_CHECKPOINT):  # never resume into an older run
            (checkpoints / name).unlink(missing_ok=True)

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
            _restore_rng(checkpoint["rng"], ctx.rank, device)
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
            rng_states = distributed.gather(ctx, _rng_state(device))
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
                    _save(checkpoints / BEST_CHECKPOINT, _best_payload(model, cfg, report, record))
                _save(
                    checkpoints / LAST_CHECKPOINT,
                    _last_payload(
                        model, optimizer, scheduler, scaler, cfg, report, state, rng_states
                    ),
                )
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
    """Rank 0: quality gate, test evaluation, export, parity, reports, publish, MLflow."""
    assert state.best is not None  # at least one epoch ran
    best = state.best
    if best["val_accuracy"] < cfg.training.min_val_accuracy:
        run.set_tags({"quality_gate": "failed"})
        raise ModelQualityError(
            f"best validation accuracy {best['val_accuracy']:.4f} (epoch {best['epoch']:.0f}) "
            f"is below training.min_val_accuracy {cfg.training.min_val_accuracy}: the model was "
            "not published"
        )
    model = build_model(cfg.model, len(report.classes), cfg.data.channels)
    checkpoint = torch.load(
        cfg.paths.checkpoints_dir / BEST_CHECKPOINT, map_location="cpu", weights_only=True
    )
    model.load_state_dict(checkpoint["model"])
    model.to(device).eval()

    test_rows = report.split("test")
    index = {name: i for i, name in enumerate(report.classes)}
    y_true = np.array([index[row.label] for row in test_rows], dtype=np.int64)
    probs = _predict(model, _test_batches(cfg, test_rows), device)

    onnx_model = export.export_onnx(
        model, image_size=cfg.data.image_size, channels=cfg.data.channels, opset=cfg.export.opset
    )
    parity = export.check_parity(
        onnx_model, model, _test_batches(cfg, test_rows), cfg.export.parity_tolerance
    )
    logger.info(
        "ONNX export matches PyTorch on %d test images (max |diff| %.1e)",
        parity.images,
        parity.max_abs_diff,
    )

    version = artifacts.new_version(report.fingerprint)
    metrics, report_files = write_reports(
        cfg.paths.reports_dir,
        version=version,
        source="pytorch",
        classes=report.classes,
        root=cfg.data.root,
        rows=test_rows,
        y_true=y_true,
        probs=probs,
        image_size=cfg.data.image_size,
        channels=cfg.data.channels,
        most_confused=cfg.evaluation.most_confused,
        history=state.history,
    )
    all_metrics = {
        **metrics,
        "best_val_accuracy": best["val_accuracy"],
        "best_val_loss": best["val_loss"],
    }
    commit = git_commit()

    def write(model_dir: Path) -> None:
        (model_dir / artifacts.ONNX_FILE).write_bytes(onnx_model)
        artifacts.write_json(model_dir / HISTORY_FILE, state.history)
        artifacts.write_metadata(
            model_dir,
            artifacts.ModelMetadata(
                version=version,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                project=cfg.project,
                classes=report.classes,
                image_size=cfg.data.image_size,
                channels=cfg.data.channels,
                metrics=all_metrics,
                parameter_count=n_parameters,
                epochs_trained=state.epoch,
                input_example=_input_example(cfg, test_rows[0]),
                data_fingerprint=report.fingerprint,
                git_commit=commit,
                library_versions=_library_versions(),
                onnx_sha256=artifacts.sha256_file(model_dir / artifacts.ONNX_FILE),
                onnx_parity=parity.as_dict(),
                mlflow_run_id=run.run_id,
            ),
        )

    model_dir = artifacts.publish(cfg.paths.models_dir, version, write)
    logger.info("published model %s to %s", version, model_dir)

    # The model is published before the last tracking calls: a tracker outage must not block
    # a good model, and the error names the published version.
    try:
        run.log_metrics(
            {
                **{f"test_{k}": v for k, v in metrics.items()},
                "onnx_max_abs_diff": parity.max_abs_diff,
                "parameter_count": float(n_parameters),
            },
            step=state.epoch,
        )
        run.set_tags(
            {
                "model_version": version,
                "data_fingerprint": report.fingerprint,
                "git_commit": commit or "unknown",
                "quality_gate": "passed",
                "onnx_parity": "passed",
            }
        )
        run.log_artifacts(report_files, "reports")
        run.log_artifacts(
            [
                model_dir / name
                for name in (artifacts.ONNX_FILE, artifacts.METADATA_FILE, HISTORY_FILE)
            ],
            "model",
        )
        run.finish("FINISHED")
    except TrackingError as exc:
        raise TrackingError(f"model {version} was published, but {exc}") from exc
    return TrainResult(
        version=version,
        model_dir=model_dir,
        metrics=all_metrics,
        history=list(state.history),
        best_epoch=int(best["epoch"]),
        parameter_count=n_parameters,
        onnx_parity=parity.as_dict(),
        report_files=report_files,
        run_id=run.run_id,
        world_size=ctx.world_size,
    )


def _test_batches(cfg: Config, rows: list[ManifestRow]) -> Iterator[np.ndarray]:
    return iter_pixel_batches(
        cfg.data.root, rows, cfg.data.image_size, cfg.data.channels, SCORING_BATCH
    )


def _predict(model: nn.Module, batches: Iterator[np.ndarray], device: torch.device) -> np.ndarray:
    outputs = []
    with torch.inference_mode():
        for pixels in batches:
            logits = model(torch.from_numpy(pixels).to(device))
            outputs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(outputs)


def _input_example(cfg: Config, row: ManifestRow) -> list[Any]:
    """One real test image as the API takes it: ``[H][W]`` (gray) or ``[H][W][3]`` (RGB)."""
    (pixels,) = load_pixels(cfg.data.root, [row], cfg.data.image_size, cfg.data.channels)
    example = pixels[0] if cfg.data.channels == 1 else pixels.transpose(1, 2, 0)
    return np.round(example.astype(np.float64), 6).tolist()  # type: ignore[no-any-return]


def _library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": runtime_version(),
        "pillow": PIL.__version__,
    }


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


# Checkpoints -------------------------------------------------------------------------------


def _save(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _identity(cfg: Config, report: DatasetReport) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed under ``cfg``."""
    return {
        "classes": report.classes,
        "model": cfg.model.model_dump(mode="json"),
        "image_size": cfg.data.image_size,
        "channels": cfg.data.channels,
        "epochs": cfg.training.epochs,
        "scheduler": cfg.training.scheduler,
    }


def _best_payload(
    model: ConvNet, cfg: Config, report: DatasetReport, record: dict[str, float]
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "metrics": record,
        "identity": _identity(cfg, report),
    }


def _last_payload(
    model: ConvNet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    scaler: torch.amp.GradScaler,
    cfg: Config,
    report: DatasetReport,
    state: _TrainingState,
    rng_states: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict(),
        "rng": rng_states,
        "data_fingerprint": report.fingerprint,
        **state.as_dict(),
        "identity": _identity(cfg, report),
    }


def _load_checkpoint(path: Path, cfg: Config, report: DatasetReport) -> dict[str, Any]:
    """``last.pt``, checked against the current config and data."""
    try:
        checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelNotFoundError(
            f"no checkpoint to resume from at {path}: run train without --resume"
        ) from None
    except Exception as exc:
        raise ModelNotFoundError(f"checkpoint {path} cannot be read: {exc}") from None
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ModelNotFoundError(f"checkpoint {path} has an unknown format: train from scratch")
    saved = checkpoint.get("identity", {})
    differences = [
        f"{key}: checkpoint {saved.get(key)!r}, now {value!r}"
        for key, value in _identity(cfg, report).items()
        if saved.get(key) != value
    ]
    if differences:
        raise ConfigError(
            f"cannot resume from {path}: it was trained under different settings ("
            + "; ".join(differences)
            + "); restore them or train without --resume"
        )
    if checkpoint["data_fingerprint"] != report.fingerprint:
        logger.warning("the data changed since %s was written; resuming anyway", path)
    return checkpoint


def _rng_state(device: torch.device) -> dict[str, Any]:
    """This process's generator states as plain lists and tuples: they travel between ranks
    (``all_gather_object``) and load with ``torch.load(weights_only=True)``."""
    kind, keys, position, has_gauss, gauss = cast(
        tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True)
    )
    cuda = torch.cuda.get_rng_state(device).tolist() if device.type == "cuda" else None
    return {
        "python": random.getstate(),
        "numpy": (kind, keys.tolist(), position, has_gauss, gauss),
        "torch": torch.get_rng_state().tolist(),
        "cuda": cuda,
    }


def _restore_rng(states: list[dict[str, Any]], rank: int, device: torch.device) -> None:
    if rank >= len(states):  # resumed with more processes than saved: keep the fresh seed
        return
    state = states[rank]
    random.setstate(state["python"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8), device)
