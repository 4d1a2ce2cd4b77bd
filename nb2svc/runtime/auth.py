"""API keys: off unless NB2SVC_API_KEY is set; `Authorization: Bearer KEY` or Modelbit's bare `Authorization: KEY`."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

OPEN = frozenset({"/", "/health", "/ready", "/docs"})  # / and /docs are static pages: they ask for the key themselves


class ApiKeys:
    """ASGI middleware: 401 without a key, 403 with a wrong one; keys compared in constant time."""

    def __init__(self, app: ASGIApp, keys: tuple[str, ...], metrics_need_key: bool) -> None:
        self.app = app
        self.keys = tuple(key.encode() for key in keys)
        self.open = OPEN if metrics_need_key else OPEN | {"/metrics"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope["path"] in self.open or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        given = _key(scope)
        if given is None:
            await _refuse(scope, send, 401, "missing_api_key", "send the API key: Authorization: Bearer KEY")
        elif not self._known(given):
            await _refuse(scope, send, 403, "wrong_api_key", "the API key is not one of this service's")
        else:
            await self.app(scope, receive, send)

    def _known(self, given: bytes) -> bool:
        matches = [hmac.compare_digest(given, key) for key in self.keys]  # every key, every time
        return any(matches)


def _key(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            value = value.strip()
            if value[:7].lower() == b"bearer ":
                value = value[7:].strip()
            return value or None
    return None


async def _refuse(scope: Scope, send: Send, status: int, error_type: str, message: str) -> None:
    error = {"type": error_type, "message": message, "request_id": scope.get("state", {}).get("request_id")}
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
