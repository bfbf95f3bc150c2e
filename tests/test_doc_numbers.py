"""Numbers the docs repeat agree with where they come from: the demo's metrics in docs/results.md
with the committed metrics/eval.json, the run time in params.yaml with the measured one in
docs/results.md, and the sizes the README and comments quote with the parameters themselves."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import ROOT

RESULTS = (ROOT / "docs" / "results.md").read_text()
README = (ROOT / "README.md").read_text()
PARAMS_TEXT = (ROOT / "params.yaml").read_text()
PARAMS = yaml.safe_load(PARAMS_TEXT)
FULL = yaml.safe_load((ROOT / "presets" / "full.yaml").read_text())
EVAL = json.loads((ROOT / "metrics" / "eval.json").read_text())
STUDENT = EVAL["student"]

# the rows of docs/results.md's "The demo" table: teacher, student, rough (None: no column)
DEMO_ROWS = {
    "KID": (EVAL["kid_mean"], STUDENT["kid_mean"], EVAL["kid_mean_rough"]),
    "FID": (EVAL["fid"], STUDENT["fid"], EVAL["fid_rough"]),
    "L1, own style": (EVAL["l1"], STUDENT["l1"], EVAL["l1_rough"]),
    "L1, a random seed": (EVAL["l1_seed"], STUDENT["l1_seed"], EVAL["l1_rough"]),
    "SSIM": (EVAL["ssim"], STUDENT["ssim"], EVAL["ssim_rough"]),
    "diversity": (EVAL["diversity"], STUDENT["diversity"], None),
    "diversity_style": (EVAL["diversity_style"], STUDENT["diversity_style"], None),
    "style_control mean": (EVAL["style_control"]["mean"], STUDENT["style_control"]["mean"], None),
}


def shows(text: str, value: float) -> bool:
    """`text` (e.g. "0.0702") is `value` rounded to the digits it shows."""
    digits = len(text.partition(".")[2])
    return abs(float(text) - value) <= 0.5 * 10**-digits + 1e-12


def section(title: str) -> str:
    return RESULTS.split(f"\n## {title}\n")[1].split("\n## ")[0]


@pytest.mark.parametrize("row", DEMO_ROWS)
def test_the_demo_table_is_the_committed_metrics(row):
    demo = section("The demo")
    line = next(ln for ln in demo.splitlines() if ln.startswith(f"| {row} "))
    cells = [c.strip() for c in line.strip("|").split("|")[1:]]
    for cell, value in zip(cells, DEMO_ROWS[row], strict=True):
        if value is None:
            assert not cell, f"{row}: {cell!r} in a column it has no value for"
            continue
        shown = cell.split(" (")[0]  # "0.0702 (0.0571)": the bracket is an older, dated run
        assert shows(shown, value), f"{row}: results.md says {shown}, metrics/eval.json {value}"


def test_the_demo_prose_is_the_committed_metrics():
    demo = section("The demo")
    for factor, teacher, student, probe in re.findall(
        r"(\w+) (\d\.\d+) / (\d\.\d+) \((\d\.\d+)", demo
    ):
        assert shows(teacher, EVAL["style_control"][factor]), factor
        assert shows(student, STUDENT["style_control"][factor]), factor
        assert shows(probe, EVAL["style_probe_accuracy"][factor]), factor
    chance = re.search(r"style_control mean \(chance (\d\.\d+)\)", demo).group(1)
    assert shows(chance, EVAL["style_control_chance"]["mean"])
    ratios = {
        r"teacher KID (\d\.\d+)× the rough's": EVAL["kid_mean"] / EVAL["kid_mean_rough"],
        r"student KID (\d\.\d+)× the teacher's": STUDENT["kid_mean"] / EVAL["kid_mean"],
        r"student diversity (\d\.\d+)× the teacher's": STUDENT["diversity"] / EVAL["diversity"],
    }
    for pattern, value in ratios.items():
        assert shows(re.search(pattern, demo).group(1), value), pattern
    assert f"{EVAL['n_images']} test faces" in demo


def test_the_demo_regional_rows_are_the_committed_metrics():
    demo = section("The demo")
    for key, row in (("style_control_regional", "shading / hair / background"), ("kid", "seams")):
        line = next(ln for ln in demo.splitlines() if ln.startswith("| ") and row in ln)
        cells = [c.strip() for c in line.strip("|").split("|")[1:3]]
        for cell, metrics in zip(cells, (EVAL, STUDENT), strict=True):
            if key == "kid":
                values = [metrics["kid_regional"], metrics["kid_styled"]]
            else:
                values = [metrics[key][f] for f in ("shading", "hair", "background")]
            shown = [v.strip() for v in cell.split("/")]
            assert all(map(shows, shown, values)), (row, shown, values)


def test_params_yaml_quotes_the_measured_run_time():
    row = next(ln for ln in section("Development").splitlines() if "`make repro` on a fresh" in ln)
    minutes, seconds = map(int, re.search(r"\| (\d+) min (\d+) s", row).groups())
    quoted = int(re.search(r"in about (\d+) minutes", PARAMS_TEXT).group(1))
    assert quoted == round(minutes + seconds / 60), "params.yaml's header vs docs/results.md"


def test_quoted_sizes_are_the_parameters():
    readme, results = " ".join(README.split()), " ".join(RESULTS.split())  # lines rewrapped
    demo, full = PARAMS["sample"], FULL["sample"]
    assert f"{demo['n_images']:,} procedural anime faces" in readme
    assert f"at {demo['image_size']} px" in readme
    assert f"{full['n_images']:,} real faces at {full['image_size']} px" in readme
    epochs = FULL["train"]["epochs"]
    assert f"{full['n_images']:,} images at {full['image_size']} px, {epochs} epochs" in PARAMS_TEXT
    train_images = round(full["n_images"] * (1 - full["test_fraction"]))
    assert f"{epochs} epochs of {train_images:,} images" in results
