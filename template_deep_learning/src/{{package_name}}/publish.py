"""After training (rank 0): turn the best checkpoint into a published model version.

Quality gate -> test evaluation -> ONNX export + parity check -> reports -> ``models/<version>/``
(``model.onnx``, ``metadata.json``, ``history.json``) -> the MLflow run's last metrics, tags and
artifacts. The gate, the export and its parity check all run before anything is written to the
models directory, so a bad run never changes the model being served.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import PIL
import torch
from torch import nn

from . import artifacts, checkpoints, export, model_store, tracking
from .config import Config
from .data.dataset import ManifestRow, iter_pixel_batches, load_pixels
from .data.validate import DatasetReport
from .errors import ModelQualityError, TrackingError
from .evaluate import HISTORY_FILE, write_reports
from .model import build_model
from .model_store import git_commit
from .ortsession import runtime_version

logger = logging.getLogger(__name__)

SCORING_BATCH = 256


@dataclass(frozen=True)
class PublishedModel:
    """The version a training run published and what it measured."""

    version: str
    model_dir: Path
    metrics: dict[str, float]  # test split (PyTorch model before export) + best validation
    onnx_parity: dict[str, float | int | bool]
    report_files: list[Path]


def publish_best(
    cfg: Config,
    report: DatasetReport,
    *,
    best: dict[str, float],
    history: list[dict[str, float]],
    epochs_trained: int,
    n_parameters: int,
    run: tracking.TrackedRun,
    device: torch.device,
) -> PublishedModel:
    """Gate, evaluate, export and publish the weights in ``best.pt`` (``best`` is that
    epoch's record); finish the MLflow ``run``."""
    if best["val_accuracy"] < cfg.training.min_val_accuracy:
        run.set_tags({"quality_gate": "failed"})
        raise ModelQualityError(
            f"best validation accuracy {best['val_accuracy']:.4f} (epoch {best['epoch']:.0f}) "
            f"is below training.min_val_accuracy {cfg.training.min_val_accuracy}: the model was "
            "not published"
        )
    model = build_model(cfg.model, len(report.classes), cfg.data.channels)
    model.load_state_dict(checkpoints.best_model_state(cfg.paths.checkpoints_dir))
    model.to(device).eval()

    test_rows = report.split("test")
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

    version = model_store.new_version(report.fingerprint)
    metrics, report_files = write_reports(
        cfg.paths.reports_dir,
        version=version,
        source="pytorch",
        classes=report.classes,
        root=cfg.data.root,
        rows=test_rows,
        probs=probs,
        image_size=cfg.data.image_size,
        channels=cfg.data.channels,
        most_confused=cfg.evaluation.most_confused,
        history=history,
    )
    all_metrics = {
        **metrics,
        "best_val_accuracy": best["val_accuracy"],
        "best_val_loss": best["val_loss"],
    }
    commit = git_commit()

    def write(model_dir: Path) -> None:
        (model_dir / artifacts.ONNX_FILE).write_bytes(onnx_model)
        model_store.write_json(model_dir / HISTORY_FILE, history)
        model_store.write_metadata(
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
                epochs_trained=epochs_trained,
                input_example=_input_example(cfg, test_rows[0]),
                data_fingerprint=report.fingerprint,
                git_commit=commit,
                library_versions=_library_versions(),
                onnx_sha256=model_store.sha256_file(model_dir / artifacts.ONNX_FILE),
                onnx_parity=parity.as_dict(),
                mlflow_run_id=run.run_id,
            ),
        )

    model_dir = model_store.publish(cfg.paths.models_dir, version, write)
    logger.info("published model %s to %s", version, model_dir)
    _finish_run(
        run,
        version=version,
        model_dir=model_dir,
        test_metrics=metrics,
        parity=parity,
        n_parameters=n_parameters,
        step=epochs_trained,
        data_fingerprint=report.fingerprint,
        commit=commit,
        report_files=report_files,
    )
    return PublishedModel(
        version=version,
        model_dir=model_dir,
        metrics=all_metrics,
        onnx_parity=parity.as_dict(),
        report_files=report_files,
    )


def _finish_run(
    run: tracking.TrackedRun,
    *,
    version: str,
    model_dir: Path,
    test_metrics: dict[str, float],
    parity: export.Parity,
    n_parameters: int,
    step: int,
    data_fingerprint: str,
    commit: str | None,
    report_files: list[Path],
) -> None:
    """Log the published model to its MLflow run and mark the run finished.

    The model is published before these calls: a tracker outage must not block a good model,
    and the error names the published version.
    """
    try:
        run.log_metrics(
            {
                **{f"test_{k}": v for k, v in test_metrics.items()},
                "onnx_max_abs_diff": parity.max_abs_diff,
                "parameter_count": float(n_parameters),
            },
            step=step,
        )
        run.set_tags(
            {
                "model_version": version,
                "data_fingerprint": data_fingerprint,
                "git_commit": commit or "unknown",
                "quality_gate": "passed",
                "onnx_parity": "passed",
            }
        )
        run.log_artifacts(report_files, "reports")
        run.log_artifacts(
            [
                model_dir / name
                for name in (artifacts.ONNX_FILE, model_store.METADATA_FILE, HISTORY_FILE)
            ],
            "model",
        )
        run.finish("FINISHED")
    except TrackingError as exc:
        raise TrackingError(f"model {version} was published, but {exc}") from exc


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
