"""A seeded sample warehouse, so the project trains on first run with no download.

Three tables, as a subscription business would have them:

- ``customers``: one row per customer (numeric and categorical attributes, some missing);
- ``activity``: one row per customer and month of usage (aggregated by the SQL extraction);
- ``labels``: whether the customer churned, plus ``retention_call_made``, a **leaky** column:
  the retention team calls customers *after* they announce they are leaving, so it predicts
  churn almost perfectly in history and is unknown at prediction time. The config lists it in
  ``data.leaky_columns`` and the pipeline never uses it.

Churn depends on the attributes through a known logistic model, with about 15% positives, so
the pipeline has real but imperfect signal to find.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from ..config import SampleDataConfig

REGIONS = ["north", "south", "east", "west"]
PLANS = ["basic", "standard", "premium"]
PAYMENT_METHODS = ["card", "bank_transfer", "invoice"]
PLAN_PRICE = {"basic": 19.0, "standard": 39.0, "premium": 79.0}


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
    labels = pd.DataFrame(
        {
            "customer_id": ids,
            "churned": churned,
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


def write_tables(tables: dict[str, pd.DataFrame], engine: Engine) -> None:
    """Replace the warehouse tables in ``engine`` (SQLite file, PostgreSQL, ...)."""
    with engine.begin() as connection:
        for name, frame in tables.items():
            frame.to_sql(name, connection, if_exists="replace", index=False, chunksize=10_000)
