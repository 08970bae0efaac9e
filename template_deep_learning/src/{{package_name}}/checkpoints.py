"""Training checkpoints: ``best.pt`` (the best epoch's weights, which get published) and
``last.pt`` (everything ``train --resume`` needs to continue exactly: weights, optimizer,
scheduler, gradient scaler, progress, and every rank's random generator states).

Only rank 0 writes them; each file is replaced atomically, so an interrupted run never leaves
half a checkpoint. A checkpoint records the settings it was trained under (its *identity*) and
is only resumed under the same ones.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from .atomic import new_partial_file
from .config import Config
from .data.validate import DatasetReport
from .errors import ConfigError, ModelIntegrityError, ModelNotFoundError
from .model import ConvNet

logger = logging.getLogger(__name__)

BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
CHECKPOINT_FORMAT = 1


def save(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a fresh file beside ``path``, then rename: a crash never leaves half a
    checkpoint."""
    partial = new_partial_file(path)
    try:
        torch.save(payload, partial)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def identity(cfg: Config, report: DatasetReport) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed under ``cfg``."""
    return {
        "classes": report.classes,
        "model": cfg.model.model_dump(mode="json"),
        "image_size": cfg.data.image_size,
        "channels": cfg.data.channels,
        "epochs": cfg.training.epochs,
        "scheduler": cfg.training.scheduler,
    }


def best_payload(
    model: ConvNet, cfg: Config, report: DatasetReport, record: dict[str, float]
) -> dict[str, Any]:
    """``best.pt``: the weights of the best epoch so far and that epoch's metrics."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "metrics": record,
        "identity": identity(cfg, report),
    }


def last_payload(
    model: ConvNet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    scaler: torch.amp.GradScaler,
    cfg: Config,
    report: DatasetReport,
    progress: dict[str, Any],
    rng_states: list[dict[str, Any]],
) -> dict[str, Any]:
    """``last.pt``: the whole training state after an epoch; ``progress`` is the loop's own
    state (epoch, best record, history, MLflow run id, ...)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict(),
        "rng": rng_states,
        "data_fingerprint": report.fingerprint,
        **progress,
        "identity": identity(cfg, report),
    }


def load_last(path: Path, cfg: Config, report: DatasetReport) -> dict[str, Any]:
    """``last.pt``, checked against the current config and data."""
    try:
        checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelNotFoundError(
            f"no checkpoint to resume from at {path}: run train without --resume"
        ) from None
    except Exception as exc:
        raise ModelIntegrityError(f"checkpoint {path} cannot be read: {exc}") from None
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ModelIntegrityError(f"checkpoint {path} has an unknown format: train from scratch")
    saved = checkpoint.get("identity", {})
    differences = [
        f"{key}: checkpoint {saved.get(key)!r}, now {value!r}"
        for key, value in identity(cfg, report).items()
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


def best_model_state(checkpoints_dir: Path) -> dict[str, Any]:
    """The weights saved in ``best.pt`` (on the CPU)."""
    checkpoint = torch.load(
        checkpoints_dir / BEST_CHECKPOINT, map_location="cpu", weights_only=True
    )
    return cast(dict[str, Any], checkpoint["model"])


def rng_state(device: torch.device) -> dict[str, Any]:
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


def restore_rng(states: list[dict[str, Any]], rank: int, device: torch.device) -> None:
    """Put back this rank's generator states from ``last.pt``."""
    if rank >= len(states):  # resumed with more processes than saved: keep the fresh seed
        return
    state = states[rank]
    random.setstate(state["python"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8), device)
