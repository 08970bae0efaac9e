"""The image-folder layout, its split manifest and the PyTorch dataset over it.

Layout: ``data.root/<class name>/<image file>``; class names are the sorted folder names, so a
user's own images are a config change. The manifest (``data.manifest``, CSV ``path,label,split``
with paths relative to the root) fixes which image belongs to which split, so every run, every
rank and every evaluation sees the same train/val/test sets. Images are decoded with
``imaging.decode_image``, the function batch prediction and the service use as well.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..atomic import new_partial_file
from ..config import DataConfig
from ..errors import DataError
from ..imaging import IMAGE_SUFFIXES, decode_image

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("path", "label", "split")


@dataclass(frozen=True)
class ManifestRow:
    """One image: its path relative to the data root, its class and its split."""

    path: str
    label: str
    split: str


def is_image_file(path: Path) -> bool:
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES
    )


def scan_image_folder(root: Path) -> dict[str, list[str]]:
    """Class name -> sorted image paths (relative to ``root``) for every class folder."""
    if not root.is_dir():
        return {}
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {
        folder.name: sorted(
            path.relative_to(root).as_posix() for path in folder.rglob("*") if is_image_file(path)
        )
        for folder in folders
    }


def split_rows(
    images_by_class: dict[str, list[str]], val_fraction: float, test_fraction: float, seed: int
) -> list[ManifestRow]:
    """A stratified, seeded split: each class contributes the same fractions to val and test
    (at least one image each), so every split holds every class."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in sorted(images_by_class):
        paths = images_by_class[label]
        order = rng.permutation(len(paths))
        n_test = max(1, round(len(paths) * test_fraction))
        n_val = max(1, round(len(paths) * val_fraction))
        for rank, index in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            rows.append(ManifestRow(paths[index], label, split))
    return sorted(rows, key=lambda row: row.path)


def write_manifest(path: Path, rows: Sequence[ManifestRow]) -> None:
    """Write the CSV atomically: a reader never sees half a manifest."""
    partial = new_partial_file(path)  # readable by all, like the data it describes
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(MANIFEST_COLUMNS)
            writer.writerows((row.path, row.label, row.split) for row in rows)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def read_manifest(path: Path) -> list[ManifestRow]:
    """The manifest's rows; ``DataError`` if it is missing or lacks the expected columns."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(
                    f"manifest {path} lacks the column(s) {', '.join(missing)}; expected a CSV "
                    f"with header {','.join(MANIFEST_COLUMNS)}"
                )
            return [
                ManifestRow(row["path"].strip(), row["label"].strip(), row["split"].strip())
                for row in reader
            ]
    except FileNotFoundError:
        raise DataError(f"manifest {path} not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"manifest {path} cannot be read: {exc}") from None


def refuse_writing_into_own_images(cfg: DataConfig) -> None:
    """Raise ``DataError`` if the manifest or the sample would be written inside ``data.root``
    when it is your own image folder (only the sample's own folder is ever written to)."""
    if cfg.uses_sample:
        return
    suggestions = {
        "data.manifest": (cfg.manifest, "data/splits/manifest.csv"),
        "data.sample.root": (cfg.sample.root, "data/sample/digits"),
    }
    for setting, (path, suggestion) in suggestions.items():
        if path.resolve().is_relative_to(cfg.root.resolve()):
            raise DataError(
                f"{setting} {path} lies inside your image folder data.root ({cfg.root}), "
                f"which is never written: point {setting} elsewhere, e.g. {suggestion}"
            )


def create_manifest(cfg: DataConfig) -> list[ManifestRow]:
    """Split the images found under ``cfg.root`` and write the manifest; return its rows."""
    images = scan_image_folder(cfg.root)
    if not any(images.values()):
        raise DataError(
            f"no images found in class folders under {cfg.root}: expected "
            f"{cfg.root}/<class name>/<image>{'|'.join(IMAGE_SUFFIXES)}"
        )
    rows = split_rows(images, cfg.val_fraction, cfg.test_fraction, cfg.sample.seed)
    write_manifest(cfg.manifest, rows)
    return rows


def load_pixels(root: Path, rows: Sequence[ManifestRow], size: int, channels: int) -> np.ndarray:
    """Decode ``rows`` into one float32 ``[N, C, size, size]`` array (for modest row counts)."""
    if not rows:
        return np.zeros((0, channels, size, size), dtype=np.float32)
    return np.stack([decode_image(root / row.path, size, channels) for row in rows])


def iter_pixel_batches(
    root: Path, rows: Sequence[ManifestRow], size: int, channels: int, batch_size: int
) -> Iterator[np.ndarray]:
    """Decode ``rows`` batch by batch, so a large test split never sits in memory at once."""
    for start in range(0, len(rows), batch_size):
        yield load_pixels(root, rows[start : start + batch_size], size, channels)


def class_indices(rows: Sequence[ManifestRow], classes: Sequence[str]) -> np.ndarray:
    """Each row's label as its position in ``classes`` (int64): the model's class index."""
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[row.label] for row in rows], dtype=np.int64)


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Manifest rows as ``(pixels [C, H, W] float32 in [0, 1], class index)`` pairs.

    Images are decoded on access (in DataLoader workers when ``num_workers > 0``), so a large
    folder never has to fit in memory.
    """

    def __init__(
        self,
        root: Path,
        rows: Sequence[ManifestRow],
        classes: Sequence[str],
        size: int,
        channels: int,
    ) -> None:
        self.root = root
        self.rows = list(rows)
        self.size = size
        self.channels = channels
        self.labels = class_indices(self.rows, classes).tolist()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        pixels = decode_image(self.root / self.rows[item].path, self.size, self.channels)
        return torch.from_numpy(pixels), self.labels[item]
