"""The service's prediction log, one UTC day consolidated into one Parquet file.

The service (`serving.predlog.PredictionLog`) appends one JSON line per prediction to
`predictions-<UTC day>-<pid>.jsonl`, a file per day and server process. `consolidate_day` reads every
process's file of one day and writes its valid lines as one Parquet file (`PREDICTION_SCHEMA`), all or
nothing (`write_atomic`). Every line read is accounted for: kept as a row, or rejected under a reason
(`malformed JSON`, `missing field symbol`, `invalid field probabilities`, `not on 2026-01-03`:
its tick, or when it names none its timestamp, is of another day, ...), the first line of each reason
named as `file:line` in the record.

Rows are ordered by timestamp, then file name, then line number, so consolidating a day again gives the
same rows in the same order, and the same bytes (no wall-clock time or random name goes into the file).
A day still being written (today) is consolidated as far as it was written: a last line without its
newline is rejected as `unterminated last line` and kept on the next run, once complete.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from ..features.labels import CLASSES, PROBABILITY_COLUMNS
from ..market.store import epoch_day, write_parquet_atomic
from ..records import PredictionLogRecord

LOG_GLOB = "predictions-{day}-*.jsonl"  # serving.predlog.PredictionLog.path, one file per host and process
LOG_CLASSES = tuple(c.lower() for c in CLASSES)  # the keys of a logged `probabilities`
PROBABILITY_SUM_TOLERANCE = 1e-3  # float32 softmax outputs sum to 1 within ~1e-6; more means a broken writer

# The column contract the monitoring assets (live performance, drift) read; `source` and `line` say
# where each row came from.
PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("endpoint", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("registered_model", pa.string(), nullable=False),
        pa.field("version", pa.string(), nullable=False),
        pa.field("variant", pa.string(), nullable=False),
        pa.field("client", pa.string()),
        pa.field("epoch", pa.int64()),  # the tick predicted at; null for a feature-window request
        pa.field("features_digest", pa.string(), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
        *(pa.field(column, pa.float64(), nullable=False) for column in PROBABILITY_COLUMNS),
        # "element": the child name Parquet gives a list, so the schema read back is this one
        pa.field("features", pa.list_(pa.field("element", pa.float64())), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
    ],
    metadata={"scalping.schema": "predictions/1"},
)

MALFORMED = "malformed JSON"
NOT_AN_OBJECT = "not a JSON object"
NOT_UTF8 = "not UTF-8"
EMPTY = "empty line"
UNTERMINATED = "unterminated last line"

Text = Annotated[str, StringConstraints(min_length=1)]


class PredictionLogError(RuntimeError):
    """A consolidated prediction log that cannot be read; the message names the file."""


class LoggedPrediction(BaseModel):
    """One line as the service writes it (`serving.predictions.predict`). Strict: a number where a
    string belongs is a broken writer, not something to coerce. Fields added later are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    timestamp: AwareDatetime
    endpoint: Text
    symbol: Text
    registered_model: Text
    version: Text
    variant: Text
    client: str | None
    epoch: int | None = Field(ge=0)
    features_digest: Text
    features: list[float]  # NaN allowed: a raw feature may be undefined, drift reports count it
    probabilities: dict[str, float]
    latency_ms: float = Field(ge=0, allow_inf_nan=False)

    @field_validator("probabilities")
    @classmethod
    def _a_distribution(cls, value: dict[str, float]) -> dict[str, float]:
        if set(value) != set(LOG_CLASSES):
            raise ValueError(f"classes {sorted(value)}, expected {list(LOG_CLASSES)}")
        if not all(math.isfinite(p) and 0 <= p <= 1 for p in value.values()):
            raise ValueError(f"probabilities outside [0, 1]: {value}")
        if abs(sum(value.values()) - 1) > PROBABILITY_SUM_TOLERANCE:
            raise ValueError(f"probabilities sum to {sum(value.values())}, not 1")
        return value


def prediction_day(epoch: int | None, made: datetime) -> date:
    """The UTC day a prediction belongs to: its tick's (`epoch`), or, for a feature window that names
    no tick, the day it was made. The service files a line under it; consolidation keeps it there."""
    return epoch_day(epoch) if epoch is not None else made.astimezone(UTC).date()


def day_files(folder: str | Path, day: date) -> list[Path]:
    """Every process's log file of `day`, in file-name order."""
    return sorted(Path(folder).glob(LOG_GLOB.format(day=day.isoformat())))


def _reason(exc: ValidationError) -> tuple[str, str]:
    """(reason to count lines under, detail for people) of the first error of a line."""
    error = exc.errors()[0]
    loc = error["loc"]
    if error["type"] == "json_invalid":
        return MALFORMED, error["msg"]
    if not loc:
        return NOT_AN_OBJECT, error["msg"]
    field = str(loc[0])  # not the list index or dict key: one reason per field
    detail = f"{'.'.join(map(str, loc))}: {error['msg']}"
    return (f"missing field {field}" if error["type"] == "missing" else f"invalid field {field}"), detail


