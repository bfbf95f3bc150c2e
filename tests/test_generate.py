"""`spade generate`: a user's own rough drawing → an anime face."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from devtools.scratch import ROOT
from spade.__main__ import main
from spade.config import TrainConfig
from spade.dist import DistEnv
from spade.image_files import read_rgb, save_png
from spade.images import resize_square
from spade.roughen import roughen_image
from spade.train import train

from conftest import ARCH, RECIPE, TINY, TINY_RUN, eps_bytes, paths_in

PLAIN = ARCH | {"use_vae": False, "z_every_layer": False}  # z at the 4×4 start only


@pytest.fixture(scope="module")
def model_path(pair_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model")
    paths = paths_in(tmp, pair_data)
    train(TrainConfig(**(TINY | {"epochs": 1, "arch": PLAIN})), TINY_RUN, DistEnv(), paths, RECIPE)
    return paths.generator


@pytest.fixture(scope="module")
def vae_model_path(pair_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vae")
    paths = paths_in(tmp, pair_data)
    arch = ARCH | {"use_vae": True, "style_from": 16}  # the demo's: region styles keep in place
    cfg = TrainConfig(**(TINY | {"epochs": 1, "arch": arch}))
    train(cfg, TINY_RUN, DistEnv(), paths, RECIPE)
    return paths.generator


@pytest.fixture(scope="module")
def styled_model_path(pair_data, tmp_path_factory):
    """A tiny model trained with the style-variety options of the presets."""
    tmp = tmp_path_factory.mktemp("styled")
    paths = paths_in(tmp, pair_data)
    arch = ARCH | {"z_every_layer": True, "use_vae": False}
    train(
        TrainConfig(**(TINY | {"arch": arch, "lambda_ms": 0.02})),
        TINY_RUN,
        DistEnv(),
        paths,
        RECIPE,
    )
    return paths.generator


def hand_drawn_rough(width: int = 90, height: int = 120) -> np.ndarray:
    """What a user might paint: a background, a hair blob, a face blob and two eye dots."""
    img = np.full((height, width, 3), (150, 200, 230), np.uint8)
    cx, cy = width // 2, height // 2
    cv2.ellipse(img, (cx, cy - 5), (38, 45), 0, 0, 360, (200, 60, 140), -1)  # hair
    cv2.ellipse(img, (cx, cy + 8), (26, 32), 0, 0, 360, (250, 215, 190), -1)  # face
    for dx in (-11, 11):
        cv2.circle(img, (cx + dx, cy + 5), 5, (60, 90, 200), -1)  # eyes
    return img


def generate(*args) -> None:
    main(["generate", *map(str, args)])


def test_hand_drawn_rough_becomes_a_face(model_path, tmp_path):
    save_png(tmp_path / "mine.png", hand_drawn_rough())
    generate(tmp_path / "mine.png", "--model", model_path, "--out", tmp_path / "out")
    face = read_rgb(tmp_path / "out/mine.png")
    assert face.shape == (32, 32, 3) and face.std() > 0


def test_seed_controls_the_output(model_path, tmp_path):
    save_png(tmp_path / "in/mine.png", hand_drawn_rough())
    for seed in (0, 0, 1):  # s0 twice: the second run replaces its faces
        out = ["--out", tmp_path / f"s{seed}", "--overwrite"]
        generate(tmp_path / "in", "--model", model_path, *out, "--seed", seed)
    a, b = (read_rgb(tmp_path / f"s{s}/mine.png") for s in (0, 1))
    assert not np.array_equal(a, b)
    generate(tmp_path / "in", "--model", model_path, "--out", tmp_path / "again", "--seed", 0)
    np.testing.assert_array_equal(read_rgb(tmp_path / "again/mine.png"), a)


def test_folder_of_odd_formats(model_path, tmp_path):
    from PIL import Image

    folder = tmp_path / "roughs"
    folder.mkdir()
    rgba = np.dstack([hand_drawn_rough(), np.full((120, 90), 200, np.uint8)])
    Image.fromarray(rgba).save(folder / "a.png")
    Image.fromarray(hand_drawn_rough()[..., 1]).save(folder / "b.jpg")
    (folder / "readme.txt").write_text("not an image, not listed")
    generate(folder, "--model", model_path, "--out", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]


def test_roughen_applies_the_models_recipe(model_path, tmp_path):
    photo = np.random.default_rng(0).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    save_png(tmp_path / "photo.png", photo)
    out = tmp_path / "out"
    generate(
        tmp_path / "photo.png", "--model", model_path, "--out", out, "--roughen", "--save-rough"
    )
    expected = roughen_image(resize_square(photo, 32), RECIPE)
    np.testing.assert_array_equal(read_rgb(out / "photo_rough.png"), expected)
    assert (out / "photo.png").is_file()


def test_interpolate_writes_a_strip(model_path, tmp_path):
    save_png(tmp_path / "mine.png", hand_drawn_rough())
    out = tmp_path / "out"
    generate(tmp_path / "mine.png", "--model", model_path, "--out", out, "--interpolate", 5)
    strip = read_rgb(out / "mine_interp.png")
    assert strip.shape == (32, 5 * 32, 3)
    first, last = strip[:, :32], strip[:, -32:]
    assert not np.array_equal(first, last)
    generate(tmp_path / "mine.png", "--model", model_path, "--out", tmp_path / "single")
    np.testing.assert_array_equal(first, read_rgb(tmp_path / "single/mine.png"))


def expect_error(capsys_or_caplog, args, fragment):
    with pytest.raises(SystemExit) as e:
        generate(*args)
    assert e.value.code == 2
    assert fragment in capsys_or_caplog.text


def test_clear_errors(model_path, tmp_path, caplog):
    save_png(tmp_path / "mine.png", hand_drawn_rough())
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "bad_model.pt").write_bytes(b"not a model")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    m = ["--model", model_path, "--out", tmp_path / "out"]
    expect_error(caplog, [tmp_path / "mine.png", "--model", tmp_path / "nope.pt"], "not found")
    expect_error(
        caplog, [tmp_path / "mine.png", "--model", tmp_path / "bad_model.pt"], "not a readable"
    )
    expect_error(
        caplog, [tmp_path / "mine.png", "--model", tmp_path / "other.pt"], "not a spade-anime"
    )
    expect_error(caplog, [tmp_path / "empty", *m], "holds no images")
    (tmp_path / "twins").mkdir()
    for name in ("a.png", "a.jpg"):
        save_png(tmp_path / "twins" / name, hand_drawn_rough())
    expect_error(caplog, [tmp_path / "twins", *m], "would both write a.png")
    expect_error(caplog, [tmp_path / "bad.png", *m], "cannot read image")
    expect_error(caplog, [tmp_path / "missing.png", *m], "does not exist")
    expect_error(caplog, [tmp_path / "mine.png", *m, "--style", tmp_path / "mine.png"], "use_vae")
    expect_error(caplog, [tmp_path / "mine.png", *m, "--interpolate", 1], "K >= 2")


def test_incompatible_model_file(model_path, tmp_path, caplog):
    state = torch.load(model_path, weights_only=True)
    state["arch"]["ngf"] = 8  # weights no longer fit the architecture
    torch.save(state, tmp_path / "mismatch.pt")
    save_png(tmp_path / "mine.png", hand_drawn_rough())
    expect_error(
        caplog, [tmp_path / "mine.png", "--model", tmp_path / "mismatch.pt"], "does not match"
    )


def test_never_overwrites_an_input(model_path, tmp_path, caplog):
    folder = tmp_path / "in"
    save_png(folder / "mine.png", hand_drawn_rough())
    before = (folder / "mine.png").read_bytes()
    expect_error(caplog, [folder, "--model", model_path, "--out", folder], "refusing to overwrite")
    expect_error(
        caplog,
        [folder / "mine.png", "--model", model_path, "--out", tmp_path / "in/../in"],
        "refusing to overwrite the input",
    )
    assert (folder / "mine.png").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["mine.png"]


def test_files_already_in_out_are_replaced_only_with_overwrite(model_path, tmp_path, caplog):
    """The user's own me.png and me_rough.png beside me.jpg survive `--out` that folder."""
    folder = tmp_path / "d"
    photo = np.random.default_rng(0).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    folder.mkdir()
    cv2.imwrite(str(folder / "me.jpg"), photo)
    mine = {name: f"the user's own {name}".encode() for name in ("me.png", "me_rough.png")}
    for name, data in mine.items():
        (folder / name).write_bytes(data)
    args = [folder / "me.jpg", "--model", model_path, "--out", folder, "--roughen", "--save-rough"]
    expect_error(caplog, args, "me.png already exists (and 1 more of the files to write)")
    assert "--overwrite" in caplog.records[-1].getMessage()
    assert {name: (folder / name).read_bytes() for name in mine} == mine  # nothing written
    assert sorted(p.name for p in folder.iterdir()) == ["me.jpg", "me.png", "me_rough.png"]
    generate(*args, "--overwrite")
    assert all(read_rgb(folder / name).shape == (32, 32, 3) for name in mine)
    before = (folder / "me.png").read_bytes()
    expect_error(caplog, [folder / "me.png", *args[1:], "--overwrite"], "overwrite the input")
    assert (folder / "me.png").read_bytes() == before


