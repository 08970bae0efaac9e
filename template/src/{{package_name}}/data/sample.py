"""A seeded sample warehouse, so the project trains on first run with no download.

Three tables, as a subscription business would have them:

- ``customers``: one row per customer (numeric and categorical attributes, some missing);
- ``activity``: one row per customer and month of usage (aggregated by the SQL extraction);
- ``labels``: what happened next, one outcome per task: ``churned`` (binary), ``outcome``
  (multiclass: ``stayed``, ``downgraded`` or ``churned``) and ``revenue_next_quarter``
  (regression), plus ``retention_call_made``, a **leaky** column: the retention team calls
  customers *after* they announce they are leaving, so it predicts churn almost perfectly in
  history and is unknown at prediction time. The config lists it (and the outcomes the task
  does not predict, which are just as unknown in advance) in ``data.leaky_columns``.

Churn depends on the attributes through a known logistic model, with about 15% positives;
downgrades and next-quarter revenue depend on them too, so each task has real but imperfect
signal to find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, inspect, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ..atomic import replacing
from ..config import SampleDataConfig
from ..dburl import sqlite_file
from ..errors import DataError
from ..errortext import first_line
from .extract import make_engine

REGIONS = ["north", "south", "east", "west"]
PLANS = ["basic", "standard", "premium"]
PAYMENT_METHODS = ["card", "bank_transfer", "invoice"]
PLAN_PRICE = {"basic": 19.0, "standard": 39.0, "premium": 79.0}
# Written beside the sample tables: the names of the tables the sample builder created. A
# database holding any other table is not the sample's, and the builder refuses to touch it.
MANIFEST_TABLE = "sample_warehouse_tables"


def build_tables(cfg: SampleDataConfig) -> dict[str, pd.DataFrame]:
    """Return the three warehouse tables as DataFrames (deterministic for a given seed)."""
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_customers
    ids = np.arange(1, n + 1)

    plan = rng.choice(PLANS, size=n, p=[0.5, 0.35, 0.15])
    region = rng.choice(REGIONS, size=n, p=[0.3, 0.25, 0.25, 0.2])
    payment = rng.choice(PAYMENT_METHODS, size=n, p=[0.55, 0.3, 0.15]).astype(object)
    payment[rng.random(n) < 0.04] = None  # not recorded for some legacy accounts
    age = rng.normal(42, 13, size=n).clip(18, 90).round()
    age_missing = rng.random(n) < 0.05
    tenure = rng.gamma(2.0, 12.0, size=n).clip(0, 120).round().astype(int)
    charges = np.array([PLAN_PRICE[p] for p in plan]) * rng.lognormal(0, 0.15, size=n)
    signup = pd.Timestamp("2024-12-31") - pd.to_timedelta(tenure * 30, unit="D")

    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "signup_date": signup.strftime("%Y-%m-%d"),
            "age": np.where(age_missing, np.nan, age),
            "region": region,
            "plan": plan,
            "payment_method": payment,
            "monthly_charges": charges.round(2),
            "tenure_months": tenure,
        }
    )

    # Engagement drives churn: disengaged customers file tickets and then leave.
    engagement = rng.normal(0, 1, size=n)
    activity = _activity(rng, ids, engagement, cfg.months)

    tickets = activity.groupby("customer_id")["support_tickets"].sum().reindex(ids, fill_value=0)
    logit = (
        -1.6
        - 0.9 * engagement
        - 0.025 * tenure
        + 0.012 * (charges - 40)
        + 0.18 * tickets.to_numpy()
        + np.where(payment == "invoice", 0.6, 0.0)
        + np.where(plan == "premium", -0.4, 0.0)
        + np.where(region == "south", 0.3, 0.0)
        - 0.01 * (np.nan_to_num(age, nan=42) - 42)
    )
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    retention_call = np.where(churned == 1, rng.random(n) < 0.92, rng.random(n) < 0.03)
    # Among those who stay, expensive plans and low engagement lead to downgrades.
    downgrade_logit = (
        -2.0
        + 0.025 * (charges - 40)
        - 0.6 * engagement
        + np.where(plan == "basic", -3.0, 0.0)
        + np.where(payment == "invoice", 0.4, 0.0)
    )
    downgraded = (churned == 0) & (rng.random(n) < 1 / (1 + np.exp(-downgrade_logit)))
    outcome = np.where(churned == 1, "churned", np.where(downgraded, "downgraded", "stayed"))
    # Revenue over the next three months: lost when leaving, halved by a downgrade, and
    # growing with engagement (add-ons) otherwise.
    months_kept = np.where(churned == 1, rng.integers(0, 3, size=n), 3)
    monthly = charges * np.where(downgraded, 0.55, 1.0) * np.exp(0.08 * engagement)
    revenue = months_kept * monthly * rng.lognormal(0, 0.1, size=n)
    labels = pd.DataFrame(
        {
            "customer_id": ids,
            "churned": churned,
            "outcome": outcome,
            "revenue_next_quarter": revenue.round(2),
            "retention_call_made": retention_call.astype(int),
            "labeled_at": "2025-01-31",
        }
    )
    return {"customers": customers, "activity": activity, "labels": labels}


def _activity(
    rng: np.random.Generator, ids: np.ndarray, engagement: np.ndarray, months: int
) -> pd.DataFrame:
    # Not every customer was active every month; some have no activity rows at all.
    active = rng.random((len(ids), months)) < (0.75 + 0.2 * np.tanh(engagement))[:, None]
    customer_idx, month_idx = np.nonzero(active)
    month_labels = np.asarray(
        pd.period_range(end="2024-12", periods=months, freq="M").strftime("%Y-%m")
    )
    eng = engagement[customer_idx]
    sessions = rng.poisson(np.exp(2.3 + 0.4 * eng))
    minutes = (sessions * rng.gamma(3.0, 6.0, size=len(sessions))).round(1)
    minutes_missing = rng.random(len(minutes)) < 0.03  # a logging outage
    tickets = rng.poisson(np.exp(-1.5 - 0.6 * eng))
    return pd.DataFrame(
        {
            "customer_id": ids[customer_idx],
            "month": month_labels[month_idx],
            "sessions": sessions,
            "minutes_used": np.where(minutes_missing, np.nan, minutes),
            "support_tickets": tickets,
        }
    )


def build_sample_warehouse(cfg: SampleDataConfig) -> dict[str, int]:
    """Write the seeded sample tables to ``cfg.url``; return the row count of each table.

    Only the sample's own database is ever written, and only if every table in it was created
    by this builder (rebuilding the sample is fine; a database with anyone else's tables is
    refused, naming the table). A SQLite file is written next to its target and moved into
    place, so an interrupted run never leaves a half-written database behind.
    """
    tables = build_tables(cfg)
    try:
        url = make_url(cfg.url)
    except ArgumentError:
        raise DataError(f"'{cfg.url}' is not a database URL (e.g. sqlite:///data/x.db)") from None
    database = sqlite_file(url)
    if database is None:
        _refuse_foreign_tables(cfg.url)
        _write_to(cfg.url, tables)
        return {name: len(frame) for name, frame in tables.items()}
    if str(database).startswith("file:") or url.query.get("uri"):
        raise DataError(
            f"data.sample.url {cfg.url}: give the sample a plain SQLite path "
            "(sqlite:///data/sample/warehouse.db), not a file: URI"
        )
    if database.exists():
        _refuse_foreign_tables(cfg.url, database)
    with replacing(database) as partial:
        _write_to(url.set(database=str(partial)).render_as_string(hide_password=False), tables)
    return {name: len(frame) for name, frame in tables.items()}


def _write_to(url: str, tables: dict[str, pd.DataFrame]) -> None:
    engine = make_engine(url, writable=True)
    try:
        write_tables(tables, engine)
    finally:
        engine.dispose()


def _refuse_foreign_tables(url: str, database: Path | None = None) -> None:
    """Raise unless every table at ``url`` is one the sample builder created (or none)."""
    if database is not None and database.is_dir():
        raise DataError(
            f"refusing to write the sample warehouse to {url}: {database} is a folder; "
            "point data.sample.url at a file (sqlite:///data/sample/warehouse.db)"
        )
    if database is not None and not _is_sqlite_file(database):
        raise DataError(
            f"refusing to write the sample warehouse to {url}: {database} exists and is "
            "not a SQLite database; point data.sample.url at a new file"
        )
    engine = make_engine(url, writable=database is None)  # an existing file: read-only
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        with engine.connect() as connection:
            existing = set(inspect(connection).get_table_names())
            owned = (
                set(pd.read_sql_table(MANIFEST_TABLE, connection)["table_name"].astype(str))
                if MANIFEST_TABLE in existing
                else set()
            )
    except SQLAlchemyError as exc:
        raise DataError(
            f"cannot inspect {shown} before writing the sample: {first_line(exc)}"
        ) from None
    finally:
        engine.dispose()
    foreign = sorted(existing - owned - {MANIFEST_TABLE})
    if foreign:
        raise DataError(
            f"refusing to write the sample warehouse to {shown}: it holds table "
            f"'{foreign[0]}', which the sample builder did not create"
            + (f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else "")
            + "; point data.sample.url at an empty database or a new SQLite file"
        )


def _is_sqlite_file(path: Path) -> bool:
    """True for an empty file or one that starts with SQLite's header."""
    with path.open("rb") as handle:
        header = handle.read(16)
    return header in (b"", b"SQLite format 3\x00")


def write_tables(tables: dict[str, pd.DataFrame], engine: Engine) -> None:
    """Write the sample tables and their manifest in one transaction.

    Call through ``build_sample_warehouse``, which first checks that ``engine`` holds no table
    the sample builder did not create: ``replace`` only ever replaces the sample's own tables.
    """
    manifest = pd.DataFrame({"table_name": sorted(tables)})
    with engine.begin() as connection:
        for name, frame in tables.items():
            frame.to_sql(name, connection, if_exists="replace", index=False, chunksize=10_000)
        manifest.to_sql(MANIFEST_TABLE, connection, if_exists="replace", index=False)
