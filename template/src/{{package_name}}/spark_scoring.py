"""Batch scoring inside Apache Spark: ``predict --engine spark``, for tables too big for one
machine.

The same exported ONNX graph as every other path scores the rows, through the same code: each
Arrow batch Spark hands a Python worker (``mapInPandas``) goes through ``validate_frame``,
``raw_columns``, the ONNX Runtime scorer and ``Outputs`` exactly like a chunk of the local
``predict`` does, so both engines write the same columns and values for the same rows.

- The model reaches the executors as a Spark broadcast of the ONNX file's bytes (checked against
  the SHA-256 in its metadata on the driver and again in each worker): each executor fetches it
  once, and each Python worker process builds one ONNX Runtime session from it the first time
  it scores a batch and keeps it for every later batch and task of the run (Spark reuses its
  Python workers). The session uses one thread: Spark parallelises across tasks, one per core.
- Inputs: CSV/Parquet files, folders and globs (local paths as the local engine resolves them,
  or ``hdfs://``, ``s3a://``... URIs listed by Spark itself), a Spark catalog table
  (``table:<name>``) and ``sql``: ``data.scoring_query`` run by Spark SQL over the
  ``data.tables`` files registered as views. A database ``data.url`` is refused with the
  alternatives: Spark would need its JDBC driver and credentials, which belong in the Spark
  catalog (``table:``), not in this project.
- Before any scoring job runs, the input's schema is checked: a missing feature column or one of
  a type the feature cannot take is one ``DataError`` and nothing is written.
- The output is a Parquet folder, written to a hidden sibling and renamed into place when the
  job succeeded; an earlier Spark output at that path is replaced, anything else is refused, and
  so is an output equal to, inside or around an input.

pyspark (the ``spark`` extra) and Java 17+ are needed only here; pyspark is imported inside the
functions, so the rest of the project never loads it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from . import model_store
from .artifacts import ONNX_FILE, ModelMetadata
from .config import Config, FeaturesConfig
from .config_base import PACKAGE
from .errors import ConfigError, DataError, DataValidationError, ModelIntegrityError, ProjectError
from .errortext import first_line
from .predict import SQL_SOURCE, TABLE_PREFIX, check_output_location

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

    from .outputs import Outputs
    from .scoring import OnnxScorer

logger = logging.getLogger(__name__)

# Every scoring job runs in this job group: the Spark UI shows it, and a test can prove that a
# refused input started none.
SCORING_JOB_GROUP = f"{PACKAGE}-predict"
JOB_GROUP_PROPERTIES = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")
INSTALL_HINT = (
    "--engine spark needs pyspark and Java 17 or newer: run `make install-spark` (or add "
    "--extra spark to your uv sync), and install Java (e.g. apt install openjdk-17-jre-headless)"
)
# The Spark settings a run changes (restored afterwards: the session may be the caller's).
# UTC: Spark hands timestamps to Python in the session's time zone, and the model reads naive
# timestamps as UTC, as the local engine does.
TIME_ZONE_CONF = "spark.sql.session.timeZone"
BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"
# What a worker raises for a user's mistake in the rows (a ``ProjectError``): JSON between two
# markers, so the driver can find it in Spark's error text and raise the same error again.
_ERROR_MARK = "@@spark-scoring-error@@"
_ERROR_PATTERN = re.compile(re.escape(_ERROR_MARK) + r"(.*?)" + re.escape(_ERROR_MARK))
PANDAS_WARNING = "PySpark does not yet fully support pandas"
_DOUBLE_PRECISION = re.compile(r"\bDOUBLE\s+PRECISION\b", re.IGNORECASE)
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")


@dataclass(frozen=True)
class SparkSummary:
    """What a Spark scoring run did."""

    rows: int
    batches: int  # Arrow batches scored (spark.sql.execution.arrow.maxRecordsPerBatch rows each)
    worker_processes: int  # distinct Python worker processes that scored
    sessions_created: int  # ONNX Runtime sessions built (one per worker process)
    predictions: str
    output: str
    model_version: str
    master: str


# --- the Spark session ------------------------------------------------------------------------


def spark_session(master: str | None = None, conf: Mapping[str, str] | None = None) -> SparkSession:
    """The running Spark session (``spark-submit``, a notebook, a test), or a new one on
    ``master`` with the settings ``conf``; without a master, Spark's own default applies
    (``local[*]`` unless ``spark-defaults.conf`` or ``MASTER`` says otherwise). Raises
    ``ConfigError`` without pyspark or Java."""
    pyspark = _import_pyspark()
    _quiet_pyspark_warnings()
    # py4j logs every connection it closes at INFO, the CLI's level.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    _require_java()
    try:
        # Starts the JVM (or joins spark-submit's), which knows the configured master.
        SparkContext._ensure_initialized()  # type: ignore[attr-defined]
    except Exception as exc:  # pyspark raises PySparkRuntimeError, py4j its own errors
        raise ConfigError(
            f"Spark's JVM did not start ({first_line(exc)}): --engine spark needs Java 17 or "
            f"newer ({_java_version()}); set JAVA_HOME to one"
        ) from None
    resolved = master or SparkConf().get("spark.master", "local[*]") or "local[*]"
    if resolved.startswith("local") and "PYSPARK_PYTHON" not in os.environ:
        # Local workers run this interpreter, which has the project installed (Spark would
        # otherwise start whatever `python3` is on PATH).
        os.environ["PYSPARK_PYTHON"] = sys.executable
    settings = {
        "spark.app.name": f"{PACKAGE}-predict",
        "spark.ui.showConsoleProgress": "false",
        # The workers import pandera, which imports pyspark.pandas, which warns about pandas 3
        # on every worker's start (see _quiet_pyspark_warnings).
        "spark.executorEnv.PYTHONWARNINGS": f"ignore:{PANDAS_WARNING}:FutureWarning",
        **(conf or {}),
    }
    if master:
        settings["spark.master"] = master
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    logger.debug("pyspark %s on %s", pyspark.__version__, resolved)
    session = builder.getOrCreate()
    if resolved.startswith("local"):
        # A failed task logs its Java stack trace at ERROR on this console, before the run
        # raises the one-line error that says what was wrong; a cluster keeps its own logs.
        session.sparkContext.setLogLevel("FATAL")
    return session


def _import_pyspark() -> Any:
    try:
        import pyspark
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return pyspark


def _quiet_pyspark_warnings() -> None:
    # pyspark 4 warns that pandas 3 is "not yet fully supported" (on importing pyspark.pandas,
    # which pandera does whenever pyspark is installed, and on pandas conversions); the tests
    # compare both engines on this project's pandas, so the warning says nothing.
    warnings.filterwarnings("ignore", message=PANDAS_WARNING, category=FutureWarning)


def java_executable() -> str | None:
    """The ``java`` Spark starts: ``$JAVA_HOME/bin/java``, else the one on PATH; None."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def _require_java() -> None:
    if java_executable() is None:
        raise ConfigError(
            "--engine spark needs Java 17 or newer, and none was found (no JAVA_HOME, no java "
            "on PATH): install one (e.g. apt install openjdk-17-jre-headless) or set JAVA_HOME"
        )