def test_overwrite_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "--overwrite" in capsys.readouterr().out


def test_bad_out_folder_is_one_clear_line(model_path, tmp_path, caplog):
    save_png(tmp_path / "mine.png", hand_drawn_rough())
    (tmp_path / "a_file").write_text("x")
    m = [tmp_path / "mine.png", "--model", model_path]
    expect_error(caplog, [*m, "--out", tmp_path / "a_file"], "is a file")
    expect_error(caplog, [*m, "--out", "/proc/spade-out"], "cannot create the --out folder")


def test_interpolate_and_seed_are_bounded(model_path, tmp_path, caplog, capsys):
    save_png(tmp_path / "mine.png", hand_drawn_rough())
    m = [tmp_path / "mine.png", "--model", model_path, "--out", tmp_path / "out"]
    expect_error(caplog, [*m, "--interpolate", 1000], "K <= 64")
    with pytest.raises(SystemExit) as e:
        generate(*m, "--seed", 2**64)
    assert e.value.code == 2 and "not in 0..2147483647" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "2..64" in capsys.readouterr().out


def test_same_seed_same_face_whatever_else_runs(model_path):
    from spade.checkpoint import load_generator
    from spade.painter import Painter

    model, recipe = load_generator(model_path, torch.device("cpu"))
    gen = Painter(model, recipe, torch.device("cpu"))
    rough = gen.prepare(hand_drawn_rough())
    a = gen.face(rough, seed=5)
    torch.manual_seed(123)  # the global RNG plays no part
    torch.randn(100)
    np.testing.assert_array_equal(gen.face(rough, seed=5), a)
    np.testing.assert_array_equal(gen.strip(rough, 5, 6, 3)[0], a)  # a strip starts at the seed


