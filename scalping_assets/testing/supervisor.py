"""Processes kept running as a container runtime keeps them (Compose's `restart: unless-stopped`): each in
its own process group, restarted when it dies, every start and exit recorded (the rehearsal's harness)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from .server_process import REPO_ROOT


class NotReady(RuntimeError):
    """A process did not become ready in time; the message ends with its log's tail."""


@dataclass
class Process:
    """One long-running command. `ready` says it serves (default: its URL answers 200, or it is alive)."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    ready_url: str | None = None
    ready_check: Callable[[], bool] | None = None
    popen: subprocess.Popen | None = None
    starts: int = 0
    exits: list[int] = field(default_factory=list)  # return codes of the exits the supervisor saw

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as out:
            out.write(f"\n--- start {self.starts + 1} at {time.strftime('%H:%M:%S')} ---\n")
            out.flush()
            # A group of its own: kill -9 then takes its workers too (bentoml's, uvicorn's), as a
            # container's death does.
            self.popen = subprocess.Popen(
                self.command, cwd=REPO_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def ready(self) -> bool:
        if not self.alive:
            return False
        if self.ready_check is not None:
            return self.ready_check()
        if self.ready_url is None:
            return True
        try:
            return httpx.get(self.ready_url, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until ready; raises NotReady (with the log's tail) past `timeout_s`."""
        started = time.monotonic()
        while not self.ready():
            if time.monotonic() - started > timeout_s:
                raise NotReady(f"{self.name} not ready within {timeout_s:.0f} s:\n{self.tail()}")
            time.sleep(0.25)
        return time.monotonic() - started

    def signal_group(self, sig: int) -> None:
        """`sig` to the process, its group and every descendant: a server's workers may have left the
        group (BentoML's do) and would go on holding the port, so a kill would not be a container's death."""
        if self.popen is None or self.popen.poll() is not None:
            return
        try:
            family = psutil.Process(self.popen.pid).children(recursive=True)
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, psutil.NoSuchProcess):
            return
        for child in family:
            try:
                child.send_signal(sig)
            except psutil.NoSuchProcess:
                pass

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"


class Supervisor:
    """Restarts a supervised process that exited, `restart_delay_s` after the exit was seen, until stopped."""

    def __init__(self, restart_delay_s: float = 2.0, poll_s: float = 0.25) -> None:
        self.processes: dict[str, Process] = {}
        self.events: list[tuple[float, str, str]] = []  # (monotonic time, process, what happened)
        self.restart_delay_s, self.poll_s = restart_delay_s, poll_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def add(self, process: Process) -> Process:
        self.processes[process.name] = process
        process.start()
        self._event(process.name, "started")
        return process

    def run(self) -> None:
        self._thread.start()

    def kill9(self, name: str) -> None:
        """kill -9 the process's group: nothing is flushed, nothing is closed."""
        self._event(name, "kill -9")
        self.processes[name].signal_group(signal.SIGKILL)

    def stop(self, name: str, timeout_s: float = 20) -> int | None:
        """SIGTERM (a clean stop, as `docker compose stop`), not restarted; its return code."""
        with self._lock:
            process = self.processes.pop(name)
        process.signal_group(signal.SIGTERM)
        try:
            return process.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.signal_group(signal.SIGKILL)
            return process.popen.wait(10)

    def stop_all(self) -> None:
        self._stop.set()
        for name in list(self.processes):
            self.stop(name)

    def _event(self, name: str, what: str) -> None:
        self.events.append((time.monotonic(), name, what))

    def _watch(self) -> None:
        exited: dict[str, float] = {}
        while not self._stop.wait(self.poll_s):
            with self._lock:
                for name, process in self.processes.items():
                    code = process.popen.poll() if process.popen else None
                    if code is None:
                        continue
                    if name not in exited:
                        exited[name] = time.monotonic()
                        process.exits.append(code)
                        self._event(name, f"exited {code}")
                    elif time.monotonic() - exited[name] >= self.restart_delay_s:
                        del exited[name]
                        process.start()
                        self._event(name, "restarted")
