"""Behaviour, not shapes: the memory learns what it is shown, and forgets when told to."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from titans_memory import Gates, MLPMemory, MLPMemoryConfig, MomentumScanRule, SequentialRule, assoc_loss


def pairs(seed, n, D):
    kk, kv = jax.random.split(jax.random.key(seed))
    k = jax.random.normal(kk, (n, D))
    return k / jnp.linalg.norm(k, axis=-1, keepdims=True), jax.random.normal(kv, (n, D))


def const_gates(T, theta, eta, alpha):
    return Gates(jnp.full((T,), theta), jnp.full((T,), eta), jnp.full((T, 1), alpha))


@pytest.mark.parametrize("rule_cls", [SequentialRule, MomentumScanRule])
@pytest.mark.parametrize("depth", [1, 2])
def test_writing_pairs_lowers_their_retrieval_error_and_alpha_one_forgets(rule_cls, depth):
    D, n, reps = 16, 4, 30
    model = MLPMemory(MLPMemoryConfig(depth=depth))
    p0 = model.init(jax.random.key(0), D)
    k, v = pairs(1, n, D)
    K, V = jnp.tile(k, (reps, 1)), jnp.tile(v, (reps, 1))  # show the pairs repeatedly
    rule = rule_cls(chunk_size=4)

    @jax.jit
    def losses(p0, k, v, K, V):  # one compiled program (eager, each op compiled one of its own)
        state = rule.init_state(p0)
        before = assoc_loss(model, state.memory, k, v)
        _, state = rule(model, state, K, K, V, const_gates(n * reps, 0.05, 0.5, 0.0))
        after = assoc_loss(model, state.memory, k, v)
        # α = 1 wipes the memory: with θ = 0 and η = 0 every later M_t = 0 · M_{t−1} + 0.
        _, wiped = rule(model, state, K[:4], K[:4], V[:4], const_gates(4, 0.0, 0.0, 1.0))
        zeros = jax.tree.map(jnp.zeros_like, p0)
        return before, after, assoc_loss(model, wiped.memory, k, v), assoc_loss(model, zeros, k, v)

    before, after, wiped, zero = map(float, losses(p0, k, v, K, V))
    assert after < 0.2 * before, (before, after)
    assert wiped == pytest.approx(zero)
    assert wiped > 2 * after


def test_retrieval_reads_what_was_written():
    """After writing a pair in one chunk, the next chunk's read of that key returns (close to) its value."""
    D = 8
    model = MLPMemory(MLPMemoryConfig(depth=1))
    k, v = pairs(2, 1, D)
    p0 = jax.tree.map(jnp.zeros_like, model.init(jax.random.key(0), D))
    rule = MomentumScanRule(chunk_size=1, read="chunk")
    # θ = 0.5, ‖k‖ = 1 and ∇ = 2kᵀ(kW − v): one step from W = 0 gives exactly k W = v.
    kk, vv = jnp.concatenate([k, k]), jnp.concatenate([v, v])
    y, _ = jax.jit(lambda *a: rule(model, rule.init_state(p0), *a))(kk, kk, vv, const_gates(2, 0.5, 0.0, 0.0))
    assert float(jnp.max(jnp.abs(y[0]))) == 0.0  # read before write: token 0 sees the empty memory
    assert jnp.allclose(y[1], v[0], atol=1e-5)  # token 1 reads what token 0 wrote


def test_default_read_is_token_and_sees_its_own_write():
    """The default ``read`` is ``token`` (Eq 15 as y_t = M*_t(q_t)): token 0 already reads its own write."""
    D = 8
    model = MLPMemory(MLPMemoryConfig(depth=1))
    k, v = pairs(2, 1, D)
    p0 = jax.tree.map(jnp.zeros_like, model.init(jax.random.key(0), D))
    rule = MomentumScanRule(chunk_size=4)
    assert rule.config.read == "token"
    y, _ = jax.jit(lambda *a: rule(model, rule.init_state(p0), *a))(k, k, v, const_gates(1, 0.5, 0.0, 0.0))
    assert jnp.allclose(y[0], v[0], atol=1e-5)


def test_a_memory_that_never_updates_is_caught():
    """θ = 0 leaves M unchanged: the retrieval error must stay where it was (so the test above can fail)."""
    D = 8
    model = MLPMemory(MLPMemoryConfig(depth=2))
    p0 = model.init(jax.random.key(0), D)
    k, v = pairs(3, 4, D)
    rule = MomentumScanRule(chunk_size=2)

    @jax.jit
    def losses(p0, k, v):  # one compiled program
        _, state = rule(model, rule.init_state(p0), k, k, v, const_gates(4, 0.0, 0.9, 0.0))
        return assoc_loss(model, state.memory, k, v), assoc_loss(model, p0, k, v)

    after, before = map(float, losses(p0, k, v))
    assert after == pytest.approx(before)
