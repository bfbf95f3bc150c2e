import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from spade.config import SampleConfig
from spade.errors import UserError
from spade.images import decode_rgb
from spade.sample import ImageSource, sample_images

from conftest import blob_image, eps_bytes, png_bytes


def run_sample(source, out, **kw):
    cfg = SampleConfig(**({"source": str(source), "n_images": 10, "image_size": 32} | kw))
    sample_images(cfg, out)
    return (
        np.load(out / "train.npy"),
        np.load(out / "test.npy"),
        pd.read_csv(out / "manifest.csv"),
        json.loads((out / "report.json").read_text()),
    )


def test_deterministic_with_split_sizes(image_folder, tmp_path):
    a = run_sample(image_folder, tmp_path / "a", test_fraction=0.2)
    b = run_sample(image_folder, tmp_path / "b", test_fraction=0.2)
    train, test, manifest, report = a
    assert train.shape == (8, 32, 32, 3) and test.shape == (2, 32, 32, 3)
    assert train.dtype == np.uint8
    for name in ("train.npy", "test.npy", "manifest.csv", "report.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert list(manifest.columns) == ["index", "split", "path", "sha1", "width", "height"]
    assert (manifest.split == "test").sum() == 2 and manifest.path.is_unique
    assert report["skipped"] == [] and report["candidates"] == 12
    np.testing.assert_array_equal(a[0], b[0])


def test_seed_changes_the_sample(image_folder, tmp_path):
    m0 = run_sample(image_folder, tmp_path / "a", seed=0)[2]
    m1 = run_sample(image_folder, tmp_path / "b", seed=1)[2]
    assert list(m0.path) != list(m1.path)


def test_zip_and_folder_give_the_same_sample(image_folder, tmp_path):
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(image_folder.rglob("*.png")):
            z.write(p, p.relative_to(image_folder).as_posix())
    folder = run_sample(image_folder, tmp_path / "a")
    zipped = run_sample(archive, tmp_path / "b")
    np.testing.assert_array_equal(folder[0], zipped[0])
    assert list(folder[2].path) == list(zipped[2].path)


def test_manifest_records_source_and_resized_pixels(image_folder, tmp_path):
    train, _, manifest, _ = run_sample(image_folder, tmp_path / "o", image_size=32)
    row = manifest[manifest.split == "train"].iloc[0]
    assert (row.width, row.height) == (40, 40)
    original = decode_rgb((image_folder / row.path).read_bytes())
    import cv2

    expected = cv2.resize(original, (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(train[row["index"]], expected)


def test_odd_and_corrupt_files_are_skipped_and_reported(image_folder, tmp_path):
    rng = np.random.default_rng(5)
    (image_folder / "notes.txt").write_text("not an image")
    (image_folder / "broken.png").write_bytes(png_bytes(blob_image(rng))[:50])
    (image_folder / "gray.png").write_bytes(png_bytes(blob_image(rng)[..., 0]))
    rgba = np.dstack([blob_image(rng), np.full((32, 32), 128, np.uint8)])
    (image_folder / "rgba.png").write_bytes(png_bytes(rgba))
    (image_folder / ".hidden.png").write_bytes(b"ignored")
    n_valid = 14
    train, test, manifest, report = run_sample(image_folder, tmp_path / "o", n_images=n_valid)
    assert len(train) + len(test) == n_valid  # the sample never shrinks
    assert sorted(s["path"] for s in report["skipped"]) == ["broken.png", "notes.txt"]
    assert {"gray.png", "rgba.png"} <= set(manifest.path)


def test_an_eps_file_is_skipped_without_ghostscript(image_folder, tmp_path, fake_gs):
    (image_folder / "face.png").write_bytes(eps_bytes())
    report = run_sample(image_folder, tmp_path / "o", n_images=12)[3]
    assert [s["path"] for s in report["skipped"]] == ["face.png"]
    assert "not an image of a known format" in report["skipped"][0]["reason"]
    assert not fake_gs.exists()


def test_broken_zip_entry_is_skipped(image_folder, tmp_path):
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(image_folder.rglob("*.png")):
            z.write(p, p.relative_to(image_folder).as_posix())
    data = bytearray(archive.read_bytes())
    first = zipfile.ZipFile(archive).infolist()[0]
    offset = first.header_offset + 30 + len(first.filename) + 10
    data[offset] ^= 0xFF  # corrupt one byte of the first entry: its CRC no longer matches
    archive.write_bytes(bytes(data))
    train, test, _, report = run_sample(archive, tmp_path / "o", n_images=11)
    assert len(train) + len(test) == 11
    assert [s["path"] for s in report["skipped"]] == [first.filename]
    assert "BadZipFile" in report["skipped"][0]["reason"]


def test_too_few_valid_images_fails_with_both_counts(image_folder, tmp_path):
    (image_folder / "junk.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match=r"n_images = 13 but only 12 valid images"):
        run_sample(image_folder, tmp_path / "o", n_images=13)
    assert not (tmp_path / "o" / "train.npy").exists()


def test_too_few_files_fails_early(image_folder, tmp_path):
    with pytest.raises(UserError, match="holds only 12 files"):
        run_sample(image_folder, tmp_path / "o", n_images=50)


def test_missing_source_explains_what_to_do(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ImageSource(tmp_path / "nope")


def test_a_file_that_is_not_a_zip_is_rejected(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"abc")
    with pytest.raises(UserError, match=r"not a \.zip"):
        ImageSource(tmp_path / "x.tar")


def test_non_utf8_file_name_is_sampled_and_recorded_safely(image_folder, tmp_path):
    import os

    rng = np.random.default_rng(9)
    name = os.fsencode(image_folder) + b"/latin1_\xe9.png"
    with open(name, "wb") as f:
        f.write(png_bytes(blob_image(rng)))
    _, _, manifest, _ = run_sample(image_folder, tmp_path / "o", n_images=13)
    assert "latin1_\\xe9.png" in set(manifest.path)


def test_a_failed_run_leaves_the_previous_outputs(image_folder, tmp_path, monkeypatch):
    import spade.sample as sample_mod

    out = tmp_path / "o"
    run_sample(image_folder, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sample_mod, "_manifest_csv", broken)
    with pytest.raises(UserError, match="no space left on the disk"):
        run_sample(image_folder, out, seed=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_zip_bomb_entry_is_skipped_unread(image_folder, tmp_path):
    from spade.images import MAX_IMAGE_BYTES

    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(image_folder.rglob("*.png")):
            z.write(p, p.relative_to(image_folder).as_posix())
        with z.open("bomb.png", "w", force_zip64=True) as f:
            chunk = b"\0" * 2**20
            for _ in range(MAX_IMAGE_BYTES // len(chunk) + 1):
                f.write(chunk)
    assert archive.stat().st_size < 2**20
    train, test, _, report = run_sample(archive, tmp_path / "o", n_images=12)
    assert len(train) + len(test) == 12
    assert [s["path"] for s in report["skipped"]] == ["bomb.png"]
    assert "too large" in report["skipped"][0]["reason"]


def test_report_lists_hidden_and_link_loops_and_counts_upscaled(image_folder, tmp_path):
    (image_folder / ".hidden.png").write_bytes(b"x")
    (image_folder / ".git").mkdir()
    (image_folder / ".git/objects.png").write_bytes(b"x")
    (image_folder / "loop.png").symlink_to(image_folder / "loop.png")
    _, _, _, report = run_sample(image_folder, tmp_path / "o", image_size=64)
    ignored = {i["path"]: i["reason"] for i in report["ignored"]}
    assert ignored[".hidden.png"] == ignored[".git"] == "hidden"
    assert "link loop" in ignored["loop.png"]
    assert report["upscaled"] == 10  # the 40 px images, enlarged to 64


def test_no_readable_image_suggests_no_illegal_value(tmp_path):
    (tmp_path / "src").mkdir()
    for i in range(3):
        (tmp_path / "src" / f"{i}.png").write_bytes(b"junk")
    with pytest.raises(UserError) as e:
        run_sample(tmp_path / "src", tmp_path / "o", n_images=3, test_fraction=0.34)
    assert "at most 0" not in str(e.value) and "point sample.source" in str(e.value)


def test_style_labels_travel_into_the_manifest(tmp_path):
    from spade.style_labels import manifest_styles
    from spade.synthetic import face_style, write_faces_zip

    archive = tmp_path / "faces.zip"
    write_faces_zip(archive, count=12, size=32, seed=5)
    _, test, manifest, report = run_sample(archive, tmp_path / "out")
    assert len(manifest) == 10 and report["skipped"] == [] and report["candidates"] == 12
    assert {"style_shading", "style_eyes", "style_hair", "style_background"} <= set(manifest)
    for row in manifest.itertuples():
        index = int(row.path.removesuffix(".png"))
        assert row.style_hair == face_style(5, index).labels()["hair"]
    styles = manifest_styles(tmp_path / "out/manifest.csv", "test")
    assert list(styles) == ["shading", "eyes", "hair", "background"]
    assert len(styles["hair"]) == len(test)


def test_a_folder_without_labels_has_no_style_columns(image_folder, tmp_path):
    from spade.style_labels import manifest_styles

    *_, manifest, _ = run_sample(image_folder, tmp_path / "out")
    assert not [c for c in manifest if c.startswith("style_")]
    assert manifest_styles(tmp_path / "out/manifest.csv", "test") == {}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name,hair\na.png,x\n", "first line must be 'path,<factor>"),
        ("path\n", "first line must be"),
        ("path,hair,hair\n", "distinct identifiers"),
        ("path,hair\na.png\n", "line 2: expected 2 non-empty values"),
    ],
)
def test_broken_labels_are_one_line(image_folder, tmp_path, text, words):
    (image_folder / "styles.csv").write_text(text)
    with pytest.raises(UserError, match=words.replace("(", r"\(")) as e:
        run_sample(image_folder, tmp_path / "out")
    assert "styles.csv" in str(e.value)


def test_region_maps_travel_with_the_test_split_and_are_not_candidates(tmp_path):
    from spade.synthetic import render_face_regions, write_faces_zip

    archive = tmp_path / "faces.zip"
    write_faces_zip(archive, count=12, size=32, seed=5)
    _, test, manifest, report = run_sample(archive, tmp_path / "out")
    assert report["candidates"] == 12  # the 12 maps are not images to sample
    regions = np.load(tmp_path / "out/test_regions.npy")
    assert regions.shape == (len(test), 32, 32) and regions.dtype == np.uint8
    for row in manifest[manifest.split == "test"].itertuples():
        face, expected = render_face_regions(5, int(row.path.removesuffix(".png")), 32)
        np.testing.assert_array_equal(test[row.index], face)
        np.testing.assert_array_equal(regions[row.index], expected)


def test_region_maps_are_cropped_and_resized_as_their_images(image_folder, tmp_path):
    """A 40×40 image sampled at 32 px: its map is resized with the nearest pixel, so it holds
    only values the map had; a source without maps writes none, and removes a stale one."""
    names = sorted(p.relative_to(image_folder).as_posix() for p in image_folder.rglob("*.png"))
    (image_folder / "styles.csv").write_text("path,hair\n" + "".join(f"{n},x\n" for n in names))
    ramp = np.tile((np.arange(40) // 20).astype(np.uint8), (40, 1))  # left 0, right 1
    for n in names:
        target = image_folder / "regions" / n
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png_bytes(ramp))
    run_sample(image_folder, tmp_path / "out", image_size=32)
    regions = np.load(tmp_path / "out/test_regions.npy")
    assert (regions[:, :, :16] == 0).all() and (regions[:, :, 16:] == 1).all()

    for n in names:
        (image_folder / "regions" / n).unlink()
    run_sample(image_folder, tmp_path / "out", image_size=32)
    assert not (tmp_path / "out/test_regions.npy").exists()


@pytest.mark.parametrize(
    ("map_image", "words"),
    [
        (np.zeros((40, 40, 3), np.uint8), "one-channel 8-bit PNG, not RGB"),
        (np.zeros((20, 40), np.uint8), "is 40×20, its image 40×40"),
        (np.full((40, 40), 2, np.uint8), "holds 2, but styles.csv has 1 factors"),
        (None, "not a readable PNG region map"),
    ],
)
def test_a_broken_region_map_is_one_line(image_folder, tmp_path, map_image, words):
    names = sorted(p.relative_to(image_folder).as_posix() for p in image_folder.rglob("*.png"))
    (image_folder / "styles.csv").write_text("path,hair\n" + "".join(f"{n},x\n" for n in names))
    (image_folder / "regions").mkdir()
    for n in names:
        target = image_folder / "regions" / n
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"not a png" if map_image is None else png_bytes(map_image))
    with pytest.raises(UserError, match=words) as e:
        run_sample(image_folder, tmp_path / "out")
    assert "\n" not in str(e.value)
