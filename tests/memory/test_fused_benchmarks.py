"""The fused rule's benchmark tooling: the FLOP count from the shapes, and the GPU check's CPU dry run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from memory_throughput import model_flops_per_token  # noqa: E402


def test_model_flops_per_token_from_the_shapes():
    """Width 256, 4 heads × 64: projections 2·256·(3+1+1)·256; per head and layer (i, o) 2io for the read, the
    prediction and two weighted gradient sums, plus 2io of backward rows for every layer after the first."""
    proj = 2 * 256 * 5 * 256
    assert model_flops_per_token(256, 4, 1) == proj + 4 * (2 * 64 * 64 * 4)
    depth2 = 2 * 64 * 256 * 4 + 2 * 256 * 64 * 5
    assert model_flops_per_token(256, 4, 2) == proj + 4 * depth2
    assert 5e6 < 3 * model_flops_per_token(256, 4, 2) < 6e6  # the "about 6 MFLOP per token" fwd+bwd


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path):
    """``gpu_check.py --dry-run`` runs end to end on CPU: a row per rule and N, the attention yardstick, the
    measured peak, the targets block, and the JSON where asked."""
    from gpu_check import main

    out = tmp_path / "gpu.json"
    result = main(["--dry-run", "--skip-tests", "--lengths", "16", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["meta"]["dry_run"] and saved["meta"]["matmul_peak_flops"] > 0
    rules = {r["rule"] for r in result["rows"]}
    assert rules == {"sequential", "momentum_scan", "fused", "dot_product_attention"}
    assert all(r["fwd_tok_s"] > 0 for r in result["rows"])
    assert "fused_over_momentum_scan" in saved["targets"]
