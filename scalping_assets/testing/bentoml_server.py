"""Run the service as a real `bentoml serve` on loopback, as users run it (tests and benchmarks)."""

import sys
from contextlib import contextmanager
from pathlib import Path

from .server_process import free_port, server_process


@contextmanager
def bentoml_server(env: dict[str, str], log: Path, startup_s: float = 90):
    """Yields the base URL once /livez answers; `env` adds to this process's environment (the
    service's SCALPING_* settings), the server's output goes to `log`."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "bentoml"), "serve", "serving.service:Scalping"]
    url = f"http://127.0.0.1:{port}"
    with server_process([*command, "--host", "127.0.0.1", "--port", str(port)], f"{url}/livez", env, log, startup_s):
        yield url
