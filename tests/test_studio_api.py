"""The studio's HTTP API without a browser: faces, uploads, limits and errors."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import selectors
import socket
import struct
import threading
import time
import zlib

import cv2
import httpx2 as httpx
import numpy as np
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

from spade.__main__ import main
from spade.config import MAX_SEED
from spade.errors import UserError
from spade.images import decode_rgb
from spade.networks import FaceModel
from spade.painter import Painter, RegionStyle
from spade.regions import region_at
from spade.studio import Limits, create_app
from spade.studio.palette import _source_colours, as_roughened, palette
from spade.studio.server import bind

from conftest import blob_image, eps_bytes, png_bytes, write_tiny_generator

SIZE = 32


@pytest.fixture(scope="module")
def client(tiny_painter: Painter):
    with TestClient(create_app(tiny_painter)) as c:
        yield c


def b64(img: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode()


def a_rough() -> np.ndarray:
    return blob_image(np.random.default_rng(1), SIZE)


def face(client: TestClient, seed: int, rough: np.ndarray | None = None, **extra) -> httpx.Response:
    body = {"rough": b64(a_rough() if rough is None else rough), "seed": seed} | extra
    return client.post("/api/face", json=body)


def error(response: httpx.Response, status: int) -> str:
    """The JSON error message of a refused request, after checking its status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["error"]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header and holds no pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- page and info


def test_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/studio.js", "/static/studio.css"):
        text = client.get(asset).text
        page_text = page.text + text
        assert not re.search(r"https?://", page_text), f"{asset} names another host"


def test_info_describes_the_model(client, tiny_painter):
    info = client.get("/api/info").json()
    assert info["size"] == SIZE and info["has_style_encoder"] is True
    assert info["max_seed"] == MAX_SEED and info["z_dim"] == 8 and info["max_regions"] == 7
    groups = {c["group"] for c in info["palette"]}
    assert {"background", "hair", "skin", "eyes", "mouth", "clothes"} <= groups


def test_palette_holds_colours_roughs_contain(tiny_painter):
    recipe = tiny_painter.recipe
    colours = palette(recipe)
    assert len({c.rgb for c in colours}) == len(colours) >= 30
    for group, name, source in _source_colours():  # each is its source colour, roughened
        rgb = as_roughened(source, recipe)
        assert any(c.rgb == rgb for c in colours), (group, name)


def test_default_rough_uses_only_palette_colours(client, tiny_painter):
    img = decode_rgb(client.get("/api/default-rough").content)
    assert img.shape == (SIZE, SIZE, 3)
    allowed = {c.rgb for c in palette(tiny_painter.recipe)}
    used = {tuple(int(v) for v in px) for px in img.reshape(-1, 3)}
    assert used <= allowed and len(used) >= 4


def test_unknown_routes_and_methods_answer_json(client):
    assert "Not Found" in error(client.get("/api/nothing"), 404)
    error(client.get("/api/face"), 405)


# --------------------------------------------------------------------------- faces


def test_face_is_a_png_of_the_model_size_with_timings(client):
    r = face(client, 3)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert decode_rgb(r.content).shape == (SIZE, SIZE, 3)
    assert re.search(r"infer;dur=[\d.]+", r.headers["server-timing"])


def test_same_seed_same_face_other_seed_other_face(client, tiny_painter):
    a, again, b = (face(client, s).content for s in (5, 5, 6))
    assert a == again and a != b
    expected = tiny_painter.face(a_rough(), 5)
    np.testing.assert_array_equal(decode_rgb(a), expected)


def test_concurrent_requests_give_the_sequential_faces(tiny_painter):
    """Eight requests at once, four inferences in parallel: each face is its seed's own."""
    app = create_app(tiny_painter, limits=Limits(workers=4))
    rough = a_rough()
    seeds = [0, 1, 2, 3, 0, 1, 2, 3]

    async def all_at_once() -> list[bytes]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            calls = [c.post("/api/face", json={"rough": b64(rough), "seed": s}) for s in seeds]
            return [r.content for r in await asyncio.gather(*calls)]

    faces = asyncio.run(all_at_once())
    sequential = {s: tiny_painter.face(rough, s) for s in set(seeds)}
    for s, png in zip(seeds, faces, strict=True):
        np.testing.assert_array_equal(decode_rgb(png), sequential[s])


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, "3", 1.5, True, None])
def test_seeds_out_of_range_or_of_the_wrong_type(client, seed):
    assert error(face(client, seed), 422).startswith("seed:")


