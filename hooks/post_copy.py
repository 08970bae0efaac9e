"""Post-copy task: initialise a git repository with a first commit (Copier prints the next
steps itself, from `_message_after_copy` in copier.yml).

Copier runs this inside the new project (``copier copy --trust``). Git is optional: when it is
missing, or the directory is already inside a repository, the step is skipped with a message and
the task still succeeds, so rendering never fails because of the developer's machine.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

FALLBACK_IDENTITY = ["-c", "user.name=copier-ml", "-c", "user.email=copier-ml@localhost"]


def _git(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)


def init_repository(project: Path) -> str:
    """Create the repository and the first commit; return what was done, in one line."""
    if shutil.which("git") is None:
        return "git not found: skipped `git init` (run it yourself later)."
    if _git("rev-parse", "--is-inside-work-tree", cwd=project).returncode == 0:
        return "already inside a git work tree: left it as it is."
    init = _git("init", "--quiet", "--initial-branch=main", cwd=project)
    if init.returncode != 0:  # git < 2.28 has no --initial-branch
        init = _git("init", "--quiet", cwd=project)
    if init.returncode != 0:
        return f"git init failed, skipped: {init.stderr.strip()}"
    _git("add", "--all", cwd=project)
    # A fallback identity keeps the first commit working on fresh machines and CI runners
    # that have no user.name/user.email; the developer's own identity wins when set.
    identity = [] if _has_identity(project) else FALLBACK_IDENTITY
    commit = _git(
        *identity,
        "commit",
        "--quiet",
        "--no-verify",
        "-m",
        "Initial commit from copier-ml",
        cwd=project,
    )
    if commit.returncode != 0:
        return f"git repository created, but the first commit failed: {commit.stderr.strip()}"
    return "git repository initialised with a first commit."


def _has_identity(project: Path) -> bool:
    return all(
        _git("config", key, cwd=project).stdout.strip() for key in ("user.name", "user.email")
    )


def main() -> int:
    project = Path.cwd()
    print(f"copier-ml: {init_repository(project)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
