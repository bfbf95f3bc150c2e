from pathlib import Path

import pydantic
import pytest
import yaml

from spade.config import MAX_SEED, Params, Recipe, RunConfig, TrainConfig, load_params, parse_params
from spade.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def keys_of(model) -> set[str]:
    return set(type(model).model_fields)


def assert_complete(raw: dict, model, where: str) -> None:
    """`raw` writes out every key of `model`, nested sections (train.arch, run.train) too."""
    assert set(raw) == keys_of(model), f"{where} incomplete"
    for key, value in raw.items():
        if isinstance(value, dict):
            assert_complete(value, getattr(model, key), f"{where}.{key}")


@pytest.mark.parametrize("params", ["params.yaml", "presets/full.yaml"])
def test_shipped_params_are_valid_and_complete(params):
    raw = yaml.safe_load((ROOT / params).read_text())
    assert_complete(raw, load_params(ROOT / params), params)


def test_the_defaults_are_the_full_preset():
    """One source for each default: config.py; presets/full.yaml writes them all out."""
    assert load_params(ROOT / "presets/full.yaml") == Params()


@pytest.mark.parametrize(
    ("base", "overlay"),
    [("presets/full.yaml", "presets/rehearsal.yaml"), ("params.yaml", "presets/tiny.yaml")],
)
def test_overlays_name_only_known_keys_and_give_legal_params(base, overlay):
    from devtools.scratch import preset

    params = parse_params(preset(base, overlay), overlay)
    assert params != load_params(ROOT / base)


def test_full_preset_is_the_seed_setup():
    full = load_params(ROOT / "presets/full.yaml")
    assert full.sample.n_images == 20000 and full.sample.image_size == 256
    r = full.roughen
    assert (r.median_before, r.spatial_radius, r.color_radius, r.median_after) == (9, 52, 52, 15)
    t = full.train
    assert (t.batch_size, t.epochs, t.lambda_l1, t.arch.ngf) == (4, 37, 100.0, 64)


def fails(raw: dict, fragment: str) -> None:
    with pytest.raises(UserError) as e:
        parse_params(raw)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"train": {"lr_gg": 1e-4}}, "unknown key train.lr_gg"),
        ({"train": {"lr_g": "fast"}}, "train.lr_g = 'fast' is not legal; expected a number"),
        ({"train": {"lr_g": 0}}, "> 0.0"),
        ({"train": {"epochs": 2.5}}, "an integer"),
        ({"train": {"epochs": True}}, "an integer"),
        ({"train": {"amp": "yes"}}, "true/false"),
        ({"train": {"betas": [0.5]}}, "train.betas = [0.5] is not legal; expected a list of 2"),
        ({"train": {"betas": [0.5, 1.5]}}, "train.betas[1] = 1.5"),
        ({"train": {"epochs": 2, "decay_epochs": 3}}, "decay_epochs"),
        (
            {"train": {"arch": {"ngf": 0}}},
            "train.arch.ngf = 0 is not legal; expected an integer >= 1",
        ),
        (
            {"train": {"arch": {"colour": 1}}},
            "unknown key train.arch.colour; legal keys in 'train.arch'",
        ),
        ({"train": {"arch": 5}}, "section 'train.arch' must be a mapping"),
        ({"train": {"batch_size": 6, "nproc": 4}}, "use a multiple of 4 (4, 8, 12, 16"),
        ({"sample": {"image_size": 100}}, "a power of two"),
        ({"sample": {"image_size": 1024}}, "<= 512"),
        ({"sample": {"n_images": 10, "test_fraction": 0.01}}, "0 test images"),
        ({"roughen": {"median_before": 4}}, "roughen.median_before = 4"),
        ({"run": {"roughen": {"n_jobs": 0}}}, "run.roughen.n_jobs"),
        ({"run": {"train": {"num_workers": -1}}}, "run.train.num_workers = -1 is not legal"),
        ({"roughen": {"spatial_radius": float("nan")}}, "spatial_radius = nan"),
        ({"features": {"device": "tpu"}}, "one of 'auto', 'cpu', 'cuda'"),
        ({"demo": [1, 2]}, "section 'demo' must be a mapping"),
        ({"train": {"arch": {"ngf": 10**9}}}, "train.arch.ngf = 1000000000 is not legal; expected"),
        ({"train": {"arch": {"z_dim": 10**6}}}, "train.arch.z_dim = 1000000 is not legal"),
        ({"train": {"disc": {"ndf": 4096}}}, "train.disc.ndf = 4096 is not legal"),
        ({"distill": {"arch": {"spade_hidden": 10**9}}}, "distill.arch.spade_hidden = 1000000000"),
        ({"train": {"batch_size": 10**6}}, "train.batch_size = 1000000 is not legal"),
        ({"evaluate": {"batch_size": 10**6}}, "evaluate.batch_size = 1000000 is not legal"),
        ({"sample": {"n_images": 10**9}}, "sample.n_images = 1000000000 is not legal"),
    ],
)
def test_bad_values_name_the_key_and_legal_values(raw, fragment):
    fails(raw, fragment)


