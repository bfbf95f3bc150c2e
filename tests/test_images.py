import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from spade.errors import UserError
from spade.image_files import export_pngs, save_png
from spade.images import (
    UnreadableImage,
    decode_rgb,
    load_image_array,
    make_grid,
    resize_square,
)

from conftest import eps_bytes, png_bytes


def test_rgb_png_roundtrip():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_rgb(png_bytes(img)), img)


def test_grayscale_becomes_gray_rgb():
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    out = decode_rgb(png_bytes(gray))
    assert out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out[..., 0], gray)
    np.testing.assert_array_equal(out[..., 2], gray)


def test_rgba_is_composited_on_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black
    out = decode_rgb(png_bytes(rgba))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert abs(int(out[1, 0, 0]) - 127) <= 1


def test_palette_with_transparency():
    p = Image.new("P", (3, 1))
    p.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.putpixel((2, 0), 1)
    out = decode_rgb(png_bytes(p, transparency=0))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 1]) == (0, 255, 0)


def test_plain_palette():
    p = Image.new("P", (2, 1))
    p.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    p.putpixel((1, 0), 1)
    out = decode_rgb(png_bytes(p))
    assert tuple(out[0, 0]) == (10, 20, 30) and tuple(out[0, 1]) == (40, 50, 60)


def test_16bit_is_scaled_not_clipped():
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    out = decode_rgb(png_bytes(Image.fromarray(arr)))
    assert out[0, :, 0].tolist() == [0, 128, 255]
    dark = np.array([[0, 255]], dtype=np.uint16)  # a dark 16-bit image stays dark
    assert decode_rgb(png_bytes(Image.fromarray(dark)))[0, :, 0].tolist() == [0, 1]


def test_jpeg_decodes():
    img = np.full((8, 8, 3), 200, dtype=np.uint8)
    out = decode_rgb(png_bytes(img, format="JPEG", quality=95))
    assert out.shape == (8, 8, 3) and abs(int(out.mean()) - 200) <= 2


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", png_bytes(np.zeros((64, 64, 3), np.uint8))[:60]],
    ids=["empty", "text", "truncated-png"],
)
def test_broken_input_raises(data):
    with pytest.raises(UnreadableImage):
        decode_rgb(data)


@pytest.mark.parametrize("gs", [True, False], ids=["fake-gs-on-path", "no-gs"])
def test_eps_never_reaches_ghostscript(request, gs):
    marker = request.getfixturevalue("fake_gs") if gs else None
    with pytest.raises(UnreadableImage, match=r"^not an image of a known format \(PNG, JPEG"):
        decode_rgb(eps_bytes())
    assert marker is None or not marker.exists()


def test_truncated_jpeg_raises():
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = png_bytes(img, format="JPEG")
    with pytest.raises(UnreadableImage):
        decode_rgb(data[: len(data) // 2])


def test_resize_square_crops_centre_then_resizes():
    img = np.zeros((10, 20, 3), dtype=np.uint8)
    img[:, 5:15] = 255  # the centred square is all white
    out = resize_square(img, 4)
    assert out.shape == (4, 4, 3) and out.min() == 255


def test_grid_layout():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = np.full((2, 4, 4, 3), 9, np.uint8)
    g = make_grid([a, b], pad=1)
    assert g.shape == (2 * 5 + 1, 2 * 5 + 1, 3)
    assert g[1, 1, 0] == 0 and g[1, 6, 0] == 9 and g[0, 0, 0] == 255


def test_export_pngs(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (3, 6, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", arr)
    assert export_pngs(tmp_path / "x.npy", tmp_path / "png") == 3
    files = sorted((tmp_path / "png").iterdir())
    np.testing.assert_array_equal(decode_rgb(files[2].read_bytes()), arr[2])


def test_load_image_array_rejects_other_arrays(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(Exception, match="expected uint8"):
        load_image_array(tmp_path / "f.npy")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spade", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("kind", ["pickle", "text", "truncated"])
def test_export_of_a_file_that_is_not_an_image_array_is_one_line(tmp_path, kind):
    path = tmp_path / "x.npy"
    if kind == "pickle":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif kind == "text":
        path.write_text("hello")
    else:
        np.save(path, np.zeros((4, 8, 8, 3), np.uint8))
        path.write_bytes(path.read_bytes()[:200])
    proc = run_cli("export", str(path), str(tmp_path / "out"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "x.npy" in proc.stderr


def test_export_never_overwrites_and_refuses_a_bad_limit(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 8, 8, 3), np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    (out / "000001.png").write_bytes(b"mine")
    proc = run_cli("export", str(tmp_path / "x.npy"), str(out))
    assert proc.returncode == 2 and "already holds 1 of the files" in proc.stderr
    assert (out / "000001.png").read_bytes() == b"mine" and len(list(out.iterdir())) == 1
    (tmp_path / "a_file").write_text("x")
    proc = run_cli("export", str(tmp_path / "x.npy"), str(tmp_path / "a_file"))
    assert proc.returncode == 2 and "is a file" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("export", str(tmp_path / "x.npy"), str(tmp_path / "new"), "--limit", "-1")
    assert proc.returncode == 2 and "--limit -1" in proc.stderr
    assert not (tmp_path / "new").exists()


def test_a_png_that_cannot_be_written_is_one_line(tmp_path):
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("not a folder")
    with pytest.raises(UserError, match=r"cannot write .*a_file/face\.png"):
        save_png(in_the_way / "face.png", np.zeros((4, 4, 3), np.uint8))
