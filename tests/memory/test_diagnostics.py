"""Memory diagnostics (titans_memory.diagnostics): gates, update / surprise / read norms against hand-computed
values, the chunked pass equals the module's own call, and a memory that does not learn shows no update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from memory_utils import max_rel_err
from titans_memory import (
    DIAGNOSTIC_KEYS,
    MLPMemory,
    MLPMemoryConfig,
    MomentumScanRule,
    NeuralMemory,
    NeuralMemoryConfig,
    SequentialRule,
    memory_diagnostics,
)
from titans_memory.diagnostics import trace_chunks

D, B, CHUNK = 8, 2, 3


def make(rule=None, *, model=None, seed=0, **cfg):
    return NeuralMemory(
        NeuralMemoryConfig(num_heads=2, **cfg),
        d_model=D,
        rngs=nnx.Rngs(seed),
        update_rule=rule or MomentumScanRule(chunk_size=CHUNK),
        memory_model=model or MLPMemory(MLPMemoryConfig(depth=2, expansion=2.0)),
    )


def inputs(T, seed=1):
    return jax.random.normal(jax.random.key(seed), (B, T, D))


diagnose = nnx.jit(lambda m, x, s: m.diagnostics(x, s))
trace = nnx.jit(lambda m, x, s: trace_chunks(m, x, s))
call = nnx.jit(lambda m, x, s: m(x, s))


@pytest.fixture(scope="module")
def memory():
    """make() shared by the tests that do not change it: the jitted calls above compile once per module instance
    and shapes, so the tests that use this one share their programs."""
    return make()


def test_keys_are_finite_float32_scalars(memory):
    stats = diagnose(memory, inputs(7), None)
    assert sorted(stats) == sorted(DIAGNOSTIC_KEYS)
    for key, value in stats.items():
        assert value.shape == () and value.dtype == jnp.float32 and np.isfinite(value), key


def test_gates_equal_the_gate_maps():
    m, x = make(alpha_per_channel=True, model=MLPMemory(MLPMemoryConfig(depth=1))), inputs(5)
    stats = diagnose(m, x, None)
    lin = lambda g: np.asarray(x @ g.kernel[...] + g.bias[...])  # noqa: E731
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    theta, eta, alpha = 0.01 * sig(lin(m.gate_theta)), sig(lin(m.gate_eta)), sig(lin(m.gate_alpha))
    assert alpha.shape == (B, 5, 2 * D // 2)  # one α per head and channel
    for name, values in (("theta", theta), ("eta", eta), ("alpha", alpha)):
        for stat, fn in (("mean", np.mean), ("min", np.min), ("max", np.max)):
            assert float(stats[f"{name}_{stat}"]) == pytest.approx(float(fn(values)), rel=1e-5), (name, stat)


def _head_norm(tree):
    return np.sqrt(
        sum(np.sum(np.square(np.asarray(x)).reshape(x.shape[:2] + (-1,)), axis=-1) for x in jax.tree.leaves(tree))
    )


@pytest.mark.parametrize(
    "rule", [MomentumScanRule(chunk_size=CHUNK, read="chunk"), SequentialRule(chunk_size=CHUNK, read="chunk")]
)
def test_norms_equal_explicit_calls_chunk_by_chunk(rule):
    """Two whole chunks and a tail of one token: three explicit module calls with the carried state. With
    ``read: chunk`` the reads are explicit too: every token of a chunk reads its start weights."""
    m, x = make(rule), inputs(2 * CHUNK + 1)
    state, starts, updates, surprises = m.init_state(B), [], [], []
    for lo, hi in ((0, CHUNK), (CHUNK, 2 * CHUNK), (2 * CHUNK, 2 * CHUNK + 1)):
        starts.append(state.rule.start)
        _, new = call(m, x[:, lo:hi], state)
        updates.append(_head_norm(jax.tree.map(jnp.subtract, new.rule.memory, state.rule.memory)))
        surprises.append(_head_norm(new.rule.surprise))
        state = new
    # reads: each chunk's tokens read the weights at its start, y = M_{t'}(q)
    q, _ = m._query(m.qkv(x)[..., : 2 * (D // 2)], None)  # B×H×T×Dh
    read = jax.vmap(jax.vmap(m.memory_model.apply))
    y = jnp.concatenate(
        [
            read(s, q[:, :, lo:hi])
            for s, (lo, hi) in zip(starts, ((0, CHUNK), (CHUNK, 2 * CHUNK), (2 * CHUNK, 2 * CHUNK + 1)), strict=True)
        ],
        axis=2,
    )
    read_norms = np.linalg.norm(np.asarray(y), axis=-1)
    stats = diagnose(m, x, None)
    expected = {"update": np.stack(updates), "surprise": np.stack(surprises), "read": read_norms}
    for name, values in expected.items():
        assert float(stats[f"{name}_norm_mean"]) == pytest.approx(float(values.mean()), rel=1e-4), name
        assert float(stats[f"{name}_norm_max"]) == pytest.approx(float(values.max()), rel=1e-4), name
    assert float(stats["update_norm_mean"]) > 1e-4  # the default memory is written


@pytest.mark.parametrize("prefix", [0, 2, 3])
def test_chunked_pass_equals_the_module_call(memory, prefix):
    """From a fresh state or one left mid-chunk (prefix 2) or on a boundary (prefix 3): same final state."""
    m, x = memory, inputs(prefix + 8)
    state = call(m, x[:, :prefix], None)[1] if prefix else None
    tr = trace(m, x[:, prefix:], state)
    _, expected = call(m, x[:, prefix:], state)
    assert max_rel_err(expected.rule, tr.rule_state) < 1e-5
    assert tr.update_norm_NxBxH.shape == (3, B, 2) and tr.y_BxHxTxDh.shape == (B, 2, 8, D // 2)


def test_the_configured_objective_drives_the_traced_writes(memory):
    """The chunk-by-chunk pass calls the rule as the module does: with the memory's objective (huber here)."""
    m, x = make(objective={"name": "huber", "delta": 0.05}), inputs(9)
    tr = trace(m, x, None)
    assert max_rel_err(call(m, x, None)[1].rule, tr.rule_state) < 1e-5
    l2_state = call(memory, x, None)[1].rule  # the same weights with ℓ2: the writes differ
    assert max_rel_err(l2_state.memory, tr.rule_state.memory) > 1e-3


