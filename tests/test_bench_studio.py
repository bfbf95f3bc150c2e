"""bench/studio.py's choices: which rows run, and the stroke rows' ratios (no timings asserted)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from conftest import ROOT

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_studio", ROOT / "bench/studio.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_bf16_rows_run_only_with_native_bf16(bench, monkeypatch):
    monkeypatch.setattr(bench, "native_bf16", lambda device: False)
    assert "natively" in bench.skip_reason(CPU, "torch", "bf16")
    assert "natively" in bench.skip_reason(CPU, "openvino", "bf16")
    assert bench.skip_reason(CPU, "torch", "fp32") is None
    monkeypatch.setattr(bench, "native_bf16", lambda device: True)
    assert bench.skip_reason(CPU, "torch", "bf16") is None


def test_bf16_rows_are_skipped_under_an_avx2_cap(bench, monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert bench.skip_reason(CPU, "torch", "bf16") is not None


def test_requests_per_row_fit_the_time(bench):
    assert bench.count_for(10.0, 0, 20.0) == bench.MIN_REQUESTS  # a slow face: the minimum
    assert bench.count_for(0.001, 0, 20.0) == bench.MAX_REQUESTS
    assert bench.count_for(1.0, 0, 10.0) == 10
    assert bench.count_for(1.0, 7, 10.0) == 7  # --requests wins


def row(model: str, kind: str, runtime: str, precision: str, p50: float, **extra) -> dict:
    what = {"preset": "full", "model": model, "device": "cpu", "kind": kind, "p50_ms": p50}
    return what | {"runtime": runtime, "precision": precision} | extra


def test_stroke_ratios_use_the_same_runs_fp32_rows(bench):
    rows = [
        row("student", "full", "torch", "fp32", 300.0),
        row("student", "full", "openvino", "fp32", 150.0),
        row("student", "full", "openvino", "bf16", 40.0),  # not what fp32 strokes are held to
        row("student", "stroke", "torch", "fp32", 75.0, stroke=0.03),
    ]
    (r,) = bench.stroke_ratios(rows)
    assert r["over_torch_fp32_full"] == 0.25
    assert r["over_fastest_fp32_full"] == 0.5 and r["fastest_full"] == "openvino fp32"


def test_recomputed_reads_the_header(bench):
    sample = bench.Sample(1.0, 1.0, 1.0, "incremental; changed=0.0300; recomputed=0.2500")
    assert bench.recomputed(sample) == 0.25
    assert bench.recomputed(bench.Sample(1.0, 1.0, 1.0, "full; changed=1; recomputed=1")) == 1.0