def mean_levels(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def test_seeds_visibly_change_a_trained_face(styled_model_path, tmp_path):
    save_png(tmp_path / "in/mine.png", hand_drawn_rough())
    faces = []
    for run, seed in enumerate((0, 1, 0)):
        out = tmp_path / f"run{run}"
        generate(tmp_path / "in", "--model", styled_model_path, "--out", out, "--seed", seed)
        faces.append(read_rgb(out / "mine.png"))
    np.testing.assert_array_equal(faces[0], faces[2])  # the same seed, the same face
    assert mean_levels(faces[0], faces[1]) > 2  # another seed: levels in 255, on average


def test_interpolation_strip_moves_between_two_styles(styled_model_path, tmp_path):
    save_png(tmp_path / "mine.png", hand_drawn_rough())
    out = tmp_path / "out"
    generate(tmp_path / "mine.png", "--model", styled_model_path, "--out", out, "--interpolate", 4)
    strip = read_rgb(out / "mine_interp.png")
    frames = [strip[:, 32 * i : 32 * (i + 1)] for i in range(4)]
    steps = [mean_levels(a, b) for a, b in itertools.pairwise(frames)]
    assert all(step > 0.5 for step in steps), steps  # every frame differs from the last


def test_style_reference_changes_the_face(vae_model_path, pair_data, tmp_path):
    save_png(tmp_path / "mine.png", hand_drawn_rough())
    real = np.load(pair_data / "sampled/test.npy")
    faces = []
    for i in (0, 3):
        save_png(tmp_path / f"ref{i}.png", real[i])
        out = tmp_path / f"out{i}"
        generate(
            tmp_path / "mine.png",
            "--model",
            vae_model_path,
            "--out",
            out,
            "--style",
            tmp_path / f"ref{i}.png",
        )
        faces.append(read_rgb(out / "mine.png"))
    assert faces[0].shape == (32, 32, 3) and not np.array_equal(*faces)


def test_every_output_name_is_checked_for_clashes(model_path, tmp_path, caplog):
    """a.png's rough is a_rough.png, which is also the face of the input a_rough.png."""
    folder = tmp_path / "in"
    for name in ("a.png", "a_rough.png"):
        save_png(folder / name, hand_drawn_rough())
    out = tmp_path / "out"
    expect_error(
        caplog,
        [folder, "--model", model_path, "--out", out, "--save-rough"],
        "would both write a_rough.png",
    )
    assert not out.exists() or not any(out.iterdir())  # refused before writing anything


def test_the_count_of_written_files_includes_the_roughs(model_path, tmp_path, caplog):
    save_png(tmp_path / "in/a.png", hand_drawn_rough())
    with caplog.at_level("INFO"):
        generate(tmp_path / "in", "--model", model_path, "--out", tmp_path / "out", "--save-rough")
    assert "wrote 2 file(s)" in caplog.text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "a_rough.png"]


