"""The documentation site: `mkdocs build --strict` passes offline, the question reference is
generated from copier.yml (so it lists every question with its help), every project type has a
page, and every page is in the nav."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import TEMPLATE_ROOT

DOCS = TEMPLATE_ROOT / "docs"


class _CopierLoader(yaml.SafeLoader):
    """copier.yml starts with Copier's own `!include` tag: read it as nothing."""


_CopierLoader.add_constructor("!include", lambda loader, node: None)


def copier_config() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    text = (TEMPLATE_ROOT / "copier.yml").read_text(encoding="utf-8")
    for document in yaml.load_all(text, Loader=_CopierLoader):
        if isinstance(document, dict):
            merged.update(document)
    return merged


def copier_questions() -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in copier_config().items() if not name.startswith("_")}


def page_text(path: Path) -> str:
    """The visible text of a built page, whitespace collapsed."""
    markup = path.read_text(encoding="utf-8")
    markup = re.sub(r"<(script|style)\b.*?</\1>", " ", markup, flags=re.DOTALL)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", markup)).split())


def squash(text: str) -> str:
    return " ".join(str(text).split())


def nav_pages(nav: list[Any]) -> list[str]:
    pages: list[str] = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            pages += nav_pages(value)
        else:
            pages.append(value)
    return pages


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Given the docs, when mkdocs builds them strictly (offline, into a temporary folder)."""
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=TEMPLATE_ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-4000:]}"
    return site_dir


def test_reference_lists_every_question_with_its_help(site: Path) -> None:
    reference = site / "reference" / "questions" / "index.html"
    assert reference.is_file(), "the generated question reference page was not built"
    markup = reference.read_text(encoding="utf-8")
    text = page_text(reference)
    questions = copier_questions()
    assert questions, "copier.yml has no questions: the loader is wrong"
    for name, spec in questions.items():
        assert f'id="{name}"' in markup, f"no section for question {name!r} in the reference"
        assert spec.get("help"), f"question {name!r} has no help in copier.yml"
        assert squash(spec["help"]) in text, f"help of {name!r} missing from the reference"
        if "default" in spec:
            default = spec["default"]
            shown = squash(default if isinstance(default, str) else yaml.safe_dump(default))
            shown = shown.removesuffix(" ...")
            assert shown in text, f"default of {name!r} ({shown!r}) missing from the reference"


def test_reference_follows_copier_yml_order_and_lists_settings(site: Path) -> None:
    markup = (site / "reference" / "questions" / "index.html").read_text(encoding="utf-8")
    positions = [markup.find(f'id="{name}"') for name in copier_questions()]
    assert positions == sorted(positions), "questions are not in copier.yml's order"
    for setting in (name for name in copier_config() if name.startswith("_")):
        assert setting in markup, f"setting {setting} missing from the reference"


def test_every_project_type_has_a_page(site: Path) -> None:
    choices = copier_questions()["project_type"]["choices"]
    for value in choices.values():
        page = site / "project-types" / value.replace("_", "-") / "index.html"
        assert page.is_file(), f"no documentation page for project type {value!r}"


def test_every_page_is_in_the_nav_and_the_reference_too() -> None:
    config = yaml.safe_load((TEMPLATE_ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = nav_pages(config["nav"])
    on_disk = sorted(
        path.relative_to(DOCS).as_posix()
        for path in DOCS.rglob("*.md")
        if "hooks" not in path.relative_to(DOCS).parts
    )
    orphans = sorted(set(on_disk) - set(in_nav))
    assert not orphans, f"pages missing from the nav in mkdocs.yml: {orphans}"
    assert "reference/questions.md" in in_nav, "the generated reference is not in the nav"
    assert "upgrading.md" in in_nav, "the upgrading page is not in the nav"
