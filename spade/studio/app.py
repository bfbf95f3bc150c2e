"""The studio's ASGI app: one static page and a small JSON/PNG API over a `Painter`.

    GET  /                     the page (plain HTML, JS and a canvas; nothing from other hosts)
    GET  /api/info             model size, style encoder, seed range, palette, limits
    GET  /api/default-rough    the starting canvas (PNG)
    POST /api/face             {rough: base64 PNG, seed, z?, page?} → face (PNG)
    POST /api/strip            {rough, seed, seed_to, k} → k faces side by side (PNG)
    POST /api/prepare?roughen= any picture (image/*) → a rough at the model's size (PNG)
    POST /api/style            a reference face (image/*) → {z} for /api/face (needs the encoder)

Errors are JSON `{"error": "…"}` with a 4xx status, and every response, a 500 included, carries
the security headers. Request bodies are parsed and pictures decoded in worker threads, at most
`Limits.decoders` at once (a big picture costs memory), and inference runs in worker threads, at
most `Limits.workers` at once, so the event loop keeps serving; each face draws its randomness
from its own seeded stream (`Painter.face`), so concurrent requests never change each
other's faces. Requests are admitted, and dropped when their client leaves, by `Admission`.
PNG responses carry a `Server-Timing` header (queue, infer, total in ms) for the page's latency
readout and the benchmark. Faces of a page (its `page` id) are redrawn incrementally when only
the rough changed (`spade.studio.redraw`); their `X-Redraw` header says `incremental` or `full`,
with the fraction of the rough that changed and of a face's multiply-adds that were computed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import numpy as np
import torch
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spade.config import MAX_SEED
from spade.errors import UserError
from spade.images import png_bytes
from spade.painter import Painter
from spade.runtime import precision_of
from spade.studio.admission import Admission, Dropped, check
from spade.studio.palette import default_rough, palette
from spade.studio.redraw import Redrawer, header
from spade.studio.uploads import (
    ApiError,
    FaceRequest,
    Limits,
    StripRequest,
    decode_picture,
    decode_rough,
    parse_json,
    read_body,
    require_image,
    require_json,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
M = TypeVar("M", FaceRequest, StripRequest)

STATIC = Path(__file__).parent / "static"
# The page may load and fetch only from this server; inline scripts and styles are refused too.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _release_memory() -> None:
    """Hand freed heap back to the system after a big decode (glibc keeps it otherwise)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Studio:
    """The state the routes share: the painter, its palette and the limiters."""

    def __init__(self, painter: Painter, limits: Limits, model_name: str, incremental: str):
        self.painter, self.limits, self.model_name = painter, limits, model_name
        self.precision = precision_of(painter.runner)
        self.palette = palette(painter.recipe)
        self.default_rough = png_bytes(default_rough(painter.size, self.palette))
        self.limiter = anyio.CapacityLimiter(limits.workers)
        self.decode_limiter = anyio.CapacityLimiter(limits.decoders)
        self.redrawer = Redrawer(painter, limits.page_cache_bytes, incremental)

    async def body(self, request: Request) -> bytes:
        return await read_body(request, self.limits.max_request_bytes, self.limits.body_seconds)

    async def decode(self, request: Request, fn: Callable[[], T]) -> T:
        """`fn` (parsing, decoding) in a worker thread, at most `Limits.decoders` at once."""

        def call() -> T:
            try:
                return fn()
            finally:
                _release_memory()

        return await in_thread(request, call, self.decode_limiter)

    async def picture(self, request: Request) -> np.ndarray:
        """The uploaded picture (raw image/* body), bounded in bytes and pixels."""
        require_image(request)
        body = await self.body(request)
        return await self.decode(request, lambda: decode_picture(body, self.limits.max_side))

    async def rough_request(self, request: Request, model: type[M]) -> tuple[M, np.ndarray]:
        """A JSON request holding a rough: the validated request and the decoded rough."""
        require_json(request)
        body = await self.body(request)

        def parse() -> tuple[M, np.ndarray]:
            req = parse_json(model, body)
            return req, decode_rough(req.rough, self.painter.size)

        return await self.decode(request, parse)

    def info(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "size": self.painter.size,
            "device": str(self.painter.device),
            "runtime": self.painter.runner.name,
            "precision": self.precision,
            "has_style_encoder": self.painter.has_style_encoder,
            "z_dim": self.painter.model.arch.z_dim,
            "max_seed": MAX_SEED,
            "palette": [c.to_json() for c in self.palette],
            "limits": {
                "max_request_bytes": self.limits.max_request_bytes,
                "max_side": self.limits.max_side,
                "max_strip": self.limits.max_strip,
            },
            "redraw": self.redrawer.info(),
        }

    async def run(self, request: Request, fn: Callable[[], T]) -> T:
        """`fn` in a worker thread (at most `Limits.workers` at once), in inference mode and,
        for a bf16 model, under bf16 autocast (both are per thread: entered in the worker)."""

        def call() -> T:
            bf16 = self.precision == "bf16"
            with (
                torch.inference_mode(),
                torch.autocast(self.painter.device.type, dtype=torch.bfloat16, enabled=bf16),
            ):
                return fn()

        return await in_thread(request, call, self.limiter)

    async def infer(
        self,
        request: Request,
        fn: Callable[[], np.ndarray],
        started: float,
        headers: Callable[[], dict[str, str]] | None = None,
    ) -> Response:
        """Run `fn` off the event loop and answer its image as PNG with the timings (and the
        `headers` it left, asked for once it has run)."""
        queued = time.perf_counter()

        def timed() -> tuple[bytes, float, float]:
            t0 = time.perf_counter()
            img = fn()
            t1 = time.perf_counter()
            return png_bytes(img), t0, t1

        data, t0, t1 = await self.run(request, timed)
        ms = 1000.0
        timing = (
            f"queue;dur={(t0 - queued) * ms:.1f}, infer;dur={(t1 - t0) * ms:.1f}, "
            f"total;dur={(time.perf_counter() - started) * ms:.1f}"
        )
        extra = headers() if headers is not None else {}
        return Response(data, media_type="image/png", headers={"Server-Timing": timing} | extra)


