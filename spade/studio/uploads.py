"""Reading what a browser sends, within bounds: bodies, images and JSON requests.

Every mistake becomes an `ApiError` with a status and one sentence for the page, so a bad upload
is a 4xx with a clear message and never a 500.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass
from typing import Annotated, TypeVar

import anyio
import numpy as np
from PIL import Image
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    model_validator,
)
from starlette.requests import Request

from spade.config import Seed
from spade.images import FORMATS_SHOWN, IMAGE_FORMATS, UnreadableImage, decode_rgb
from spade.regions import MAX_CODES

MiB = 1 << 20


class ApiError(Exception):
    """A request the studio refuses: HTTP `status` and a message meant for the person."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Limits:
    """Bounds on what requests may ask of the server, one by one and all together."""

    max_request_bytes: int = 16 * MiB  # any request body (uploads, JSON with a rough)
    max_side: int = 4096  # longest side of an uploaded picture, px
    max_strip: int = 16  # faces in one interpolation strip
    workers: int = 1  # inferences at once (each uses torch's intra-op threads)
    decoders: int = 1  # uploads parsed and decoded at once (memory: ~150 MB at 4096²)
    body_seconds: float = 30.0  # to send a request body
    header_seconds: float = 10.0  # to send a request's headers
    requests: int = 64  # in flight at once (idle connections do not count); more get 503
    per_client: int = 8  # arrived whole and waiting or computing, per address; more get 429
    shutdown_seconds: float = 2.0  # for requests in flight to finish when the server stops
    # Pages' incremental-redraw caches, all together: what any number of clients can add to the
    # server's memory. None: room for two pages of the loaded model, and at least 256 MiB
    # (`spade.studio.redraw.cache_bytes`: two student pages at 256 px, or two teacher pages).
    page_cache_bytes: int | None = None


def _size(n: int) -> str:
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n / 1024:.0f} KiB"


