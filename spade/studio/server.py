"""Serving the studio with uvicorn on a socket bound up front (a busy port is one clear line)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket

import uvicorn

from spade.errors import UserError
from spade.generate import FaceGenerator
from spade.studio.app import create_app
from spade.studio.precision import precision_of
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


def make_server(
    generator: FaceGenerator,
    host: str,
    *,
    limits: Limits | None = None,
    model_name: str = "generator",
) -> uvicorn.Server:
    """A uvicorn server for the studio; a loopback host only answers to loopback names."""
    allowed = list(LOOPBACK_NAMES) if is_loopback(host) else None
    app = create_app(generator, limits=limits, model_name=model_name, allowed_hosts=allowed)
    config = uvicorn.Config(app, log_level="info", access_log=False, lifespan="off")
    return uvicorn.Server(config)


def serve(generator: FaceGenerator, host: str, port: int, *, model_name: str = "generator") -> None:
    """Run the studio until Ctrl-C."""
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    if not is_loopback(host):
        log.warning("listening on %s: anyone who can reach this machine can use the studio", host)
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "studio for %s (%d px, %s, %s): http://%s:%d/  (Ctrl-C stops it)",
        model_name,
        generator.size,
        generator.device,
        precision_of(generator),
        shown,
        bound_port,
    )
    # uvicorn shuts down on Ctrl-C / SIGTERM, then re-raises it: a normal stop here.
    with contextlib.suppress(KeyboardInterrupt):
        make_server(generator, host, model_name=model_name).run(sockets=[sock])
    log.info("studio stopped")