def test_the_largest_seed_works(client):
    assert face(client, MAX_SEED).status_code == 200


def test_rough_of_the_wrong_size(client):
    msg = error(face(client, 0, blob_image(np.random.default_rng(0), 16)), 422)
    assert "16×16" in msg and f"{SIZE}×{SIZE}" in msg


@pytest.mark.parametrize(
    ("rough", "status"),
    [
        ("not base64 at all!", 400),
        (base64.b64encode(b"hello, not an image").decode(), 415),
        (base64.b64encode(png_header_only(5000, 5000)).decode(), 413),
    ],
)
def test_rough_that_is_not_a_rough(client, rough, status):
    error(client.post("/api/face", json={"rough": rough, "seed": 0}), status)


def test_json_mistakes(client):
    rough = b64(a_rough())
    assert "JSON" in error(
        client.post("/api/face", content=b"{no", headers={"content-type": "application/json"}),
        400,
    )
    assert "application/json" in error(client.post("/api/face", data={"seed": "0"}), 415)
    error(client.post("/api/face", json={"rough": rough, "seed": 0, "extra": 1}), 422)
    error(client.post("/api/face", json=[1, 2]), 422)
    assert "8 numbers" in error(face(client, 0, z=[0.0, 1.0]), 422)
    nan = b'{"rough": "%s", "seed": 0, "z": [NaN, 0, 0, 0, 0, 0, 0, 0]}' % rough.encode()
    r = client.post("/api/face", content=nan, headers={"content-type": "application/json"})
    assert r.status_code in (400, 422) and r.json()["error"]


# --------------------------------------------------------------------------- uploads


def upload(client, data: bytes, roughen: int = 1, content_type: str = "image/png"):
    return client.post(
        f"/api/prepare?roughen={roughen}", content=data, headers={"content-type": content_type}
    )


def test_picture_is_roughened_with_the_models_recipe(client, tiny_painter):
    photo = blob_image(np.random.default_rng(2), 90)[:, :70]  # not square, not model size
    for roughen in (0, 1):
        r = upload(client, png_bytes(photo), roughen)
        assert r.status_code == 200, r.text
        expected = tiny_painter.prepare(photo, roughen=bool(roughen))
        np.testing.assert_array_equal(decode_rgb(r.content), expected)


def test_jpeg_and_odd_modes_are_accepted(client):
    rgb = blob_image(np.random.default_rng(3), 48)
    jpeg = png_bytes(rgb, format="JPEG", quality=90)
    assert upload(client, jpeg, content_type="image/jpeg").status_code == 200
    rgba = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]))
    assert upload(client, png_bytes(rgba)).status_code == 200
    assert upload(client, png_bytes(rgb), content_type="application/octet-stream").is_success


@pytest.mark.parametrize(
    ("data", "content_type", "status", "words"),
    [
        (b"just some text", "image/png", 415, "not an image"),
        (png_bytes(np.zeros((8, 8, 3), np.uint8))[:40], "image/png", 415, "not an image"),
        (b"", "image/png", 400, "empty"),
        (png_bytes(np.zeros((8, 8, 3), np.uint8)), "text/plain", 415, "image/*"),
        (png_header_only(5000, 10), "image/png", 413, "5000×10"),
        (png_header_only(100_000, 100_000), "image/png", 413, "px a side"),
    ],
)
def test_bad_uploads_get_a_clear_4xx(client, data, content_type, status, words):
    assert words in error(upload(client, data, content_type=content_type), status)


@pytest.mark.parametrize("path", ["/api/prepare?roughen=1", "/api/style"])
def test_an_eps_upload_never_reaches_ghostscript(client, fake_gs, path):
    r = client.post(path, content=eps_bytes(), headers={"content-type": "image/png"})
    assert "not an image the studio can read (PNG, JPEG" in error(r, 415)
    assert not fake_gs.exists()


def test_roughen_flag_is_checked(client):
    error(upload(client, png_bytes(a_rough()), roughen=2), 422)