@pytest.mark.parametrize("special", ["/dev/null", "/dev/zero", "fifo"])
def test_pipes_and_devices_are_refused_unread(model_path, tmp_path, caplog, special):
    if special == "fifo":
        special = tmp_path / "fifo"
        os.mkfifo(special)  # reading it would block for ever
    save_png(tmp_path / "mine.png", hand_drawn_rough())
    m = ["--model", model_path, "--out", tmp_path / "out"]
    expect_error(caplog, [special, *m], "not a regular file")
    expect_error(caplog, [tmp_path / "mine.png", *m, "--style", special], "not a regular file")


def test_seed_to_needs_interpolate_and_a_folder_is_not_a_model(model_path, tmp_path, caplog):
    save_png(tmp_path / "mine.png", hand_drawn_rough())
    m = [tmp_path / "mine.png", "--out", tmp_path / "out"]
    expect_error(caplog, [*m, "--model", model_path, "--seed-to", 3], "use it with --interpolate")
    expect_error(caplog, [*m, "--model", tmp_path], "is a folder")


def test_file_names_cannot_forge_log_lines(model_path, tmp_path, caplog):
    name = "evil\n12:00:00 ERROR spade: forged.png"
    save_png(tmp_path / "in" / name, hand_drawn_rough())
    with caplog.at_level("INFO"):
        generate(tmp_path / "in", "--model", model_path, "--out", tmp_path / "out")
    assert "forged" in caplog.text
    assert all("\n" not in r.getMessage() for r in caplog.records)


