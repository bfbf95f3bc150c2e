"""The studio's incremental redraw per page: used automatically, reported, bounded in memory."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

from spade.images import decode_rgb
from spade.painter import Painter
from spade.runtime import TorchRunner
from spade.strokes import brush_stroke
from spade.studio import Limits, create_app, redraw
from spade.studio.redraw import PageCache, Redrawer, Seen

from conftest import blob_image, png_bytes

SIZE = 32


def b64(img: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode()


def rough0() -> np.ndarray:
    return blob_image(np.random.default_rng(3), SIZE)


def stroke(rough: np.ndarray, seed: int = 0) -> np.ndarray:
    return brush_stroke(rough, 0.03, (230, 80, 60), np.random.default_rng(seed))


def post(client: TestClient, rough: np.ndarray, seed: int = 0, **extra):
    response = client.post("/api/face", json={"rough": b64(rough), "seed": seed} | extra)
    assert response.status_code == 200, response.text
    return decode_rgb(response.content), response.headers["X-Redraw"]


@pytest.fixture
def client(tiny_painter: Painter):
    with TestClient(create_app(tiny_painter, incremental="on")) as c:
        yield c


def test_a_pages_strokes_are_incremental_and_equal_full_faces(client):
    rough = rough0()
    _, how = post(client, rough, page="p1")
    assert how.startswith("full")
    for i in range(3):
        rough = stroke(rough, i)
        face, how = post(client, rough, page="p1")
        assert how.startswith("incremental;")
        full, plain = post(client, rough)  # no page: a full face, as before
        assert plain.startswith("full")
        assert np.abs(face.astype(int) - full).max() <= 1  # PNG levels, rounding aside
    info = client.get("/api/info").json()["redraw"]
    assert info["enabled"] and info["pages"] == 1 and info["cache_bytes"] > 0


def test_the_header_gives_the_fractions(client):
    rough = rough0()
    post(client, rough, page="frac")
    _, how = post(client, stroke(rough), page="frac")
    fields = dict(part.strip().split("=") for part in how.split(";")[1:])
    assert 0 < float(fields["changed"]) < 0.1
    assert 0 < float(fields["recomputed"]) <= 1
    last = client.get("/api/info").json()["redraw"]["last"]
    assert last["incremental"] and last["changed"] == pytest.approx(float(fields["changed"]))


def test_a_new_seed_or_style_is_a_full_redraw(client):
    rough = rough0()
    post(client, rough, seed=1, page="s")
    _, how = post(client, stroke(rough), seed=2, page="s")
    assert how.startswith("full")
    z = [0.5] * 8
    _, how = post(client, rough, seed=2, page="s", z=z)
    assert how.startswith("full")
    face, how = post(client, stroke(rough), seed=2, page="s", z=z)
    assert how.startswith("incremental")
    full, _ = post(client, stroke(rough), seed=2, z=z)
    assert np.abs(face.astype(int) - full).max() <= 1


def test_region_faces_of_a_page_are_incremental(client, tiny_painter):
    """Restyled regions are part of a page's style: a new region's code is a full redraw, and
    strokes after it (also ones that reshape the restyled blob) are incremental and equal the
    full face with the blob as it now is; dropping the region is a full redraw again."""
    rough = rough0()
    post(client, rough, page="r")
    regions = [{"x": 3, "y": 3, "seed": 5}]
    _, how = post(client, rough, page="r", regions=regions)
    assert how == "full; changed=1.0000; recomputed=1.0000; regions=1"
    rng = np.random.default_rng(0)
    for i, start in enumerate([(3.0, 3.0), None]):  # through the blob, then anywhere
        rough = brush_stroke(rough, 0.03, (230, 80, 60), rng, start=start)
        face, how = post(client, rough, page="r", regions=regions)
        assert how.startswith("incremental;") and how.endswith("regions=1"), i
        full, _ = post(client, rough, regions=regions)
        assert np.abs(face.astype(int) - full).max() <= 1
    face, how = post(client, rough, page="r")
    assert how.startswith("full")
    np.testing.assert_array_equal(face, tiny_painter.face(rough, 0))


def test_pages_do_not_share_canvases(client):
    a, b = rough0(), stroke(rough0(), 7)
    post(client, a, page="a")
    post(client, b, page="b")
    face_a, how = post(client, stroke(a, 1), page="a")
    assert how.startswith("incremental")
    full, _ = post(client, stroke(a, 1))
    assert np.abs(face_a.astype(int) - full).max() <= 1


@pytest.mark.parametrize("page", ["", "a b", "x" * 65, "../etc"])
def test_a_bad_page_id_is_refused(client, page):
    response = client.post("/api/face", json={"rough": b64(rough0()), "seed": 0, "page": page})
    assert response.status_code == 422
    assert "page" in response.json()["error"]


def test_the_cache_keeps_the_most_recently_used_pages(tiny_painter):
    one = Redrawer(tiny_painter, 1 << 30, "on")
    one.face("x", rough0(), 0)
    canvas_bytes = one.pages.nbytes
    app = create_app(
        tiny_painter, limits=Limits(page_cache_bytes=2 * canvas_bytes + 1), incremental="on"
    )
    with TestClient(app) as c:
        for page in ("a", "b", "c"):  # c pushes a out
            post(c, rough0(), page=page)
        assert c.get("/api/info").json()["redraw"]["pages"] == 2
        assert post(c, stroke(rough0()), page="a")[1].startswith("full")
        assert post(c, stroke(rough0()), page="c")[1].startswith("incremental")
        assert c.get("/api/info").json()["redraw"]["cache_bytes"] <= 2 * canvas_bytes + 1


def test_the_default_budget_holds_two_pages_of_the_model(tiny_painter, monkeypatch):
    """Whatever the model's size (a teacher's page at 256 px is over 256 MiB), two of its pages
    fit by default, and a third pushes the oldest out."""
    monkeypatch.setattr(redraw, "MIN_CACHE_BYTES", 0)
    redrawer = Redrawer(tiny_painter, None, "on")
    for page in "abc":
        redrawer.face(page, rough0(), 0)
    assert len(redrawer.pages) == 2
    assert redrawer.pages.nbytes == redrawer.pages.max_bytes
    monkeypatch.setattr(redraw, "MIN_CACHE_BYTES", 1 << 30)
    assert Redrawer(tiny_painter, None, "on").pages.max_bytes == 1 << 30  # the floor
    assert Redrawer(tiny_painter, None, "off").pages.max_bytes == 1 << 30  # nothing weighed


def test_a_canvas_over_the_limit_is_not_kept(tiny_painter):
    redrawer = Redrawer(tiny_painter, 1000, "on")
    redrawer.face("p", rough0(), 0)
    _, how = redrawer.face("p", stroke(rough0()), 0)
    assert not how.incremental and len(redrawer.pages) == 0


class GraphLike:
    """A runner that is not PyTorch's (as ONNX Runtime's and OpenVINO's are not)."""

    name, dtype = "graph", torch.float32

    def __init__(self, model):
        self.inner, self.calls = TorchRunner(model), 0

    def __call__(self, cond, z, noise, masks=None):
        self.calls += 1
        return self.inner(cond, z, noise, masks)


