"""The studio's ASGI app: one static page and a small JSON/PNG API over a `Painter`.

    GET  /                     the page (plain HTML, JS and a canvas; nothing from other hosts)
    GET  /api/info             model size, style encoder, regions, seed range, palette, limits
    GET  /api/default-rough    the starting canvas (PNG)
    POST /api/face             {rough: base64 PNG, seed, z?, regions?, page?} → face (PNG)
    POST /api/strip            {rough, seed, seed_to, k, regions?, region?, z?} → k faces (PNG)
    GET  /api/path             ?seed=&seed_to=&k= → {z: the k codes of that strip}
    POST /api/prepare?roughen= any picture (image/*) → a rough at the model's size (PNG)
    POST /api/style            a reference face (image/*) → {z} for /api/face (needs the encoder)
    POST /api/style?x=&y=      {rough, picture} → {z}: the picture's style inside the rough's
                               blob at (x, y), for that region

Regions (`regions: [{x, y, seed} | {x, y, z}]`) are points of the rough: each paints the blob
under it in the request's rough with a code of its own (`spade.studio.styles`).

Errors are JSON `{"error": "…"}` with a 4xx status, and every response, a 500 included, carries
the security headers. Request bodies are parsed and pictures decoded in worker threads, at most
`Limits.decoders` at once (a big picture costs memory), and inference runs in the one thread
that loaded and measured the model (`torch_thread`; `Limits.workers` above 1: that many threads),
so the event loop keeps serving; each face draws its randomness
from its own seeded stream (`Painter.face`), so concurrent requests never change each
other's faces. Requests are admitted, and dropped when their client leaves, by `Admission`.
PNG responses carry a `Server-Timing` header (queue, infer, total in ms) for the page's latency
readout and the benchmark. Faces of a page (its `page` id) are redrawn incrementally when only
the rough changed (`spade.studio.redraw`); their `X-Redraw` header says `incremental` or `full`,
with the fraction of the rough that changed and of a face's multiply-adds that were computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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
from spade.painter import Painter, RegionStyle
from spade.runtime import precision_of
from spade.studio import torch_thread
from spade.studio.admission import Admission, Dropped, check
from spade.studio.palette import default_rough, palette
from spade.studio.redraw import Redrawer, header
from spade.studio.styles import base_z, blob, max_regions, region_styles, strip_region
from spade.studio.uploads import (
    ApiError,
    FaceRequest,
    Limits,
    Point,
    RegionStyleRequest,
    StripRequest,
    decode_base64,
    decode_picture,
    decode_rough,
    parse_json,
    query_int,
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
        # one thread paints, the one that measures the painter here (`torch_thread`)
        self.painting: Executor = torch_thread.EXECUTOR
        if limits.workers > 1:
            self.painting = ThreadPoolExecutor(limits.workers, thread_name_prefix="paint")
        self.decoding = ThreadPoolExecutor(limits.decoders, thread_name_prefix="decode")
        self.redrawer = torch_thread.call(Redrawer, painter, limits.page_cache_bytes, incremental)

    async def body(self, request: Request) -> bytes:
        return await read_body(request, self.limits.max_request_bytes, self.limits.body_seconds)

    async def decode(self, request: Request, fn: Callable[[], T]) -> T:
        """`fn` (parsing, decoding) in a worker thread, at most `Limits.decoders` at once."""

        def call() -> T:
            try:
                return fn()
            finally:
                _release_memory()

        return await in_thread(request, call, self.decoding)

    async def picture(self, request: Request) -> np.ndarray:
        """The uploaded picture (raw image/* body), bounded in bytes and pixels."""
        require_image(request)
        body = await self.body(request)
        return await self.decode(request, lambda: decode_picture(body, self.limits.max_side))

    async def styled_request(
        self, request: Request, model: type[M]
    ) -> tuple[M, np.ndarray, torch.Tensor | None, list[RegionStyle]]:
        """A JSON face or strip request: the validated request, its rough, its base z (None:
        the seed's own) and its regions resolved in that rough."""
        require_json(request)
        body = await self.body(request)

        def parse() -> tuple[M, np.ndarray, torch.Tensor | None, list[RegionStyle]]:
            req = parse_json(model, body)
            rough = decode_rough(req.rough, self.painter.size)
            z = base_z(self.painter, req.z)
            return req, rough, z, region_styles(self.painter, rough, req.regions)

        return await self.decode(request, parse)

    def info(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "size": self.painter.size,
            "device": str(self.painter.device),
            "runtime": self.painter.runner.name,
            "precision": self.precision,
            "has_style_encoder": self.painter.has_style_encoder,
            "max_regions": max_regions(self.painter),
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

        return await in_thread(request, call, self.painting)

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


async def in_thread(request: Request, fn: Callable[[], T], threads: Executor) -> T:
    """`fn` in one of `threads` once one is free, unless the request's `stop` (`Admission`) is
    set by then: a request whose client left is dropped, not computed. Cancelled (the server
    stopping), it returns at once, and `stop` is set: the thread stops at its next `check`."""
    stop = _stop(request)

    def call() -> T:
        check(stop)
        return fn()

    return await asyncio.wrap_future(threads.submit(call))


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
    req, rough, z, regions = await studio.styled_request(request, FaceRequest)
    redraws = []

    def run() -> np.ndarray:
        img, how = studio.redrawer.face(req.page, rough, req.seed, z, regions)
        redraws.append(how)
        return img

    def headers() -> dict[str, str]:
        return {"X-Redraw": header(redraws[0], len(regions))}

    return await studio.infer(request, run, started, headers)


async def strip(request: Request) -> Response:
    """The whole face's style from seed to seed_to (the regions keep theirs) or, with
    `region`, only that blob's (the rest of the face keeps its styles)."""
    started, studio = time.perf_counter(), _studio(request)
    req, rough, z, regions = await studio.styled_request(request, StripRequest)
    if req.k > studio.limits.max_strip:
        raise ApiError(422, f"k: a strip holds 2 to {studio.limits.max_strip} faces")
    painter, args = studio.painter, (rough, req.seed, req.seed_to, req.k)
    if req.region is None:
        faces = painter.strip_faces(*args, regions)
    else:
        mask = strip_region(painter, rough, req.region, regions)
        faces = painter.region_strip_faces(*args, mask, z, regions)
    stop = _stop(request)

    def run() -> np.ndarray:
        shown = []
        for face in faces:
            shown.append(face)
            check(stop)  # before the next face: its client may have left
        return np.concatenate(shown, axis=1)

    return await studio.infer(request, run, started)


async def path(request: Request) -> Response:
    """The codes of a strip's faces (`Painter.path`): a face of a strip, adopted as a style."""
    studio = _studio(request)
    seed = query_int(request, "seed", 0, MAX_SEED)
    seed_to = query_int(request, "seed_to", 0, MAX_SEED)
    k = query_int(request, "k", 2, studio.limits.max_strip)
    codes = studio.painter.path(seed, seed_to, k)
    return JSONResponse({"z": [c.float().flatten().tolist() for c in codes]})


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
    """A reference picture's style: of the whole picture or, with ?x=&y=, of its part inside
    the blob of the rough at that point (the faces are portraits: the rough's hair finds the
    reference's hair)."""
    studio = _studio(request)
    if not studio.painter.has_style_encoder:
        raise ApiError(
            409,
            "this model has no style encoder: train with train.arch.use_vae: true "
            "to take styles from reference pictures",
        )
    if {"x", "y"} & request.query_params.keys():
        rgb, mask = await region_reference(request, studio)
    else:
        rgb, mask = await studio.picture(request), None
    z = await studio.run(request, lambda: studio.painter.style_z(rgb, mask))
    return JSONResponse({"z": z.float().flatten().tolist()})


async def region_reference(request: Request, studio: Studio) -> tuple[np.ndarray, np.ndarray]:
    """POST /api/style?x=&y= {rough, picture}: the picture and the mask of the rough's blob."""
    size = studio.painter.size
    point = Point(x=query_int(request, "x", 0, size - 1), y=query_int(request, "y", 0, size - 1))
    require_json(request)
    body = await studio.body(request)

    def parse() -> tuple[np.ndarray, np.ndarray]:
        req = parse_json(RegionStyleRequest, body)
        rough = decode_rough(req.rough, size)
        picture = decode_base64(req.picture, "picture")
        return decode_picture(picture, studio.limits.max_side), blob(rough, point, "x,y")

    return await studio.decode(request, parse)


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
        Route("/api/path", path),
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
