"""MkDocs hook: the question reference, generated from copier.yml at build time.

``on_files`` adds ``reference/questions.md`` to the site as an in-memory page, so the reference
cannot drift from the questions Copier actually asks: every question in order with its type,
help, choices, default, ``when`` condition and validator, then the template's settings
(``_subdirectory``, ``_tasks``, ``_migrations``, ...).

copier.yml is a multi-document YAML file whose first document is
``--- !include includes/reserved_names.yml``; the tag is Copier's own. Here it becomes an
``Include`` marker: the included file is read only to list the hidden values it defines.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PAGE = "reference/questions.md"
COPIER_YML = "copier.yml"

# One line on what each Copier setting does; unknown settings are still listed, without it.
SETTING_NOTES = {
    "_min_copier_version": "Oldest Copier that can render the template; older ones refuse.",
    "_subdirectory": (
        "The folder inside the template repository that is rendered. A Jinja expression here "
        "picks the tree per project type."
    ),
    "_answers_file": (
        "Where the answers are recorded in the generated project; `copier update` reads it."
    ),
    "_templates_suffix": "Files with this suffix are rendered with Jinja; the rest are copied.",
    "_exclude": "Never copied into a generated project.",
    "_skip_if_exists": "Copied once; later updates leave the project's own version alone.",
    "_tasks": (
        "Commands run in the new project after rendering, only with `--trust` "
        "(`--skip-tasks` renders the same files without them)."
    ),
    "_migrations": (
        "Commands run by `copier update` when a project crosses the given template version."
    ),
    "_message_after_copy": "Printed after `copier copy`.",
    "_message_after_update": "Printed after `copier update`.",
    "_jinja_extensions": "Extra Jinja extensions loaded while rendering.",
    "_envops": "Jinja environment options.",
}


@dataclass(frozen=True)
class Include:
    """A ``!include`` node of copier.yml: the path (or glob) it names."""

    path: str


class CopierLoader(yaml.SafeLoader):
    """SafeLoader that accepts Copier's ``!include`` tag instead of failing on it."""


def _include(loader: CopierLoader, node: yaml.Node) -> Include:
    return Include(str(loader.construct_scalar(node)))  # type: ignore[arg-type]


CopierLoader.add_constructor("!include", _include)


def load_copier_yml(path: Path) -> tuple[dict[str, Any], list[Include]]:
    """Merge copier.yml's documents (later keys win, as in Copier); return it and its includes."""
    merged: dict[str, Any] = {}
    includes: list[Include] = []
    with path.open(encoding="utf-8") as stream:
        for document in yaml.load_all(stream, Loader=CopierLoader):
            if isinstance(document, Include):
                includes.append(document)
            elif isinstance(document, dict):
                merged.update(document)
            elif document is not None:
                raise ValueError(f"{path}: unexpected document {document!r}")
    return merged, includes


