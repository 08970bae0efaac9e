"""The embedded sample: scikit-learn's bundled handwritten digits, written as an image folder.

``load_digits`` ships inside scikit-learn (no download): 1,797 grayscale 8x8 images of the digits
0-9 with pixel values 0-16. They are written as PNG files to ``data.root/<digit>/<id>.png`` with
a stratified, seeded split manifest, exactly the layout a user's own images would have, so the
rest of the pipeline cannot tell the sample from real data.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from ..imaging import encode_png
from .dataset import create_manifest, scan_image_folder, split_rows, write_manifest

DIGITS_MAX_VALUE = 16.0


def folder_has_images(root: Path) -> bool:
    return any(scan_image_folder(root).values())


def prepare_dataset(cfg: DataConfig, *, resplit: bool = False) -> str:
    """What ``python -m <package> data`` does; returns what it did, in one sentence.

    A folder without images gets the sample digits; a folder with images (the sample or your
    own) gets a split manifest if it has none, or a new one with ``resplit``. Images are never
    overwritten.
    """
    if not folder_has_images(cfg.root):
        count = write_sample_digits(cfg)
        return (
            f"wrote {count} sample digit images to {cfg.root}/ "
            f"and a stratified split to {cfg.manifest}"
        )
    if resplit or not cfg.manifest.is_file():
        rows = create_manifest(cfg)
        return f"wrote a stratified split of {len(rows)} images to {cfg.manifest}"
    return (
        f"{cfg.root}/ already holds images and {cfg.manifest} exists: nothing to do "
        "(--resplit rewrites the manifest)"
    )


def write_sample_digits(cfg: DataConfig) -> int:
    """Write the digits and their manifest; return the number of images.

    The folder is filled under a temporary name and renamed into place, so an interrupted run
    never leaves half a dataset behind. ``cfg.root`` must be missing or empty: a folder that
    already holds data is never overwritten.
    """
    from sklearn.datasets import load_digits  # seconds to import: only when writing

    root = cfg.root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(
            f"{root} already exists and is not empty: the sample is only written to a new "
            "folder (delete it to rebuild the sample, or point data.root elsewhere)"
        )
    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float32) / DIGITS_MAX_VALUE
    labels = [str(int(target)) for target in digits.target]

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        staging.chmod(0o755)  # mkdtemp directories are private; the data is shared
        by_class: dict[str, list[str]] = {}
        for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
            relative = f"{label}/{index:04d}.png"
            (staging / label).mkdir(exist_ok=True)
            (staging / relative).write_bytes(encode_png(pixels[np.newaxis]))
            by_class.setdefault(label, []).append(relative)
        rows = split_rows(by_class, cfg.val_fraction, cfg.test_fraction, cfg.sample.seed)
        manifest_inside = cfg.manifest.resolve().is_relative_to(root.resolve())
        if manifest_inside:
            write_manifest(staging / cfg.manifest.resolve().relative_to(root.resolve()), rows)
        if root.exists():
            root.rmdir()  # empty (checked above); rename cannot replace a directory portably
        staging.replace(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not manifest_inside:
        write_manifest(cfg.manifest, rows)
    return len(labels)