def test_request_size_is_bounded(tiny_painter):
    app = create_app(tiny_painter, limits=Limits(max_request_bytes=4096))
    big = png_bytes(np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert len(big) > 4096
    with TestClient(app) as c:
        assert "larger than" in error(upload(c, big), 413)

        def chunks():  # no Content-Length: the limit holds while streaming
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000]

        r = c.post(
            "/api/prepare?roughen=1", content=chunks(), headers={"content-type": "image/png"}
        )
        assert "larger than" in error(r, 413)
        assert error(
            face(c, 0, np.random.default_rng(5).integers(0, 256, (64, 64, 3), np.uint8)), 413
        )


def test_random_bytes_never_crash_the_server(client):
    rng = np.random.default_rng(6)
    for _ in range(20):
        junk = rng.integers(0, 256, int(rng.integers(1, 3000)), dtype=np.uint8).tobytes()
        for path in ("/api/prepare?roughen=1", "/api/style"):
            assert (
                400
                <= client.post(
                    path, content=junk, headers={"content-type": "image/png"}
                ).status_code
                < 500
            )
        r = client.post("/api/face", content=junk, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500


# --------------------------------------------------------------------------- style and strips


def test_style_from_a_reference_picture(client, tiny_painter):
    ref = blob_image(np.random.default_rng(7), 64)
    r = client.post("/api/style", content=png_bytes(ref), headers={"content-type": "image/png"})
    z = r.json()["z"]
    expected = tiny_painter.style_z(ref)
    np.testing.assert_array_equal(np.array(z, np.float32), expected.numpy()[0])
    styled = face(client, 0, z=z)
    want = tiny_painter.face(a_rough(), 0, torch.tensor([z]))
    np.testing.assert_array_equal(decode_rgb(styled.content), want)


def test_style_needs_the_encoder(tmp_path):
    import torch as _torch

    from spade.checkpoint import load_generator

    path = write_tiny_generator(tmp_path / "plain.pt", use_vae=False)
    model, recipe = load_generator(path, _torch.device("cpu"))
    with TestClient(create_app(Painter(model, recipe, _torch.device("cpu")))) as c:
        assert c.get("/api/info").json()["has_style_encoder"] is False
        r = c.post(
            "/api/style", content=png_bytes(a_rough()), headers={"content-type": "image/png"}
        )
        assert "style encoder" in error(r, 409)


def test_strip_runs_from_one_seed_to_the_other(client, tiny_painter):
    r = client.post("/api/strip", json={"rough": b64(a_rough()), "seed": 2, "seed_to": 9, "k": 4})
    strip = decode_rgb(r.content)
    assert strip.shape == (SIZE, 4 * SIZE, 3)
    expected = tiny_painter.strip(a_rough(), 2, 9, 4)
    np.testing.assert_array_equal(strip, np.concatenate(expected, axis=1))
    for k in (1, 17):
        body = {"rough": b64(a_rough()), "seed": 2, "seed_to": 9, "k": k}
        assert error(client.post("/api/strip", json=body), 422).startswith("k")


# --------------------------------------------------------------------------- regions

HAIR = (9, 10)  # a point of the blue disc of `two_blobs`


def two_blobs() -> np.ndarray:
    """A backdrop, a blue disc at the top left and a red block at the bottom right."""
    rough = np.full((SIZE, SIZE, 3), (240, 230, 220), np.uint8)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    rough[(yy - HAIR[1]) ** 2 + (xx - HAIR[0]) ** 2 < 36] = (40, 30, 200)
    rough[24:30, 20:30] = (200, 40, 40)
    return rough


def region_face(painter: Painter, rough: np.ndarray, seed: int, *regions) -> np.ndarray:
    """The painter's face with each (x, y, region seed) restyled."""
    styles = [RegionStyle(region_at(rough, x, y), painter.z_for_seed(s)) for x, y, s in regions]
    return painter.face(rough, seed, regions=styles)


def test_a_restyled_region_changes_its_blob_and_little_elsewhere(client, tiny_painter):
    rough = two_blobs()
    plain = decode_rgb(face(client, 0, rough).content).astype(int)
    r = face(client, 0, rough, regions=[{"x": HAIR[0], "y": HAIR[1], "seed": 3}])
    assert r.headers["x-redraw"].startswith("full") and r.headers["x-redraw"].endswith("regions=1")
    styled = decode_rgb(r.content)
    np.testing.assert_array_equal(styled, region_face(tiny_painter, rough, 0, (*HAIR, 3)))
    change = np.abs(styled.astype(int) - plain).mean(-1)
    inside = region_at(rough, *HAIR)
    far = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 5) > 8
    # a tiny random model is only roughly local: measured 6–9 levels inside, 0.2–0.4 far away
    assert change[inside].mean() > 3
    assert change[far].mean() < change[inside].mean() / 5 and change[far].max() <= 8
    z = tiny_painter.z_for_seed(3)[0].tolist()  # the same code sent as z: the same face
    same = face(client, 0, rough, regions=[{"x": HAIR[0], "y": HAIR[1], "z": z}])
    assert same.content == r.content


