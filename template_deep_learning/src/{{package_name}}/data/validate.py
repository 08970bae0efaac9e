"""Checks an image folder and its manifest before anything trains on them.

Every problem is collected (not just the first), so one run of ``validate`` shows the user all
there is to fix: unreadable or oversized images, classes with too few images, manifest rows
pointing at missing files or unknown classes, splits lacking a class. The report also counts
images per class and split (the class balance).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DataConfig
from ..config_base import PACKAGE
from ..errors import DataError, DataValidationError
from ..imaging import decode_image
from .dataset import (
    SPLITS,
    ManifestRow,
    create_manifest,
    read_manifest,
    refuse_writing_into_own_images,
    scan_image_folder,
)

MIN_CLASSES = 2
MAX_LISTED_PROBLEMS = 25
IMBALANCE_NOTE_RATIO = 3.0


@dataclass(frozen=True)
class DatasetReport:
    """A validated dataset: classes, manifest rows, class balance and a content fingerprint."""

    root: Path
    classes: list[str]
    rows: list[ManifestRow]
    counts: dict[str, dict[str, int]]  # class -> split -> images
    fingerprint: str  # SHA-256 of the manifest and every image it lists
    manifest_created: bool = False
    notes: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[ManifestRow]:
        return [row for row in self.rows if row.split == name]

    def summary(self) -> str:
        """The class-balance table, as printed by ``validate``."""
        width = max(len("class"), *(len(name) for name in self.classes))
        header = f"{'class':<{width}}  " + "  ".join(f"{s:>6}" for s in (*SPLITS, "total"))
        lines = [header, "-" * len(header)]
        for name in self.classes:
            counts = [self.counts[name][split] for split in SPLITS]
            cells = "  ".join(f"{n:>6}" for n in (*counts, sum(counts)))
            lines.append(f"{name:<{width}}  {cells}")
        totals = [sum(self.counts[name][split] for name in self.classes) for split in SPLITS]
        lines.append(f"{'total':<{width}}  " + "  ".join(f"{n:>6}" for n in (*totals, sum(totals))))
        return "\n".join([*lines, *(f"note: {note}" for note in self.notes)])


def validate_dataset(cfg: DataConfig, *, create_missing_manifest: bool = True) -> DatasetReport:
    """Check ``cfg.root`` and ``cfg.manifest``; raise ``DataValidationError`` listing every
    problem, or return the report. A missing manifest is created from the folder first
    (stratified and seeded) unless ``create_missing_manifest`` is false."""
    root = cfg.root
    if not root.is_dir():
        raise DataError(
            f"data folder {root} does not exist: run `python -m {PACKAGE} data` to write the "
            "sample digits, or point data.root at your own image folder"
        )
    images = scan_image_folder(root)
    problems: list[str] = []
    notes: list[str] = []
    classes = sorted(images)
    if len(classes) < MIN_CLASSES:
        problems.append(
            f"found {len(classes)} class folder(s) in {root}; need at least {MIN_CLASSES} "
            f"(layout: {root}/<class name>/<image>)"
        )
    for name in classes:
        if len(images[name]) < cfg.min_images_per_class:
            problems.append(
                f"class '{name}' has {len(images[name])} image(s); "
                f"data.min_images_per_class is {cfg.min_images_per_class}"
            )

    digests: dict[str, str] = {}
    for relative in (path for name in classes for path in images[name]):
        path = root / relative
        size = path.stat().st_size
        if size > cfg.max_image_bytes:
            problems.append(
                f"{relative}: {size} bytes is more than data.max_image_bytes "
                f"({cfg.max_image_bytes})"
            )
            continue
        try:
            decode_image(path, cfg.image_size, cfg.channels)
        except DataError as exc:
            problems.append(f"{relative}: {str(exc).removeprefix(f'{path} ')}")
            continue
        digests[relative] = hashlib.sha256(path.read_bytes()).hexdigest()

    manifest_created = False
    rows: list[ManifestRow] = []
    if not cfg.manifest.is_file() and create_missing_manifest and not problems:
        refuse_writing_into_own_images(cfg)
        rows = create_manifest(cfg)
        manifest_created = True
        notes.append(f"no manifest found: wrote a stratified split to {cfg.manifest}")
    elif not cfg.manifest.is_file():
        problems.append(
            f"manifest {cfg.manifest} not found: run `python -m {PACKAGE} data` to create it"
        )
    else:
        rows = read_manifest(cfg.manifest)
        scanned = {path for name in classes for path in images[name]}
        problems.extend(_manifest_problems(rows, root, set(classes), scanned))

    counts = {name: dict.fromkeys(SPLITS, 0) for name in classes}
    for row in rows:
        if row.label in counts and row.split in SPLITS:
            counts[row.label][row.split] += 1
    if rows:
        for split in SPLITS:
            lacking = [name for name in classes if counts[name][split] == 0]
            if lacking:
                problems.append(
                    f"split '{split}' has no images of class(es) {', '.join(lacking)}: "
                    f"`python -m {PACKAGE} data --resplit` writes a stratified split"
                )
    listed = {row.path for row in rows}
    unlisted = sum(1 for path in digests if path not in listed)
    if rows and unlisted:
        notes.append(
            f"{unlisted} image(s) in the folder are not in the manifest and are not used "
            f"(`python -m {PACKAGE} data --resplit` rewrites the manifest)"
        )
    totals = [sum(by_split.values()) for by_split in counts.values()]
    if totals and min(totals) > 0 and max(totals) / min(totals) > IMBALANCE_NOTE_RATIO:
        notes.append(f"classes are imbalanced: largest/smallest = {max(totals) / min(totals):.1f}")

    if problems:
        listed_problems = [f"  - {p}" for p in problems[:MAX_LISTED_PROBLEMS]]
        if len(problems) > MAX_LISTED_PROBLEMS:
            listed_problems.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more")
        raise DataValidationError(
            f"data in {root} failed validation ({len(problems)} problem(s)):",
            "\n".join(listed_problems),
        )
    return DatasetReport(
        root=root,
        classes=classes,
        rows=rows,
        counts=counts,
        fingerprint=_fingerprint(rows, digests),
        manifest_created=manifest_created,
        notes=notes,
    )


def _manifest_problems(
    rows: list[ManifestRow], root: Path, classes: set[str], images: set[str]
) -> list[str]:
    problems = []
    if not rows:
        problems.append("the manifest has no rows")
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        if row.split not in SPLITS:
            problems.append(f"manifest line {line}: split '{row.split}' is not one of {SPLITS}")
        if row.label not in classes:
            problems.append(f"manifest line {line}: label '{row.label}' is not a class folder")
        if row.path in images:
            continue
        if (root / row.path).is_file():
            problems.append(f"manifest line {line}: {row.path} is not an image in a class folder")
        else:
            problems.append(f"manifest line {line}: {row.path} does not exist under {root}")
    duplicates = [path for path, n in Counter(row.path for row in rows).items() if n > 1]
    if duplicates:
        problems.append(
            f"the manifest lists {len(duplicates)} image(s) more than once, e.g. {duplicates[0]}"
        )
    return problems


def _fingerprint(rows: list[ManifestRow], digests: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r.path):
        digest.update(f"{row.path},{row.label},{row.split},{digests.get(row.path, '')}\n".encode())
    return digest.hexdigest()
