"""The ASGI gate in front of every endpoint: the API key and the body-size limit, answered before
BentoML parses a byte."""

from __future__ import annotations

import hmac
import json

from pydantic import SecretStr

OPEN_PATHS = ("/healthz", "/livez", "/readyz")
MAX_BODY_BYTES = 16 * 1024 * 1024


class ApiKeyMiddleware:
    """401 without the key (x-api-key header, or ?api_key= for WebSockets, whose browsers cannot set
    headers) on every path but the health probes; 413 for bodies above MAX_BODY_BYTES. An empty key
    turns authentication off."""

    def __init__(self, app, api_key: SecretStr):
        self.app = app
        self.key = api_key.get_secret_value().encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.key and not self._authorised(scope, headers):
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong API key"})
            return await _json(send, 401, {"error": "missing or wrong API key (x-api-key header)"})
        length = headers.get(b"content-length", b"0")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return await _json(send, 413, {"error": f"body of {int(length):,} bytes exceeds {MAX_BODY_BYTES:,}"})
        return await self.app(scope, receive, send)

    def _authorised(self, scope, headers: dict) -> bool:
        given = headers.get(b"x-api-key", b"")
        if not given and scope["type"] == "websocket":
            query = dict(p.split(b"=", 1) for p in scope.get("query_string", b"").split(b"&") if b"=" in p)
            given = query.get(b"api_key", b"")
        return hmac.compare_digest(given, self.key)


async def _json(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