def test_a_region_follows_its_blob_as_it_is_repainted(client, tiny_painter):
    rough = two_blobs()
    rough[4:8, 9:20] = (40, 30, 200)  # the disc grows to the right
    regions = [{"x": HAIR[0], "y": HAIR[1], "seed": 3}, {"x": 25, "y": 27, "seed": 4}]
    r = face(client, 1, rough, regions=regions)
    want = region_face(tiny_painter, rough, 1, (*HAIR, 3), (25, 27, 4))
    np.testing.assert_array_equal(decode_rgb(r.content), want)


@pytest.mark.parametrize(
    ("regions", "words"),
    [
        ([{"x": SIZE, "y": 3, "seed": 1}], f"regions.0: point {SIZE},3 is outside"),
        ([{"x": 1, "y": -1, "seed": 1}], "regions.0: point 1,-1 is outside"),
        ([{"x": 1, "y": 1, "seed": 1, "z": [0.0] * 8}], "regions.0: give a region exactly one"),
        ([{"x": 1, "y": 1}], "regions.0: give a region exactly one of seed and z"),
        ([{"x": 1, "y": 1, "z": [0.0] * 3}], "regions.0.z: this model's z has 8 numbers"),
        ([{"x": 1, "y": 1, "seed": -2}], "regions.0.seed:"),
        ([{"x": "1", "y": 1, "seed": 1}], "regions.0.x:"),
        ([{"x": 1, "y": 1, "seed": 1, "colour": 3}], "regions.0.colour:"),
        ([{"x": 1, "y": 1, "seed": s} for s in range(8)], "regions: at most 7 items (got 8)"),
    ],
)
def test_bad_regions_are_one_clear_422(client, regions, words):
    message = error(face(client, 0, two_blobs(), regions=regions), 422)
    assert message.startswith(words) and "\n" not in message


def test_seven_regions_are_enough(client):
    regions = [{"x": 1, "y": 1, "seed": s} for s in range(7)]
    assert face(client, 0, two_blobs(), regions=regions).status_code == 200


def strip_of(client: TestClient, **body) -> httpx.Response:
    return client.post("/api/strip", json={"rough": b64(two_blobs())} | body)


def test_a_region_strip_varies_that_region_alone(client, tiny_painter):
    rough, k = two_blobs(), 4
    r = strip_of(client, seed=2, seed_to=9, k=k, region={"x": HAIR[0], "y": HAIR[1]})
    faces = np.split(decode_rgb(r.content), k, axis=1)
    np.testing.assert_array_equal(faces[0], region_face(tiny_painter, rough, 2, (*HAIR, 2)))
    np.testing.assert_array_equal(faces[-1], region_face(tiny_painter, rough, 2, (*HAIR, 9)))
    codes = client.get("/api/path", params={"seed": 2, "seed_to": 9, "k": k}).json()["z"]
    middle = RegionStyle(region_at(rough, *HAIR), torch.tensor([codes[1]]))
    np.testing.assert_array_equal(faces[1], tiny_painter.face(rough, 2, regions=[middle]))


def test_a_region_strip_keeps_the_rest_of_the_face(client, tiny_painter):
    """The base z and the other regions stay; the strip's region replaces its own entry."""
    rough, z = two_blobs(), [0.3] * 8
    regions = [{"x": 25, "y": 27, "seed": 4}, {"x": HAIR[0], "y": HAIR[1], "seed": 5}]
    body = {"seed": 2, "seed_to": 9, "k": 2, "z": z, "regions": regions}
    r = strip_of(client, **body, region={"x": HAIR[0] + 1, "y": HAIR[1]})
    last = np.split(decode_rgb(r.content), 2, axis=1)[-1]
    styles = [
        RegionStyle(region_at(rough, 25, 27), tiny_painter.z_for_seed(4)),
        RegionStyle(region_at(rough, *HAIR), tiny_painter.z_for_seed(9)),
    ]
    want = tiny_painter.face(rough, 2, torch.tensor([z]), styles)
    np.testing.assert_array_equal(last, want)


