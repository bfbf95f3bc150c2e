"""The studio page in a real browser: Debian's chromium driven by playwright.

The server is the real one (uvicorn in a thread on a free loopback port) over a tiny random
generator. Tests wait on the page's own state (data attributes on <body>), never on sleeps, and
every test checks that the page asked nothing of any other host and threw no script error.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from devtools.browser import CHROMIUM as CHROMIUM_BIN
from devtools.browser import IDLE, LAUNCH_ARGS
from spade.images import decode_rgb
from spade.painter import Painter, RegionStyle
from spade.regions import region_at
from spade.studio.server import running

from conftest import blob_image, png_bytes

pytestmark = pytest.mark.browser

CHROMIUM = Path(CHROMIUM_BIN)
if not CHROMIUM.exists():
    why = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
    if os.environ.get("CI"):  # .ci/run installs it: a skip there would hide a broken set-up
        pytest.fail(why, pytrace=False)
    pytest.skip(why, allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -r requirements.txt"
)

SIZE = 32


class SlowPainter(Painter):
    """Faces that take `delay` seconds, counting how many are computed at once."""

    def __init__(self, inner: Painter, delay: float):
        super().__init__(inner.model, inner.recipe, inner.device)
        self.delay, self.active, self.most, self.roughs = delay, 0, 0, []
        self.lock = threading.Lock()

    def face(self, rough, seed, z=None, regions=()):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
            self.roughs.append(rough)
        time.sleep(self.delay)
        try:
            return super().face(rough, seed, z, regions)
        finally:
            with self.lock:
                self.active -= 1


@pytest.fixture(scope="module")
def server_url(tiny_painter) -> Iterator[str]:
    with running(tiny_painter) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


@contextlib.contextmanager
def open_page(browser, url: str) -> Iterator:
    """A fresh page on the studio; afterwards, no other host was asked and no script failed."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    try:
        yield page
    finally:
        context.close()
    foreign = [u for u in requests if not u.startswith((url + "/", "data:", "blob:"))]
    assert not foreign, f"the page asked other hosts: {foreign}"
    assert not errors, f"script errors: {errors}"
    assert any(u.endswith("/api/face") for u in requests)


@pytest.fixture
def page(browser, server_url: str) -> Iterator:
    with open_page(browser, server_url) as page:
        page.wait_for_function(IDLE)
        yield page


# --------------------------------------------------------------------------- helpers


def wait_idle(page) -> None:
    page.wait_for_function(IDLE)


def pixels(page, canvas_id: str) -> np.ndarray:
    """An (H, W, 3) copy of a canvas's pixels."""
    data = page.evaluate(
        """id => { const c = document.getElementById(id);
        return [c.width, c.height, Array.from(c.getContext("2d")
            .getImageData(0, 0, c.width, c.height).data)]; }""",
        canvas_id,
    )
    w, h, flat = data
    return np.array(flat, np.uint8).reshape(h, w, 4)[..., :3]


def screen(page, x: float, y: float) -> tuple[float, float]:
    """Canvas pixel (x, y) of the rough → page coordinates of its centre."""
    box = page.locator("#rough").bounding_box()
    return box["x"] + (x + 0.5) * box["width"] / SIZE, box["y"] + (y + 0.5) * box["height"] / SIZE