def test_plugin_memory_model():
    """Any memory model works (the swiglu plugin's)."""
    from titans_swiglu_memory.memory import SwiGLUMemory

    m, x = make(model=SwiGLUMemory()), inputs(7)
    tr = trace(m, x, None)
    assert max_rel_err(call(m, x, None)[1].rule, tr.rule_state) < 1e-5
    assert float(diagnose(m, x, None)["update_norm_max"]) > 0


def test_a_memory_that_does_not_learn_shows_no_update():
    """θ ≈ 0 and α ≈ 0 (gate biases −30): nothing is written; θ ≈ 0 alone: only forgetting, ‖ΔM‖ ≈ α‖M‖."""
    m, x = make(), inputs(9)
    for gate in (m.gate_theta, m.gate_alpha):
        gate.kernel[...] = jnp.zeros_like(gate.kernel[...])
        gate.bias[...] = jnp.full_like(gate.bias[...], -30.0)
    stats = diagnose(m, x, None)
    assert float(stats["theta_max"]) < 1e-14 and float(stats["alpha_max"]) < 1e-12
    assert float(stats["update_norm_max"]) < 1e-9 and float(stats["surprise_norm_max"]) < 1e-9
    assert float(stats["read_norm_mean"]) > 0.1  # still read
    m.gate_alpha.bias[...] = jnp.full_like(m.gate_alpha.bias[...], np.log(0.01 / 0.99))  # α = 0.01 exactly
    stats = diagnose(m, x, None)
    m0 = _head_norm(jax.tree.map(lambda a: a[None], m.initial_params()))  # 1×H
    first = m0 * (1 - 0.99**CHUNK)  # ‖M_0 − 0.99^b M_0‖ for the first chunk; later chunks are smaller
    assert float(stats["update_norm_max"]) == pytest.approx(float(first.max()), rel=1e-4)
    assert float(stats["surprise_norm_max"]) < 1e-9


def test_rejects_an_empty_sequence():
    with pytest.raises(ValueError, match="at least one token"):
        memory_diagnostics(make(), jnp.zeros((B, 0, D)))