def test_unknown_key_lists_legal_keys():
    fails({"demo": {"colour": 1}}, "legal keys in 'demo': count, seed, size")
    fails({"run": {"train": {"epochs": 3}}}, "unknown key run.train.epochs; legal keys in")
    fails({"train": {"num_workers": 3}}, "unknown key train.num_workers; legal keys in 'train'")
    fails({"roughen": {"n_jobs": 2}}, "are in the run section: run.roughen.n_jobs)")


def test_misspelt_section_is_refused_by_name():
    legal = "legal sections: cpu, demo, distill, evaluate"
    fails({"trian": {"epochs": 3}}, f"unknown section 'trian'; {legal}")


@pytest.mark.parametrize("value", ["", None, 5])
def test_source_must_be_a_path(value):
    fails({"sample": {"source": value}}, "sample.source = ")


@pytest.mark.parametrize("section", ["demo", "sample", "train", "evaluate"])
def test_seeds_are_bounded(section):
    fails({section: {"seed": MAX_SEED + 1}}, f"{section}.seed = {MAX_SEED + 1} is not legal")
    fails({section: {"seed": 2**64}}, "<= 2147483647")
    assert getattr(parse_params({section: {"seed": MAX_SEED}}), section).seed == MAX_SEED


@pytest.mark.parametrize("text", ["1e-4", "1E-4", "+1.0e-4", ".0001"])
def test_numbers_written_by_hand_in_exponent_form(text):
    assert parse_params({"train": {"lr_g": text}}).train.lr_g == pytest.approx(1e-4)


def test_values_are_converted():
    cfg = parse_params({"train": {"lr_g": 1, "betas": [0, 0.99]}}).train
    assert cfg.lr_g == 1.0 and isinstance(cfg.lr_g, float)
    assert cfg.betas == (0.0, 0.99)
    recipe = parse_params({"roughen": {"spatial_radius": 13}}).roughen
    assert recipe.spatial_radius == 13.0 and isinstance(recipe.spatial_radius, float)


def test_missing_sections_take_their_defaults():
    assert parse_params({}) == Params()


def test_models_built_in_code_are_validated_too():
    with pytest.raises(pydantic.ValidationError):
        TrainConfig(batch_size=0)
    with pytest.raises(pydantic.ValidationError):
        Recipe(median_after=4)


def test_speed_and_logging_keys_are_in_run_alone():
    keys = TrainConfig().flat()
    assert "arch.ngf" in keys and "lr_g" in keys and "nproc" in keys
    assert not {"num_workers", "log_every", "ckpt_every", "n_samples"} & set(keys)
    assert set(RunConfig().flat()) >= {"train.num_workers", "roughen.backend", "demo.n_jobs"}


def test_invalid_yaml_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(p)


