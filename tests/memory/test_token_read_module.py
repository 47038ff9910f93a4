"""``read: token`` through NeuralMemory and a variant (float32): rules agree, causality, prefill + decode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from memory_utils import max_rel_err
from titans_memory import (
    MLPMemory,
    MLPMemoryConfig,
    MomentumScanRule,
    NeuralMemory,
    NeuralMemoryConfig,
    SequentialRule,
)
from variants_utils import tiny

D = 16


def make(rule, *, depth=2, heads=2, **cfg):
    config = NeuralMemoryConfig(num_heads=heads, **cfg)
    model = MLPMemory(MLPMemoryConfig(depth=depth))
    return NeuralMemory(config, d_model=D, rngs=nnx.Rngs(0), update_rule=rule, memory_model=model)


_CALL = nnx.jit(lambda m, x, s: m(x, s))


def call(m, x, state=None):
    """A jitted module call; one jit for every test, so the same module on the same shapes compiles once."""
    return _CALL(m, x, state)


def inputs(T, B=2, seed=1):
    return jax.random.normal(jax.random.key(seed), (B, T, D))


@pytest.mark.parametrize("depth,per_channel", [(1, True), (2, False)])
def test_module_token_read_rules_agree_in_float32(depth, per_channel):
    x = inputs(19)
    seq = make(SequentialRule(chunk_size=4, read="token"), depth=depth, alpha_per_channel=per_channel)
    par = make(MomentumScanRule(chunk_size=4, read="token"), depth=depth, alpha_per_channel=per_channel)
    chunk = make(MomentumScanRule(chunk_size=4, read="chunk"), depth=depth, alpha_per_channel=per_channel)
    three = nnx.jit(lambda a, b, c, x: (a(x), b(x), c(x)))  # one compiled program for the three calls
    (y_s, st_s), (y_p, st_p), (y_chunk, _) = three(seq, par, chunk, x)
    assert max_rel_err(y_s, y_p) < 1e-5
    assert max_rel_err(st_s.rule, st_p.rule) < 1e-5
    assert max_rel_err(y_p, y_chunk) > 1e-3  # the option changes the read


def test_module_token_read_gradients_agree_across_rules():
    x = inputs(11)
    loss = lambda m: jnp.sum(m(x)[0] ** 2)  # noqa: E731
    models = make(SequentialRule(chunk_size=4, read="token")), make(MomentumScanRule(chunk_size=4, read="token"))
    g_s, g_p = nnx.jit(lambda a, b: (nnx.grad(loss)(a), nnx.grad(loss)(b)))(*models)  # one compiled program
    assert max_rel_err(nnx.to_pure_dict(g_s), nnx.to_pure_dict(g_p)) < 1e-5


@pytest.mark.parametrize("read", ["chunk", "token"])
def test_causal_and_where_the_read_moves(read):
    """∂y_t/∂x_s == 0 exactly for s > t, across chunk boundaries. Without the convolution (which mixes
    x_{t−3..t} into q_t) the earlier tokens of t's own chunk reach y_t only through the token read."""
    chunk, T = 4, 10
    m, x = make(MomentumScanRule(chunk_size=chunk, read=read), conv_kernel=0), inputs(T, B=1)
    # forward mode: the same matrix as jacrev, and its program compiles in about two thirds of the time
    jac = jax.jit(jax.jacfwd(lambda x: m(x)[0]))(x)[0, :, :, 0, :, :]  # T×D×T×D
    dep = np.asarray(jnp.max(jnp.abs(jac), axis=(1, 3)))  # out t × in s
    assert np.all(dep[np.triu_indices(T, k=1)] == 0.0)
    assert np.all(np.diag(dep) > 0) and dep[9, 0] > 0
    same_chunk = [(t, s) for t in range(T) for s in range(t) if t // chunk == s // chunk]
    within = np.array([dep[t, s] for t, s in same_chunk])
    assert np.all(within > 0) if read == "token" else np.all(within == 0.0)


def test_module_token_read_split_and_token_by_token_equal_one_call():
    m, x = make(MomentumScanRule(chunk_size=3, read="token")), inputs(8)
    y, state = call(m, x)
    # two pieces of 4 tokens from explicit states: one compiled program; the second starts mid-chunk (pos 1) and
    # crosses a chunk boundary
    y1, mid = call(m, x[:, :4], m.init_state(2))
    y2, state2 = call(m, x[:, 4:], mid)
    assert np.all(np.asarray(mid.rule.pos) == 1)
    assert max_rel_err(y, jnp.concatenate([y1, y2], axis=1)) < 1e-5
    assert max_rel_err(state, state2) < 1e-5
    state, ys = m.init_state(2), []
    for t in range(8):
        yt, state = call(m, x[:, t : t + 1], state)
        ys.append(yt)
    assert max_rel_err(y, jnp.concatenate(ys, axis=1)) < 1e-5


@pytest.mark.parametrize("variant", ["mag", "mac"])
def test_variant_with_token_read_prefill_and_decode_equal_the_full_pass(variant):
    """Steps large enough (θ ≈ 0.2) that the token read visibly changes the logits. One layer (each layer
    carries its own state; two layers handing caches on, with the default read: token, are
    tests/variants/test_variants.py::test_incremental_decoding_equals_full_pass)."""
    memory = {
        "num_heads": 2,
        "rule": {"name": "momentum_scan", "chunk_size": 2, "read": "token"},  # MAC: segment 4 % 2 = 0
        "model": {"name": "mlp", "depth": 2, "expansion": 2.0},
        "max_lr": 0.5,
        "init_lr": 0.2,
    }
    model = tiny(variant, layers=1, memory=memory)
    chunk_rule = {"name": "momentum_scan", "chunk_size": 2, "read": "chunk"}
    chunk_model = tiny(variant, layers=1, memory={**memory, "rule": chunk_rule})
    toks = np.asarray(jax.random.randint(jax.random.key(1), (2, 11), 0, 32))  # numpy: slicing compiles nothing
    # one compiled program for both full passes and the prefill, which ends mid-chunk and mid-segment
    full, full_chunk, (logits, cache) = nnx.jit(lambda a, b, t, p: (a(t), b(t), a.prefill(p)))(
        model, chunk_model, toks, toks[:, :5]
    )
    assert float(jnp.max(jnp.abs(full - full_chunk))) > 1e-4
    decode = nnx.jit(lambda m, t, c: m.decode(t, c))
    pieces = [logits]
    for t in range(5, 11):
        step, cache = decode(model, toks[:, t : t + 1], cache)
        pieces.append(step)
    assert max_rel_err(full, jnp.concatenate(pieces, axis=1)) < 1e-4  # a whole model: the standard tolerance