class _Rows:
    """Kept lines as columns, and the reasons of rejected ones."""

    def __init__(self, day: date):
        self.day = day
        self.kept: list[tuple[LoggedPrediction, str, int]] = []
        self.read = 0
        self.rejected: dict[str, int] = {}
        self.first_rejected: dict[str, str] = {}

    def reject(self, reason: str, source: str, line: int, detail: str = "") -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.first_rejected.setdefault(reason, f"{source}:{line}" + (f": {detail}" if detail else ""))

    def add(self, raw: bytes, source: str, line: int, terminated: bool) -> None:
        self.read += 1
        if not terminated:
            self.reject(UNTERMINATED, source, line, "written without its newline (still being written, or cut off)")
            return
        if not raw.strip():
            self.reject(EMPTY, source, line)
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.reject(NOT_UTF8, source, line, str(exc))
            return
        try:
            logged = LoggedPrediction.model_validate_json(text)
        except ValidationError as exc:
            reason, detail = _reason(exc)
            self.reject(reason, source, line, detail)
            return
        if prediction_day(logged.epoch, logged.timestamp) != self.day:
            when = (
                f"tick {datetime.fromtimestamp(logged.epoch, UTC).isoformat()}"
                if logged.epoch is not None
                else f"made {logged.timestamp.astimezone(UTC).isoformat()}"
            )
            self.reject(f"not on {self.day.isoformat()}", source, line, when)
            return
        self.kept.append((logged, source, line))

    def table(self) -> pa.Table:
        # The file name sorts before the line number: two processes' lines of the same microsecond keep
        # one order whatever the file system lists first.
        rows = sorted(self.kept, key=lambda r: (r[0].timestamp.astimezone(UTC), r[1], r[2]))
        logged = [r[0] for r in rows]
        columns = {
            "timestamp": [p.timestamp.astimezone(UTC) for p in logged],
            "endpoint": [p.endpoint for p in logged],
            "symbol": [p.symbol for p in logged],
            "registered_model": [p.registered_model for p in logged],
            "version": [p.version for p in logged],
            "variant": [p.variant for p in logged],
            "client": [p.client for p in logged],
            "epoch": [p.epoch for p in logged],
            "features_digest": [p.features_digest for p in logged],
            "latency_ms": [p.latency_ms for p in logged],
            **{column: [p.probabilities[c] for p in logged] for column, c in zip(PROBABILITY_COLUMNS, LOG_CLASSES, strict=True)},
            "features": [p.features for p in logged],
            "source": [r[1] for r in rows],
            "line": [r[2] for r in rows],
        }
        return pa.Table.from_pydict(columns, schema=PREDICTION_SCHEMA)


def _lines(path: Path) -> list[tuple[bytes, bool]]:
    """(line without its newline, whether it had one) of a file, as it is now."""
    data = path.read_bytes()
    if not data:
        return []
    parts = data.split(b"\n")
    tail = parts.pop()  # after the last newline: empty, or a line still being written
    lines = [(p, True) for p in parts]
    if tail:
        lines.append((tail, False))
    return lines


def line_count(path: str | Path) -> int:
    """Lines in a log file as it is now, a last one without its newline included: what a consolidation
    of it must account for."""
    data = Path(path).read_bytes()
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def consolidate_day(folder: str | Path, day: date, target: str | Path) -> PredictionLogRecord:
    """Every log line of `day` under `folder`: the valid ones to `target` (Parquet, replaced atomically;
    zero rows when there is none), each other one counted under its reason."""
    files = day_files(folder, day)
    rows = _Rows(day)
    for path in files:
        for number, (raw, terminated) in enumerate(_lines(path), start=1):
            rows.add(raw, path.name, number, terminated)
    table = rows.table()
    written = write_parquet_atomic(table, Path(target))
    models = sorted({f"{p.registered_model}@{p.version}" for p, _, _ in rows.kept})
    return PredictionLogRecord(
        day=day,
        path=str(written),
        folder=str(folder),
        files=[str(p) for p in files],
        read=rows.read,
        kept=table.num_rows,
        rejected=dict(sorted(rows.rejected.items())),
        first_rejected=dict(sorted(rows.first_rejected.items())),
        models=models,
    )


def served_key(registered_model: str, version: str) -> str:
    """How a served model version is named in records and partitions: `<registered model>@<version>`."""
    return f"{registered_model}@{version}"


def parse_served_key(key: str) -> tuple[str, str]:
    """(registered model, version) of `served_key`; ValueError naming the key when it is not one."""
    name, at, version = key.rpartition("@")
    if not at or not name or not version:
        raise ValueError(f"served model {key!r} is not '<registered model>@<version>'")
    return name, version


def read_day(path: str | Path) -> pd.DataFrame:
    """A consolidated day as a frame: `timestamp` tz-aware UTC, `epoch` a nullable Int64, `features`
    arrays of float64. PredictionLogError naming the file when it is not one."""
    path = Path(path)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise PredictionLogError(f"{path}: not a readable consolidated prediction log ({exc})") from exc
    expected = {f.name: f.type for f in PREDICTION_SCHEMA}
    actual = {f.name: f.type for f in schema}
    if actual != expected:
        missing = sorted(set(expected) - set(actual))
        other = sorted(n for n in set(expected) & set(actual) if expected[n] != actual[n])
        raise PredictionLogError(f"{path}: not a consolidated prediction log (missing columns {missing}, other types {other})")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise PredictionLogError(f"{path}: corrupt Parquet file ({exc})") from exc
    frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    frame["line"] = frame["line"].astype(np.int64)  # never null: a plain integer column
    return frame
