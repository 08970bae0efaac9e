"""SHAP explanations of a fitted pipeline, in the user's own column names.

A model sees derived columns (one-hot categories, TF-IDF terms, datetime parts, products of
interactions); a user thinks in the inputs of the config. Each explainer computes SHAP values
on the columns the estimator sees, and ``attribution_matrix`` sums them back onto the raw
inputs (``FeaturesConfig.names``): every one-hot column onto its category column, every term
onto its text column, every datetime part onto its timestamp, and a product of two inputs half
onto each. Sums of SHAP values are SHAP values of the group, so each row's values still add
up to the model's output minus the base value.

Which explainer (``PipelineExplainer``):

- ``linear`` (logistic_regression, ridge): exact, ``coef * (x - mean)`` on the transformed
  columns (shap's LinearExplainer, interventional), in log-odds for classifiers;
- ``tree`` (random_forest, hist_gradient_boosting, lightgbm, xgboost): shap's TreeExplainer,
  exact for the trees (probabilities for a forest, log-odds for boosted trees); interventional
  on ``TREE_ROWS`` reference rows, path-dependent where that does not add up;
- ``permutation`` (anything else, or a tree model shap cannot read or explain): model-agnostic,
  the whole pipeline evaluated on raw inputs swapped in from a small background sample; it
  costs model calls per row and input, so a report explains as many rows as
  ``PERMUTATION_BUDGET`` model rows allow (10 to 200).

The reference ("base value") is a seeded sample of training rows, saved with the model
(``BACKGROUND_FILE``) so ``predict --explain`` explains relative to the same rows as the
report. shap is a training-side dependency (the [pipeline] extra): it is imported inside the
functions here, and the serving image never loads this module.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .artifacts import ModelMetadata, load_pipeline
from .config import TREE_MODELS, FeaturesConfig
from .errors import ConfigError, ModelNotFoundError
from .inputs import DATETIME_REFERENCE, SECONDS_PER_DAY, datetime_inputs, model_inputs

Method = Literal["linear", "tree", "permutation"]
LINEAR_MODELS = ("logistic_regression", "ridge")
# Training rows saved with each model as the explanations' reference.
BACKGROUND_FILE = "explain_background.parquet"
BACKGROUND_ROWS = 200
# Deeper trees are explained by the interventional algorithm: the path-dependent one costs
# depth squared per leaf and its sums overflow on trees ~200 levels deep (a forest on TF-IDF
# terms).
PATH_MAX_DEPTH = 64
# A tree explanation whose values miss the model's output by more than this (times
# max(1, |output|)) is refused and the next explainer takes over (shap checks only to 1e-2).
ADDITIVITY_TOLERANCE = 1e-4
# The tree explainer's reference: its cost grows with these rows (~5 ms per explained row for
# a 300-round boosted model, ~50 ms for a 300-tree forest).
TREE_ROWS = 50
# The permutation explainer scores (evaluations x background rows) rows per explained row.
PERMUTATION_BACKGROUND_ROWS = 50
PERMUTATIONS = 10  # orders of the inputs per row (5 antithetic pairs)
# Rows it explains in a report: as many as PERMUTATION_BUDGET model rows allow (10 orders x
# (inputs - 1) x 50 reference rows each), within these bounds.
PERMUTATION_BUDGET = 2_000_000
PERMUTATION_MIN_ROWS = 10
PERMUTATION_MAX_ROWS = 200
# Values (rows x transformed columns) per model call: bounds its memory on wide tables.
PERMUTATION_CALL_CELLS = 4_000_000
# Rows explained at once: bounds memory when the model sees thousands of derived columns.
BATCH_ROWS = 1000

REGRESSION = "regression"
MULTICLASS = "multiclass_classification"


@dataclass(frozen=True)
class Explanation:
    """SHAP values of some rows, per raw input.

    ``values``: ``(rows, inputs)``, or ``(rows, inputs, classes)`` for a multiclass model;
    ``base_values``: the output for the reference rows (one per class for multiclass); each
    row's values add up to its output minus the base value. ``output`` says in what units.
    """

    features: list[str]
    values: np.ndarray
    base_values: np.ndarray
    method: Method
    output: str

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    def for_rows(self, classes: np.ndarray | None = None) -> np.ndarray:
        """``(rows, inputs)``: the values of the explained output of each row; for a multiclass
        model those of ``classes[i]`` for row ``i`` (e.g. the predicted class)."""
        if self.values.ndim == 2:
            return self.values
        if classes is None:
            raise ValueError("a multiclass explanation needs the class of each row")
        return self.values[np.arange(self.rows), :, np.asarray(classes, dtype=np.int64)]

    def mean_abs(self) -> pd.Series:
        """Mean |SHAP| per input (multiclass: also averaged over classes), largest first."""
        magnitude = np.abs(self.values)
        means = magnitude.mean(axis=(0, 2)) if magnitude.ndim == 3 else magnitude.mean(axis=0)
        if not self.rows:
            means = np.zeros(len(self.features))
        series = pd.Series(means, index=self.features, name="mean_abs_shap")
        return series.sort_values(ascending=False, kind="stable")


@dataclass(frozen=True)
class SampledExplanation:
    """An explanation of a seeded sample of rows: which ones, of how many, and how."""

    explanation: Explanation
    positions: np.ndarray  # positions of the explained rows in the frame given
    rows_available: int
    seed: int
    reference: str  # what the base value is the output of, e.g. "50 training rows"
    detail: str  # how the explainer works (and why it was chosen, after a fallback)
    fallback_reason: str | None = None

    @property
    def sampled(self) -> bool:
        return len(self.positions) < self.rows_available

    def describe(self) -> str:
        """One sentence: what was explained, relative to what."""
        rows = len(self.positions)
        what = (
            f"a seeded random sample of {rows} of {self.rows_available} rows (seed {self.seed})"
            if self.sampled
            else f"all {rows} rows"
        )
        return (
            f"{what}, relative to {self.reference}; "
            f"values are contributions to the {self.explanation.output}"
        )


def method_for(model_name: str) -> Method:
    """The explainer a configured estimator gets (``tree`` may still fall back)."""
    if model_name in LINEAR_MODELS:
        return "linear"
    if model_name in TREE_MODELS:
        return "tree"
    return "permutation"


def sample_positions(rows: int, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` of ``rows`` positions, a seeded random sample in row order."""
    if rows <= limit:
        return np.arange(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, size=limit, replace=False))