def test_a_whole_face_strip_keeps_the_regions(client, tiny_painter):
    rough = two_blobs()
    r = strip_of(client, seed=2, seed_to=9, k=2, regions=[{"x": 25, "y": 27, "seed": 4}])
    styles = [RegionStyle(region_at(rough, 25, 27), tiny_painter.z_for_seed(4))]
    want = list(tiny_painter.strip_faces(rough, 2, 9, 2, styles))
    np.testing.assert_array_equal(decode_rgb(r.content), np.concatenate(want, axis=1))


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"region": {"x": 3, "y": SIZE}}, f"region: point 3,{SIZE} is outside"),
        ({"region": {"x": 3}}, "region.y: Field required"),
        ({"z": [0.0] * 8}, "z: a strip of the whole face varies its base style"),
        ({"region": {"x": 3, "y": 3}, "z": [0.0] * 2}, "z: this model's z has 8 numbers"),
        (
            {"region": HAIR, "regions": [{"x": 26, "y": 1 + i, "seed": i} for i in range(7)]},
            "region: a face holds 7 restyled regions",
        ),
    ],
)
def test_bad_region_strips_are_one_clear_422(client, body, words):
    if isinstance(body.get("region"), tuple):
        body["region"] = {"x": body["region"][0], "y": body["region"][1]}
    assert error(strip_of(client, seed=2, seed_to=9, k=2, **body), 422).startswith(words)


def test_path_gives_a_strips_codes(client, tiny_painter):
    codes = client.get("/api/path", params={"seed": 2, "seed_to": 9, "k": 3}).json()["z"]
    expected = [c[0].tolist() for c in tiny_painter.path(2, 9, 3)]
    assert codes == expected and codes[0] == tiny_painter.z_for_seed(2)[0].tolist()
    for params, name in (({"seed": 2, "seed_to": 9, "k": 1}, "k"), ({"seed": "x", "k": 2}, "seed")):
        assert error(client.get("/api/path", params=params), 422).startswith(name)


def test_a_regions_style_from_a_picture(client, tiny_painter):
    rough, ref = two_blobs(), blob_image(np.random.default_rng(7), 64)
    body = {"rough": b64(rough), "picture": b64(ref)}
    r = client.post("/api/style", params={"x": HAIR[0], "y": HAIR[1]}, json=body)
    want = tiny_painter.style_z(ref, region_at(rough, *HAIR))
    np.testing.assert_array_equal(np.array(r.json()["z"], np.float32), want.numpy()[0])
    assert (
        r.json()["z"]
        != client.post(
            "/api/style", content=png_bytes(ref), headers={"content-type": "image/png"}
        ).json()["z"]
    )  # the whole picture's style is another
    outside = client.post("/api/style", params={"x": SIZE, "y": 1}, json=body)
    assert error(outside, 422).startswith(f"x: give an integer from 0 to {SIZE - 1}")
    raw = client.post(
        "/api/style?x=1&y=1", content=png_bytes(ref), headers={"content-type": "image/png"}
    )
    assert "application/json" in error(raw, 415)


def test_regions_need_a_style_in_every_layer(tiny_painter):
    arch = tiny_painter.model.arch.model_copy(update={"z_every_layer": False})
    model = FaceModel(arch, SIZE).eval()
    with TestClient(create_app(Painter(model, tiny_painter.recipe, torch.device("cpu")))) as c:
        assert c.get("/api/info").json()["max_regions"] == 0
        r = face(c, 0, two_blobs(), regions=[{"x": 1, "y": 1, "seed": 1}])
        assert "first layer" in error(r, 409)


# --------------------------------------------------------------------------- serving


