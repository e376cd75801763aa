"""The prediction log: one JSON line per prediction, one file per UTC day and server process (workers
never interleave their lines), read by monitoring.

A prediction belongs to the day of the tick it was made at (its `epoch`), so a day's file holds what
the day's ticks resolve, an answer late past midnight included; a prediction from a feature window,
which names no tick, to the day it was made. On a live feed the two days agree but for such answers;
on a replayed feed (the local Deriv server's faster clock) the tick's day is the only one that means
anything."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from scalping_assets.monitoring.predlog import prediction_day


def features_digest(window: np.ndarray) -> str:
    """Identifies the exact feature window a prediction was made from (float32 bytes, as the model saw them)."""
    return hashlib.blake2b(np.ascontiguousarray(window, np.float32).tobytes(), digest_size=8).hexdigest()


class PredictionLog:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._files: dict[str, object] = {}  # day -> open file; at most two days are being written

    def path(self, day: str) -> Path:
        # The host as well as the process: replicas sharing one volume (Compose, Kubernetes) reuse pids.
        return self.folder / f"predictions-{day}-{socket.gethostname()}-{os.getpid()}.jsonl"

    def write(self, records: list[dict]) -> None:
        """Append records (each gets a UTC timestamp) to the files of their days; flushed per call."""
        now = time.time()
        stamp = datetime.fromtimestamp(now, UTC)
        made = stamp.isoformat()
        by_day: dict[str, list[str]] = {}
        for r in records:
            day = prediction_day(r.get("epoch"), stamp).isoformat()
            by_day.setdefault(day, []).append(json.dumps({"timestamp": made, **r}, separators=(",", ":")) + "\n")
        with self._lock:
            for day, lines in by_day.items():
                if day not in self._files:
                    for older in sorted(self._files)[: max(0, len(self._files) - 1)]:
                        self._files.pop(older).close()
                    self._files[day] = self.path(day).open("a", encoding="utf-8")
                file = self._files[day]
                file.write("".join(lines))
                file.flush()


def read_log(folder: str | Path) -> list[dict]:
    """Every logged prediction, oldest day first (processes of one day one after the other)."""
    records = []
    for path in sorted(Path(folder).glob("predictions-*.jsonl")):
        records += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return records
