"""Bounds on the gates. The floor on the forget gate (``NeuralMemoryConfig.min_forget``):
α_t = α_min + (1 − α_min)·σ(x_t w_α + b_α), starting at ``init_forget``; α never falls below the floor whatever the
gate's input. The ceiling on the momentum gate (``max_momentum``): η_t = η_max·σ(x_t w_η + b_η), starting at
``init_momentum``; η never exceeds the ceiling, and the default (1) is the paper's gate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from pydantic import ValidationError
from titans_memory import MLPMemory, MLPMemoryConfig, MomentumScanRule, NeuralMemory, NeuralMemoryConfig

D, B, T = 8, 2, 5

diagnose = nnx.jit(lambda m, x: m.diagnostics(x, None))


def make(**cfg) -> NeuralMemory:
    return NeuralMemory(
        NeuralMemoryConfig(num_heads=2, **cfg),
        d_model=D,
        rngs=nnx.Rngs(0),
        update_rule=MomentumScanRule(chunk_size=3),
        memory_model=MLPMemory(MLPMemoryConfig(depth=1)),
    )


def inputs() -> jax.Array:
    return jax.random.normal(jax.random.key(1), (B, T, D))


@pytest.mark.parametrize(
    "gate, config, start",
    [
        ("alpha", dict(init_forget=0.05), 0.05),
        ("alpha", dict(init_forget=0.05, min_forget=0.02), 0.05),
        ("eta", dict(init_momentum=0.9), 0.9),
        ("eta", dict(init_momentum=0.9, max_momentum=0.95), 0.9),
    ],
)
def test_a_fresh_memory_starts_at_its_init_value_within_the_bounds(gate, config, start):
    m = make(**config)
    layer = getattr(m, f"gate_{gate}")
    layer.kernel[...] = jnp.zeros_like(layer.kernel[...])  # the gate then depends on its bias alone
    stats = diagnose(m, inputs())
    for stat in (f"{gate}_min", f"{gate}_max"):
        assert float(stats[stat]) == pytest.approx(start, rel=1e-5), stat


def test_alpha_is_the_floor_plus_the_scaled_gate_map():
    m, x = make(init_forget=0.05, min_forget=0.02, alpha_per_channel=True), inputs()
    stats = diagnose(m, x)
    z = np.asarray(x @ m.gate_alpha.kernel[...] + m.gate_alpha.bias[...])
    alpha = 0.02 + 0.98 / (1 + np.exp(-z))
    for stat, fn in (("mean", np.mean), ("min", np.min), ("max", np.max)):
        assert float(stats[f"alpha_{stat}"]) == pytest.approx(float(fn(alpha)), rel=1e-5), stat


def test_alpha_never_falls_below_the_floor():
    m = make(init_forget=0.05, min_forget=0.02)
    m.gate_alpha.bias[...] = jnp.full_like(m.gate_alpha.bias[...], -200.0)  # σ(·) = 0 in float32
    stats = diagnose(m, inputs())
    assert float(stats["alpha_min"]) == pytest.approx(0.02, rel=1e-6)
    assert float(stats["alpha_max"]) == pytest.approx(0.02, rel=1e-6)
    without = make(init_forget=0.05)
    without.gate_alpha.bias[...] = jnp.full_like(without.gate_alpha.bias[...], -200.0)
    assert float(diagnose(without, inputs())["alpha_max"]) < 1e-30  # the floor is what kept it up


@pytest.mark.parametrize("init, floor", [(0.01, 0.01), (0.01, 0.05)])
def test_init_forget_must_lie_above_the_floor(init, floor):
    with pytest.raises(ValidationError, match="init_forget must be > min_forget"):
        NeuralMemoryConfig(init_forget=init, min_forget=floor)


def test_the_floor_lies_in_zero_one():
    for bad in (-0.1, 1.0):
        with pytest.raises(ValidationError, match="min_forget"):
            NeuralMemoryConfig(min_forget=bad)


def test_eta_is_the_ceiling_times_the_gate_map():
    m, x = make(max_momentum=0.95), inputs()
    stats = diagnose(m, x)
    z = np.asarray(x @ m.gate_eta.kernel[...] + m.gate_eta.bias[...])
    eta = 0.95 / (1 + np.exp(-z))
    for stat, fn in (("mean", np.mean), ("min", np.min), ("max", np.max)):
        assert float(stats[f"eta_{stat}"]) == pytest.approx(float(fn(eta)), rel=1e-5), stat


def test_eta_never_exceeds_the_ceiling():
    m = make(max_momentum=0.95)
    m.gate_eta.bias[...] = jnp.full_like(m.gate_eta.bias[...], 200.0)  # σ(·) = 1 in float32
    assert float(diagnose(m, inputs())["eta_max"]) == pytest.approx(0.95, rel=1e-6)
    without = make()
    without.gate_eta.bias[...] = jnp.full_like(without.gate_eta.bias[...], 200.0)
    assert float(diagnose(without, inputs())["eta_max"]) == 1.0  # the ceiling is what kept it down


def test_the_default_ceiling_leaves_the_memory_unchanged():
    x = inputs()
    y_default, _ = make()(x)
    y_one, _ = make(max_momentum=1.0)(x)
    np.testing.assert_array_equal(np.asarray(y_default), np.asarray(y_one))


@pytest.mark.parametrize("init, ceiling", [(0.9, 0.9), (0.9, 0.8)])
def test_init_momentum_must_lie_below_the_ceiling(init, ceiling):
    with pytest.raises(ValidationError, match="init_momentum must be < max_momentum"):
        NeuralMemoryConfig(init_momentum=init, max_momentum=ceiling)


def test_the_ceiling_lies_in_zero_one():
    for bad in (0.0, 1.01):
        with pytest.raises(ValidationError, match="max_momentum"):
            NeuralMemoryConfig(max_momentum=bad)
