"""Class labels as the user's table has them: read, checked, and mapped to 0..k-1.

The model learns class indices; ``classes`` (stored in the model's metadata) maps them back, so
the API and batch predict return ``"gold"`` or ``True`` exactly as the table spelled them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import Config, Label, as_label
from ..errors import DataError
from .base import Target

# More distinct labels than this is almost always a numeric target or an id column.
MAX_CLASSES = 100


def _order(label: Label) -> tuple[int, Label]:
    return (0 if isinstance(label, bool) else 1 if isinstance(label, int) else 2, label)


def read_classes(
    values: pd.Series, cfg: Config, source: str, *, binary: bool
) -> tuple[np.ndarray, list[Label]]:
    """Class indices for ``values`` and the labels in index order (binary: negative, positive).

    Raises a ``DataError`` saying what to do when the labels do not fit the task."""
    target = cfg.data.target
    fractional = [
        v for v in values.head(100_000) if isinstance(v, float) and not float(v).is_integer()
    ]
    if fractional:
        raise DataError(
            f"{source}: the target {target} holds fractional numbers (e.g. {fractional[0]}), "
            "not class labels: set task: regression to predict a number"
        )
    labels = values.map(as_label)
    counts = labels.value_counts()
    classes = sorted(counts.index.tolist(), key=_order)
    shown = ", ".join(repr(c) for c in classes[:10]) + (", ..." if len(classes) > 10 else "")
    if len(classes) < 2:
        raise DataError(
            f"{source}: the target {target} has a single class ({shown}) in {len(values)} rows; "
            "a classifier needs at least two"
        )
    if binary and len(classes) > 2:
        raise DataError(
            f"{source}: the target {target} has {len(classes)} classes ({shown}): set task: "
            "multiclass_classification, or map them to two labels in the query"
        )
    if len(classes) > MAX_CLASSES:
        raise DataError(
            f"{source}: the target {target} has {len(classes)} distinct values: for a number "
            "set task: regression; for a label, group rare classes in the query"
        )
    folds = cfg.training.cv_folds
    rare = [(c, int(counts[c])) for c in classes if counts[c] < folds]
    if rare:
        listed = ", ".join(f"{c!r} ({n} rows)" for c, n in rare[:5])
        raise DataError(
            f"{source}: class(es) {listed} of the target {target} have fewer rows than "
            f"training.cv_folds ({folds}): gather more rows, merge rare classes in the query, "
            "or lower training.cv_folds"
        )
    if binary:
        positive = positive_class(classes, cfg, source)
        classes = [next(c for c in classes if c != positive), positive]
    index = {label: i for i, label in enumerate(classes)}
    return labels.map(lambda label: index[label]).to_numpy(dtype=np.int64), classes


def positive_class(classes: list[Label], cfg: Config, source: str) -> Label:
    """``data.positive_class`` (matched as text, so ``1`` finds ``"1"``), or 1 / true when the
    labels are 0/1 or booleans."""
    wanted = cfg.data.positive_class
    if wanted is not None:
        for label in classes:
            if _text(label) == _text(wanted):
                return label
        raise DataError(
            f"data.positive_class {wanted!r} is not a label of the target {cfg.data.target} in "
            f"{source}: its labels are {', '.join(repr(c) for c in classes)}"
        )
    for label in classes:
        if _text(label) in ("1", "true") and {_text(c) for c in classes} in (
            {"0", "1"},
            {"false", "true"},
        ):
            return label
    raise DataError(
        f"the target {cfg.data.target} has the labels {classes[0]!r} and {classes[1]!r}: set "
        f"data.positive_class to the one whose probability the model should give (e.g. "
        f"data.positive_class: {classes[1]})"
    )


def _text(label: object) -> str:
    """A label as text, for matching labels across types (``1`` and ``"1"``; ``True``,
    ``"true"`` and YAML's ``true``)."""
    if isinstance(label, bool | np.bool_):
        return "true" if label else "false"
    return str(label)


def known_target(
    values: pd.Series, classes: list[Label] | None, positive: Label | None, source: str
) -> Target:
    """The target encoded with a trained model's classes (``None``: regression values)."""
    if classes is None:
        return Target(y=pd.to_numeric(values, errors="raise").to_numpy(dtype=np.float64))
    index = {_text(label): i for i, label in enumerate(classes)}
    texts = values.map(lambda value: _text(as_label(value)))
    unknown = sorted(set(texts) - set(index))
    if unknown:
        raise DataError(
            f"{source}: the target has label(s) {', '.join(unknown[:5])} the model was not "
            f"trained on (it knows {', '.join(repr(c) for c in classes)}): retrain"
        )
    return Target(
        y=texts.map(index).to_numpy(dtype=np.int64), classes=classes, positive_class=positive
    )
