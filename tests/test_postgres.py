"""The same SQL runs on PostgreSQL unchanged: a real server (from Debian's postgresql package),
started on 127.0.0.1 by this test, receives the sample warehouse and feeds validate, train and
batch predict through nothing but environment overrides of the rendered project's config."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Pipelines, free_port, project_env, run

pytestmark = pytest.mark.slow


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free port; stopped (by its pid file) at the end."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries not installed (.ci/run installs `postgresql`)")
    # PostgreSQL refuses to run as root: run it as the package's `postgres` user then.
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        as_user = ["runuser", "-u", "postgres", "--"]
    # Outside pytest's private (0700) temp tree, so the postgres user can reach it.
    work = Path(tempfile.mkdtemp(prefix="copier-ml-pg-"))
    work.chmod(0o755)
    data_dir = work / "data"
    data_dir.mkdir(mode=0o700)
    if as_user:
        shutil.chown(data_dir, user="postgres", group="postgres")
    port = free_port()
    run(
        [*as_user, initdb, "-D", str(data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        cwd=work,
    )
    options = f"-p {port} -k {data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(
        [
            *as_user,
            pg_ctl,
            "-D",
            str(data_dir),
            "-o",
            options,
            "-w",
            "-l",
            str(data_dir / "server.log"),
            "start",
        ],
        cwd=work,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data_dir), "-m", "fast", "-w", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(work, ignore_errors=True)


def test_pipeline_runs_on_postgres_unchanged(
    pipelines: Pipelines, project_python: Path, postgres_url: str, tmp_path: Path
) -> None:
    sqlite_run = pipelines["defaults"]
    project, package = sqlite_run.project, sqlite_run.package
    prefix = package.upper()
    env = project_env(project, installed=True)
    env.update(
        {
            f"{prefix}_DATA__URL": postgres_url,
            f"{prefix}_DATA__SAMPLE__URL": postgres_url,  # the sample goes to its own server
            f"{prefix}_TRACKING__ENABLED": "false",
            f"{prefix}_PATHS__MODELS_DIR": str(tmp_path / "models"),
            f"{prefix}_PATHS__REPORTS_DIR": str(tmp_path / "reports"),
        }
    )

    def cli(*args: str) -> str:
        return run([str(project_python), "-m", package, *args], cwd=project, env=env).stdout

    assert "postgresql" in cli("data")
    # Same seed, same SQL, other engine: the validated training table is the same.
    assert cli("validate") == sqlite_run.outputs["validate"]
    assert "published" in cli("train")
    cli("predict", "--input", "sql", "--output", str(tmp_path / "scores.csv"))
    assert len((tmp_path / "scores.csv").read_text().splitlines()) == 5000 + 1


def test_sample_refuses_postgres_database_with_user_table(
    pipelines: Pipelines, project_python: Path, postgres_url: str, tmp_path: Path
) -> None:
    project, package = pipelines["defaults"].project, pipelines["defaults"].package
    users_url = postgres_url.rsplit("/", 1)[0] + "/users_own"
    sql = (
        "from sqlalchemy import create_engine, text\n"
        "import sys\n"
        "admin = create_engine(sys.argv[1], isolation_level='AUTOCOMMIT')\n"
        "with admin.connect() as c:\n"
        "    c.execute(text('DROP DATABASE IF EXISTS users_own'))\n"
        "    c.execute(text('CREATE DATABASE users_own'))\n"
        "with create_engine(sys.argv[2]).begin() as c:\n"
        "    c.execute(text('CREATE TABLE customers (customer_id int, name text)'))\n"
        "    c.execute(text(\"INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace')\"))\n"
    )
    count = (
        "from sqlalchemy import create_engine, text\nimport sys\n"
        "with create_engine(sys.argv[1]).connect() as c:\n"
        "    print(c.execute(text('SELECT string_agg(name, \\',\\' ORDER BY customer_id) "
        "FROM customers')).scalar_one())\n"
    )
    env = project_env(project, installed=True)
    run([str(project_python), "-c", sql, postgres_url, users_url], cwd=tmp_path, env=env)
    env[f"{package.upper()}_DATA__SAMPLE__URL"] = users_url

    result = run([str(project_python), "-m", package, "data"], cwd=project, env=env, check=False)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "'customers'" in result.stderr, result.stderr
    assert "users_own" in result.stderr, "names the database"
    after = run([str(project_python), "-c", count, users_url], cwd=tmp_path, env=env).stdout
    assert after.strip() == "Ada,Grace", "the user's table is untouched"


def test_tune_workers_share_one_study_on_postgres(
    pipelines: Pipelines, project_python: Path, postgres_url: str, tmp_path: Path
) -> None:
    project, package = pipelines["defaults"].project, pipelines["defaults"].package
    env = project_env(project, installed=True)
    env.update(
        {
            f"{package.upper()}_TUNING__STORAGE": postgres_url,
            f"{package.upper()}_TRACKING__ENABLED": "false",
        }
    )

    run(
        [str(project_python), "-m", package, "tune", "--trials", "4", "--workers", "2"],
        cwd=project,
        env=env,
    )

    # Two processes wrote one study: four distinct trial numbers, from two workers.
    check = (
        "import optuna, sys\n"
        "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        "(summary,) = optuna.get_all_study_summaries(storage=sys.argv[1])\n"
        "study = optuna.load_study(study_name=summary.study_name, storage=sys.argv[1])\n"
        "print(sorted(t.number for t in study.trials), "
        "len({t.user_attrs['worker'] for t in study.trials}))\n"
    )
    result = run([str(project_python), "-c", check, postgres_url], cwd=tmp_path, env=env)
    assert result.stdout.split() == ["[0,", "1,", "2,", "3]", "2"]
