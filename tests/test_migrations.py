"""hooks/migrations.py: the config-key rename that `copier update` runs for 0.2.0."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrations import main, rename_config_key

CONFIG = """\
# comment at the top
serving:
  host: 127.0.0.1
  model_version: null               # null: the version in models/LATEST
  log_level: info

tracking:
  model_version: kept               # another section: not renamed
"""


def test_rename_config_key_keeps_value_comment_and_other_sections() -> None:
    renamed = rename_config_key(CONFIG, "serving", "model_version", "pinned_version")

    assert "  pinned_version: null               # null: the version" in renamed
    assert "  model_version: kept" in renamed
    assert renamed.count("\n") == CONFIG.count("\n")


def test_rename_config_key_twice_changes_nothing_more() -> None:
    once = rename_config_key(CONFIG, "serving", "model_version", "pinned_version")

    assert rename_config_key(once, "serving", "model_version", "pinned_version") == once


def test_rename_config_key_inside_conflict_markers() -> None:
    conflicted = (
        "serving:\n"
        "<<<<<<< before updating\n"
        '  model_version: "v1"\n'
        "=======\n"
        "  pinned_version: null\n"
        ">>>>>>> after updating\n"
        "  port: 8000\n"
    )

    renamed = rename_config_key(conflicted, "serving", "model_version", "pinned_version")

    assert '  pinned_version: "v1"\n=======' in renamed
    assert "model_version" not in renamed


def test_migration_cli_renames_every_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "config.yaml").write_text(CONFIG)
    (configs / "prod.yml").write_text(CONFIG)
    (configs / "notes.txt").write_text("serving:\n  model_version: untouched\n")

    code = main(
        [
            "rename-config-key",
            "serving.model_version",
            "serving.pinned_version",
            "--project",
            str(tmp_path),
        ]
    )

    assert code == 0
    for name in ("config.yaml", "prod.yml"):
        assert "  pinned_version: null" in (configs / name).read_text()
    assert "model_version: untouched" in (configs / "notes.txt").read_text()
    assert capsys.readouterr().out.count("migration: renamed") == 2


def test_migration_cli_bad_keys_exit_one_with_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["rename-config-key", "serving.model_version", "tracking.x", "--project", "."])

    assert code == 1
    assert "expected two keys of one section" in capsys.readouterr().err
