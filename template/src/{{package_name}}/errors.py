"""Errors a user can cause and fix. The CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class ProjectError(Exception):
    """Base class: a problem with the user's config, data or artifacts, not a bug."""


class ConfigError(ProjectError):
    """The config file or an environment override is invalid."""


class DataError(ProjectError):
    """The data source cannot be read or does not have the expected shape."""


class DataValidationError(DataError):
    """The data breaks the schema; ``report`` lists every failed check."""

    def __init__(self, message: str, report: str) -> None:
        super().__init__(f"{message}\n{report}")
        self.report = report


class ModelError(ProjectError):
    """A model cannot be used: missing, or present but damaged or untrusted. Catch this where
    any of them means "no model to serve or score"."""


class ModelNotFoundError(ModelError):
    """No trained model (version, file) where one was expected."""


class ModelIntegrityError(ModelError):
    """A model file exists but cannot be trusted or used: its checksum differs from its
    metadata, it holds types outside the allowed ones, its metadata is invalid, or it does not
    load or score."""


class TrackingError(ProjectError):
    """The experiment tracker (MLflow) could not record a run."""


class ModelExportError(ProjectError):
    """The fitted model could not be exported to ONNX, or the export disagrees with it."""


class ModelQualityError(ProjectError):
    """A freshly trained model failed a quality gate and was not published."""
