"""Batch prediction: CSV, parquet or SQL in, predictions out, one chunk at a time.

Memory stays flat as the input grows: each chunk is read, validated, scored (and, with
``explain``, explained) and appended to the output before the next is read. The output is
written to a new temporary file beside it (``.<output>.*.partial``) and moved into place only
when every chunk succeeded, so a bad row never leaves a half-written file behind.

``explain`` adds each row's SHAP values (``explain.RowExplainer``): ``top_<i>_feature`` and
``top_<i>_shap`` for the ``evaluation.explain_top_k`` inputs that moved the row's output most,
and ``shap_<input>`` for every input. The scores stay the runtime's; the explanations come from
the model's scikit-learn pipeline, so they need the [pipeline] extra and cost far more than
scoring (milliseconds per row for most models, more for a large random forest).

``predict --engine spark`` runs the same per-chunk steps inside Apache Spark (``spark_scoring``),
for inputs too big for one process.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import model_store
from .atomic import replacing
from .config import Config
from .data.extract import iter_files, iter_source_query, output_clashes
from .data.validate import validate_frame
from .dburl import database_file
from .errors import DataError
from .features import raw_columns, to_model_frame
from .scoring import load_predictor

SQL_SOURCE = "sql"
# A Spark catalog table (``--engine spark`` only; see spark_scoring).
TABLE_PREFIX = "table:"
# A URI with a scheme (hdfs://, s3a://): not a local path to compare.
_REMOTE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass(frozen=True)
class PredictSummary:
    """What a batch run did."""

    rows: int
    chunks: int
    predictions: str  # e.g. "predicted yes 120 (12.0%), no 880 (88.0%)" or "mean prediction 3.2"
    output: Path
    model_version: str


def iter_input(source: str, cfg: Config, chunk_size: int) -> Generator[pd.DataFrame]:
    """Chunks of ``source``: ``sql`` for ``data.scoring_query`` on ``data.url``, or CSV/Parquet
    files (a file, a folder or a glob), read through the same DuckDB path as ``data.tables``."""
    if source == SQL_SOURCE:
        yield from iter_source_query(cfg.data, cfg.data.scoring_query, chunk_size)
        return
    yield from iter_files(source, chunk_size, label="--input")


def data_specs(cfg: Config, source: str) -> list[str]:
    """Every file, folder or glob of data this command or the project reads: the input, each of
    ``data.tables`` and a database file ``data.url`` names (SQLite, DuckDB). Remote URIs are
    left out: only local paths can be compared."""
    specs = [] if source == SQL_SOURCE or source.startswith(TABLE_PREFIX) else [source]
    specs += cfg.data.tables.values()
    database = database_file(cfg.data.url)
    if database is not None:
        specs.append(str(database))
    return [spec for spec in specs if not _REMOTE.match(spec)]


def check_output_location(cfg: Config, source: str, output: Path) -> None:
    """Refuse an ``output`` that would replace, hold or be read back as data the project
    reads (a scores file named like one of the user's tables, or written into an input's
    folder): the user's data is never written. An output whose folder is a file is refused
    too, before any scoring."""
    blocking = next((p for p in output.absolute().parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise DataError(f"--output {output}: {blocking} is a file, not a folder")
    for spec in data_specs(cfg, source):
        if output_clashes(output, spec):
            raise DataError(
                f"--output {output} would replace, hold or be read back as data the project "
                f"reads ({spec}): write it elsewhere, e.g. under reports/"
            )


def predict_batch(
    cfg: Config,
    source: str,
    output: Path,
    *,
    version: str | None = None,
    chunk_size: int | None = None,
    explain: bool = False,
) -> PredictSummary:
    """Score ``source`` with the model (default: LATEST) and write ``output`` (.csv/.parquet);
    ``explain`` adds the ``top_*`` and ``shap_*`` columns of each row."""
    if output.suffix.lower() not in (".csv", ".parquet"):
        raise DataError(f"unsupported output {output}: use a .csv or .parquet file name")
    if source.startswith(TABLE_PREFIX):
        raise DataError(
            f"--input {source} is a table of the Spark catalog: score it with --engine spark"
        )
    check_output_location(cfg, source, output)
    if output.is_dir():
        raise DataError(f"--output {output} is a folder: give a file name (.csv or .parquet)")
    model_dir = model_store.resolve_model_dir(cfg.paths.models_dir, version)
    predictor = load_predictor(model_dir, cfg.serving.runtime)
    features = predictor.metadata.features
    explainer = None
    if explain:
        from .explain import RowExplainer

        explainer = RowExplainer(
            model_dir,
            predictor.metadata,
            top_k=cfg.evaluation.explain_top_k,
            seed=cfg.training.seed,
        )
    id_column = cfg.data.id_column
    rows = chunks = 0
    counts: Counter[str] = Counter()
    value_sum = 0.0
    outputs = predictor.outputs
    with replacing(output) as partial:
        writer = _ChunkWriter(partial, parquet=output.suffix.lower() == ".parquet")
        try:
            for chunk in iter_input(source, cfg, chunk_size or cfg.data.chunk_size):
                # Row numbers for error reports.
                chunk.index = pd.RangeIndex(rows, rows + len(chunk))
                valid = validate_frame(
                    chunk, cfg, with_target=False, with_id=False, source=f"input {source}"
                )
                scores = predictor.predict_columns(raw_columns(valid, features))
                result = pd.DataFrame(outputs.columns(scores), index=valid.index)
                if id_column in chunk.columns:
                    result.insert(0, id_column, chunk[id_column].to_numpy())
                result["model_version"] = predictor.metadata.version
                if explainer is not None:
                    extra = explainer.columns(to_model_frame(valid, features), scores)
                    result = pd.concat([result, pd.DataFrame(extra, index=result.index)], axis=1)
                writer.write(result)
                rows += len(result)
                chunks += 1
                counts += outputs.counts(scores)
                if not outputs.is_classifier:
                    value_sum += float(scores.sum())
        finally:
            writer.close()
        if rows == 0:
            raise DataError(f"input {source} has no rows")
    return PredictSummary(
        rows, chunks, outputs.summary(counts, value_sum), output, predictor.metadata.version
    )


class _ChunkWriter:
    """Appends DataFrames to one CSV (header once) or one parquet file (one row group each)."""

    def __init__(self, path: Path, *, parquet: bool) -> None:
        self.path = path
        self.parquet = parquet
        self._parquet: pq.ParquetWriter | None = None
        self._wrote_csv_header = False

    def write(self, frame: pd.DataFrame) -> None:
        if self.parquet:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table)
        else:
            frame.to_csv(
                self.path,
                mode="a" if self._wrote_csv_header else "w",
                header=not self._wrote_csv_header,
                index=False,
            )
            self._wrote_csv_header = True

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
