"""Serving the studio with uvicorn on a socket bound up front (a busy port is one clear line).

Slow clients are cut off: a request's headers must arrive within `Limits.header_seconds`
(`DeadlineH11`; the body has `Limits.body_seconds`, `uploads.read_body`). What requests may ask
for is bounded by `Admission`, which counts requests in flight, not open connections: uvicorn's
`limit_concurrency` counts connections, so sockets that send nothing would lock everyone out.
On SIGTERM or Ctrl-C, requests in flight get `Limits.shutdown_seconds` to finish, then are
cancelled (their worker threads stop at their next check).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from spade.errors import UserError
from spade.painter import Painter
from spade.runtime import precision_of
from spade.studio.app import create_app
from spade.studio.uploads import Limits

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"cannot resolve --host {host}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    # proto must say TCP: asyncio only sets TCP_NODELAY on accepted sockets that do, and
    # without it every response waits ~40 ms (Nagle's algorithm against delayed ACKs).
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    return sock


class DeadlineH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's headers: a client that
    trickles them (slowloris) is disconnected instead of holding a connection for ever."""

    header_seconds = Limits.header_seconds
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.header_seconds, self._too_slow)

    def _too_slow(self) -> None:
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self._deadline is not None and self.cycle and not self.cycle.response_complete:
            self._deadline.cancel()  # the headers came: the request is running
            self._deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._deadline is None:
            self._arm()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)


def allowed_hosts(host: str) -> list[str] | None:
    """Host header names a server on `host` answers to: loopback names and the address it
    binds when that is a loopback address (127.0.0.2 too), anything otherwise."""
    if not is_loopback(host):
        return None
    return sorted({*LOOPBACK_NAMES, host, *([f"[{host}]"] if ":" in host else [])})


def make_server(
    painter: Painter,
    host: str,
    *,
    limits: Limits | None = None,
    model_name: str = "generator",
    incremental: str = "auto",
) -> uvicorn.Server:
    """A uvicorn server for the studio; a loopback host only answers to loopback names."""
    limits = limits or Limits()
    app = create_app(
        painter,
        limits=limits,
        model_name=model_name,
        allowed_hosts=allowed_hosts(host),
        incremental=incremental,
    )
    protocol = type("StudioH11", (DeadlineH11,), {"header_seconds": limits.header_seconds})
    config = uvicorn.Config(
        app,
        http=protocol,
        log_level="info",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=5,
        timeout_graceful_shutdown=limits.shutdown_seconds,
    )
    return uvicorn.Server(config)


@contextlib.contextmanager
def running(
    painter: Painter,
    *,
    limits: Limits | None = None,
    model_name: str = "generator",
    host: str = "127.0.0.1",
    incremental: str = "auto",
) -> Iterator[str]:
    """The real server in a thread on a free port, for tests, benchmarks and screenshots:
    yields its URL, and stops it at the end."""
    sock = bind(host, 0)
    server = make_server(
        painter, host, limits=limits, model_name=model_name, incremental=incremental
    )
    # not a daemon: nor are the worker threads it starts, so an exit waits for their last face
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # uvicorn's own flag
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the studio server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)


def serve(
    painter: Painter,
    host: str,
    port: int,
    *,
    model_name: str = "generator",
    incremental: str = "auto",
) -> None:
    """Run the studio until Ctrl-C."""
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    if not is_loopback(host):
        log.warning("listening on %s: anyone who can reach this machine can use the studio", host)
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "studio for %s (%d px, %s, %s): http://%s:%d/  (Ctrl-C stops it)",
        model_name,
        painter.size,
        painter.device,
        precision_of(painter.runner),
        shown,
        bound_port,
    )
    # uvicorn shuts down on Ctrl-C / SIGTERM, then re-raises it: a normal stop here.
    with contextlib.suppress(KeyboardInterrupt):
        server = make_server(painter, host, model_name=model_name, incremental=incremental)
        server.run(sockets=[sock])
    log.info("studio stopped")
