"""Batch prediction: a folder of images (or a manifest CSV) in, one CSV of predictions out.

Images are decoded with ``imaging.decode_image`` (the training preprocessing) and scored by the
service's ONNX runtime in fixed-size chunks, so memory stays flat however many images there are,
and a file gets the same prediction here as from ``POST /predict/image``. The output is written
to ``<output>.partial`` and moved into place only when every image was scored: an unreadable
image stops the run with its name and leaves no half-written file behind. No torch import.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from . import model_store
from .config import Config
from .errors import DataError
from .imaging import IMAGE_SUFFIXES, decode_image
from .serving.runtime import load_predictor, rank

CHUNK_SIZE = 256
OUTPUT_COLUMNS = ("path", "prediction", "probability", "top_k", "model_version")


@dataclass(frozen=True)
class PredictSummary:
    """What a batch run did."""

    rows: int
    output: Path
    model_version: str


def iter_images(source: Path, data_root: Path) -> Iterator[tuple[str, Path]]:
    """``(name, file)`` pairs to score, in a stable order.

    ``source`` is a folder (every image below it, recursively, named by its path relative to
    the folder) or a CSV with a ``path`` column, like the training manifest (relative paths
    resolve against ``data_root``, as they do there).
    """
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if _is_image(path) and not any(p.startswith(".") for p in relative.parts):
                yield relative.as_posix(), path
        return
    if source.suffix.lower() == ".csv" and source.is_file():
        yield from _iter_manifest(source, data_root)
        return
    if not source.exists():
        raise DataError(
            f"input {source} not found: give an image folder or a CSV with a path column"
        )
    raise DataError(f"unsupported input {source}: give an image folder or a CSV with a path column")


def _refuse_output_among_inputs(output: Path, source: Path, data_root: Path) -> None:
    """Images are only read: the output may not replace an input file or land among images."""
    target = output.resolve()
    for folder in (source, data_root):
        if folder.is_dir() and target.is_relative_to(folder.resolve()):
            raise DataError(
                f"--output {output} lies inside the image folder {folder}, which is only "
                "read: write predictions elsewhere (e.g. reports/predictions.csv)"
            )
    if source.is_file() and target == source.resolve():
        raise DataError(f"--output {output} is the input file: choose another output path")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _iter_manifest(manifest: Path, data_root: Path) -> Iterator[tuple[str, Path]]:
    try:
        with manifest.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if "path" not in (reader.fieldnames or []):
                raise DataError(f"{manifest} has no 'path' column (header: {reader.fieldnames})")
            # Line 1 is the header: data rows start at line 2.
            for line, row in enumerate(reader, start=2):
                name = (row["path"] or "").strip()
                if not name:
                    raise DataError(f"{manifest} line {line}: empty path")
                path = Path(name)
                yield name, path if path.is_absolute() else data_root / path
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{manifest} cannot be read: {exc}") from None


def _decode_chunk(
    chunk: list[tuple[str, Path]], size: int, channels: int, max_bytes: int
) -> np.ndarray:
    images = []
    for _, path in chunk:
        try:
            file_bytes = path.stat().st_size
        except OSError:
            raise DataError(f"image {path} not found") from None
        if file_bytes > max_bytes:
            raise DataError(
                f"image {path} is {file_bytes} bytes, more than data.max_image_bytes ({max_bytes})"
            )
        images.append(decode_image(path, size, channels))  # DataError names the file
    return np.stack(images)


def predict_images(
    cfg: Config,
    source: Path,
    output: Path,
    *,
    version: str | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> PredictSummary:
    """Classify every image of ``source`` with the model (default: LATEST) into ``output`` (CSV:
    path, prediction, probability, top_k as JSON, model_version)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    _refuse_output_among_inputs(output, source, cfg.data.root)
    predictor = load_predictor(model_store.resolve_model_dir(cfg.paths.models_dir, version))
    meta = predictor.metadata
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    rows = 0
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(OUTPUT_COLUMNS)
            images = iter_images(source, cfg.data.root)
            while chunk := list(islice(images, chunk_size)):
                pixels = _decode_chunk(
                    chunk, meta.image_size, meta.channels, cfg.data.max_image_bytes
                )
                ranked = rank(predictor.predict(pixels), meta.classes, cfg.serving.top_k)
                writer.writerows(
                    (
                        name,
                        row["prediction"],
                        row["probability"],
                        json.dumps(row["top_k"]),
                        meta.version,
                    )
                    for (name, _), row in zip(chunk, ranked, strict=True)
                )
                rows += len(chunk)
        if rows == 0:
            raise DataError(f"no images in {source} (looked for {', '.join(IMAGE_SUFFIXES)})")
        partial.replace(output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return PredictSummary(rows, output, meta.version)