def _java_version() -> str:
    import subprocess

    java = java_executable()
    if java is None:
        return "no java found"
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{java} -version failed: {exc}"
    lines = (done.stderr or done.stdout).strip().splitlines()
    return f"{java}: {lines[0]}" if lines else f"{java} -version printed nothing"


# --- reading the input ------------------------------------------------------------------------


@dataclass(frozen=True)
class SparkInput:
    """The rows to score as a (lazy) Spark DataFrame, and where they come from."""

    frame: DataFrame
    label: str  # how messages name it
    folders: tuple[str, ...]  # locations (see ``location``) of input folders and files


def read_input(spark: SparkSession, cfg: Config, source: str) -> SparkInput:
    """``source`` as Spark reads it: ``sql`` (``data.scoring_query`` over ``data.tables``),
    ``table:<name>`` (the Spark catalog), or CSV/Parquet files (a file, a folder, a glob; a
    local path or a URI). No scoring happens here; Spark may run a small job to read the
    files' schema."""
    if source == SQL_SOURCE:
        return _scoring_query(spark, cfg)
    if source.startswith(TABLE_PREFIX):
        return _catalog_table(spark, source.removeprefix(TABLE_PREFIX).strip())
    frame, folders = _read_files(spark, source, "--input")
    return SparkInput(frame, f"input {source}", folders)


