"""NeuralMemory (the NNX module): state splitting, causality, rule equivalence, outer gradients, options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from memory_utils import max_rel_err
from titans_memory import MLPMemory, MLPMemoryConfig, MomentumScanRule, NeuralMemory, NeuralMemoryConfig, SequentialRule

D = 16


def make(rule=None, *, heads=2, depth=2, chunk=4, seed=0, **cfg):
    rule = rule or MomentumScanRule(chunk_size=chunk)
    config = NeuralMemoryConfig(num_heads=heads, **cfg)
    return NeuralMemory(
        config, d_model=D, rngs=nnx.Rngs(seed), update_rule=rule, memory_model=MLPMemory(MLPMemoryConfig(depth=depth))
    )


_CALL = nnx.jit(lambda m, x, s: m(x, s))


def call(m, x, state=None):
    """A jitted module call (one compilation instead of op-by-op dispatch). One jit shared by every test: the same
    module instance called again on the same shapes reuses its compiled program (a new instance retraces: its
    graph differs, e.g. by its objective object)."""
    return _CALL(m, x, state)


_BOTH = nnx.jit(lambda a, b, x: (a(x), b(x)))  # two modules on the same input: one compiled program


@pytest.fixture(scope="module")
def memory():
    """make() shared by the tests that only call it (none changes its parameters)."""
    return make()


def _loss(x):
    return lambda m: jnp.sum(m(x)[0] ** 2)


@pytest.fixture(scope="module")
def grads(memory):
    """Outer gradients (sum y², 11 tokens: two chunks and a 3-token tail) of momentum_scan's module and of the same
    module with the sequential rule, from one compiled program."""
    grad = nnx.grad(_loss(inputs(11)))
    return nnx.jit(lambda a, b: (grad(a), grad(b)))(memory, make(SequentialRule(chunk_size=4)))


def inputs(T, B=2, seed=1):
    return jax.random.normal(jax.random.key(seed), (B, T, D))


@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("depth", [1, 3])
def test_module_rules_agree(heads, depth):
    x = inputs(19)
    seq = make(SequentialRule(chunk_size=4), heads=heads, depth=depth)
    par = make(MomentumScanRule(chunk_size=4), heads=heads, depth=depth)
    (y_s, st_s), (y_p, st_p) = _BOTH(seq, par, x)
    assert max_rel_err(y_s, y_p) < 1e-5
    assert max_rel_err(st_s.rule, st_p.rule) < 1e-5


def test_module_gradients_agree_across_rules(grads):
    g_p, g_s = grads
    assert max_rel_err(nnx.to_pure_dict(g_s), nnx.to_pure_dict(g_p)) < 1e-4


def test_split_state_equals_one_call(memory):
    """One stream cut after the first token only, on a chunk boundary (4) and mid-chunk (17), chunk 4: pieces that
    start fresh, mid-chunk (pos 1, twice: one ends on a boundary) and on a boundary with a carried state; the
    outputs and the final state equal one call."""
    x = inputs(20)
    y, state = call(memory, x)
    state2, ys = None, []
    for a, b in ((0, 1), (1, 4), (4, 17), (17, 20)):
        y_piece, state2 = call(memory, x[:, a:b], state2)
        ys.append(y_piece)
    assert max_rel_err(y, jnp.concatenate(ys, axis=1)) < 1e-5
    assert max_rel_err(state, state2) < 1e-5


def test_token_by_token_equals_one_call():
    m, x = make(chunk=3), inputs(8, B=1)
    y, _ = call(m, x)
    state, ys = m.init_state(1), []
    for t in range(8):
        yt, state = call(m, x[:, t : t + 1], state)
        ys.append(yt)
    assert max_rel_err(y, jnp.concatenate(ys, axis=1)) < 1e-5


@pytest.mark.parametrize("chunk", [1, 4])
def test_causal(chunk):
    """d y_t / d x_s == 0 exactly for s > t, across chunk boundaries."""
    m, x = make(chunk=chunk, heads=2), inputs(10, B=1)
    jac = jax.jit(jax.jacrev(lambda x: m(x)[0]))(x)[0, :, :, 0, :, :]  # T×D×T×D
    dep = np.asarray(jnp.max(jnp.abs(jac), axis=(1, 3)))  # out t × in s
    assert np.all(dep[np.triu_indices(10, k=1)] == 0.0)
    assert np.all(np.diag(dep) > 0) and dep[9, 0] > 0  # and the past does matter


def test_outer_gradients_reach_every_parameter(grads):
    """The outer loss back-propagates through the inner updates to W_K, W_V, W_Q, the gates and M_0."""
    for path, g in nnx.to_flat_state(grads[0]):  # momentum_scan's module
        assert float(jnp.max(jnp.abs(g[...]))) > 0, path


def test_learned_init_vs_fixed_init_and_determinism():
    x = inputs(6)
    learned = make()
    assert "memory_init" in nnx.to_pure_dict(nnx.state(learned, nnx.Param))
    fixed = make(learn_init=False)
    assert "memory_init" not in nnx.to_pure_dict(nnx.state(fixed, nnx.Param))
    again = make(learn_init=False)
    (y1, _), (y_again, _) = _BOTH(fixed, again, x)  # one compiled program for both modules
    (y2, _), _ = _BOTH(fixed, again, x)
    assert bool(jnp.all(y1 == y2))  # the fixed init is not re-randomised per call
    assert bool(jnp.all(y_again == y1))  # and is seeded


def test_retrieve_reads_without_writing(memory):
    x = inputs(20)  # the shape of test_split_state_equals_one_call's one call: its compiled program is reused
    _, state = call(memory, x)
    retrieve = nnx.jit(lambda m, x, s: m.retrieve(x, s))
    h, state2 = retrieve(memory, x, state)
    assert max_rel_err(state.rule, state2.rule) == 0.0
    h_again, _ = retrieve(memory, x, state)
    assert bool(jnp.all(h == h_again))


def test_default_config_is_finite_at_4k_tokens():
    m = NeuralMemory(NeuralMemoryConfig(num_heads=2), d_model=D, rngs=nnx.Rngs(0))
    y, state = jax.jit(lambda x: m(x))(inputs(4096, B=1) * 3.0)
    assert bool(jnp.all(jnp.isfinite(y)))
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(state))


def test_per_channel_alpha():
    m = make(depth=1, alpha_per_channel=True)
    x = inputs(9)
    ref = make(SequentialRule(chunk_size=4), depth=1, alpha_per_channel=True)
    (y, _), (y_ref, _) = _BOTH(m, ref, x)
    assert max_rel_err(y, y_ref) < 1e-5


def test_bad_options():
    with pytest.raises(ValueError, match=r"alpha_per_channel needs a memory model whose parameters are per output"):
        make(depth=2, alpha_per_channel=True)
    with pytest.raises(ValueError, match=r"num_heads \(3\) must divide d_model \(16\)"):
        make(heads=3)
    with pytest.raises(ValueError, match=r"init_lr must be < max_lr \(0.01\), got 0.5"):
        NeuralMemoryConfig(init_lr=0.5)
