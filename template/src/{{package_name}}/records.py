"""Rows of a frame as the API takes them: the JSON records of ``/predict`` and ``/predict/batch``.

One home for everything that calls the service with rows of a table: ``simulate`` sends its
traffic this way, and the tests call the API with their frames the same way.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .config import FeaturesConfig
from .features import raw_columns


def api_records(frame: pd.DataFrame, features: FeaturesConfig) -> list[dict[str, Any]]:
    """Rows of ``frame`` as the API takes them, fields in the config's order: the raw features
    only, an ``int`` feature as a JSON integer (the API is strict), a boolean as true/false, a
    timestamp as ISO 8601 text, missing as null."""
    columns = raw_columns(frame, features)
    records: list[dict[str, Any]] = [{} for _ in range(len(frame))]
    for feature in features.numeric:
        for record, value in zip(records, columns[feature.name], strict=True):
            if pd.isna(value):
                record[feature.name] = None
            else:
                record[feature.name] = int(value) if feature.dtype == "int" else float(value)
    for boolean in features.boolean:
        for record, value in zip(records, columns[boolean.name], strict=True):
            record[boolean.name] = None if pd.isna(value) else bool(value)
    for stamp in features.datetime:
        for record, value in zip(records, columns[stamp.name], strict=True):
            record[stamp.name] = None if pd.isna(value) else f"{value}Z"
    for name in [f.name for f in features.categorical] + [f.name for f in features.text]:
        for record, value in zip(records, columns[name], strict=True):
            record[name] = None if value is None else str(value)
    return [{name: record[name] for name in features.names} for record in records]
