"""The example plugin's SwiGLU memory: protocol, shapes, determinism, gradients, registration."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from pydantic import ValidationError
from titans_core import MemoryModel
from titans_swiglu_memory import SwiGLUMemory, SwiGLUMemoryConfig, register_components

DIM = 8


def test_satisfies_the_memory_model_protocol_and_has_the_documented_shapes():
    memory = SwiGLUMemory(SwiGLUMemoryConfig(expansion=1.5))
    assert isinstance(memory, MemoryModel) and memory.channel_axis_ok is False
    params = memory.init(jax.random.key(0), DIM)
    assert {k: v.shape for k, v in params.items()} == {"w_gate": (8, 12), "w_up": (8, 12), "w_out": (12, 8)}
    assert all(v.dtype == jnp.float32 for v in params.values())
    y = memory.apply(params, jnp.ones((5, DIM)))
    assert y.shape == (5, DIM) and y.dtype == jnp.float32
    assert memory.apply(params, jnp.ones((5, DIM), jnp.bfloat16)).dtype == jnp.bfloat16


def test_init_is_deterministic_in_the_key_and_apply_is_pure():
    memory = SwiGLUMemory()
    a, b = memory.init(jax.random.key(1), DIM), memory.init(jax.random.key(1), DIM)
    c = memory.init(jax.random.key(2), DIM)
    assert all(jnp.array_equal(a[k], b[k]) for k in a)
    assert not jnp.allclose(a["w_gate"], c["w_gate"])
    x = jax.random.normal(jax.random.key(3), (4, DIM))
    assert jnp.array_equal(memory.apply(a, x), jax.jit(memory.apply)(a, x))


def test_formula_and_near_identity_start():
    memory = SwiGLUMemory()
    params = memory.init(jax.random.key(0), DIM)
    x = jax.random.normal(jax.random.key(4), (6, DIM))
    expected = x + (jax.nn.silu(x @ params["w_gate"]) * (x @ params["w_up"])) @ params["w_out"]
    assert jnp.allclose(memory.apply(params, x), expected, atol=1e-6)
    relative_change = jnp.linalg.norm(memory.apply(params, x) - x) / jnp.linalg.norm(x)
    assert 0 < relative_change < 0.2  # out_init_scale 0.1: close to, but not exactly, the identity
    plain = SwiGLUMemory(SwiGLUMemoryConfig(residual=False))
    assert jnp.allclose(plain.apply(params, x), expected - x, atol=1e-6)


def test_gradients_reach_every_parameter():
    memory = SwiGLUMemory()
    params = memory.init(jax.random.key(0), DIM)
    k, v = jax.random.normal(jax.random.key(5), (2, 7, DIM))

    def loss(p):  # the associative memory loss ‖M(k) − v‖² (paper Eq 12)
        return jnp.sum(jnp.square(memory.apply(p, k) - v))

    grads = jax.jit(jax.grad(loss))(params)  # one compiled program (eager: op by op)
    for name, g in grads.items():
        assert g.shape == params[name].shape
        assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0, name
    stepped = jax.tree.map(lambda p, g: p - 0.01 * g, params, grads)
    jitted = jax.jit(loss)
    assert jitted(stepped) < jitted(params)


def test_config_validation_and_hidden_width():
    assert SwiGLUMemory(SwiGLUMemoryConfig(expansion=3)).hidden_width(DIM) == 24
    assert SwiGLUMemory(SwiGLUMemoryConfig(expansion=0.01)).hidden_width(DIM) == 1
    with pytest.raises(ValidationError):
        SwiGLUMemoryConfig(expansion=0)
    with pytest.raises(ValidationError):
        SwiGLUMemoryConfig(expansoin=2)


def test_hook_registers_the_swiglu_memory_model():
    calls = []
    register_components(register=lambda *args: calls.append(args))
    assert calls == [("memory_model", "swiglu", SwiGLUMemoryConfig, SwiGLUMemory)]
