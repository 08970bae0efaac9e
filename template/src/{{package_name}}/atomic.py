"""Files that appear whole or not at all: write beside the target, then move over it.

A reader (the service reading a drift reference, a user opening a prediction file, a process
reading the config) sees the old file or the new one, never half of one; a failed write leaves
the old file as it was and no partial file behind. Standard library only: the service, the
pipeline and the deep-learning project all use it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def new_partial_file(target: Path) -> Path:
    """A new, empty, uniquely named file beside ``target`` to write into and then move over it:
    never a file that already exists (a user's ``<name>.partial`` included). Readable by all,
    like the result it becomes (mkstemp files are private)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(handle)
    partial = Path(name)
    partial.chmod(0o644)
    return partial


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


def publish_directory(
    parent: Path,
    name: str | Callable[[], str],
    write: Callable[[Path], None],
    *,
    prefix: str = ".partial-",
) -> Path:
    """Let ``write`` fill a new folder under ``parent``, then rename it to ``parent/name`` and
    return that path: nothing appears under that name unless ``write`` succeeded, and a failure
    leaves no folder behind. ``name`` may be a function, called once the folder is written (to
    pick a free name then). The folder is readable by all (mkdtemp folders are private);
    ``prefix`` starts the hidden name it has while being written."""
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        staging.chmod(0o755)
        write(staging)
        final = parent / (name() if callable(name) else name)
        staging.replace(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final