def _catalog_table(spark: SparkSession, name: str) -> SparkInput:
    from pyspark.errors import AnalysisException

    if not name:
        raise DataError("--input table: needs a table name, e.g. table:warehouse.customers")
    try:
        frame = spark.table(name)
    except AnalysisException as exc:
        raise DataError(
            f"--input table:{name}: the Spark catalog has no such table or view "
            f"({first_line(exc)[:200]})"
        ) from None
    return SparkInput(frame, f"table {name}", ())


def _scoring_query(spark: SparkSession, cfg: Config) -> SparkInput:
    """``data.scoring_query`` run by Spark SQL, its ``data.tables`` files registered as
    temporary views: the file-backed source scales with the cluster. A database source cannot
    be read this way (see the module docstring)."""
    from pyspark.errors import AnalysisException, ParseException

    from .data.extract import read_query

    data = cfg.data
    query = data.scoring_query
    if not data.tables or not data.url.startswith("duckdb:///:memory:"):
        raise DataError(
            f"--engine spark runs data.scoring_query with Spark SQL over data.tables files, "
            f"and data.url is a database ({_shown_url(data.url)}): score a Parquet export of "
            "the rows (--input <files>), a table of the Spark catalog (--input table:<name>, "
            "e.g. a JDBC table registered in the metastore), or use --engine local"
        )
    folders: list[str] = []
    for name, spec in data.tables.items():
        frame, where = _read_files(spark, spec, f"data.tables.{name}")
        frame.createOrReplaceTempView(name)
        folders += where
    # The SQL standard's DOUBLE PRECISION (PostgreSQL, SQLite, DuckDB; the shipped queries use
    # it) is DOUBLE in Spark SQL, which does not parse the long name.
    sql = _DOUBLE_PRECISION.sub("DOUBLE", read_query(query).strip().rstrip(";"))
    try:
        frame = spark.sql(sql)
    except (AnalysisException, ParseException) as exc:
        raise DataError(
            f"data.scoring_query {query} failed in Spark SQL: {first_line(exc)[:300]} (Spark "
            "SQL runs it over the data.tables views: keep to SQL it accepts, or use --engine "
            "local)"
        ) from None
    return SparkInput(frame, f"data.scoring_query {query}", tuple(folders))


def _shown_url(url: str) -> str:
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "an invalid URL"


def _read_files(spark: SparkSession, spec: str, label: str) -> tuple[DataFrame, tuple[str, ...]]:
    """Spark's DataFrame over CSV/Parquet files. A local path is resolved like the local
    engine resolves it (the same files, the same errors) and handed to Spark as ``file://``
    paths; a URI (``hdfs://``, ``s3a://``...) goes to Spark as it is, and Spark lists the
    folder or expands the glob."""
    from pyspark.errors import AnalysisException

    if _URI.match(spec) and not spec.startswith("file:"):
        paths = [spec]
        parquet = not spec.lower().rstrip("/").endswith(CSV_SUFFIXES)
        sample: Path | None = None
        folders: tuple[str, ...] = (location(spec),)
    else:
        from .data.extract import file_reader, resolve_files

        local = unquote(urlparse(spec).path) if spec.startswith("file:") else spec
        file_reader(local, label)  # every file has the same columns, as the local engine checks
        files = resolve_files(local, label)
        parquet = files[0].name.lower().endswith(PARQUET_SUFFIXES)
        paths = [f"file://{path.resolve()}" for path in files]
        sample = files[0]
        folders = tuple(location(str(path)) for path in [Path(local), *files] if path.exists())
    reader = spark.read
    try:
        if parquet:
            return reader.parquet(*paths), folders
        # enforceSchema off: Spark then checks every file's header against the columns it
        # inferred, instead of reading another file's columns by position.
        options: dict[str, Any] = {
            "header": True,
            "inferSchema": True,
            "enforceSchema": False,
            "mode": "FAILFAST",
        }
        options["sep"] = _csv_separator(sample) if sample else ("\t" if ".tsv" in spec else ",")
        return reader.options(**options).csv(paths), folders
    except AnalysisException as exc:
        raise DataError(f"{label}: Spark cannot read {spec}: {first_line(exc)[:300]}") from None


def _csv_separator(path: Path) -> str:
    """The separator of a local CSV file, sniffed as the local engine does (, ; tab |)."""
    import gzip

    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            sample = handle.read(65536)
        return str(csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter)
    except csv.Error:
        return ","
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read as CSV: {exc}") from None