def test_loopback_server_refuses_other_host_names(tiny_painter):
    app = create_app(tiny_painter, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.get("/api/info").status_code == 200
        assert c.get("/api/info", headers={"host": "attacker.example"}).status_code == 400


def test_cli_missing_or_bad_model_is_one_line_and_exit_2(tmp_path, caplog):
    for path in (tmp_path / "missing.pt", tmp_path / "bad.pt"):
        if path.name == "bad.pt":
            path.write_bytes(b"not a model")
        with pytest.raises(SystemExit) as stop:
            main(["studio", "--model", str(path), "--port", "0"])
        assert stop.value.code == 2
        assert str(path) in caplog.records[-1].getMessage()


def test_busy_port_is_a_user_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(UserError, match="cannot listen"):
            bind("127.0.0.1", taken.getsockname()[1])


def test_bound_socket_sends_without_delay():
    """Accepted sockets must be TCP_NODELAY, or each response waits ~40 ms for a delayed ACK."""
    with bind("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_bf16_precision_gives_nearly_the_fp32_faces(tiny_generator_file, tiny_painter):
    from spade.painter import load_painter

    bf16 = load_painter(tiny_generator_file, torch.device("cpu"), "torch", "bf16")
    with TestClient(create_app(bf16)) as c:
        assert c.get("/api/info").json()["precision"] == "bf16"
        a, again = (decode_rgb(face(c, 4).content) for _ in range(2))
        np.testing.assert_array_equal(a, again)
        fp32 = tiny_painter.face(a_rough(), 4)
        assert np.abs(a.astype(int) - fp32).mean() < 2.0
        ref = png_bytes(blob_image(np.random.default_rng(9), 40))
        r = c.post("/api/style", content=ref, headers={"content-type": "image/png"})
        assert len(r.json()["z"]) == 8


@pytest.mark.parametrize(
    ("runtime", "precision"), [("onnx", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")]
)
def test_info_names_the_precision_the_runtime_computes_in(tiny_generator_file, runtime, precision):
    from spade.painter import load_painter
    from spade.runtime import native_bf16

    painter = load_painter(tiny_generator_file, torch.device("cpu"), runtime, precision)
    with TestClient(create_app(painter)) as c:
        info = c.get("/api/info").json()
    computed = precision if native_bf16(torch.device("cpu")) else "fp32"  # emulated bf16: fp32
    assert (info["runtime"], info["precision"]) == (runtime, computed)


def test_precision_choice():
    from spade.runtime import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) in ("fp32", "bf16")


# --------------------------------------------------------------------------- hostile input


SECURITY_HEADERS = ("content-security-policy", "x-content-type-options", "referrer-policy")


@pytest.mark.parametrize("rough", ["data:", "data:image/png;base64", "data:image/png,abc"])
def test_data_urls_without_a_base64_payload_are_400(client, rough):
    response = client.post("/api/face", json={"rough": rough, "seed": 0})
    assert "base64 data URL" in error(response, 400)
    assert all(h in response.headers for h in SECURITY_HEADERS)


def test_a_server_error_still_carries_the_security_headers(tiny_painter, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    app = create_app(tiny_painter)
    with TestClient(app, raise_server_exceptions=False) as c:
        monkeypatch.setattr(tiny_painter, "face", broken)
        response = face(c, 0)
    assert error(response, 500) == "the server failed: RuntimeError"
    assert all(h in response.headers for h in SECURITY_HEADERS)


def test_a_loopback_address_of_its_own_is_a_host_it_answers_to(tiny_painter):
    from spade.studio.server import allowed_hosts

    app = create_app(tiny_painter, allowed_hosts=allowed_hosts("127.0.0.2"))
    with TestClient(app, base_url="http://127.0.0.2:8000") as c:
        assert c.get("/api/info").status_code == 200
    with TestClient(app, base_url="http://evil.example:8000") as c:
        assert c.get("/api/info").status_code == 400
    assert allowed_hosts("0.0.0.0") is None


def test_bodies_are_parsed_and_decoded_off_the_event_loop(tiny_painter, monkeypatch):
    import threading

    import spade.studio.app as app_module

    threads = []
    real = app_module.parse_json

    def recording(*args):
        threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(app_module, "parse_json", recording)
    with TestClient(create_app(tiny_painter)) as c:
        loop_thread = c.portal.call(lambda: threading.current_thread())
        assert face(c, 0).status_code == 200
    assert threads and all(t is not loop_thread for t in threads)


def raw_exchange(url: str, data: bytes, pause: float) -> bytes:
    """Send `data` over a plain socket, wait `pause` seconds, then read what the server says
    (b"" when it closed the connection)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        deadline = pause
        s.settimeout(deadline)
        try:
            return s.recv(65536)
        except TimeoutError:
            return b"still open"


def test_slow_clients_are_cut_off(tiny_painter):
    from spade.studio.server import running

    limits = Limits(header_seconds=0.5, body_seconds=0.5)
    with running(tiny_painter, limits=limits) as url:
        # headers that never end: the connection is closed
        answer = raw_exchange(url, b"POST /api/face HTTP/1.1\r\nHost: 127.0.0.1\r\n", pause=3)
        assert answer == b""
        # a body that never comes: 408
        head = (
            b"POST /api/face HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        answer = raw_exchange(url, head, pause=3)
        assert answer.startswith(b"HTTP/1.1 408") and b"content-security-policy" in answer.lower()
        # and a well-behaved request still works
        assert httpx.get(url + "/api/info").status_code == 200


# --------------------------------------------------------------------------- idle, abandoned, stop


class SlowPainter(Painter):
    """The tiny painter, 20 ms a face (a real model's pace), counting the faces it paints."""

    def __init__(self, painter: Painter, seconds: float = 0.02):
        super().__init__(painter.model, painter.recipe, painter.device, painter.runner)
        self.seconds, self.faces = seconds, 0

    def face(self, *args, **kwargs) -> np.ndarray:
        self.faces += 1
        time.sleep(self.seconds)
        return super().face(*args, **kwargs)


def face_at(url: str, seed: int = 1) -> httpx.Response:
    """A face from the real server, over a connection of its own."""
    return httpx.post(url + "/api/face", json={"rough": b64(a_rough()), "seed": seed}, timeout=30)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def idle_sockets(url: str, n: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port_of(url))) for _ in range(n)]


def strip_request(k: int = 16) -> bytes:
    body = json.dumps({"rough": b64(a_rough()), "seed": 1, "seed_to": 2, "k": k}).encode()
    head = (
        "POST /api/strip HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def test_idle_connections_never_keep_a_request_out(tiny_painter):
    """Sockets that send nothing do not count against the requests the studio takes: 64 of
    them (the old limit), reopened as soon as the header deadline closes them, change nothing."""
    from spade.studio.server import running

    stop = threading.Event()

    def reconnecting(url: str, n: int) -> None:
        sel = selectors.DefaultSelector()
        for s in idle_sockets(url, n):
            sel.register(s, selectors.EVENT_READ)
        while not stop.is_set():
            for key, _ in sel.select(0.05):  # readable: closed by the server
                sel.unregister(key.fileobj)
                key.fileobj.close()
                with contextlib.suppress(OSError):
                    sel.register(idle_sockets(url, 1)[0], selectors.EVENT_READ)
        for key in list(sel.get_map().values()):
            key.fileobj.close()

    with running(tiny_painter, limits=Limits(header_seconds=0.5)) as url:
        attacker = threading.Thread(target=reconnecting, args=(url, 64))
        attacker.start()
        try:
            time.sleep(0.3)
            codes = [face_at(url).status_code for _ in range(4)]
            time.sleep(0.5)  # the first 64 have been closed and reopened
            codes += [face_at(url).status_code for _ in range(4)]
        finally:
            stop.set()
            attacker.join()
    assert codes == [200] * 8


def test_abandoned_requests_are_dropped(tiny_painter):
    """12 strips of 16 faces asked for and left (their sockets closed once the first is being
    painted) are not painted on, nor do they hold their client's queue: a face asked for next
    is answered at once, not refused or answered after their 192 faces (over 19 s)."""
    from spade.studio.server import running

    slow = SlowPainter(tiny_painter, seconds=0.1)
    with running(slow) as url:
        strips = idle_sockets(url, 12)
        for s in strips:
            s.sendall(strip_request())
        deadline = time.monotonic() + 10
        while not slow.faces and time.monotonic() < deadline:
            time.sleep(0.01)
        for s in strips:
            s.close()
        t0 = time.perf_counter()
        r = face_at(url)
        waited = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    assert waited < 2, f"{waited:.1f} s: {r.headers['server-timing']}"
    assert slow.faces <= 4  # the real face, and a strip's first faces before its client was gone


def test_one_client_queues_a_bounded_number_of_requests(tiny_painter):
    """Past `Limits.per_client` requests queued from one address, the next is refused at once
    (429) instead of waiting behind them; other requests still load."""
    from spade.studio.server import running

    n = Limits().per_client
    with running(SlowPainter(tiny_painter)) as url:
        strips = [socket.create_connection(("127.0.0.1", port_of(url))) for _ in range(n)]
        for s in strips:
            s.sendall(strip_request())  # 16 faces each, 20 ms a face: 2.6 s in all
        time.sleep(0.3)
        t0 = time.perf_counter()
        refused = face_at(url)
        assert time.perf_counter() - t0 < 1
        assert "already queued" in error(refused, 429)
        assert httpx.get(url + "/api/info").status_code == 200
        for s in strips:
            with s:
                s.settimeout(30)
                assert s.recv(12) == b"HTTP/1.1 200"
        assert face_at(url).status_code == 200


def test_requests_past_the_limit_are_refused_at_once(tiny_painter):
    from spade.studio.server import running

    with running(tiny_painter, limits=Limits(requests=1)) as url:
        with socket.create_connection(("127.0.0.1", port_of(url))) as uploading:
            uploading.sendall(
                b"POST /api/face HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )
            time.sleep(0.2)  # its body is coming: one request in flight
            busy = httpx.get(url + "/api/info")
            assert "busy" in error(busy, 503)
            assert all(h in busy.headers for h in SECURITY_HEADERS)
        time.sleep(0.2)
        assert httpx.get(url + "/api/info").status_code == 200


def test_stopping_the_server_takes_seconds(tiny_painter):
    """Stopping waits `Limits.shutdown_seconds` (2 s) for requests in flight, then cancels
    them: not 30 s for a body that trickles in, nor the queued strips of clients waiting."""
    from concurrent.futures import ThreadPoolExecutor

    from spade.studio.server import running

    body = {"rough": b64(a_rough()), "seed": 1, "seed_to": 2, "k": 16}
    slow = SlowPainter(tiny_painter, seconds=0.1)
    with ThreadPoolExecutor(3) as pool:
        with running(slow) as url:
            for _ in range(3):  # 4.8 s of strips, their clients waiting
                pool.submit(httpx.post, url + "/api/strip", json=body, timeout=60)
            trickle = socket.create_connection(("127.0.0.1", port_of(url)))
            trickle.sendall(
                b"POST /api/face HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )
            time.sleep(0.3)
            t0 = time.perf_counter()
        stopped = time.perf_counter() - t0
        trickle.close()
    assert stopped < 4, f"the server took {stopped:.1f} s to stop"
    assert slow.faces < 48  # the strips were cut short


@pytest.mark.slow
def test_memory_stays_bounded_under_worst_case_uploads(tiny_generator_file, tmp_path):
    """8 uploads at once of a 130 KB PNG that decodes to 4096² 16-bit RGBA (about 0.9 GB of
    peak memory each, decoded naively): the server's peak stays within 300 MB of idle."""
    import subprocess
    import sys
    import time
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    rgba = np.zeros((4096, 4096, 4), np.uint16)
    rgba[..., 3] = 65535
    bomb = cv2.imencode(".png", rgba)[1].tobytes()
    assert len(bomb) < 200_000
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spade",
            "studio",
            "--model",
            str(tiny_generator_file),
            "--port",
            "0",
            "--device",
            "cpu",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        for line in server.stderr:
            if match := re.search(r"(http://127\.0\.0\.1:\d+)/", line):
                url = match.group(1)
                break
        assert url, "the studio did not start"
        httpx.get(url + "/api/info")
        status = f"/proc/{server.pid}/status"

        def kib(field: str) -> int:
            with open(status) as f:
                line = next(x for x in f if x.startswith(field))
            return int(line.split()[1])

        idle = kib("VmRSS:")

        def upload(_: int) -> int:
            headers = {"content-type": "image/png"}
            r = httpx.post(url + "/api/prepare", content=bomb, headers=headers, timeout=120)
            return r.status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(upload, range(8)))
        assert codes == [200] * 8
        peak = kib("VmHWM:")
        time.sleep(0.5)
        after = kib("VmRSS:")
    finally:
        server.terminate()
        server.wait(30)
    assert (peak - idle) / 1024 < 300, f"peak {peak // 1024} MB, idle {idle // 1024} MB"
    assert (after - idle) / 1024 < 150, f"after {after // 1024} MB, idle {idle // 1024} MB"