def stroke(page, points: list[tuple[float, float]]) -> None:
    page.mouse.move(*screen(page, *points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*screen(page, *p), steps=4)
    page.mouse.up()


def click_canvas(page, x: int, y: int) -> None:
    page.mouse.click(*screen(page, x, y))


def choose(page, label: str) -> tuple[int, int, int]:
    """Click a palette swatch by its label ('hair: green'); returns its colour."""
    swatch = page.locator(f'#palette button[aria-label="{label}"]')
    swatch.click()
    h = swatch.get_attribute("data-hex")
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


def colours(img: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(int(v) for v in px) for px in img.reshape(-1, 3)}


def set_seed(page, seed: int) -> None:
    page.fill("#seed", str(seed))
    page.press("#seed", "Enter")
    page.locator("#seed").blur()
    wait_idle(page)


def flood(img: np.ndarray, x: int, y: int) -> np.ndarray:
    """The 4-connected region of (x, y)'s exact colour, as a mask."""
    target, mask, todo = img[y, x].copy(), np.zeros(img.shape[:2], bool), [(x, y)]
    while todo:
        cx, cy = todo.pop()
        inside = 0 <= cx < img.shape[1] and 0 <= cy < img.shape[0]
        if inside and not mask[cy, cx] and (img[cy, cx] == target).all():
            mask[cy, cx] = True
            todo += [(cx + 1, cy), (cx - 1, cy), (cx, cy + 1), (cx, cy - 1)]
    return mask


# --------------------------------------------------------------------------- tests


def test_paint_changes_the_face_and_undo_restores_it(page, tmp_path):
    rough0, face0 = pixels(page, "rough"), pixels(page, "face")
    green = choose(page, "hair: green")
    page.keyboard.press("]")
    assert page.locator("#size-value").text_content() == "3 px"
    stroke(page, [(4, 4), (16, 10), (28, 4), (28, 20)])
    wait_idle(page)
    rough1, face1 = pixels(page, "rough"), pixels(page, "face")
    assert not np.array_equal(rough1, rough0) and not np.array_equal(face1, face0)
    assert colours(rough1) <= colours(rough0) | {green}  # hard edges: no new colours
    assert (rough1 == green).all(axis=-1).sum() > 20

    page.keyboard.press("Control+z")
    wait_idle(page)
    assert np.array_equal(pixels(page, "rough"), rough0)
    assert np.array_equal(pixels(page, "face"), face0)
    page.keyboard.press("Control+Shift+z")
    wait_idle(page)
    assert np.array_equal(pixels(page, "rough"), rough1)
    assert np.array_equal(pixels(page, "face"), face1)
    assert "face in" in page.locator("#latency").text_content()
    page.screenshot(path=tmp_path / "studio.png")
    if os.environ.get("SPADE_STUDIO_SCREENSHOT"):  # keep one to look at (docs/studio.png)
        shutil.copy(tmp_path / "studio.png", os.environ["SPADE_STUDIO_SCREENSHOT"])


def test_fill_eyedropper_and_eraser(page):
    rough0, face0 = pixels(page, "rough"), pixels(page, "face")
    red = choose(page, "clothes: red")
    page.keyboard.press("f")
    click_canvas(page, 1, 1)
    wait_idle(page)
    filled = pixels(page, "rough")
    region = flood(rough0, 1, 1)
    assert (filled[region] == red).all() and np.array_equal(filled[~region], rough0[~region])
    assert not np.array_equal(pixels(page, "face"), face0)

    skin = tuple(int(v) for v in rough0[SIZE // 2, SIZE // 2])  # the middle of the face
    page.keyboard.press("i")
    click_canvas(page, SIZE // 2, SIZE // 2)
    state = page.evaluate("() => ({...document.body.dataset})")
    assert state["colour"] == "#{:02x}{:02x}{:02x}".format(*skin)
    assert state["tool"] == "fill"  # the eyedropper hands back the tool it interrupted

    page.keyboard.press("e")
    background = page.evaluate("() => document.body.dataset.background")
    stroke(page, [(10, 28), (22, 28)])
    wait_idle(page)
    erased = pixels(page, "rough")[28, 12]
    assert "#{:02x}{:02x}{:02x}".format(*erased) == background


def test_seed_changes_the_face_and_the_same_seed_reproduces_it(page):
    set_seed(page, 7)
    face7 = pixels(page, "face")
    set_seed(page, 8)
    assert not np.array_equal(pixels(page, "face"), face7)
    set_seed(page, 7)
    assert np.array_equal(pixels(page, "face"), face7)
    page.click("#random-seed")
    wait_idle(page)
    seed = page.evaluate("() => document.body.dataset.faceSeed")
    assert seed == page.input_value("#seed") and seed != "7"


def test_upload_a_rough_and_a_picture(page, tiny_painter):
    mine = blob_image(np.random.default_rng(11), SIZE)
    files = {"name": "mine.png", "mimeType": "image/png", "buffer": png_bytes(mine)}
    page.set_input_files("#load-rough", files=files)
    page.wait_for_function("() => document.body.dataset.canvasVersion !== '1'")
    wait_idle(page)
    assert np.array_equal(pixels(page, "rough"), mine)

    photo = blob_image(np.random.default_rng(12), 90)[:, :70]
    version = page.evaluate("() => document.body.dataset.canvasVersion")
    photo_file = {"name": "photo.jpg", "mimeType": "image/png", "buffer": png_bytes(photo)}
    page.set_input_files("#load-picture", files=photo_file)
    page.wait_for_function(f"() => document.body.dataset.canvasVersion !== '{version}'")
    wait_idle(page)
    assert np.array_equal(pixels(page, "rough"), tiny_painter.prepare(photo, roughen=True))

    junk = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture"}
    page.set_input_files("#load-picture", files=junk)
    page.wait_for_function("() => document.body.dataset.error !== ''")
    assert "not an image" in page.locator("#message").text_content()


def test_style_reference_and_interpolation_strip(page, tiny_painter):
    face_seed = pixels(page, "face")
    ref = {
        "name": "ref.png",
        "mimeType": "image/png",
        "buffer": png_bytes(blob_image(np.random.default_rng(13), 40)),
    }
    page.set_input_files("#style-file", files=ref)
    page.wait_for_function("() => document.body.dataset.style === 'reference'")
    wait_idle(page)
    assert not np.array_equal(pixels(page, "face"), face_seed)
    page.click("#style-clear")
    wait_idle(page)
    assert np.array_equal(pixels(page, "face"), face_seed)

    page.fill("#seed-to", "5")
    page.fill("#frames", "4")
    page.click("#strip-button")
    page.wait_for_function("() => document.body.dataset.stripVersion === '1'")
    expected = tiny_painter.strip(pixels(page, "rough"), 0, 5, 4)
    assert np.array_equal(pixels(page, "strip"), np.concatenate(expected, axis=1))


def test_save_face_and_rough(page):
    for button, canvas, name in (
        ("#save-face", "face", "face-seed0.png"),
        ("#save-rough", "rough", "rough.png"),
    ):
        with page.expect_download() as info:
            page.click(button)
        download = info.value
        assert download.suggested_filename == name
        saved = decode_rgb(Path(download.path()).read_bytes())
        assert np.array_equal(saved, pixels(page, canvas))


def test_pen_input_paints(page):
    """A pen (pointerType "pen") through the DevTools protocol, as a tablet sends it."""
    rough0 = pixels(page, "rough")
    cdp = page.context.new_cdp_session(page)
    blue = choose(page, "hair: blue")
    (x0, y0), (x1, y1) = screen(page, 3, 26), screen(page, 12, 26)

    def pen(kind: str, x: float, y: float, buttons: int) -> None:
        cdp.send(
            "Input.dispatchMouseEvent",
            {
                "type": kind,
                "x": x,
                "y": y,
                "button": "left",
                "buttons": buttons,
                "clickCount": 1,
                "pointerType": "pen",
            },
        )

    pen("mousePressed", x0, y0, 1)
    for t in np.linspace(0, 1, 6):
        pen("mouseMoved", x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, 1)
    pen("mouseReleased", x1, y1, 0)
    wait_idle(page)
    painted = pixels(page, "rough")
    assert not np.array_equal(painted, rough0) and (painted[26, 3:13] == blue).all()


def test_one_request_in_flight_the_newest_canvas_wins_and_a_spinner_past_1s(browser, tiny_painter):
    """On a slow server, strokes made while a face is computed are sent once, as they ended."""
    slow = SlowPainter(tiny_painter, delay=1.3)
    # incremental redraw off: every face then goes through the slow double's `face`
    with running(slow, incremental="off") as url, open_page(browser, url) as page:
        page.wait_for_function("() => document.body.dataset.busy === '1'")
        stroke(page, [(2, 2), (10, 2)])
        stroke(page, [(2, 6), (10, 6)])
        page.wait_for_selector("#spinner", state="visible")
        wait_idle(page)
        assert page.locator("#spinner").is_hidden()
        assert slow.most == 1  # never two faces at once
        assert len(slow.roughs) == 2  # the start, then only the newest canvas
        assert np.array_equal(slow.roughs[-1], pixels(page, "rough"))
        assert np.array_equal(pixels(page, "face"), tiny_painter.face(slow.roughs[-1], 0))


def test_strokes_are_redrawn_incrementally_and_match_a_full_face(browser, tiny_painter):
    with running(tiny_painter, incremental="on") as url, open_page(browser, url) as page:
        wait_idle(page)
        choose(page, "hair: green")
        stroke(page, [(4, 4), (16, 10)])
        wait_idle(page)
        last = page.evaluate("fetch('/api/info').then(r => r.json())")["redraw"]["last"]
        assert last["incremental"] and 0 < last["recomputed"] < 1
        assert "redrew" in page.locator("#latency").text_content()
        face = pixels(page, "face")
        assert np.abs(face.astype(int) - tiny_painter.face(pixels(page, "rough"), 0)).max() <= 1


# --------------------------------------------------------------------------- regions

MIDDLE = (SIZE // 2, SIZE // 2)  # a point of the starting rough's face


def face_requests(page) -> list[dict]:
    """The JSON bodies of the page's face requests, from now on (appended as they are sent)."""
    bodies: list[dict] = []

    def keep(request) -> None:
        if request.url.endswith("/api/face"):
            bodies.append(json.loads(request.post_data))

    page.on("request", keep)
    return bodies


def select_region(page, x: int, y: int) -> None:
    page.keyboard.press("r")
    click_canvas(page, x, y)
    page.wait_for_function(f"() => document.body.dataset.region === '{x},{y}'")


def overlay_alpha(page) -> np.ndarray:
    data = page.evaluate(
        """() => { const c = document.getElementById("overlay");
        return Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data); }"""
    )
    return np.array(data, np.uint8).reshape(SIZE, SIZE, 4)[..., 3]


def with_region(painter: Painter, rough: np.ndarray, seed: int, code) -> np.ndarray:
    """The face of `seed` with the blob at MIDDLE painted with `code`."""
    return painter.face(rough, seed, regions=[RegionStyle(region_at(rough, *MIDDLE), code)])


def test_restyle_a_region_and_undo_it(page, tiny_painter):
    rough0, face0 = pixels(page, "rough"), pixels(page, "face")
    sent = face_requests(page)
    select_region(page, *MIDDLE)
    assert page.evaluate("() => document.body.dataset.tool") == "region"
    np.testing.assert_array_equal(overlay_alpha(page) > 0, flood(rough0, *MIDDLE))
    assert np.array_equal(pixels(page, "rough"), rough0)  # the outline is not in the rough

    page.click("#region-restyle")
    wait_idle(page)
    (region,) = sent[-1]["regions"]
    assert (region["x"], region["y"]) == MIDDLE and sent[-1]["seed"] == 0
    restyled = pixels(page, "face")
    assert not np.array_equal(restyled, face0)
    code = tiny_painter.z_for_seed(region["seed"])
    full = with_region(tiny_painter, rough0, 0, code)  # a page's faces: the redraw engine's,
    assert np.abs(restyled.astype(int) - full).max() <= 1  # within a level of the painter's
    assert page.locator("#region-lock").is_checked()

    page.keyboard.press("Control+z")
    wait_idle(page)
    assert np.array_equal(pixels(page, "face"), face0) and sent[-1]["regions"] == []
    assert not page.locator("#region-lock").is_checked()
    page.keyboard.press("Control+Shift+z")
    wait_idle(page)
    assert np.array_equal(pixels(page, "face"), restyled)


def test_a_locked_region_keeps_its_style_when_the_style_changes(page):
    sent = face_requests(page)
    select_region(page, *MIDDLE)
    page.check("#region-lock")
    wait_idle(page)
    locked = [{"x": MIDDLE[0], "y": MIDDLE[1], "seed": 0}]  # the style it showed
    assert sent[-1]["regions"] == locked
    page.click("#random-seed")
    wait_idle(page)
    assert sent[-1]["seed"] != 0 and sent[-1]["regions"] == locked
    page.click("#region-reset")
    wait_idle(page)
    assert sent[-1]["regions"] == [] and not page.locator("#region-lock").is_checked()


def test_a_region_strip_and_a_regions_style_from_a_picture(page, tiny_painter):
    rough = pixels(page, "rough")
    select_region(page, *MIDDLE)
    page.fill("#seed-to", "5")
    page.fill("#frames", "4")
    page.click("#region-strip")
    page.wait_for_function("() => document.body.dataset.stripVersion === '1'")
    mask = region_at(rough, *MIDDLE)
    expected = list(tiny_painter.region_strip_faces(rough, 0, 5, 4, mask))
    strip = pixels(page, "strip")
    assert np.array_equal(strip, np.concatenate(expected, axis=1))

    box = page.locator("#strip").bounding_box()  # the third face: a code between the seeds
    page.mouse.click(box["x"] + box["width"] * 2.5 / 4, box["y"] + box["height"] / 2)
    page.wait_for_function("() => document.body.dataset.regions === '1'")
    wait_idle(page)
    assert np.array_equal(pixels(page, "face"), expected[2])

    ref = blob_image(np.random.default_rng(13), 40)
    files = {"name": "ref.png", "mimeType": "image/png", "buffer": png_bytes(ref)}
    page.set_input_files("#region-style-file", files=files)
    page.wait_for_function(
        "() => document.body.dataset.error === '' && "
        "document.getElementById('message').textContent.includes('ref.png')"
    )
    wait_idle(page)
    code = tiny_painter.style_z(ref, mask)
    assert np.array_equal(pixels(page, "face"), with_region(tiny_painter, rough, 0, code))