def location(spec: str) -> str:
    """A comparable name for a path or URI: local paths (and ``file:`` URIs) absolute and
    resolved, ``file:/abs/path``; other URIs as given, without a trailing slash."""
    if _URI.match(spec) and not spec.startswith("file:"):
        return spec.rstrip("/")
    local = unquote(urlparse(spec).path) if spec.startswith("file:") else spec
    return f"file:{Path(local).resolve()}"


# --- checking the input before any job runs ------------------------------------------------


def check_schema(schema: StructType, cfg: Config, features: FeaturesConfig, label: str) -> None:
    """One ``DataError`` naming every feature column ``schema`` lacks (the local engine's
    message), or every column whose Spark type its feature cannot read. Nothing runs."""
    import pandas as pd

    from .data.validate import check_columns

    names = [field.name for field in schema.fields]
    check_columns(pd.DataFrame(columns=names), cfg, with_target=False, with_id=False, source=label)
    types = {field.name: field.dataType for field in schema.fields}
    wrong = []
    for kind, group in (
        ("numeric", features.numeric),
        ("categorical", features.categorical),
        ("boolean", features.boolean),
        ("datetime", features.datetime),
        ("text", features.text),
    ):
        for feature in group:
            data_type = types.get(feature.name)
            if data_type is not None and not _readable_as(kind, data_type):
                wrong.append(f"{feature.name} ({kind} feature) is {data_type.simpleString()}")
    if wrong:
        raise DataError(
            f"{label}: column(s) of a type the feature cannot read: {'; '.join(wrong)} "
            "(cast them in the query or the files)"
        )


def _readable_as(kind: str, data_type: DataType) -> bool:
    """Whether a column of ``data_type`` can hold values of a ``kind`` feature; text-typed
    columns pass for every kind (their values are validated row by row, as locally)."""
    from pyspark.sql import types as t

    if isinstance(data_type, t.StringType | t.NullType):
        return True
    numeric = isinstance(data_type, t.NumericType | t.BooleanType)
    if kind in ("numeric", "boolean"):
        return numeric
    if kind == "datetime":
        return isinstance(data_type, t.TimestampType | t.TimestampNTZType | t.DateType)
    # categorical, text: any single value that reads as text
    return numeric or isinstance(data_type, t.DateType | t.TimestampType | t.TimestampNTZType)


def output_schema(input_schema: StructType, id_column: str, outputs: Outputs) -> StructType:
    """The scored rows' schema, the local engine's columns: the id (when the input has it),
    ``prediction``, the probability column(s) of a classifier, ``model_version``."""
    from pyspark.sql import types as t

    fields = [field for field in input_schema.fields if field.name == id_column][:1]
    # The labels as the local engine's Parquet file holds them: booleans, integers or text.
    kinds = {type(label) for label in outputs.classes}
    label_type: DataType
    if not outputs.is_classifier:
        label_type = t.DoubleType()
    elif kinds == {bool}:
        label_type = t.BooleanType()
    elif kinds == {int}:
        label_type = t.LongType()
    else:
        label_type = t.StringType()
    fields.append(t.StructField("prediction", label_type, True))
    fields += [
        t.StructField(name, t.DoubleType(), True)
        for name in outputs.columns(_no_scores(outputs))
        if name != "prediction"
    ]
    fields.append(t.StructField("model_version", t.StringType(), False))
    return t.StructType(fields)


def _no_scores(outputs: Outputs) -> Any:
    import numpy as np

    return np.zeros((0, len(outputs.classes))) if outputs.is_classifier else np.zeros(0)


# --- the output ----------------------------------------------------------------------------


