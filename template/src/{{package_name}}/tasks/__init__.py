"""What differs between prediction tasks, in one module per task.

``binary``, ``multiclass`` and ``regression`` each define how the target is read, how rows are
scored, which metrics, baseline, plots and report sections a model gets, and how the ONNX
export is compared with scikit-learn. Training and evaluation call ``task_for(cfg.task)`` and
stay the same for every task; switching task is a config change.
"""

from __future__ import annotations

from .base import Target, Task
from .binary import BinaryClassification
from .multiclass import MulticlassClassification
from .regression import Regression

TASKS: dict[str, type[Task]] = {
    "binary_classification": BinaryClassification,
    "multiclass_classification": MulticlassClassification,
    "regression": Regression,
}

__all__ = ["TASKS", "Target", "Task", "task_for"]


def task_for(name: str) -> Task:
    """The task named in the config (``binary_classification``, ...)."""
    return TASKS[name]()