async def in_thread(request: Request, fn: Callable[[], T], limiter: anyio.CapacityLimiter) -> T:
    """`fn` in a worker thread once `limiter` lets it, unless the request's `stop` (`Admission`)
    is set by then: a request whose client left is dropped, not computed. Cancelled (the server
    stopping), it returns at once, and `stop` is set: the thread stops at its next `check` (and
    holds no token meanwhile: only then may one more thread than the limit run, briefly)."""
    stop = _stop(request)

    def call() -> T:
        check(stop)
        return fn()

    return await anyio.to_thread.run_sync(call, limiter=limiter, abandon_on_cancel=True)


def _studio(request: Request) -> Studio:
    return request.app.state.studio


def _stop(request: Request) -> threading.Event:
    return request.state.stop


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def info(request: Request) -> Response:
    return JSONResponse(_studio(request).info())


async def default_rough_png(request: Request) -> Response:
    return Response(_studio(request).default_rough, media_type="image/png")


async def face(request: Request) -> Response:
    started, studio = time.perf_counter(), _studio(request)
    req, rough = await studio.rough_request(request, FaceRequest)
    z = None
    if req.z is not None:
        if len(req.z) != studio.painter.model.arch.z_dim:
            raise ApiError(422, f"z: this model's z has {studio.painter.model.arch.z_dim} numbers")
        z = torch.tensor([req.z], dtype=torch.float32)
    redraws = []

    def run() -> np.ndarray:
        img, how = studio.redrawer.face(req.page, rough, req.seed, z)
        redraws.append(how)
        return img

    return await studio.infer(request, run, started, lambda: {"X-Redraw": header(redraws[0])})


async def strip(request: Request) -> Response:
    started, studio = time.perf_counter(), _studio(request)
    req, rough = await studio.rough_request(request, StripRequest)
    if req.k > studio.limits.max_strip:
        raise ApiError(422, f"k: a strip holds 2 to {studio.limits.max_strip} faces")

    stop = _stop(request)

    def run() -> np.ndarray:
        faces = []
        for face in studio.painter.strip_faces(rough, req.seed, req.seed_to, req.k):
            faces.append(face)
            check(stop)  # before the next face: its client may have left
        return np.concatenate(faces, axis=1)

    return await studio.infer(request, run, started)


async def prepare(request: Request) -> Response:
    """A rough file (resized) or, with ?roughen=1, any picture roughened with the recipe."""
    started, studio = time.perf_counter(), _studio(request)
    flag = request.query_params.get("roughen", "0")
    if flag not in ("0", "1"):
        raise ApiError(422, "roughen: use 0 (a rough file) or 1 (a picture to roughen)")
    rgb = await studio.picture(request)
    roughen = flag == "1"
    return await studio.infer(request, lambda: studio.painter.prepare(rgb, roughen), started)


async def style(request: Request) -> Response:
    studio = _studio(request)
    if not studio.painter.has_style_encoder:
        raise ApiError(
            409,
            "this model has no style encoder: train with train.arch.use_vae: true "
            "to take styles from reference pictures",
        )
    rgb = await studio.picture(request)
    z = await studio.run(request, lambda: studio.painter.style_z(rgb))
    return JSONResponse({"z": z.float().flatten().tolist()})


# --------------------------------------------------------------------------- errors


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    log.info("%s %s → %d: %s", request.method, request.url.path, exc.status, exc.message)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def dropped(request: Request, exc: Exception) -> Response:
    """Nobody reads this answer: its client has gone (or the server is stopping)."""
    log.debug("%s %s dropped: %s", request.method, request.url.path, exc)
    gone = Dropped()
    return JSONResponse({"error": gone.message}, status_code=gone.status)


async def user_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": f"the server failed: {type(exc).__name__}"}, status_code=500)


class SecurityHeaders:
    """ASGI middleware: the CSP (only this server), no MIME sniffing, no referrer."""

    HEADERS = (
        ("Content-Security-Policy", CSP),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
    )

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in self.HEADERS:
                    headers[key] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    painter: Painter,
    *,
    limits: Limits | None = None,
    model_name: str = "generator",
    allowed_hosts: Sequence[str] | None = None,
    incremental: str = "auto",
) -> ASGIApp:
    """The studio for one painter (a loaded model), inside `Admission` and the security headers
    (outermost, so that even the server-error middleware's 500 passes through them).

    `allowed_hosts` (Host header names) guards a loopback server against DNS rebinding: the
    CLI passes the loopback names when it binds 127.0.0.1. None accepts any Host.
    `incremental` (auto, on, off): whether pages' faces are redrawn incrementally
    (`spade.studio.redraw`).
    """
    limits = limits or Limits()
    routes = [
        Route("/", page),
        Route("/api/info", info),
        Route("/api/default-rough", default_rough_png),
        Route("/api/face", face, methods=["POST"]),
        Route("/api/strip", strip, methods=["POST"]),
        Route("/api/prepare", prepare, methods=["POST"]),
        Route("/api/style", style, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            Dropped: dropped,
            ClientDisconnect: dropped,
            ApiError: api_error,
            UserError: user_error,
            HTTPException: http_error,
            Exception: server_error,
        },
    )
    app.state.studio = Studio(painter, limits, model_name, incremental)
    return SecurityHeaders(Admission(app, limits))