class _Storage:
    """The output's file system (local, HDFS, an object store) through Hadoop's API, as Spark
    writes it."""

    def __init__(self, spark: SparkSession, uri: str) -> None:
        context: Any = spark.sparkContext
        self._jvm = context._jvm
        self._fs = self.path(uri).getFileSystem(context._jsc.hadoopConfiguration())

    def path(self, uri: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(uri)

    def exists(self, uri: str) -> bool:
        return bool(self._fs.exists(self.path(uri)))

    def is_dir(self, uri: str) -> bool:
        return bool(self._fs.isDirectory(self.path(uri)))

    def rename(self, source: str, target: str) -> None:
        if not self._fs.rename(self.path(source), self.path(target)):
            raise DataError(f"cannot move {source} to {target}: check the folder's permissions")

    def delete(self, uri: str) -> None:
        self._fs.delete(self.path(uri), True)


def output_uri(output: str) -> str:
    """``--output`` as Spark writes it: a URI as given, a local path absolute (``file:``)."""
    if _URI.match(output) and not output.startswith("file:"):
        return output.rstrip("/")
    local = unquote(urlparse(output).path) if output.startswith("file:") else output
    return f"file://{Path(local).resolve()}"


def check_output_name(output: str) -> None:
    """``--output`` names a Parquet folder: ``<name>.parquet`` (checked before Spark starts)."""
    if not output.rstrip("/").lower().endswith(".parquet"):
        raise DataError(
            f"--output {output}: --engine spark writes a folder of Parquet files; name it "
            "<name>.parquet"
        )


def check_output(output: str, inputs: list[str], storage: _Storage) -> None:
    """Refuse an output that is, holds or lies inside an input, or that exists and is not an
    earlier Spark output (a user's folder is never replaced)."""
    target = location(output)
    for source in inputs:
        if target == source or source.startswith(target + "/") or target.startswith(source + "/"):
            raise DataError(
                f"--output {output} is, holds or lies inside the input ({source}): choose "
                "another path; the input is never overwritten"
            )
    uri = output_uri(output)
    if storage.is_dir(uri) and not storage.exists(f"{uri}/_SUCCESS"):
        raise DataError(
            f"--output {output} is a folder that is not an earlier Spark output (no _SUCCESS "
            "file): remove it or choose another path"
        )


def _publish(storage: _Storage, staging: str, target: str) -> None:
    """Move the written folder into place; an earlier output there is moved aside first and
    deleted after, and put back if the move fails."""
    if not storage.exists(target):
        storage.rename(staging, target)
        return
    parent, name = target.rsplit("/", 1)
    previous = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.previous"
    storage.rename(target, previous)
    try:
        storage.rename(staging, target)
    except BaseException:
        storage.rename(previous, target)
        raise
    storage.delete(previous)


# --- scoring in the workers --------------------------------------------------------------------


class _PidSet:
    """An accumulator of worker process ids (``AccumulatorParam``: zero and merge)."""

    def zero(self, value: set[int]) -> set[int]:
        return set()

    def addInPlace(self, first: set[int], second: set[int]) -> set[int]:  # noqa: N802
        first |= second
        return first


# One scorer per Python worker process, built on its first batch: (run id, scorer, outputs).
# Keyed by the run, so a long-lived Spark application scoring again with another
# model (or the same one) gets a fresh session, and only the current one is kept.
_SCORER: tuple[str, OnnxScorer, Outputs] | None = None


class BatchScorer:
    """What each Python worker runs over its Arrow batches (pickled to the executors with the
    config, the model's metadata and the broadcast model)."""

    def __init__(
        self,
        cfg: Config,
        metadata: ModelMetadata,
        model: Any,  # pyspark Broadcast[bytes]
        counters: dict[str, Any],  # pyspark Accumulators: rows, batches, sessions, pids
        *,
        with_id: bool,
        source: str,
    ) -> None:
        self.cfg = cfg
        self.metadata = metadata
        self.model = model
        self.counters = counters
        self.with_id = with_id
        self.source = source
        self.run_id = uuid.uuid4().hex  # this run's: a worker keeps one run's scorer

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        try:
            scorer, outputs = self._scorer()
            for batch in batches:
                yield self._score(batch, scorer, outputs)
        except ProjectError as exc:
            raise RuntimeError(_encode_error(exc)) from None

    def _scorer(self) -> tuple[OnnxScorer, Outputs]:
        global _SCORER
        if _SCORER is None or _SCORER[0] != self.run_id:
            from .outputs import Outputs
            from .scoring import OnnxScorer

            model: bytes = self.model.value
            if hashlib.sha256(model).hexdigest() != self.metadata.onnx_sha256:
                raise ModelIntegrityError(
                    "the model bytes an executor received do not match the model's checksum"
                )
            _SCORER = (
                self.run_id,
                OnnxScorer(model, self.metadata.features),
                Outputs(self.metadata),
            )
            self.counters["sessions"].add(1)
            self.counters["pids"].add({os.getpid()})
        return _SCORER[1], _SCORER[2]

    def _score(self, batch: pd.DataFrame, scorer: OnnxScorer, outputs: Outputs) -> pd.DataFrame:
        import pandas as pd

        from .data.validate import validate_frame
        from .features import raw_columns

        id_column = self.cfg.data.id_column
        if self.with_id:
            # Validation reports name rows by their index: the id says which row it was.
            batch.index = pd.Index(batch[id_column].to_numpy(), name=id_column)
        source = f"{self.source} (rows named by their {id_column})" if self.with_id else self.source
        valid = validate_frame(batch, self.cfg, with_target=False, with_id=False, source=source)
        scores = scorer.predict_columns(raw_columns(valid, self.metadata.features))
        result = pd.DataFrame(outputs.columns(scores))
        if self.with_id:
            result.insert(0, id_column, batch[id_column].to_numpy())
        result["model_version"] = self.metadata.version
        self.counters["rows"].add(len(result))
        self.counters["batches"].add(1)
        return result


def _encode_error(exc: ProjectError) -> str:
    report = exc.report if isinstance(exc, DataValidationError) else None
    message = str(exc).split("\n", 1)[0] if report is not None else str(exc)
    body = {"kind": type(exc).__name__, "message": message, "report": report}
    return f"{_ERROR_MARK}{json.dumps(body)}{_ERROR_MARK}"


def _decode_error(text: str) -> ProjectError | None:
    """The worker's ``ProjectError`` found in Spark's error text, or None."""
    match = _ERROR_PATTERN.search(text)
    if match is None:
        return None
    body = json.loads(match.group(1))
    if body.get("report") is not None:
        return DataValidationError(body["message"], body["report"])
    if body.get("kind") == ModelIntegrityError.__name__:
        return ModelIntegrityError(body["message"])
    return DataError(body["message"])


# --- the run -----------------------------------------------------------------------------------


def predict_spark(
    cfg: Config,
    source: str,
    output: str,
    *,
    version: str | None = None,
    chunk_size: int | None = None,
    master: str | None = None,
) -> SparkSummary:
    """Score ``source`` (see ``read_input``) with the model (default: LATEST) inside Spark and
    write the Parquet folder ``output``: the local engine's columns and values. ``chunk_size``
    is the rows per Arrow batch (default: the session's
    ``spark.sql.execution.arrow.maxRecordsPerBatch``, 10,000 unless configured); ``master`` a
    Spark master URL (default: the running session's, else Spark's default)."""
    from .scoring import OnnxPredictor

    check_output_name(output)
    model_dir = model_store.resolve_model_dir(cfg.paths.models_dir, version)
    predictor = OnnxPredictor(model_dir)  # checksum and smoke test, on the driver
    metadata = predictor.metadata
    model = (model_dir / ONNX_FILE).read_bytes()
    if hashlib.sha256(model).hexdigest() != metadata.onnx_sha256:
        raise ModelIntegrityError(f"{model_dir / ONNX_FILE} changed while it was being read")
    _import_pyspark()
    owned = _no_active_session()  # a session this run starts, it stops
    spark = spark_session(master)
    try:
        return _run(spark, cfg, source, output, metadata, predictor.outputs, model, chunk_size)
    finally:
        if owned:
            spark.stop()


def _no_active_session() -> bool:
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession() is None


@contextmanager
def _settings(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Spark SQL settings for the block, then the caller's again (the session may be theirs)."""
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, old in previous.items():
            if old is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, old)


@contextmanager
def _job_group(spark: SparkSession, description: str) -> Iterator[None]:
    """Run the block's jobs in ``SCORING_JOB_GROUP``, then restore the caller's group."""
    context = spark.sparkContext
    previous = {key: context.getLocalProperty(key) for key in JOB_GROUP_PROPERTIES}
    context.setJobGroup(SCORING_JOB_GROUP, description)
    try:
        yield
    finally:
        for key, value in previous.items():
            context.setLocalProperty(key, value)  # type: ignore[arg-type]


def _run(
    spark: SparkSession,
    cfg: Config,
    source: str,
    output: str,
    metadata: ModelMetadata,
    outputs: Outputs,
    model: bytes,
    chunk_size: int | None,
) -> SparkSummary:
    _quiet_pyspark_warnings()
    settings = {TIME_ZONE_CONF: "UTC"}
    if chunk_size is not None:  # else the session's (Spark's default: 10,000 rows)
        settings[BATCH_CONF] = str(chunk_size)
    with _settings(spark, settings):
        rows = read_input(spark, cfg, source)
        check_schema(rows.frame.schema, cfg, metadata.features, rows.label)
        target = output_uri(output)
        storage = _Storage(spark, target)
        inputs = [*rows.folders, *(location(name) for name in rows.frame.inputFiles())]
        check_output(output, inputs, storage)
        if not _URI.match(output) or output.startswith("file:"):
            local = unquote(urlparse(output).path) if output.startswith("file:") else output
            check_output_location(cfg, source, Path(local))
        context: Any = spark.sparkContext
        counters = {
            "rows": context.accumulator(0),
            "batches": context.accumulator(0),
            "sessions": context.accumulator(0),
            "pids": context.accumulator(set(), _PidSet()),
        }
        broadcast = context.broadcast(model)
        try:
            scorer = BatchScorer(
                cfg,
                metadata,
                broadcast,
                counters,
                with_id=cfg.data.id_column in rows.frame.columns,
                source=rows.label,
            )
            scored = rows.frame.mapInPandas(
                scorer,  # type: ignore[arg-type]
                output_schema(rows.frame.schema, cfg.data.id_column, outputs),
            )
            with _job_group(spark, f"score {rows.label} with model {metadata.version}"):
                _write(scored, storage, target, lambda: counters["rows"].value > 0, rows.label)
        finally:
            broadcast.destroy()
        rows_written, predictions = _summary(spark.read.parquet(target), outputs)
    return SparkSummary(
        rows=rows_written,
        batches=int(counters["batches"].value),
        worker_processes=len(counters["pids"].value),
        sessions_created=int(counters["sessions"].value),
        predictions=predictions,
        output=output,
        model_version=metadata.version,
        master=str(context.master),
    )


def _write(
    scored: DataFrame, storage: _Storage, target: str, any_rows: Callable[[], bool], label: str
) -> None:
    """Run the scoring job into a hidden sibling of ``target``, then publish it there; a failed
    job (or an empty input) leaves nothing behind and raises the worker's error."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PythonException
    from pyspark.errors.exceptions.captured import CapturedException

    parent, name = target.rsplit("/", 1)
    staging = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        scored.write.mode("errorifexists").parquet(staging)
        if not any_rows():
            raise DataError(f"{label} has no rows")
        _publish(storage, staging, target)
    except PythonException as exc:
        raise _decode_error(str(exc)) or exc from None
    except CapturedException as exc:  # an error Spark names (pyspark converts these)
        raise DataError(f"the Spark job failed: {first_line(exc)[:500]}") from None
    except Py4JJavaError as exc:  # any other error of the JVM: a file that does not parse...
        reason = _unreadable_input(exc)
        if reason is None:  # not the input's fault (an executor lost...): Spark's own error
            raise
        raise DataError(f"{label}: {reason}") from None
    finally:
        if storage.exists(staging):
            storage.delete(staging)


def _unreadable_input(exc: Any) -> str | None:
    """What Spark said about an input file it could not read (the innermost cause's first
    line), or None when the job failed for another reason."""
    messages: list[str] = []
    cause = exc.java_exception
    while cause is not None and len(messages) < 20:
        messages.append(str(cause.getMessage() or ""))
        cause = cause.getCause()
    if not any(m.startswith(("[FAILED_READ_FILE", "[MALFORMED")) for m in messages):
        return None
    return (messages[-1] or messages[0]).strip().split("\n", 1)[0][:300]


def _summary(written: DataFrame, outputs: Outputs) -> tuple[int, str]:
    """The rows of the published output and the local engine's one-line summary of them (read
    back from the files: exact even when Spark re-ran a task)."""
    from pyspark.sql import functions as f

    if outputs.is_classifier:
        counts = Counter(
            {
                str(row["prediction"]): int(row["count"])
                for row in written.groupBy("prediction").count().collect()
            }
        )
        return sum(counts.values()), outputs.summary(counts)
    row = written.agg(f.count("*").alias("n"), f.sum("prediction").alias("total")).first()
    rows = int(row["n"]) if row is not None else 0
    total = float(row["total"]) if row is not None and row["total"] is not None else 0.0
    return rows, outputs.summary(Counter({"value": rows}), total)