def background_sample(frame: pd.DataFrame, seed: int, rows: int = BACKGROUND_ROWS) -> pd.DataFrame:
    """The reference rows (model-ready training rows): a seeded sample of ``frame``."""
    return frame.iloc[sample_positions(len(frame), rows, seed)].reset_index(drop=True)


def save_background(frame: pd.DataFrame, model_dir: Path) -> Path:
    """Write the reference rows into a model version being published."""
    path = model_dir / BACKGROUND_FILE
    frame.to_parquet(path, index=False)
    return path


def load_background(model_dir: Path, features: FeaturesConfig) -> pd.DataFrame | None:
    """A model's reference rows, typed as the pipeline expects (text as objects); None for a
    model trained before explanations existed."""
    path = model_dir / BACKGROUND_FILE
    if not path.is_file():
        return None
    stored = pd.read_parquet(path)
    columns: dict[str, pd.Series] = {}
    for name, kind in model_inputs(features):
        if name not in stored.columns:
            return None  # written for other inputs: not this model's
        values = stored[name]
        columns[name] = (
            values.astype("float64")
            if kind == "float"
            else pd.Series(values.to_numpy(dtype=object), index=stored.index, dtype=object)
        )
    return pd.DataFrame(columns, index=stored.index)


def attribution_matrix(preprocessor: Any, features: FeaturesConfig) -> np.ndarray:
    """``(transformed columns, raw inputs)``: how much of each column the estimator sees
    belongs to which raw input (1 for a column derived from one input, 1/2 each for the
    product of two). SHAP values of the columns ``@`` this matrix are the inputs' values.

    Reads the fitted ColumnTransformer: each transformer's output slice and its output column
    names (one-hot ``<input>_<category>``, interaction ``<a> <b>``).
    """
    raw_of = {name: name for name, _ in model_inputs(features)}
    for stamp in features.datetime:
        raw_of.update(dict.fromkeys(datetime_inputs(stamp), stamp.name))
    position = {name: i for i, name in enumerate(features.names)}
    slices = preprocessor.output_indices_
    width = max((s.stop for s in slices.values()), default=0)
    matrix = np.zeros((width, len(position)))
    for name, transformer, columns in preprocessor.transformers_:
        out = slices.get(name)
        if out is None or out.stop <= out.start or transformer == "drop":
            continue
        inputs = [columns] if isinstance(columns, str) else [str(c) for c in columns]
        unknown = [c for c in inputs if c not in raw_of]
        if unknown:
            raise ValueError(f"transformer {name} reads {unknown}, which is not a model input")
        for offset, shares in enumerate(_column_shares(transformer, inputs, out.stop - out.start)):
            for column, share in shares.items():
                matrix[out.start + offset, position[raw_of[column]]] += share
    return matrix


