"""The embedded sample: scikit-learn's bundled handwritten digits, written as an image folder.

``load_digits`` ships inside scikit-learn (no download): 1,797 grayscale 8x8 images of the digits
0-9 with pixel values 0-16. They are written as PNG files to ``data.sample.root/<digit>/<id>.png``,
exactly the layout a user's own images would have, so the rest of the pipeline cannot tell the
sample from real data. The split manifest is written like any dataset's (``dataset.py``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..config import DataConfig, SampleDataConfig
from ..errors import DataError
from ..imaging import encode_png
from .dataset import (
    create_manifest,
    read_manifest,
    refuse_writing_into_own_images,
    scan_image_folder,
)

DIGITS_MAX_VALUE = 16.0


def folder_has_images(root: Path) -> bool:
    return any(scan_image_folder(root).values())


def prepare_dataset(cfg: DataConfig, *, resplit: bool = False, if_used: bool = False) -> str:
    """What ``python -m <package> data`` does; returns what it did, one sentence per step.

    1. The sample digits go to ``sample.root`` if that folder has no images yet (with
       ``if_used``, only when ``data.root`` is the sample). Nothing else is ever written there.
    2. ``data.root`` (the sample or your own images) gets a split manifest at ``data.manifest``
       if it has none, or a new one with ``resplit``. ``data.root`` itself is only read: a
       manifest or a sample folder inside your own image folder is refused before anything
       is written.
    """
    refuse_writing_into_own_images(cfg)
    done = []
    if (cfg.uses_sample or not if_used) and not folder_has_images(cfg.sample.root):
        count = write_sample_digits(cfg.sample)
        done.append(f"wrote {count} sample digit images to {cfg.sample.root}/")
    if resplit or not cfg.manifest.is_file():
        rows = create_manifest(cfg)
        done.append(f"wrote a stratified split of {len(rows)} images to {cfg.manifest}")
    elif not _describes(cfg.manifest, cfg.root):
        rows = create_manifest(cfg)
        done.append(
            f"rewrote {cfg.manifest}: it listed images that are not in {cfg.root}/ (another "
            f"folder's split); now a stratified split of {len(rows)} images"
        )
    else:
        done.append(f"{cfg.manifest} exists: kept (--resplit rewrites it)")
    if not cfg.uses_sample:
        done.append(f"training reads your images in {cfg.root}/, not the sample")
    return "; ".join(done)


def _describes(manifest: Path, root: Path) -> bool:
    """True if every image the manifest lists exists under ``root`` (a hand-curated subset
    counts; a split made for another folder does not)."""
    return all((root / row.path).is_file() for row in read_manifest(manifest))


def write_sample_digits(cfg: SampleDataConfig) -> int:
    """Write the digits to ``cfg.root`` as ``<digit>/<id>.png``; return the number of images.

    The folder is filled under a temporary name and renamed into place, so an interrupted run
    never leaves half a dataset behind. ``cfg.root`` must be missing or empty: a folder that
    already holds anything is never written to.
    """
    from sklearn.datasets import load_digits  # seconds to import: only when writing

    root = cfg.root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(
            f"refusing to write the sample digits to {root}: it exists and is not empty "
            "(the sample is only written to a new folder; point data.sample.root elsewhere)"
        )
    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float32) / DIGITS_MAX_VALUE
    labels = [str(int(target)) for target in digits.target]

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        staging.chmod(0o755)  # mkdtemp directories are private; the data is shared
        for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
            (staging / label).mkdir(exist_ok=True)
            (staging / f"{label}/{index:04d}.png").write_bytes(encode_png(pixels[np.newaxis]))
        if root.exists():
            root.rmdir()  # empty (checked above); rename cannot replace a directory portably
        staging.replace(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return len(labels)
