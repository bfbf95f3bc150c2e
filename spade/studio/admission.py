"""Which requests the studio takes on (`Admission`).

Requests are counted from their headers to their answer; open connections are not, so sockets
that send nothing cannot lock anyone out. Past `Limits.requests` in flight, a request is answered
503 at once.
"""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from spade.studio.uploads import Limits

log = logging.getLogger(__name__)


class Admission:
    """ASGI middleware: requests in flight."""

    def __init__(self, app: ASGIApp, limits: Limits):
        self.app, self.limits = app, limits
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.in_flight >= self.limits.requests:
            log.info("%d requests in flight: answered 503", self.in_flight)
            busy = JSONResponse({"error": "the studio is busy: try again"}, status_code=503)
            return await busy(scope, receive, send)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
