"""The fused rule's benchmark tooling: the FLOP count from the shapes, and the GPU check's CPU dry run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from memory_throughput import add_flops, chunk_matmul_peak_flops, model_flops_per_token  # noqa: E402


def test_model_flops_per_token_from_the_shapes():
    """Width 256, 4 heads × 64: projections 2·256·(3+1+1)·256; per head and layer (i, o) 2io for the read, the
    prediction and two weighted gradient sums, plus 2io of backward rows for every layer after the first."""
    proj = 2 * 256 * 5 * 256
    assert model_flops_per_token(256, 4, 1) == proj + 4 * (2 * 64 * 64 * 4)
    depth2 = 2 * 64 * 256 * 4 + 2 * 256 * 64 * 5
    assert model_flops_per_token(256, 4, 2) == proj + 4 * depth2
    assert 5e6 < 3 * model_flops_per_token(256, 4, 2) < 6e6  # the "about 6 MFLOP per token" fwd+bwd


def test_each_row_is_a_fraction_of_both_measured_peaks():
    """Model FLOP/s over the 1024³ peak and over the per-chunk product's peak; forward+backward counts 3×
    forward; a row without forward+backward keeps None."""
    a = SimpleNamespace(d_model=256, heads=4, depth=2)
    fwd = model_flops_per_token(256, 4, 2)
    rows = [{"fwd_tok_s": 1000.0, "fwd_bwd_tok_s": 500.0}, {"fwd_tok_s": 2000.0, "fwd_bwd_tok_s": None}]
    add_flops(rows, a, peak=4e11, shape_peak=1e11)
    assert rows[0]["fwd_peak_fraction"] == pytest.approx(1000 * fwd / 4e11, rel=1e-12)
    assert rows[0]["fwd_chunk_peak_fraction"] == pytest.approx(1000 * fwd / 1e11, rel=1e-12)
    assert rows[0]["fwd_bwd_chunk_peak_fraction"] == pytest.approx(500 * 3 * fwd / 1e11, rel=1e-12)
    assert rows[1]["fwd_bwd_peak_fraction"] is None and rows[1]["fwd_bwd_chunk_peak_fraction"] is None


def test_chunk_matmul_peak_is_measured_at_the_memorys_shapes():
    """A positive, finite FLOP/s for tiny shapes (the function runs and counts 2·n·G·b·D_h·hidden per call)."""
    a = SimpleNamespace(d_model=8, heads=2, depth=2, batch=1, chunk=2)
    flops = chunk_matmul_peak_flops(1, a, n_chunks=2)
    assert 0 < flops < float("inf")


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path):
    """``gpu_check.py --dry-run`` runs end to end on CPU: a row per rule and N, the attention yardstick, the
    measured peak, the targets block, the backward kernel's gradient check, and the JSON where asked."""
    from gpu_check import main

    out = tmp_path / "gpu.json"
    # --depth 1: the matrix memory's kernels compile in a fraction of the two-layer MLP's time in interpret mode, and
    # the depth only picks the memory model (gpu_check's code is the same for both); the depth-2 kernels' values and
    # gradients are checked in test_fused.py and test_fused_backward.py, its FLOP counts in the tests above
    result = main(["--dry-run", "--skip-tests", "--depth", "1", "--lengths", "16", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["meta"]["dry_run"] and saved["meta"]["matmul_peak_flops"] > 0
    assert saved["meta"]["setting"]["depth"] == 1 == saved["backward_check"]["depth"]
    rules = {r["rule"] for r in result["rows"]}
    assert rules == {"sequential", "momentum_scan", "fused", "dot_product_attention"}
    assert all(r["fwd_tok_s"] > 0 for r in result["rows"])
    assert "fused_over_momentum_scan" in saved["targets"]
    assert saved["backward_check"]["met"] and saved["backward_check"]["max_rel_err"] < 1e-4  # the backward kernel