def test_non_finite_weights_are_refused(model_path, tmp_path, caplog):
    state = torch.load(model_path, weights_only=True)
    key = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][key] = torch.full_like(state["state_dict"][key], float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    save_png(tmp_path / "mine.png", hand_drawn_rough())
    out = tmp_path / "out"
    expect_error(
        caplog,
        [tmp_path / "mine.png", "--model", tmp_path / "nan.pt", "--out", out],
        "non-finite weights",
    )
    assert not out.exists() or not any(out.iterdir())


def test_an_eps_file_never_reaches_ghostscript(tiny_generator_file, fake_gs, tmp_path):
    """A file named .png that is really PostScript, through the command line as users run it."""
    (tmp_path / "me.png").write_bytes(eps_bytes())
    out = tmp_path / "out"
    args = ["generate", tmp_path / "me.png", "--model", tiny_generator_file, "--out", out]
    run = subprocess.run(
        [sys.executable, "-m", "spade", *map(str, args)], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "me.png: not an image of a known format (PNG, JPEG" in run.stderr
    assert not fake_gs.exists() and not any(out.iterdir())


class PickledCode:
    """Pickles as a call of os.system: loading it with weights_only=False would run it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_model_file_with_pickled_code_is_one_line_that_never_runs_it(tmp_path, caplog):
    marker = tmp_path / "code-ran"
    torch.save({"format": "spade-anime-generator", "x": PickledCode(marker)}, tmp_path / "m.pt")
    save_png(tmp_path / "mine.png", hand_drawn_rough())
    args = [tmp_path / "mine.png", "--model", tmp_path / "m.pt", "--out", tmp_path / "out"]
    expect_error(caplog, args, "m.pt is not a readable model file (it holds pickled code, ")
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0] and "weights_only" not in errors[0]
    assert not marker.exists()


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_a_model_that_is_a_device_or_a_pipe_says_so(tmp_path, caplog, special):
    if special == "fifo":
        special = tmp_path / "fifo"
        os.mkfifo(special)
    save_png(tmp_path / "mine.png", hand_drawn_rough())
    args = [tmp_path / "mine.png", "--model", special, "--out", tmp_path / "out"]
    expect_error(caplog, args, f"{special} is not a regular file (a pipe or a device); give a")
    assert "not found" not in caplog.text


HAIR = "45,20"  # a point in hand_drawn_rough's hair (above the face)


def test_a_region_takes_its_own_style_and_the_rest_stays(vae_model_path, pair_data, tmp_path):
    save_png(tmp_path / "mine.png", hand_drawn_rough())
    save_png(tmp_path / "ref.png", np.load(pair_data / "sampled/test.npy")[3])
    faces = {}
    for name, extra in [
        ("plain", []),
        ("seed", ["--region", f"{HAIR}=seed:7"]),
        ("ref", ["--region", f"{HAIR}={tmp_path / 'ref.png'}"]),
        ("color", ["--region", "#c83c8c=seed:7"]),  # every pixel of the hair's colour
    ]:
        out = tmp_path / name
        generate(tmp_path / "mine.png", "--model", vae_model_path, "--out", out, *extra)
        faces[name] = read_rgb(out / "mine.png").astype(int)
    rough = resize_square(hand_drawn_rough(), 32)
    hair = (rough == (200, 60, 140)).all(-1)
    far = cv2.dilate(hair.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0  # 5+ px from it
    for name in ("seed", "ref", "color"):
        change = np.abs(faces[name] - faces["plain"]).max(-1)
        assert change[hair].mean() > 4 * max(change[far].mean(), 0.5), name


def test_region_mistakes_are_one_clear_line(vae_model_path, model_path, tmp_path, caplog, capsys):
    save_png(tmp_path / "mine.png", hand_drawn_rough())
    m = [tmp_path / "mine.png", "--model", vae_model_path, "--out", tmp_path / "out"]
    expect_error(caplog, [*m, "--region", "200,20=seed:1"], "is outside the centred 90×90")
    expect_error(caplog, [*m, "--region", "#010203=seed:1"], "no pixel of colour #010203")
    expect_error(caplog, [*m, "--region", f"{HAIR}={tmp_path / 'nope.png'}"], "nope.png")
    expect_error(caplog, [*m, "--region", f"{HAIR}=seed:1", "--interpolate", 3], "--interpolate")
    plain = [tmp_path / "mine.png", "--model", model_path, "--out", tmp_path / "p"]
    expect_error(caplog, [*plain, "--region", f"{HAIR}=seed:1"], "z_every_layer")
    for bad, says in [
        ("45,20", "WHERE=STYLE"),
        ("here=seed:1", "neither a point"),
        ("45,20=seed:x", "the seed must be"),
    ]:
        with pytest.raises(SystemExit) as e:
            generate(*m, "--region", bad)
        assert e.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "out" / "mine.png").exists()
