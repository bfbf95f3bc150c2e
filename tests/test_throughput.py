"""Throughput and MFU for the progress bar: counted on copies, so training is untouched."""

from __future__ import annotations

import time

import torch

from spade.config import TrainConfig
from spade.dist import DistEnv
from spade.throughput import Throughput, peak_tflops, step_flops
from spade.train_state import build_train_state

from conftest import TINY

CPU = torch.device("cpu")


def test_counting_the_flops_leaves_the_weights_the_statistics_and_the_rng_alone():
    torch.manual_seed(0)
    cfg = TrainConfig(**TINY)
    state = build_train_state(cfg, 32, DistEnv())
    before = {k: v.clone() for k, v in state.state_dict()["D"].items()}
    rng = torch.get_rng_state()
    assert step_flops(state, cfg, 32, CPU) > 0
    assert torch.equal(torch.get_rng_state(), rng)
    after = state.state_dict()["D"]
    assert all(torch.equal(before[k], after[k]) for k in before)  # spectral-norm vectors too


def test_mfu_only_where_the_peak_is_known():
    assert peak_tflops(CPU, bf16=True) is None
    meter = Throughput(flops_per_image=2e9, peak_tflops=None)
    meter.update(10)
    assert set(meter.summary()) == {"img_s", "gflop_s"}
    meter = Throughput(flops_per_image=2e9, peak_tflops=1.0)
    meter.update(10)
    assert set(meter.summary()) == {"img_s", "gflop_s", "mfu"} and meter.summary()["mfu"][-1] == "%"


def test_a_small_model_on_a_big_gpu_shows_its_mfu_not_zero():
    """A tiny network on an H200 reaches a few GFLOP/s of 989 TFLOP/s: the digits must show."""
    start = time.perf_counter() - 1.0  # 100 images in one second: 5 GFLOP/s
    meter = Throughput(flops_per_image=5e7, peak_tflops=989.4, start=start)
    meter.update(100)
    mfu = float(meter.summary()["mfu"].rstrip("%"))
    assert 0.0004 < mfu < 0.0006  # 5e9 / 989.4e12 = 0.000505 %
