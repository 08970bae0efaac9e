"""Configuration plumbing shared by every project type: YAML in, environment overrides applied,
validated into frozen pydantic models, one readable error out.

Each project type's ``config.py`` defines its models (on ``Frozen``), validates the result of
``apply_env_overrides`` and turns a ``ValidationError`` into ``config_error``. Nothing here
runs at import time beyond computing the package name.

Environment overrides use the package name as prefix and ``__`` between section and key, e.g.
``<PACKAGE>_SERVING__PORT=9000``, and between nested keys (``<PACKAGE>_DATA__SAMPLE__URL``).
Only the sections that change between deployments can be overridden: data, tracking, serving,
paths. ``MLFLOW_TRACKING_URI`` is honoured as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

PACKAGE = (__package__ or "app").split(".")[0]
ENV_PREFIX = f"{PACKAGE.upper()}_"
OVERRIDABLE_SECTIONS = ("data", "tracking", "serving", "paths")
# Keys renamed by a template release: (section, old key) -> (new key, template version). The
# release's migration renames them in configs/*.yaml on `copier update`; anything it cannot
# reach (another config file, an environment variable) gets an error naming the new key.
RENAMED_KEYS = {("serving", "model_version"): ("pinned_version", "0.2.0")}


class Frozen(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(Frozen):
    """How the HTTP server treats connections (serving/server.py), the same for every project
    type: each project type's ``ServingConfig`` adds its own settings to these.

    Slow or stuck clients: headers within ``header_timeout_s`` (of the first byte; of
    connecting, for a connection's first request) and at most ``max_header_bytes``, the body
    within ``body_timeout_s`` of the headers, else 408 (431) and the connection closes. Beyond
    ``max_connections``, 503 at once. On SIGTERM, requests in progress get
    ``shutdown_timeout_s`` to finish (keep the orchestrator's grace period longer).
    """

    header_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    body_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    max_header_bytes: Annotated[int, Field(ge=1024)] = 16_384
    keep_alive_timeout_s: Annotated[int, Field(ge=1)] = 5
    max_connections: Annotated[int, Field(ge=1)] = 512
    shutdown_timeout_s: Annotated[int, Field(ge=1)] = 20


class TrackingConfig(Frozen):
    """MLflow: an embedded SQLite store by default, a server URL in deployment."""

    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "mlartifacts"
    experiment: str = "default"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file, or a ``ConfigError`` saying what is wrong."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must contain a mapping of sections")
    return raw


def config_error(exc: ValidationError, source: object) -> ConfigError:
    """One ``ConfigError`` listing every problem pydantic found, one line each."""
    return ConfigError(f"invalid config {source}:\n{_format_errors(exc)}")


def apply_env_overrides(
    raw: Mapping[str, Any],
    environ: Mapping[str, str],
    sections: tuple[str, ...] = OVERRIDABLE_SECTIONS,
) -> dict[str, Any]:
    """A copy of ``raw`` with the environment's overrides applied (see the module docstring);
    ``sections`` are the ones a deployment may override."""
    raw = {key: dict(value) if isinstance(value, dict) else value for key, value in raw.items()}
    if environ.get("MLFLOW_TRACKING_URI"):
        raw.setdefault("tracking", {})["uri"] = environ["MLFLOW_TRACKING_URI"]
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, *keys = name[len(ENV_PREFIX) :].lower().split("__")
        if section not in sections or not all(keys):
            raise ConfigError(
                f"environment variable {name} does not name a setting: use "
                f"{ENV_PREFIX}<SECTION>__<KEY> (or __<KEY>__<SUBKEY>) with SECTION one of "
                f"{', '.join(s.upper() for s in sections)}"
            )
        # Nested keys reach into sub-sections, e.g. <PACKAGE>_DATA__SAMPLE__URL.
        target = raw.setdefault(section, {})
        for key in keys[:-1]:
            nested = target.get(key)
            if nested is not None and not isinstance(nested, Mapping):
                raise ConfigError(f"environment variable {name}: {key} is not a section")
            child = dict(nested or {})
            target[key] = child
            target = child
        target[keys[-1]] = _env_value(value)
    _refuse_renamed_keys(raw)
    return raw


def _env_value(value: str) -> Any:
    """YAML parsing turns "9000" into an int and "false" into a bool, as in the file. A value
    that only looks like a mapping (a URL ending in a colon, duckdb:///:memory:) or is not
    YAML at all stays text; an explicit ``{...}`` is a mapping."""
    if not value:
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if isinstance(parsed, Mapping) and not value.lstrip().startswith("{"):
        return value
    return parsed


def _refuse_renamed_keys(raw: Mapping[str, Any]) -> None:
    for (section, old), (new, version) in RENAMED_KEYS.items():
        values = raw.get(section)
        if isinstance(values, Mapping) and old in values:
            raise ConfigError(
                f"{section}.{old} was renamed to {section}.{new} in template {version}: rename "
                f"it in your config (`copier update` does it in configs/*.yaml), or set "
                f"{ENV_PREFIX}{section.upper()}__{new.upper()} instead of "
                f"{ENV_PREFIX}{section.upper()}__{old.upper()}"
            )


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see configs/config.yaml for valid keys)"
        lines.append(f"  - {where}: {message}")
    return "\n".join(lines)
