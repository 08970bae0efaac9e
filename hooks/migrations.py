"""Migrations that `copier update` runs in a generated project (declared in copier.yml under
``_migrations``, each with the template version that needs it).

A migration changes what the template's own diff cannot reach: files the user created from
generated ones (``configs/prod.yaml`` copied from ``configs/config.yaml``) and lines the user
changed that a release renamed (the update marks those as conflicts; after the migration, both
sides of the conflict use the new name and only the user's value is left to choose).

Every migration is idempotent (a second run changes nothing), prints one line per file it
changed, and exits non-zero with one message on a problem. Standard library only: it runs with
the interpreter Copier runs with.

    python migrations.py rename-config-key serving.model_version serving.pinned_version
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

CONFIG_GLOBS = ("configs/*.yaml", "configs/*.yml")
CONFLICT_MARKERS = ("<<<<<<< ", "=======", ">>>>>>> ", "|||||||")
SECTION = re.compile(r"^([A-Za-z_][\w-]*):(\s*(#.*)?)$")


def rename_config_key(text: str, section: str, old: str, new: str) -> str:
    """``text`` with ``section.old`` renamed to ``section.new`` (value and comment kept).

    Line-based so comments and layout survive (a YAML round trip would drop them); a key is
    renamed only directly under its top-level section. Conflict-marker lines left by an update
    do not end a section.
    """
    key = re.compile(rf"^(\s+){re.escape(old)}(\s*:)")
    current = None
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.startswith(CONFLICT_MARKERS):
            continue
        header = SECTION.match(line.rstrip("\r\n"))
        if header is not None:
            current = header.group(1)
            continue
        if line.strip() and not line[0].isspace() and not line.lstrip().startswith("#"):
            current = None  # another top-level entry (a scalar or a list)
            continue
        if current == section:
            lines[index] = key.sub(rf"\g<1>{new}\g<2>", line, count=1)
    return "".join(lines)


def rename_in_configs(project: Path, dotted_old: str, dotted_new: str) -> list[Path]:
    """Rename the key in every YAML file under ``configs/``; the files that changed."""
    section, _, old = dotted_old.partition(".")
    new_section, _, new = dotted_new.partition(".")
    if not old or not new or section != new_section or "." in old or "." in new:
        raise ValueError(
            f"expected two keys of one section, like serving.old serving.new; got "
            f"{dotted_old} {dotted_new}"
        )
    changed = []
    for pattern in CONFIG_GLOBS:
        for path in sorted(project.glob(pattern)):
            text = path.read_text(encoding="utf-8")
            updated = rename_config_key(text, section, old, new)
            if updated != text:
                path.write_text(updated, encoding="utf-8")
                changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rename = commands.add_parser("rename-config-key", help="rename a key in configs/*.yaml")
    rename.add_argument("old", help="section.key as it was, e.g. serving.model_version")
    rename.add_argument("new", help="section.key as it is now, e.g. serving.pinned_version")
    rename.add_argument("--project", type=Path, default=Path(), help="project root")
    args = parser.parse_args(argv)
    try:
        changed = rename_in_configs(args.project, args.old, args.new)
    except (ValueError, OSError) as exc:
        print(f"migration failed: {exc}", file=sys.stderr)
        return 1
    for path in changed:
        print(f"migration: renamed {args.old} -> {args.new} in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