def _column_shares(transformer: Any, inputs: list[str], width: int) -> list[dict[str, float]]:
    if len(inputs) == 1:
        return [{inputs[0]: 1.0}] * width
    names = _output_names(transformer, inputs)
    if len(names) != width:
        raise ValueError(f"{len(names)} column names for {width} columns of {inputs}")
    return [_shares_of(name, inputs) for name in names]


def _output_names(transformer: Any, inputs: list[str]) -> list[str]:
    """The output column names of a fitted transformer (or pipeline of them) fed ``inputs``;
    a step without ``get_feature_names_out`` (a dtype cast) keeps its columns."""
    steps = (
        [step for _, step in transformer.steps] if hasattr(transformer, "steps") else [transformer]
    )
    names = list(inputs)
    for step in steps:
        if isinstance(step, str) or step is None:  # "passthrough"
            continue
        if hasattr(step, "get_feature_names_out"):
            names = [str(name) for name in step.get_feature_names_out(names)]
    return names


def _shares_of(name: str, inputs: list[str]) -> dict[str, float]:
    if name in inputs:
        return {name: 1.0}
    # PolynomialFeatures: "a b" (a product), "a^2" (a power): equal shares of its inputs.
    factors = [re.sub(r"\^\d+$", "", token) for token in name.split(" ")]
    if all(factor in inputs for factor in factors):
        return {factor: factors.count(factor) / len(factors) for factor in set(factors)}
    # OneHotEncoder: "<input>_<category>"; the longest matching input wins ("plan_type" over
    # "plan").
    owners = [column for column in inputs if name.startswith(f"{column}_")]
    if owners:
        return {max(owners, key=len): 1.0}
    raise ValueError(f"the transformed column {name!r} cannot be traced to one of {inputs}")


