"""A loopback stand-in for a Slack incoming webhook: records the JSON bodies POSTed to it (tests).

    with WebhookReceiver() as hook:
        send(hook.url, alert)
        assert hook.bodies[0]["text"].startswith("Check failing")

Its URL carries a secret-looking path, as Slack's do, so a test can prove the secret never leaks; it
can answer the next requests with chosen statuses to exercise retries and failed deliveries.
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 (a free port the OS picks) in a background thread."""

    def __init__(self):
        self.token = f"T0-B0-{secrets.token_hex(8)}"  # what a leak check looks for
        self.bodies: list[dict] = []
        self.requests = 0  # every POST, answered with an error or not
        self._answers: list[int] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests += 1
                    status = receiver._answers.pop(0) if receiver._answers else 200
                    if status == 200 and self.path == f"/services/{receiver.token}":
                        receiver.bodies.append(json.loads(body))
                    elif status == 200:
                        status = 404  # Slack's answer to a wrong token
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"invalid_token" if status == 404 else b"error")

            def log_message(self, format: str, *args) -> None:  # noqa: A002
                pass  # the request line holds the token: keep it off stderr

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: the OS picks a free one
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/services/{self.token}"

    def answer_next(self, *statuses: int) -> None:
        """Answer the next POSTs with these statuses, in order: 200 records the body, another refuses it."""
        with self._lock:
            self._answers.extend(statuses)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
