"""``python -m benchmarks.bench_spark`` (``make bench-spark``): batch scoring rows/s of the local
engine and of Spark on the same Parquet files.

Draws ``--rows`` rows (default 1,000,000) from the scoring query's rows, with replacement and
each with its own id, writes them as ``--files`` Parquet files in a temporary folder, and scores
them with the published model (LATEST):

- ``predict`` (local engine: this process, chunk by chunk, ``data.chunk_size`` rows);
- ``predict --engine spark`` on ``--master`` (default ``local[2]``: two Python workers), rows
  in Arrow batches of ``--batch-rows``.

Each engine runs ``--runs`` times (default 3) in one warm process; the table shows the median
rows/s of each, and Spark's fixed costs apart: its JVM start and its first run (which also
starts the Python workers and loads the model in each). Spark needs the ``spark`` extra and
Java 17+ (``make install-spark``). Results go to ``reports/bench_spark.json``.

Numbers from a shared or noisy machine vary: compare medians of repeated runs, not one value.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import benchkit

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def project_package() -> str:
    """The project's import name: the package under ``src/`` that runs with ``python -m``."""
    return next(
        path.name
        for path in sorted((PROJECT_ROOT / "src").iterdir())
        if (path / "__main__.py").is_file()
    )


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_spark", description=__doc__)
    parser.add_argument("--config", "-c", type=Path, default=Path("configs/config.yaml"))
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to score")
    parser.add_argument("--files", type=int, default=8, help="Parquet files they are split into")
    parser.add_argument("--batch-rows", type=int, default=10_000, help="rows per Arrow batch")
    parser.add_argument("--master", default="local[2]", help="Spark master URL")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each engine")
    parser.add_argument("--output", type=Path, default=Path("reports/bench_spark.json"))
    return parser


def write_input(package: str, cfg: Any, rows: int, files: int, folder: Path) -> None:
    """``rows`` scoring rows drawn with replacement from the first chunk of the scoring query,
    each with its own id, as ``files`` Parquet files in ``folder``."""
    import numpy as np

    predict = importlib.import_module(f"{package}.predict")
    errors = importlib.import_module(f"{package}.errors")
    chunks = predict.iter_input(predict.SQL_SOURCE, cfg, min(rows, 50_000))
    try:
        base = next(chunks)
    except StopIteration:
        raise errors.DataError(f"{cfg.data.scoring_query} returned no rows to benchmark") from None
    finally:
        chunks.close()
    drawn = base.sample(n=rows, replace=True, random_state=0).reset_index(drop=True)
    if cfg.data.id_column in drawn.columns:
        drawn[cfg.data.id_column] = np.arange(rows)
    folder.mkdir(parents=True)
    for number, part in enumerate(np.array_split(np.arange(rows), files)):
        drawn.iloc[part].to_parquet(folder / f"part-{number:03d}.parquet", index=False)


def timed(run: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    package = project_package()
    config = importlib.import_module(f"{package}.config")
    predict = importlib.import_module(f"{package}.predict")
    spark_scoring = importlib.import_module(f"{package}.spark_scoring")
    cfg = config.load_config(args.config)

    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        work = Path(tmp)
        source = work / "rows"
        write_input(package, cfg, args.rows, args.files, source)
        size_mb = sum(p.stat().st_size for p in source.iterdir()) / 1e6

        local_s = []
        for _ in range(args.runs):
            seconds, summary = timed(
                lambda: predict.predict_batch(cfg, str(source), work / "local.parquet")
            )
            local_s.append(seconds)
        model_version = summary.model_version

        jvm_s, spark = timed(
            lambda: spark_scoring.spark_session(args.master, {"spark.ui.enabled": "false"})
        )
        spark_s = []
        first_s = 0.0
        for run in range(args.runs + 1):
            shutil.rmtree(work / "spark.parquet", ignore_errors=True)
            seconds, spark_summary = timed(
                lambda: spark_scoring.predict_spark(
                    cfg, str(source), str(work / "spark.parquet"), chunk_size=args.batch_rows
                )
            )
            if run == 0:
                first_s = seconds  # starts the Python workers, each loads the model
            else:
                spark_s.append(seconds)
        spark.stop()

    local_rate = args.rows / statistics.median(local_s)
    spark_rate = args.rows / statistics.median(spark_s)
    results: dict[str, Any] = {
        "machine": benchkit.machine(),
        "model_version": model_version,
        "rows": args.rows,
        "files": args.files,
        "input_mb": size_mb,
        "runs": args.runs,
        "local": {
            "chunk_size": cfg.data.chunk_size,
            "seconds": local_s,
            "rows_per_s": local_rate,
        },
        "spark": {
            "master": spark_summary.master,
            "batch_rows": args.batch_rows,
            "worker_processes": spark_summary.worker_processes,
            "sessions_created": spark_summary.sessions_created,
            "jvm_start_s": jvm_s,
            "first_run_s": first_s,
            "seconds": spark_s,
            "rows_per_s": spark_rate,
        },
        "spark_vs_local": spark_rate / local_rate,
    }
    rows = [
        ("CPUs", str(results["machine"]["cpus"])),
        ("input", f"{args.rows:,} rows in {args.files} Parquet files ({size_mb:.1f} MB)"),
        (
            f"local engine rows/s (median of {args.runs})",
            benchkit.fmt(local_rate) + f" (chunks of {cfg.data.chunk_size:,})",
        ),
        (
            f"Spark {spark_summary.master} rows/s (median of {args.runs})",
            benchkit.fmt(spark_rate)
            + f" ({spark_summary.worker_processes} workers, batches of {args.batch_rows:,})",
        ),
        ("Spark vs local", f"{results['spark_vs_local']:.2f}x"),
        ("Spark JVM start", f"{jvm_s:.1f} s"),
        ("Spark first run (workers start, load the model)", f"{first_s:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    table = [f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    table += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    benchkit.report(results, args.output, "\n".join(table))
    return 0


if __name__ == "__main__":
    project_errors = importlib.import_module(f"{project_package()}.errors")
    try:
        sys.exit(main())
    except project_errors.ProjectError as exc:  # no model, no pyspark or Java: one line
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