def test_with_an_exported_graph_full_faces_stay_on_it(tiny_painter):
    runner = GraphLike(tiny_painter.model)
    painter = Painter(tiny_painter.model, tiny_painter.recipe, tiny_painter.device, runner)
    redrawer = Redrawer(painter, 1 << 30, "on")
    rough = rough0()
    redrawer.face("g", rough, 0)  # the graph's face; the rough is kept
    assert runner.calls == 1 and isinstance(redrawer.pages.entries["g"], Seen)
    rough = stroke(rough)
    _, how = redrawer.face("g", rough, 0)  # captured in PyTorch
    assert not how.incremental and runner.calls == 1 and 0 < how.changed < 0.1
    rough = stroke(rough, 1)
    face, how = redrawer.face("g", rough, 0)
    assert how.incremental and runner.calls == 1
    assert np.abs(face.astype(int) - painter.face(rough, 0)).max() <= 1


def test_a_bf16_graph_runner_is_not_incremental(tiny_painter):
    runner = GraphLike(tiny_painter.model)
    runner.dtype = torch.bfloat16
    painter = Painter(tiny_painter.model, tiny_painter.recipe, tiny_painter.device, runner)
    redrawer = Redrawer(painter, 1 << 30, "on")
    redrawer.face("p", rough0(), 0)
    _, how = redrawer.face("p", stroke(rough0()), 0)
    assert not how.incremental and "bfloat16" in redrawer.info()["why_not"]


def test_page_cache_evicts_least_recently_used():
    cache = PageCache(max_bytes=3 * 400)
    entry = lambda: Seen((), torch.zeros(100))  # noqa: E731 (400 bytes)
    for page in "abc":
        cache.put(page, entry())
    cache.put("a", cache.take("a"))  # a used again: b is now the oldest
    cache.put("d", entry())
    assert list(cache.entries) == ["c", "a", "d"] and cache.nbytes == 1200


def test_auto_measures_and_says_why_not(tiny_painter, monkeypatch):
    from spade.studio import redraw

    monkeypatch.setattr(redraw, "stroke_gain", lambda painter, engine: (9.0, 5.0))
    redrawer = Redrawer(tiny_painter, 1 << 30, "auto")
    assert "no faster" in redrawer.info()["why_not"]
    _, how = redrawer.face("p", rough0(), 0)
    assert not how.incremental
    monkeypatch.setattr(redraw, "stroke_gain", lambda painter, engine: (2.0, 5.0))
    assert Redrawer(tiny_painter, 1 << 30, "auto").info()["enabled"]


def test_stroke_gain_measures_both(tiny_painter):
    from spade.incremental import IncrementalGenerator
    from spade.studio.redraw import stroke_gain

    stroke, full = stroke_gain(tiny_painter, IncrementalGenerator(tiny_painter.model.generator))
    assert stroke > 0 and full > 0


def test_off_is_off(tiny_painter):
    redrawer = Redrawer(tiny_painter, 1 << 30, "off")
    redrawer.face("p", rough0(), 0)
    assert not redrawer.face("p", stroke(rough0()), 0)[1].incremental
