"""The procedural demo faces: determinism, shapes, variety and the byte-stable zip."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from spade.config import Recipe
from spade.roughen import roughen_image
from spade.style_labels import LABELS_NAME, parse_labels, region_map_name
from spade.synthetic import (
    NO_REGION,
    STYLE_FACTORS,
    RenderStyle,
    face_style,
    region_value,
    render_face,
    render_face_regions,
    write_faces_zip,
)


def _count_clusters(colors: list[np.ndarray], tol: float) -> int:
    """Greedy count of colours that differ from every earlier representative by more than tol."""
    reps: list[np.ndarray] = []
    for c in colors:
        if all(np.abs(c - r).max() > tol for r in reps):
            reps.append(c)
    return len(reps)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _decode(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _smooth_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two faces after a 5×5 median (fine textures removed)."""
    return float(np.abs(cv2.medianBlur(a, 5).astype(int) - cv2.medianBlur(b, 5)).mean())


def test_render_is_deterministic() -> None:
    np.testing.assert_array_equal(render_face(7, 3, 64), render_face(7, 3, 64))


def test_index_and_seed_change_the_face() -> None:
    base = render_face(7, 3, 64).astype(int)
    for other in (render_face(7, 4, 64), render_face(8, 3, 64)):
        assert np.abs(base - other).mean() > 5


@pytest.mark.parametrize("size", [32, 33, 64, 100, 128, 256, 512])
def test_shape_and_dtype(size: int) -> None:
    img = render_face(0, 0, size)
    assert img.shape == (size, size, 3)
    assert img.dtype == np.uint8
    assert img.flags.c_contiguous


@pytest.mark.parametrize("size", [31, 513, 0])
def test_rejects_sizes_out_of_range(size: int) -> None:
    with pytest.raises(ValueError, match="size"):
        render_face(0, 0, size)


def test_faces_vary() -> None:
    """40 faces: many hair colours, many backgrounds, and no two images nearly alike."""
    faces = [render_face(1, i, 64).astype(float) for i in range(40)]
    # The top-centre of the head is hair in every pose the jitter allows.
    hair = [np.median(f[15:19, 29:35].reshape(-1, 3), axis=0) for f in faces]
    corner = [f[:2, :2].reshape(-1, 3).mean(axis=0) for f in faces]
    assert _count_clusters(hair, tol=40) >= 8
    assert _count_clusters(corner, tol=20) >= 15
    closest = min(np.abs(a - b).mean() for i, a in enumerate(faces) for b in faces[i + 1 :])
    assert closest > 8


