from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from spade.config import (
    DemoConfig,
    EvaluateConfig,
    FeaturesConfig,
    RoughenConfig,
    SampleConfig,
    TrainConfig,
    load_params,
    parse_section,
)
from spade.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {
    "demo": DemoConfig,
    "sample": SampleConfig,
    "roughen": RoughenConfig,
    "train": TrainConfig,
    "features": FeaturesConfig,
    "evaluate": EvaluateConfig,
}


@pytest.mark.parametrize("params", ["params.yaml", "presets/demo.yaml", "presets/full.yaml"])
def test_shipped_params_are_valid_and_complete(params):
    data = load_params(ROOT / params)
    assert set(data) == set(SECTIONS)
    for name, cls in SECTIONS.items():
        parse_section(name, data[name], cls)
        assert set(data[name]) == {f.name for f in fields(cls)}, f"{params}: {name} incomplete"


def test_params_yaml_is_the_demo_preset():
    assert yaml.safe_load((ROOT / "params.yaml").read_text()) == yaml.safe_load(
        (ROOT / "presets/demo.yaml").read_text()
    )


def test_full_preset_is_the_seed_setup():
    full = load_params(ROOT / "presets/full.yaml")
    assert full["sample"]["n_images"] == 20000 and full["sample"]["image_size"] == 256
    r = parse_section("roughen", full["roughen"], RoughenConfig)
    assert (r.median_before, r.spatial_radius, r.color_radius, r.median_after) == (9, 52, 52, 15)
    t = full["train"]
    assert (t["batch_size"], t["epochs"], t["lambda_l1"]) == (4, 37, 100.0)


@pytest.mark.parametrize(
    ("section", "cls", "raw", "fragment"),
    [
        ("train", TrainConfig, {"lr_gg": 1e-4}, "unknown key train.lr_gg"),
        ("train", TrainConfig, {"lr_g": "fast"}, "train.lr_g = 'fast' is not legal"),
        ("train", TrainConfig, {"lr_g": 0}, "> 0.0"),
        ("train", TrainConfig, {"epochs": 2.5}, "an integer"),
        ("train", TrainConfig, {"epochs": True}, "an integer"),
        ("train", TrainConfig, {"amp": "yes"}, "true/false"),
        ("train", TrainConfig, {"betas": [0.5]}, "train.betas"),
        ("train", TrainConfig, {"betas": [0.5, 1.5]}, "train.betas[1]"),
        ("train", TrainConfig, {"epochs": 2, "decay_epochs": 3}, "decay_epochs"),
        ("sample", SampleConfig, {"image_size": 100}, "a power of two"),
        ("sample", SampleConfig, {"image_size": 1024}, "<= 512"),
        ("sample", SampleConfig, {"n_images": 10, "test_fraction": 0.01}, "0 test images"),
        ("roughen", RoughenConfig, {"median_before": 4}, "odd"),
        ("roughen", RoughenConfig, {"n_jobs": 0}, "roughen.n_jobs"),
        ("features", FeaturesConfig, {"device": "tpu"}, "one of 'auto', 'cpu', 'cuda'"),
    ],
)
def test_bad_values_name_the_key_and_legal_values(section, cls, raw, fragment):
    with pytest.raises(UserError) as e:
        parse_section(section, raw, cls)
    assert fragment in str(e.value)


def test_unknown_key_lists_legal_keys():
    with pytest.raises(UserError, match="legal keys in 'demo': count, seed, size"):
        parse_section("demo", {"colour": 1}, DemoConfig)


def test_values_are_converted():
    cfg = parse_section("train", {"lr_g": 1, "betas": [0, 0.99]}, TrainConfig)
    assert cfg.lr_g == 1.0 and isinstance(cfg.lr_g, float)
    assert cfg.betas == (0.0, 0.99)


def test_section_must_be_a_mapping():
    with pytest.raises(UserError, match="must be a mapping"):
        parse_section("demo", [1, 2], DemoConfig)


def test_invalid_yaml_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(p)
