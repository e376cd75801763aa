"""Metadata for people: tables with typed, rounded columns, times as ISO timestamps, settings as rows.

The Dagster UI shows a table's columns in the order given and charts numeric (int, float) metadata
across materializations in its Plots tab; JSON it shows as a collapsed tree. So the assets lead with
what decides, round what they show, and keep JSON for what has no better shape.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import dagster as dg


def iso(epoch: int | float) -> str:
    """An epoch in seconds as an ISO-8601 UTC timestamp."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def rounded(value: Any, digits: int = 4) -> Any:
    """A float to `digits` significant decimals (None for NaN or infinity: not a number to show)."""
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    return value


def _type(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "float"
    return "string"


def table(rows: list[dict[str, Any]]) -> dg.TableMetadataValue:
    """A table whose columns follow the first row's keys, typed from their values."""
    columns = list(rows[0]) if rows else []
    schema = dg.TableSchema(columns=[dg.TableColumn(c, _type([r.get(c) for r in rows])) for c in columns])
    return dg.MetadataValue.table(records=[dg.TableRecord(dict(r)) for r in rows], schema=schema)


def settings_table(values: dict[str, Any]) -> dg.TableMetadataValue:
    """A flat settings object (an execution config, gate criteria) as (setting, value) rows."""
    return table([{"setting": k, "value": "" if v is None else str(rounded(v, 6))} for k, v in values.items()])
