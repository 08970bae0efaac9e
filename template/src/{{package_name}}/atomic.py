"""Files that appear whole or not at all: write beside the target, then move over it.

A reader (the service reading a drift reference, a user opening a prediction file, a process
reading the config) sees the old file or the new one, never half of one; a failed write leaves
the old file as it was and no partial file behind. The partial files come from
``versioning.new_partial_file`` (unique, readable by all). Standard library only.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .versioning import new_partial_file


@contextmanager
def replacing(target: Path, *, keep_mode: bool = False) -> Iterator[Path]:
    """A new partial file beside ``target`` to write; moved over ``target`` when the block
    succeeds, removed when it raises. ``keep_mode``: the result keeps ``target``'s permissions
    (a user's file, e.g. the config)."""
    partial = new_partial_file(target)
    try:
        yield partial
        if keep_mode and target.exists():
            shutil.copymode(target, partial)
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def replace_text(target: Path, text: str, *, keep_mode: bool = False) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``target`` atomically."""
    with replacing(target, keep_mode=keep_mode) as partial:
        partial.write_text(text, encoding="utf-8", newline="")


def replace_copy(source: Path, target: Path) -> None:
    """Copy ``source``'s bytes to ``target`` atomically."""
    with replacing(target) as partial:
        shutil.copyfile(source, partial)