async def read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit`, and with
    408 if it takes longer than `seconds` to arrive (a client trickling it holds a connection)."""
    declared = request.headers.get("content-length")
    too_big = f"the request is larger than the studio accepts ({_size(limit)})"
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "the request has a malformed Content-Length header")
        if int(declared) > limit:
            raise ApiError(413, f"{too_big}: {_size(int(declared))}")
    chunks, total = [], 0
    with anyio.move_on_after(seconds) as deadline:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiError(413, too_big)
            chunks.append(chunk)
    if deadline.cancelled_caught:
        raise ApiError(408, f"the request body took longer than {seconds:g} s to arrive")
    if total == 0:
        raise ApiError(400, "the request is empty: send an image")
    return b"".join(chunks)


def query_int(request: Request, name: str, low: int, high: int) -> int:
    """An integer query parameter from `low` to `high`."""
    text = request.query_params.get(name)
    if text is None or not re.fullmatch(r"[0-9]{1,10}", text) or not low <= int(text) <= high:
        shown = "missing" if text is None else repr(text[:20])
        raise ApiError(422, f"{name}: give an integer from {low} to {high} (got {shown})")
    return int(text)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_json(request: Request) -> None:
    if media_type(request) != "application/json":
        got = media_type(request) or "no content type"
        raise ApiError(415, f"send this request as application/json (got {got})")


def require_image(request: Request) -> None:
    kind = media_type(request)
    if not (kind.startswith("image/") or kind == "application/octet-stream"):
        raise ApiError(415, f"send the picture's bytes as image/* (got {kind or 'no type'})")


def decode_picture(data: bytes, max_side: int) -> np.ndarray:
    """Any image file → RGB uint8, after checking its dimensions from the header alone."""
    not_image = f"this file is not an image the studio can read ({FORMATS_SHOWN})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
                width, height = img.size
    except Image.DecompressionBombError:
        raise ApiError(
            413,
            f"the picture claims far too many pixels; the studio takes up to {max_side} px a side",
        ) from None
    except Exception:  # PIL raises many types for non-images
        raise ApiError(415, not_image) from None
    if max(width, height) > max_side:
        raise ApiError(
            413, f"the picture is {width}×{height} px; the studio takes up to {max_side} px a side"
        )
    try:
        return decode_rgb(data)
    except UnreadableImage as e:
        raise ApiError(415, f"{not_image}: {e}") from None


def decode_base64(text: str, what: str) -> bytes:
    """The bytes of a picture sent as base64 (a data: URL or bare); `what` names it."""
    if text.startswith("data:"):
        header, comma, payload = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise ApiError(400, f"the {what} is not a base64 data URL (data:image/png;base64,…)")
    else:
        payload = text
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"the {what} is not valid base64") from None


def decode_rough(text: str, size: int) -> np.ndarray:
    """A rough sent as base64 PNG (a data: URL or bare): exactly the model's size."""
    rough = decode_picture(decode_base64(text, "rough"), max_side=size)
    if rough.shape[:2] != (size, size):
        h, w = rough.shape[:2]
        raise ApiError(
            422,
            f"the rough is {w}×{h} px; this model paints {size}×{size} roughs "
            "(load a picture to have it resized)",
        )
    return rough


# --------------------------------------------------------------------------- JSON bodies

M = TypeVar("M", bound=BaseModel)

Z = Annotated[float, Strict(False), Field(allow_inf_nan=False, ge=-100.0, le=100.0)]
PageId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


Pixel = Annotated[int, Strict()]


class Point(BaseModel):
    """A pixel of the rough at the model's size: it names the blob under it
    (`spade.regions.region_at`), in whatever rough the request holds."""

    model_config = ConfigDict(extra="forbid")
    x: Pixel
    y: Pixel


class Region(Point):
    """A blob of the rough painted with a code of its own: a seed's or a given z."""

    seed: Seed | None = None
    z: list[Z] | None = None

    @model_validator(mode="after")
    def one_style(self) -> Region:
        if (self.seed is None) == (self.z is None):
            raise ValueError("give a region exactly one of seed and z")
        return self


Regions = Annotated[list[Region], Field(max_length=MAX_CODES - 1)]


class FaceRequest(BaseModel):
    """POST /api/face: the rough, the seed, optionally a style z (from /api/style), regions
    with codes of their own, and optionally the page's id: faces of one page are redrawn
    incrementally (`spade.incremental`)."""

    model_config = ConfigDict(extra="forbid")
    rough: str
    seed: Seed
    z: list[Z] | None = None
    regions: Regions = []
    page: PageId | None = None


class StripRequest(BaseModel):
    """POST /api/strip: k faces from the z of `seed` to the z of `seed_to`, of the whole face
    (the `regions` keep their codes) or, with `region`, of that blob alone (the base style `z`
    and the other `regions` keep theirs)."""

    model_config = ConfigDict(extra="forbid")
    rough: str
    seed: Seed
    seed_to: Seed
    k: Annotated[int, Strict()] = Field(6, ge=2)
    z: list[Z] | None = None
    regions: Regions = []
    region: Point | None = None

    @model_validator(mode="after")
    def z_needs_a_region(self) -> StripRequest:
        if self.z is not None and self.region is None:
            raise ValueError("z: a strip of the whole face varies its base style; z needs region")
        return self


class RegionStyleRequest(BaseModel):
    """POST /api/style?x=&y=: the rough whose blob at (x, y) is the region, and the reference
    picture (base64) whose style inside that region is wanted."""

    model_config = ConfigDict(extra="forbid")
    rough: str
    picture: str


def parse_json(model: type[M], body: bytes) -> M:
    """Validate a JSON body: 400 for broken JSON, 422 naming each wrong field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        if any(err["type"] == "json_invalid" for err in e.errors()):
            raise ApiError(400, "the request body is not valid JSON") from None
        raise ApiError(422, "; ".join(_field_message(err) for err in e.errors())) from None


def _field_message(err: dict) -> str:
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "value_error":  # our validators' own sentences, without pydantic's prefix
        message = str(err["ctx"]["error"])
        return f"{where}: {message}" if where else message
    if err["type"] == "too_long":
        ctx = err["ctx"]
        return f"{where}: at most {ctx['max_length']} items (got {ctx['actual_length']})"
    return f"{where or 'body'}: {err['msg']}"
