"""A rule declares the gates it reads (``gates``); NeuralMemory creates only those and passes zeros for the others
(no momentum: η = 0), and refuses ``alpha_per_channel`` for a rule that says ``alpha_per_channel = False``."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from titans_memory import NeuralMemory, NeuralMemoryConfig
from titans_memory.rules.momentum_scan import MomentumScanRule


class NoMomentumRule(MomentumScanRule):
    gates = ("theta", "alpha")


class OneAlphaRule(MomentumScanRule):
    alpha_per_channel = False


def test_an_undeclared_gate_is_not_created_and_reads_as_zero():
    cfg = NeuralMemoryConfig(num_heads=2)
    full = NeuralMemory(cfg, d_model=8, rngs=nnx.Rngs(0), update_rule=MomentumScanRule(chunk_size=2))
    lean = NeuralMemory(cfg, d_model=8, rngs=nnx.Rngs(0), update_rule=NoMomentumRule(chunk_size=2))
    assert lean.gate_eta is None and full.gate_eta is not None
    assert "gate_eta" not in nnx.to_pure_dict(nnx.state(lean, nnx.Param))
    # the same weights, and η ≡ 0 in the full memory: the outputs agree
    nnx.update(lean, nnx.filter_state(nnx.state(full, nnx.Param), lambda path, _: "gate_eta" not in path))
    full.gate_eta.kernel[...] = jnp.zeros_like(full.gate_eta.kernel[...])
    full.gate_eta.bias[...] = jnp.full_like(full.gate_eta.bias[...], -1e4)  # σ(−1e4) = 0
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 7, 8)), jnp.float32)
    with_eta = NeuralMemory(cfg, d_model=8, rngs=nnx.Rngs(0), update_rule=MomentumScanRule(chunk_size=2))
    y_lean, y_full, y_eta = nnx.jit(lambda *m: [mem(x)[0] for mem in m])(lean, full, with_eta)  # one program
    np.testing.assert_allclose(y_lean, y_full, rtol=1e-5, atol=1e-6)
    assert not np.allclose(y_lean, y_eta, atol=1e-6)  # momentum matters: the check can fail


def test_a_rule_without_per_channel_alpha_refuses_the_option():
    cfg = NeuralMemoryConfig(num_heads=2, alpha_per_channel=True, model={"name": "mlp", "depth": 1})
    with pytest.raises(ValueError, match="takes one α per token"):
        NeuralMemory(cfg, d_model=8, rngs=nnx.Rngs(0), update_rule=OneAlphaRule())