def test_face_is_the_same_at_every_size() -> None:
    """The random draws do not depend on size: shrinking a big face gives the small one (in the
    plain style: textures are one pixel at every size)."""
    plain = RenderStyle()
    big = cv2.resize(render_face(2, 5, 256, plain), (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(big.astype(int) - render_face(2, 5, 64, plain)).mean() < 6


def test_zip_is_byte_stable_and_round_trips(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "faces.zip", tmp_path / "b.zip"
    write_faces_zip(a, count=5, size=32, seed=3)
    write_faces_zip(b, count=5, size=32, seed=3)
    assert _sha256(a) == _sha256(b)
    assert sorted(p.name for p in a.parent.iterdir()) == ["faces.zip"]  # no temp file left

    with zipfile.ZipFile(a) as zf:
        infos = zf.infolist()
        names = [f"{i:06d}.png" for i in range(5)]
        maps = [region_map_name(n) for n in names]
        expected = [x for pair in zip(names, maps, strict=True) for x in pair]
        assert [i.filename for i in infos] == [*expected, LABELS_NAME]
        for info in infos:
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
        for i, name in enumerate(names):
            np.testing.assert_array_equal(_decode(zf.read(name)), render_face(3, i, 32))
        factors, labels = parse_labels(zf.read(LABELS_NAME), "styles.csv")
        assert factors == list(STYLE_FACTORS)
        assert labels == {f"{i:06d}.png": face_style(3, i).labels() for i in range(5)}


def test_zip_overwrites_atomically_in_place(tmp_path: Path) -> None:
    path = tmp_path / "faces.zip"
    path.write_bytes(b"stale")
    write_faces_zip(path, count=2, size=32, seed=0)
    first = _sha256(path)
    write_faces_zip(path, count=2, size=32, seed=0)
    assert _sha256(path) == first
    assert zipfile.is_zipfile(path)


def test_zip_entries_do_not_depend_on_count(tmp_path: Path) -> None:
    small, large = tmp_path / "5.zip", tmp_path / "10.zip"
    write_faces_zip(small, count=5, size=32, seed=4)
    write_faces_zip(large, count=10, size=32, seed=4)
    with zipfile.ZipFile(small) as zs, zipfile.ZipFile(large) as zl:
        assert len(zl.namelist()) == 2 * 10 + 1  # faces, their region maps and the labels
        assert zs.read("000003.png") == zl.read("000003.png")


def test_parallel_drawing_gives_the_same_zip(tmp_path):
    serial, parallel = tmp_path / "a.zip", tmp_path / "b.zip"
    write_faces_zip(serial, count=70, size=32, seed=2, n_jobs=1)  # two chunks of 64 and 6
    write_faces_zip(parallel, count=70, size=32, seed=2, n_jobs=2)
    assert serial.read_bytes() == parallel.read_bytes()


# --------------------------------------------------------------------------- render styles

DEMO_RECIPE = Recipe(
    median_before=3, spatial_radius=13, color_radius=52, max_level=1, median_after=5
)


def test_styles_are_drawn_apart_from_identity_and_cover_every_level() -> None:
    styles = [face_style(0, i) for i in range(400)]
    for factor, levels in STYLE_FACTORS.items():
        counts = np.bincount([getattr(s, factor) for s in styles], minlength=len(levels))
        assert counts.min() > 0.6 * len(styles) / len(levels), (factor, counts)
    # the same person in another style: her shapes and colours do not move (only the style's
    # textures, a pixel or two wide, which a 5×5 median removes), while another person's do
    a = render_face(0, 7, 64, RenderStyle())
    b = render_face(0, 7, 64, RenderStyle(shading=2, eyes=1, hair=1, background=1))
    other = render_face(0, 8, 64, RenderStyle())
    assert not np.array_equal(a, b)
    moved = _smooth_distance(a, b)  # measured: 3.7 levels in 255; another person: 52
    assert moved < 5 and _smooth_distance(a, other) > 8 * moved
    assert render_face(0, 7, 64).shape == a.shape


def test_the_rough_recipe_erases_the_style() -> None:
    """Two faces that differ only in style give roughs within about 2 levels in 255 on average,
    while the faces themselves differ several times more (the style is what the rough lacks)."""
    rng = np.random.default_rng(1)
    rough_diffs, face_diffs = [], []
    for i in range(16):
        a, b = RenderStyle.draw(rng), RenderStyle.draw(rng)
        fa, fb = render_face(0, i, 64, a), render_face(0, i, 64, b)
        ra, rb = (roughen_image(f, DEMO_RECIPE).astype(int) for f in (fa, fb))
        rough_diffs.append(np.abs(ra - rb).mean())
        face_diffs.append(np.abs(fa.astype(int) - fb.astype(int)).mean())
    assert np.mean(rough_diffs) < 2.5, np.mean(rough_diffs)
    assert np.mean(face_diffs) > 2 * np.mean(rough_diffs), (face_diffs, rough_diffs)


@pytest.mark.parametrize("factor", list(STYLE_FACTORS))
def test_each_factor_is_erased_alone(factor) -> None:
    level = len(STYLE_FACTORS[factor]) - 1
    styled = RenderStyle(**{factor: level})
    diffs = [
        np.abs(
            roughen_image(render_face(0, i, 64, RenderStyle()), DEMO_RECIPE).astype(int)
            - roughen_image(render_face(0, i, 64, styled), DEMO_RECIPE).astype(int)
        ).mean()
        for i in range(8)
    ]
    assert np.mean(diffs) < 2.0, (factor, diffs)


@pytest.mark.parametrize("factor", list(STYLE_FACTORS))
def test_a_factor_is_drawn_inside_its_region(factor) -> None:
    """Drawing a face in another level of one factor changes (almost) only pixels of that
    factor's region in its map; the map comes with the face's own picture."""
    level = len(STYLE_FACTORS[factor]) - 1
    inside, changed = 0, 0
    for i in range(8):
        face, regions = render_face_regions(0, i, 64)
        np.testing.assert_array_equal(face, render_face(0, i, 64))
        assert set(np.unique(regions)) <= {NO_REGION, *map(region_value, STYLE_FACTORS)}
        plain = render_face(0, i, 64, RenderStyle())
        styled = render_face(0, i, 64, RenderStyle(**{factor: level}))
        diff = np.abs(plain.astype(int) - styled).max(axis=2) > 8
        mine = cv2.dilate((regions == region_value(factor)).astype(np.uint8), np.ones((3, 3)))
        inside += int((diff & (mine > 0)).sum())
        changed += int(diff.sum())
    assert changed > 100 and inside > 0.97 * changed, (factor, inside, changed)


def test_the_zip_holds_a_region_map_per_face(tmp_path: Path) -> None:
    path = tmp_path / "faces.zip"
    write_faces_zip(path, count=3, size=32, seed=2)
    with zipfile.ZipFile(path) as zf:
        data = zf.read(region_map_name("000001.png"))
    regions = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(regions, render_face_regions(2, 1, 32)[1])