class PipelineExplainer:
    """SHAP values of a fitted ``Pipeline([features, model])``, per raw input.

    ``background``: model-ready reference rows (training rows). ``task`` picks the explained
    output: the positive class's (binary), every class's (multiclass), the value (regression);
    ``target_label`` names it in ``output``. ``method`` forces an explainer (tests); by default
    ``method_for(model_name)``, and a tree model shap cannot read or explain falls back to
    ``permutation`` (``fallback_reason`` says why).
    """

    def __init__(
        self,
        pipeline: Any,
        *,
        task: str,
        features: FeaturesConfig,
        background: pd.DataFrame,
        model_name: str,
        target_label: str,
        seed: int = 0,
        method: Method | None = None,
    ) -> None:
        try:
            with warnings.catch_warnings():  # shap's import warns about matplotlib's future
                warnings.simplefilter("ignore")
                import shap
        except ImportError as exc:
            raise ConfigError(
                f"SHAP explanations need the pipeline dependencies ({exc.name} is missing): "
                "install the project with its [pipeline] extra"
            ) from None
        self._shap = shap
        self.pipeline = pipeline
        self.task = task
        self.features = features
        self.names = features.names
        self.background = background
        self.seed = seed
        self.target_label = target_label
        self.fallback_reason: str | None = None
        self.method: Method = method or method_for(model_name)
        self._preprocessor = pipeline[:-1]
        self._model = pipeline[-1]
        self._matrix: np.ndarray | None = None
        if self.method != "permutation":
            self._matrix = attribution_matrix(pipeline[0], features)
        self._tree_mode: Literal["interventional", "path"] = "path"
        self._tree_base: np.ndarray | None = None
        self._tree_tried: set[str] = set()
        if self.method == "tree":
            try:
                self._tree_explainer("path")
                if int(self._tree.model.max_depth) > PATH_MAX_DEPTH:
                    self._tree_explainer("interventional")
            except Exception as exc:  # shap raises many types for a model it cannot read
                self.fall_back(exc)
        if self.method == "linear":
            reference = self._transform(background)
            masker = shap.maskers.Independent(reference, max_samples=len(reference))
            self._linear = shap.LinearExplainer(self._model, masker)
        if self.method == "permutation":
            self._use_permutation()
        self.output = self._output_name()

    @property
    def reference(self) -> str:
        """What the base value is the mean output of."""
        if self.method == "permutation":
            return f"{len(self._permutation_background)} training rows"
        if self.method == "tree" and self._tree_mode == "path":
            return "the training rows the trees were fitted on"
        rows = len(self.background)
        return f"{min(rows, TREE_ROWS) if self.method == 'tree' else rows} training rows"

    @property
    def detail(self) -> str:
        """How the values are computed, in one phrase."""
        if self.method == "linear":
            return "linear (exact: coefficient x (value - reference mean) on the model's columns)"
        if self.method == "tree":
            mode = "interventional" if self._tree_mode == "interventional" else "path-dependent"
            return f"tree (shap's TreeExplainer, {mode}: exact for the model's trees)"
        return (
            f"permutation (model-agnostic: {PERMUTATIONS} orders of the raw inputs per row, "
            "swapped in from the reference rows)"
        )

    def explain(self, frame: pd.DataFrame) -> Explanation:
        """SHAP values of every row of ``frame`` (model-ready rows), batch by batch. When the
        tree explainer fails on a model (its values do not add up, e.g.), the next one explains
        it from then on: the other tree algorithm, then the permutation explainer."""
        while True:
            try:
                return self.explain_strictly(frame)
            except Exception as exc:  # shap raises many types; only tree explainers fall back
                if self.method != "tree":
                    raise
                self.fall_back(exc)

    def fall_back(self, exc: Exception) -> None:
        """Replace the failed tree explainer (``exc``): by the other tree algorithm if it was
        not tried yet, else by the permutation explainer."""
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        failed = f"TreeExplainer ({self._tree_mode}) failed on {type(self._model).__name__}"
        self.fallback_reason = f"{failed}: {reason or type(exc).__name__}"
        other: Literal["interventional", "path"] = (
            "path" if self._tree_mode == "interventional" else "interventional"
        )
        if self.method == "tree" and other not in self._tree_tried:
            try:
                self._tree_explainer(other)
                return
            except Exception as next_exc:  # shap raises many types for a model it cannot read
                first = str(next_exc).strip().splitlines()
                self.fallback_reason += f"; {other}: {first[0][:160] if first else ''}"
        self.method = "permutation"
        self._use_permutation()
        self.output = self._output_name()

    def _tree_explainer(self, mode: Literal["interventional", "path"]) -> None:
        """shap's TreeExplainer. ``path``-dependent (relative to the rows the trees were
        fitted on; fast, and exact for ordinary depths), ``interventional`` (relative to
        ``TREE_ROWS`` reference rows) for trees deeper than ``PATH_MAX_DEPTH``, whose
        path-dependent sums overflow, and for a model the other fails on."""
        shap = self._shap
        self._tree_mode = mode
        self._tree_tried.add(mode)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if mode == "path":
                self._tree = shap.TreeExplainer(self._model)
                self._tree_base = None
                return
            reference = self._transform(background_sample(self.background, self.seed, TREE_ROWS))
            self._tree = shap.TreeExplainer(
                self._model, data=reference, feature_perturbation="interventional"
            )
            # shap's interventional base value misses XGBoost's per-class offsets; the mean of
            # the model's own output over the reference rows is exact.
            output = self._tree_output(reference).reshape(len(reference), -1)
            self._tree_base = output.mean(axis=0)

    def _use_permutation(self) -> None:
        self._permutation_background = background_sample(
            self.background, self.seed, PERMUTATION_BACKGROUND_ROWS
        )
        width = self._transform(self.background.iloc[:1]).shape[1]
        self._call_rows = max(
            PERMUTATION_BACKGROUND_ROWS,
            PERMUTATION_CALL_CELLS // max(width, len(self.background.columns), 1),
        )

    def explain_strictly(self, frame: pd.DataFrame) -> Explanation:
        """``explain`` without the fallback: an explainer's failure is raised."""
        values: list[np.ndarray] = []
        base: np.ndarray | None = None
        for start in range(0, len(frame), BATCH_ROWS):
            batch = frame.iloc[start : start + BATCH_ROWS]
            batch_values, base = self._explain_batch(batch)
            values.append(batch_values)
        if base is None:  # no rows
            _, base = self._explain_batch(self.background.iloc[:1])
            empty_shape = (0, len(self.names), *([len(base)] if self.task == MULTICLASS else []))
            values = [np.zeros(empty_shape)]
        return Explanation(
            features=list(self.names),
            values=np.concatenate(values, axis=0),
            base_values=base if self.task == MULTICLASS else np.asarray(base[0]),
            method=self.method,
            output=self.output,
        )

    def _transform(self, frame: pd.DataFrame) -> np.ndarray:
        transformed = self._preprocessor.transform(frame)
        if hasattr(transformed, "toarray"):  # a sparse matrix (a user's own transformer)
            transformed = transformed.toarray()
        return np.asarray(transformed, dtype=np.float64)

    def _explain_batch(self, batch: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        if self.method == "permutation":
            return self._explained_output(*self._permutation(batch))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.method == "tree":
                transformed = self._transform(batch)
                with _native_stderr_silenced():
                    result = self._tree(transformed)
                base = (
                    np.asarray(result.base_values, dtype=np.float64)
                    if self._tree_base is None
                    else np.tile(self._tree_base, (len(batch), 1))
                )
                self._check_additivity(result.values, base, transformed)
            else:
                result = self._linear(self._transform(batch))
                base = np.asarray(result.base_values, dtype=np.float64)
        values = _raw(np.asarray(result.values, dtype=np.float64), self._matrix)
        return self._explained_output(values, base)

    def _check_additivity(self, values: Any, base: np.ndarray, transformed: np.ndarray) -> None:
        """Refuse tree SHAP values that do not add up to the model's own output (shap's own
        check allows 1e-2, which hides real errors of its algorithms on some models)."""
        values = np.asarray(values, dtype=np.float64)
        total = base.reshape(len(values), -1) + values.sum(axis=1).reshape(len(values), -1)
        output = self._tree_output(transformed).reshape(len(values), -1)
        if self.task == MULTICLASS and total.shape[1] > 1:
            # Softmax scores are defined up to a constant per row: compare differences.
            total, output = total - total[:, :1], output - output[:, :1]
        worst = float(np.max(np.abs(total - output), initial=0.0))
        allowed = ADDITIVITY_TOLERANCE * max(1.0, float(np.max(np.abs(output), initial=0.0)))
        if not worst <= allowed:
            raise ValueError(f"SHAP values miss the model's output by {worst:.2g}")

    def _tree_output(self, transformed: np.ndarray) -> np.ndarray:
        """The model's own output in the units TreeExplainer explains: margins (log-odds) of
        boosted classifiers, probabilities of a forest, values of a regressor."""
        model, library = self._model, type(self._model).__module__.split(".")[0]
        if library == "xgboost":
            margins = model.predict(transformed, output_margin=True)
        elif library == "lightgbm":
            margins = model.predict(transformed, raw_score=True)
        elif getattr(self._tree.model, "tree_output", "") == "probability":
            margins = model.predict_proba(transformed)
        elif hasattr(model, "decision_function"):
            margins = model.decision_function(transformed)
        else:
            margins = model.predict(transformed)
        return np.asarray(margins, dtype=np.float64)

    def _explained_output(
        self, values: np.ndarray, base: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Values ``(rows, inputs[, classes])`` and base values (one per output) of the output
        this task explains: binary models that explain both classes keep the positive one."""
        base = base.reshape(len(values), -1)[0] if len(values) else base.reshape(-1)
        if values.ndim == 3 and self.task != MULTICLASS:
            values, base = values[:, :, -1], base[-1:]
        return values, base

    def _output_name(self) -> str:
        if self.task == REGRESSION:
            return f"predicted {self.target_label}"
        probability = self.method == "permutation" or (
            self.method == "tree" and getattr(self._tree.model, "tree_output", "") == "probability"
        )
        if self.task == MULTICLASS:
            unit = "probability" if probability else "log-odds (softmax score)"
            return f"{unit} of each class of {self.target_label}"
        return f"{'probability' if probability else 'log-odds'} of {self.target_label}"

    def _permutation(self, batch: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Model-agnostic SHAP values on the raw inputs (permutation sampling, as shap's
        PermutationExplainer, batched): along each of ``PERMUTATIONS`` orders of the inputs
        (antithetic pairs, the same seeded orders for every row), the row's inputs replace
        the background rows' one at a time (all model inputs of a timestamp together) and the
        change of the mean output is the input's contribution. Each order's contributions
        add up to the row's output minus the background's, exactly."""
        background = self._permutation_background
        groups = _input_groups(self.features)
        n_inputs, n_background = len(groups), len(background)
        combined = pd.concat([background, batch], ignore_index=True)
        orders = self._orders(n_inputs)
        # Step j of an order: its first j inputs come from the row (steps 1 .. n-1).
        from_row = np.zeros((len(orders), max(n_inputs - 1, 0), n_inputs), dtype=bool)
        for p, order in enumerate(orders):
            for step in range(1, n_inputs):
                from_row[p, step - 1, order[:step]] = True
        base = self._model_output(background).reshape(n_background, -1).mean(axis=0)
        own = self._model_output(batch).reshape(len(batch), -1)
        steps = np.empty((len(batch), len(orders), n_inputs + 1, base.size))
        steps[:, :, 0] = base
        steps[:, :, -1] = own[:, None, :]
        # One (row, order) pair needs (inputs - 1) x background model rows; a call scores as
        # many pairs as fit in its budget (at least one).
        pairs = [(row, p) for row in range(len(batch)) for p in range(len(orders))]
        per_pair = (n_inputs - 1) * n_background
        per_call = max(1, self._call_rows // max(per_pair, 1))
        for start in range(0, len(pairs) if per_pair else 0, per_call):
            rows = np.array([row for row, _ in pairs[start : start + per_call]])
            which = np.array([p for _, p in pairs[start : start + per_call]])
            # (pairs, steps, background, inputs): the combined row each input comes from.
            index = np.where(
                from_row[which][:, :, None, :],
                n_background + rows[:, None, None, None],
                np.arange(n_background)[None, None, :, None],
            ).reshape(-1, n_inputs)
            scored = self._model_output(_gather(combined, groups, index))
            means = scored.reshape(len(rows), n_inputs - 1, n_background, -1).mean(axis=2)
            steps[rows, which, 1:-1] = means
        deltas = np.diff(steps, axis=2)  # (rows, orders, inputs in order, outputs)
        values = np.zeros((len(batch), n_inputs, base.size))
        for p, order in enumerate(orders):
            values[:, order] += deltas[:, p]
        values /= len(orders)
        if self.task != MULTICLASS:
            values = values[:, :, 0]
        return values, np.tile(base, (len(batch), 1))

    def _orders(self, n_inputs: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        orders = []
        for _ in range(PERMUTATIONS // 2):
            order = rng.permutation(n_inputs)
            orders += [order, order[::-1]]
        return np.asarray(orders, dtype=np.int64)

    def _model_output(self, frame: pd.DataFrame) -> np.ndarray:
        if self.task == REGRESSION:
            return np.asarray(self.pipeline.predict(frame), dtype=np.float64).reshape(-1)
        probabilities = np.asarray(self.pipeline.predict_proba(frame), dtype=np.float64)
        return probabilities if self.task == MULTICLASS else probabilities[:, 1]


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """shap's compiled tree code draws a progress bar straight onto file descriptor 2 when an
    explanation takes more than a few seconds: it would garble the command's output and logs.
    Python's own stderr is flushed first; if descriptor 2 cannot be duplicated, nothing is
    silenced."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with Path(os.devnull).open("wb") as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _raw(values: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    """Transformed-column SHAP values ``(rows, columns[, outputs])`` summed onto raw inputs."""
    assert matrix is not None
    if values.ndim == 3:
        return np.einsum("rco,ci->rio", values, matrix)
    return values @ matrix


def _gather(frame: pd.DataFrame, groups: list[list[str]], index: np.ndarray) -> pd.DataFrame:
    """Rows assembled column group by column group: ``index[r, j]`` is the row of ``frame``
    that group ``j`` of result row ``r`` comes from."""
    columns = {
        column: pd.Series(frame[column].to_numpy()[index[:, j]], dtype=frame[column].dtype)
        for j, group in enumerate(groups)
        for column in group
    }
    return pd.DataFrame(columns)[list(frame.columns)]


def _input_groups(features: FeaturesConfig) -> list[list[str]]:
    """The model inputs of each raw input, in ``features.names`` order."""
    groups: dict[str, list[str]] = {name: [] for name in features.names}
    by_input = {name: name for name, _ in model_inputs(features)}
    for stamp in features.datetime:
        by_input.update(dict.fromkeys(datetime_inputs(stamp), stamp.name))
    for name, _ in model_inputs(features):
        groups[by_input[name]].append(name)
    return list(groups.values())


def explain_rows(
    explainer: PipelineExplainer, frame: pd.DataFrame, *, max_rows: int, seed: int
) -> SampledExplanation:
    """Explain at most ``max_rows`` rows of ``frame`` (a seeded sample when there are more;
    the model-agnostic explainer as many as ``permutation_rows`` allows)."""
    positions = sample_positions(len(frame), max_rows, seed)
    explanation = None
    while explanation is None and explainer.method != "permutation":
        try:
            explanation = explainer.explain_strictly(frame.iloc[positions])
        except Exception as exc:  # shap raises many types; only tree explainers fall back
            if explainer.method != "tree":
                raise
            explainer.fall_back(exc)
    if explanation is None:
        limit = min(max_rows, permutation_rows(len(explainer.names)))
        positions = sample_positions(len(frame), limit, seed)
        explanation = explainer.explain(frame.iloc[positions])
    return SampledExplanation(
        explanation=explanation,
        positions=positions,
        rows_available=len(frame),
        seed=seed,
        reference=explainer.reference,
        detail=explainer.detail,
        fallback_reason=explainer.fallback_reason,
    )


def permutation_rows(inputs: int) -> int:
    """How many rows the permutation explainer explains in a report, for ``inputs`` raw
    inputs: what ``PERMUTATION_BUDGET`` model rows pay for, within 10 to 200."""
    per_row = PERMUTATIONS * max(inputs - 1, 1) * PERMUTATION_BACKGROUND_ROWS
    return int(np.clip(PERMUTATION_BUDGET // per_row, PERMUTATION_MIN_ROWS, PERMUTATION_MAX_ROWS))


def top_contributions(values: np.ndarray, names: Sequence[str], k: int) -> dict[str, Any]:
    """``predict --explain`` columns for ``(rows, inputs)`` values: ``top_<i>_feature`` and
    ``top_<i>_shap`` for the ``k`` largest |SHAP| of each row (ties: config order), then
    ``shap_<input>`` for every input."""
    k = min(k, len(names))
    order = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]
    labels = np.asarray(names, dtype=object)
    columns: dict[str, Any] = {}
    for i in range(k):
        columns[f"top_{i + 1}_feature"] = labels[order[:, i]]
        columns[f"top_{i + 1}_shap"] = np.take_along_axis(values, order[:, i : i + 1], axis=1)[:, 0]
    for j, name in enumerate(names):
        columns[f"shap_{name}"] = values[:, j]
    return columns


class RowExplainer:
    """``predict --explain``: per chunk, each row's SHAP values and top contributions, from
    the model's scikit-learn pipeline (its skops file) and its saved reference rows."""

    def __init__(self, model_dir: Path, metadata: ModelMetadata, *, top_k: int, seed: int) -> None:
        try:
            pipeline = load_pipeline(model_dir, metadata)
            background = load_background(model_dir, metadata.features)
            if background is None:
                raise ModelNotFoundError(
                    f"model {metadata.version} has no SHAP reference rows ({BACKGROUND_FILE}: "
                    "it was trained before explanations existed): retrain it to use --explain"
                )
            positive = metadata.positive_class
            self._explainer = PipelineExplainer(
                pipeline,
                task=metadata.task,
                features=metadata.features,
                background=background,
                model_name=metadata.model_name,
                target_label=(
                    metadata.target if positive is None else f"{metadata.target} = {positive}"
                ),
                seed=seed,
            )
        except ImportError as exc:
            raise ConfigError(
                f"--explain needs the training-side dependencies ({exc.name} is missing): "
                "install the project with its [pipeline] extra"
            ) from None
        self._features = metadata.features
        self._multiclass = metadata.task == MULTICLASS
        self._top_k = top_k

    def columns(self, model_frame: pd.DataFrame, scores: np.ndarray) -> dict[str, Any]:
        """The ``top_*`` and ``shap_*`` columns for model-ready rows and their scores (the
        class explained for a multiclass row is the one predicted for it)."""
        explanation = self._explainer.explain(model_frame)
        predicted = scores.argmax(axis=1) if self._multiclass else None
        return top_contributions(explanation.for_rows(predicted), self._features.names, self._top_k)


@dataclass(frozen=True)
class Display:
    """An input's values as a plot shows them: numbers (or times) on an axis, or categories."""

    values: np.ndarray
    # "length": a text's number of words, drawn as a number but not an input value to correlate.
    kind: Literal["number", "time", "category", "length"]
    label: str


def display_values(frame: pd.DataFrame, features: FeaturesConfig) -> dict[str, Display]:
    """Each raw input's values of model-ready rows, for colouring and dependence plots:
    numbers and booleans as they are, a timestamp as its date (or first derived part), text
    as its number of words, categories as text."""
    shown: dict[str, Display] = {}
    for numeric in features.numeric:
        shown[numeric.name] = Display(frame[numeric.name].to_numpy(float), "number", numeric.name)
    for boolean in features.boolean:
        shown[boolean.name] = Display(
            frame[boolean.name].to_numpy(float), "number", f"{boolean.name} (1 = true)"
        )
    for categorical in features.categorical:
        shown[categorical.name] = Display(
            frame[categorical.name].astype(str).to_numpy(dtype=object),
            "category",
            categorical.name,
        )
    for stamp in features.datetime:
        if "days" in stamp.parts:
            days = frame[f"{stamp.name}__days"].to_numpy(float)
            seconds = np.where(np.isnan(days), 0, np.round(days * SECONDS_PER_DAY)).astype(np.int64)
            times = DATETIME_REFERENCE + seconds.astype("timedelta64[s]")
            times[np.isnan(days)] = np.datetime64("NaT")
            shown[stamp.name] = Display(times, "time", stamp.name)
        else:
            first = datetime_inputs(stamp)[0]
            shown[stamp.name] = Display(frame[first].to_numpy(float), "number", first)
    for text in features.text:
        words = np.array([len(str(value).split()) for value in frame[text.name]], dtype=float)
        shown[text.name] = Display(words, "length", f"words in {text.name}")
    return shown
