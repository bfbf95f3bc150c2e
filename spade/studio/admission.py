"""Which requests the studio takes on, and when it stops working on them (`Admission`).

- Requests are counted from their headers to their answer; open connections are not, so
  sockets that send nothing cannot lock anyone out. Past `Limits.requests` in flight, a
  request is answered 503 at once.
- A request that has arrived whole (its body read) is queued for the worker threads; past
  `Limits.per_client` queued from one client address, the next is answered 429 at once.
- Each request gets a `stop` event (`request.state.stop`), set when its client goes away after
  sending it whole, and when the request ends or is cancelled (the server stopping). Worker
  threads `check` it before they start and between the faces of a strip, so a request its
  client abandoned is dropped instead of computed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spade.studio.uploads import ApiError, Limits

log = logging.getLogger(__name__)


class Dropped(ApiError):
    """The request's work was dropped: its client went away, or the server is stopping."""

    def __init__(self) -> None:
        super().__init__(499, "dropped: the client went away or the server is stopping")


def check(stop: threading.Event) -> None:
    """Raise `Dropped` once the work is no longer wanted."""
    if stop.is_set():
        raise Dropped


class Admission:
    """ASGI middleware: requests in flight, requests queued per client, and each one's `stop`."""

    def __init__(self, app: ASGIApp, limits: Limits):
        self.app, self.limits = app, limits
        self.in_flight = 0
        self.queued: Counter[str] = Counter()  # per client address

    def enqueue(self, client: str) -> None:
        """Count a request that arrived whole, or refuse it (429) past the client's share."""
        if self.queued[client] >= self.limits.per_client:
            raise ApiError(
                429, f"{self.limits.per_client} requests from {client} are already queued: wait"
            )
        self.queued[client] += 1

    def dequeue(self, client: str) -> None:
        self.queued[client] -= 1
        if not self.queued[client]:
            del self.queued[client]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.in_flight >= self.limits.requests:
            log.info("%d requests in flight: answered 503", self.in_flight)
            busy = JSONResponse({"error": "the studio is busy: try again"}, status_code=503)
            return await busy(scope, receive, send)
        client = scope["client"][0] if scope.get("client") else ""
        stop = threading.Event()
        scope.setdefault("state", {})["stop"] = stop
        watcher: asyncio.Task | None = None
        queued = False

        async def watch() -> None:  # once the body is read, only a disconnect can come
            nonlocal queued
            while (await receive())["type"] != "http.disconnect":
                pass
            stop.set()
            if queued:  # nobody waits for it: it leaves its client's share at once
                self.dequeue(client)
                queued = False

        async def receive_and_queue() -> Message:
            """The app reads the body through this; its last part queues the request (or
            raises the 429, which the app answers) and starts watching for a disconnect."""
            nonlocal watcher, queued
            message = await receive()
            if watcher is None and not message.get("more_body", False):
                if message["type"] == "http.request":
                    self.enqueue(client)
                    queued = True
                watcher = asyncio.ensure_future(watch())
            return message

        self.in_flight += 1
        try:
            await self.app(scope, receive_and_queue, send)
        finally:
            stop.set()  # on cancellation too: a worker thread stops at its next check
            if watcher is not None:
                watcher.cancel()
            if queued:
                self.dequeue(client)
            self.in_flight -= 1
