"""The prediction log: one JSON line per prediction, one file per UTC day and server process (workers
never interleave their lines), read by drift monitoring."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np


def features_digest(window: np.ndarray) -> str:
    """Identifies the exact feature window a prediction was made from (float32 bytes, as the model saw them)."""
    return hashlib.blake2b(np.ascontiguousarray(window, np.float32).tobytes(), digest_size=8).hexdigest()


class PredictionLog:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._day: str | None = None
        self._file = None

    def path(self, day: str) -> Path:
        return self.folder / f"predictions-{day}-{os.getpid()}.jsonl"

    def write(self, records: list[dict]) -> None:
        """Append records (each gets a UTC timestamp); the file is flushed per call."""
        now = time.time()
        stamp = datetime.fromtimestamp(now, UTC)
        day = stamp.date().isoformat()
        lines = "".join(json.dumps({"timestamp": stamp.isoformat(), **r}, separators=(",", ":")) + "\n" for r in records)
        with self._lock:
            if day != self._day:
                if self._file is not None:
                    self._file.close()
                self._file = self.path(day).open("a", encoding="utf-8")
                self._day = day
            self._file.write(lines)
            self._file.flush()


def read_log(folder: str | Path) -> list[dict]:
    """Every logged prediction, oldest day first (processes of one day one after the other)."""
    records = []
    for path in sorted(Path(folder).glob("predictions-*.jsonl")):
        records += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return records