@pytest.mark.parametrize("stage", ["demo", "sample", "roughen", "train", "features", "evaluate"])
def test_every_stage_checks_the_whole_file_before_any_work(stage, tmp_path):
    import subprocess
    import sys

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["lr_g"] = "fast"  # a bad value in another stage's section
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, str(ROOT / f"stages/{stage}.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "train.lr_g = 'fast' is not legal" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing was done


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1: 2", "the key 1 in the top level is not a name"),
        ("true:", "the key True in the top level is not a name"),
        ("null:", "the key None in the top level is not a name"),
        ("train: {arch: {5: 1}}", "the key 5 in train.arch is not a name"),
    ],
)
def test_keys_that_are_not_names_are_one_line(text, fragment):
    fails(yaml.safe_load(text), fragment)


def test_a_yaml_alias_bomb_gives_a_short_message(tmp_path):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdef"):
        prev = "abcdef"[i]
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(levels[:-1]) + "\ntrain: {epochs: [*e, *e, *e]}\n")  # ~10⁶ leaves
    with pytest.raises(UserError) as e:
        load_params(path)
    assert "train.epochs = [" in str(e.value) and len(str(e.value)) < 400


def test_rules_between_fields_name_the_file_that_was_checked(tmp_path):
    path = tmp_path / "presets-x.yaml"
    path.write_text("train: {epochs: 2, decay_epochs: 3}\n")
    with pytest.raises(UserError, match=r"^presets-x.yaml: train.decay_epochs = 3 exceeds"):
        load_params(path)


@pytest.mark.parametrize("address", ["garbage", "inproc://x", "tcp://", "10.0.0.5"])
def test_scheduler_must_be_an_address(address):
    fails({"run": {"roughen": {"scheduler": address}}}, "run.roughen.scheduler = ")


@pytest.mark.parametrize("address", ["", "tcp://10.0.0.5:8786", "localhost:8786", "tls://[::1]:1"])
def test_scheduler_addresses_dask_accepts(address):
    parsed = parse_params({"run": {"roughen": {"scheduler": address}}})
    assert parsed.run.roughen.scheduler == address


def test_processes_are_bounded():
    fails({"train": {"nproc": 10**9}}, "train.nproc = 1000000000 is not legal")


@pytest.mark.parametrize("key", ["ngf", "spade_hidden"])
def test_a_student_wider_than_its_teacher_is_refused_at_check(key):
    wide = {"train": {"arch": {key: 32}}, "distill": {"arch": {key: 1000}}}
    fails(wide, f"distill.arch.{key} = 1000 is wider than the teacher's train.arch.{key} = 32")
    equal = {"train": {"arch": {key: 32}}, "distill": {"arch": {key: 32}}}
    assert getattr(parse_params(equal).distill.arch, key) == 32


def test_networks_that_cannot_fit_on_a_gpu_are_refused_by_their_widths():
    fails(
        {"train": {"arch": {"ngf": 1000}}},
        "train.arch.ngf = 1000, train.arch.spade_hidden = 128, train.arch.z_dim = 256, "
        "train.arch.nef = 64: the train stage's networks at sample.image_size = 256 need at "
        "least 337 GB to train",
    )
    fails(  # the teacher's training fits; a frozen teacher and a student as wide do not
        {"train": {"arch": {"ngf": 720}}, "distill": {"arch": {"ngf": 720, "spade_hidden": 128}}},
        "train.arch.nef = 64, distill.arch.ngf = 720, distill.arch.spade_hidden = 128: the "
        "distill stage's networks",
    )
    assert parse_params({"train": {"arch": {"ngf": 128}}}).train.arch.ngf == 128  # ~7 GB


@pytest.mark.parametrize("command", ["check", "params stage"])
def test_check_and_the_params_stage_refuse_cross_section_mistakes(command, tmp_path):
    import subprocess
    import sys

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["distill"]["arch"]["ngf"] = 1000
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    cmd = ["-m", "spade", "check"] if command == "check" else [str(ROOT / "stages/params.py")]
    proc = subprocess.run(
        [sys.executable, *cmd], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "distill.arch.ngf = 1000 is wider than the teacher's" in lines[0]