def questions(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The questions, in file order (settings start with an underscore)."""
    return {
        name: spec if isinstance(spec, dict) else {"default": spec}
        for name, spec in config.items()
        if not name.startswith("_")
    }


# --- Markdown helpers ------------------------------------------------------------------------


def _is_jinja(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _code(text: str) -> str:
    """An inline code span that survives backticks in the text."""
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _literal(value: object) -> str:
    """A YAML value as the user would type it."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _text(value: str) -> str:
    """Plain text (help) as Markdown: no accidental emphasis, links or HTML."""
    escaped = html.escape(" ".join(value.split()), quote=False)
    for char in "\\`*_[]":
        escaped = escaped.replace(char, "\\" + char)
    return escaped


def _block(text: str, lang: str = "jinja") -> list[str]:
    return [f"```{lang}", text.strip("\n"), "```"]


def _value(value: object, lang: str = "jinja") -> list[str]:
    """A default, condition or setting: a code span, or a code block when multi-line."""
    text = _literal(value)
    if "\n" in text.strip():
        return ["", *_block(text, lang), ""]
    return [_code(text.strip())]


def _choices(choices: object) -> list[tuple[str, str]]:
    """(label, value) pairs of Copier's three choice forms: list, mapping, or Jinja text."""
    if isinstance(choices, list):
        return [(_literal(item), _literal(item)) for item in choices]
    if isinstance(choices, dict):
        pairs = []
        for label, value in choices.items():
            if isinstance(value, dict):  # {value: ..., validator: ...}
                value = value.get("value")
            pairs.append((str(label), _literal(value)))
        return pairs
    return []


def _asked(spec: dict[str, Any]) -> str:
    when = spec.get("when", True)
    if when is True:
        return "always"
    if when is False:
        return "never (a hidden value)"
    return _code(str(when).strip())


def _default_cell(spec: dict[str, Any], anchor: str) -> str:
    if "default" not in spec:
        return "none"
    default = spec["default"]
    if _is_jinja(default):
        return f"[derived](#{anchor})"
    return _code(_literal(default)) if _literal(default) else "empty"


# --- The page --------------------------------------------------------------------------------


def render_reference(config: dict[str, Any], includes: list[Include], root: Path) -> str:
    """The whole reference page as Markdown."""
    asked = questions(config)
    lines = [
        "# Question reference",
        "",
        "Every question `copier copy` asks, in the order it asks them, then Copier's "
        "[settings](#settings). This page is generated from `copier.yml` each time the site is "
        "built, so it always matches the template. Answer non-interactively with "
        "`--data name=value` (repeatable) or `--data-file answers.yml`; `--defaults` takes "
        "every default. Jinja defaults are "
        "derived from earlier answers and shown as written in `copier.yml`.",
        "",
        "| question | type | default | asked |",
        "|---|---|---|---|",
    ]
    for name, spec in asked.items():
        lines.append(
            f"| [{_code(name)}](#{name}) | {spec.get('type', 'yaml')} | "
            f"{_default_cell(spec, name)} | {_asked(spec)} |"
        )
    lines.append("")

    for name, spec in asked.items():
        lines += [f"## {_code(name)} {{ #{name} }}", ""]
        if spec.get("help"):
            lines += [_text(str(spec["help"])), ""]
        lines.append(f"- **Type:** `{spec.get('type', 'yaml')}`")
        if spec.get("multiselect"):
            lines.append("- **Multiple choice:** several values may be picked")
        if spec.get("secret"):
            lines.append("- **Secret:** not recorded in the answers file")
        after: list[str] = []  # code blocks go below the list: a fence would end it
        if "default" in spec:
            default = spec["default"]
            label = "derived from earlier answers" if _is_jinja(default) else "literal"
            text = _literal(default).strip()
            if "\n" in text:
                lines.append(f"- **Default** ({label}): below")
                after += ["", "Default:", "", *_block(text)]
            else:
                lines.append(f"- **Default** ({label}): {_code(text) if text else 'empty'}")
        else:
            lines.append("- **Default:** none (an answer is required)")
        lines.append(f"- **Asked:** {_asked(spec)}")
        validated = "yes: an invalid answer is refused with its message"
        lines.append(f"- **Validator:** {validated if spec.get('validator') else 'none'}")
        lines += after
        pairs = _choices(spec.get("choices"))
        if pairs:
            lines += ["", "| choice | value |", "|---|---|"]
            lines += [f"| {_text(label)} | {_code(value)} |" for label, value in pairs]
        elif spec.get("choices"):
            lines += ["", "Choices (computed):", "", *_block(str(spec["choices"]))]
        if spec.get("validator"):
            lines += ["", "Validator (Jinja; any output is the error message):", ""]
            lines += _block(str(spec["validator"]))
        extra = sorted(
            set(spec)
            - {"type", "help", "default", "when", "validator", "choices", "multiselect", "secret"}
        )
        if extra:
            lines += ["", "Other keys: " + ", ".join(_code(key) for key in extra)]
        lines.append("")

    lines += ["## Settings { #settings }", ""]
    lines.append(
        "Keys of `copier.yml` that start with an underscore configure Copier itself rather "
        "than asking anything."
    )
    lines.append("")
    for name, value in config.items():
        if not name.startswith("_"):
            continue
        lines += [f"### {_code(name)}", ""]
        if name in SETTING_NOTES:
            lines += [SETTING_NOTES[name], ""]
        if isinstance(value, (list, dict)):
            lines += _block(yaml.safe_dump(value, sort_keys=False, width=100), "yaml")
        else:
            lines += _value(value)
        lines.append("")

    for include in includes:
        lines += [f"### Included: {_code(include.path)}", ""]
        lines.append(
            "copier.yml starts with `!include` of this file; its keys are merged into the "
            "questions. Hidden values (`when: false`) are never asked: validators use them."
        )
        lines.append("")
        for path in sorted(root.glob(include.path)):
            included, _ = load_copier_yml(path)
            for key, spec in questions(included).items():
                kind = "hidden value" if spec.get("when") is False else "question"
                size = spec.get("default")
                count = f", {len(size)} entries" if isinstance(size, list) else ""
                lines.append(f"- {_code(key)}: {kind}{count}")
        lines.append("")
    return "\n".join(lines)


# --- MkDocs events ---------------------------------------------------------------------------


def _root(config: Any) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def on_files(files: Any, config: Any) -> Any:
    """Add the generated reference page to the site's files."""
    from mkdocs.structure.files import File

    root = _root(config)
    copier_config, includes = load_copier_yml(root / COPIER_YML)
    files.append(
        File.generated(config, PAGE, content=render_reference(copier_config, includes, root))
    )
    return files


def on_serve(server: Any, config: Any, builder: Any) -> Any:
    """`mkdocs serve`: rebuild when copier.yml or an included file changes."""
    root = _root(config)
    server.watch(str(root / COPIER_YML))
    server.watch(str(root / "includes"))
    return server
