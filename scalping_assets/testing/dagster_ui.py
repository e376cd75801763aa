"""Run `dagster-webserver` on loopback over the project's workspace, as `dagster dev` serves the UI,
and ask it what the UI shows through its GraphQL endpoint (tests)."""

import sys
from contextlib import contextmanager
from pathlib import Path

import httpx

from .server_process import REPO_ROOT, free_port, server_process


@contextmanager
def dagster_webserver(dagster_home: Path, log: Path, startup_s: float = 180):
    """Yields a function that runs a GraphQL query against the UI's server and returns its `data`."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}"
    env = {"DAGSTER_HOME": str(dagster_home)}
    with server_process(command, f"{url}/server_info", env, log, startup_s, cwd=REPO_ROOT):

        def query(text: str) -> dict:
            answer = httpx.post(f"{url}/graphql", json={"query": text}, timeout=60).json()
            if answer.get("errors"):
                raise RuntimeError(f"GraphQL errors: {answer['errors']}")
            return answer["data"]

        yield query
