"""A pure-ASGI fast path for GET /v1/scene, the endpoint clients poll hardest.

The scene JSON bytes are built once per frame by the live loop (Runtime.scene_json); answering
them through FastAPI's routing and dependency machinery costs several times more than the copy
itself. This middleware answers that one request directly, with the same headers and body as
the routed endpoint (which stays in the app for OpenAPI and for protected reads: when reads need
a token, the fast path steps aside and the routed endpoint checks it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from edge.live.runtime import Runtime

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCENE_PATH = "/v1/scene"


class SceneFastPath:
    """Serve GET /v1/scene from the runtime's cached bytes; pass everything else through."""

    def __init__(self, app: ASGIApp, runtime: Runtime, *, enabled: bool = True) -> None:
        self.app = app
        self.runtime = runtime
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.enabled
            and scope["type"] == "http"
            and scope["path"] == SCENE_PATH
            and scope["method"] == "GET"
        ):
            body = self.runtime.scene_json()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
