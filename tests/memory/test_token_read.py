"""``read: token`` (each token reads M_t, the memory after its own write; gradients still at M_{t'}, Eq 16).

momentum_scan (MLP fast path and the generic per-token path) equals the sequential oracle in float64 —
outputs, final state, outer gradients — and both equal an independent numpy loop written straight from
Eq 13–14.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from memory_utils import agreement_program, max_rel_err, random_problem, run, slice_gates, split_and_whole
from titans_memory import (
    Gates,
    MLPMemory,
    MLPMemoryConfig,
    MomentumScanRule,
    SequentialRule,
    UpdateRuleConfig,
)
from titans_memory.rules.momentum_scan import chunk_coefficients
from titans_memory.rules.token_read import token_coefficients
from titans_swiglu_memory import SwiGLUMemory, SwiGLUMemoryConfig

TOL = 1e-10  # float64: the same arithmetic up to reassociation
D = 4


def rules(chunk, clip=None):
    cfg = UpdateRuleConfig(chunk_size=chunk, max_grad_norm=clip, read="token")
    return SequentialRule(cfg), MomentumScanRule(cfg)


def assert_rules_agree(model, p0, q, k, v, gates, chunk, clip=None):
    """Outputs and state (both ``aligned``) and outer gradients, from one compiled program."""
    seq, par = rules(chunk, clip)
    aligned, ((_, (y_s, s_s)), g_s), ((_, unaligned), g_p) = agreement_program(seq, par, model)(p0, q, k, v, gates)
    for y_p, s_p in (aligned, unaligned):  # (the gradients' call is aligned=False)
        assert max_rel_err(y_s, y_p) < TOL
        assert max_rel_err(tuple(s_s), tuple(s_p)) < TOL
    assert max_rel_err(g_s, g_p) < 1e-9
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(g_p))
    return y_s


# (chunk, depth, channels of α, clamp): chunk sizes 1/4/16, depth 1 and 2, per-channel α and the clamp (the
# property test below draws the other combinations)
CASES = [
    (1, 2, 1, None),
    (4, 1, D, None),
    (16, 1, D, 0.05),
    (16, 2, 1, None),
]


@pytest.mark.parametrize("chunk,depth,C,clip", CASES)
def test_token_read_scan_equals_sequential_outputs_state_and_gradients(chunk, depth, C, clip):
    T = 18  # crosses a 16-chunk boundary and is never a multiple of the chunk
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(chunk * 10 + depth + C, T, D, depth, C=C)
        assert_rules_agree(model, p0, q, k, v, gates, chunk, clip)


@settings(max_examples=2, deadline=None)  # each draw compiles one program of its own (the examples below: two more)
@given(
    chunk=st.integers(1, 9),
    T=st.integers(1, 30),
    depth=st.integers(1, 3),
    residual_norm=st.booleans(),
    split_frac=st.floats(0, 1),
    per_channel=st.booleans(),
    clip=st.sampled_from([None, 0.05, 10.0]),
    seed=st.integers(0, 2**16),
)
@example(chunk=4, T=13, depth=2, residual_norm=False, split_frac=0.5, per_channel=False, clip=0.05, seed=1)  # mid-chunk
@example(chunk=3, T=12, depth=1, residual_norm=True, split_frac=0.5, per_channel=True, clip=None, seed=2)  # chunk edge
def test_token_read_scan_equals_sequential_property(
    chunk, T, depth, residual_norm, split_frac, per_channel, clip, seed
):
    """Any chunk size, length, depth (with and without the residual norm), gates, split point (the second call
    starts mid-chunk), per-channel α (depth 1) and surprise clamp."""
    per_channel = per_channel and depth == 1
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(
            seed, T, D, depth, C=D if per_channel else 1, residual_norm=residual_norm
        )
        seq, par = rules(chunk, clip)
        a = int(split_frac * T)
        (y_s, s_s), (y1, _), (y2, s_p) = split_and_whole(seq, par, model, a, p0, q, k, v, gates)
        assert max_rel_err(y_s, jnp.concatenate([y1, y2])) < TOL
        assert max_rel_err(tuple(s_s), tuple(s_p)) < TOL


def test_mid_chunk_starts_with_residual_free_mlp_and_gradients():
    """Depth 2 without the residual norm, three calls that start mid-chunk: outputs, state and gradients
    through the padded (``_general``) path."""
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(7, 17, D, 2, residual_norm=False)
        seq, par = rules(4)

        def pieces(rule, p0, q, k, v, gates):
            state, ys = rule.init_state(p0), []
            for a, b in ((0, 3), (3, 10), (10, 17)):
                y, state = rule(model, state, q[a:b], k[a:b], v[a:b], slice_gates(gates, a, b))
                ys.append(y)
            return jnp.concatenate(ys), state

        def loss(rule, *a):  # with the outputs and final state as aux
            y, state = pieces(rule, *a)
            return jnp.sum(jnp.sin(y)), (y, state)

        grad = jax.value_and_grad(loss, argnums=(1, 2, 3, 4, 5), has_aux=True)
        both = jax.jit(lambda *a: (grad(seq, *a), grad(par, *a)))  # one compiled program
        ((_, (y_s, s_s)), g_s), ((_, (y_p, s_p)), g_p) = both(p0, q, k, v, gates)
        assert max_rel_err(y_s, y_p) < TOL and max_rel_err(tuple(s_s), tuple(s_p)) < TOL
        assert max_rel_err(g_s, g_p) < 1e-9


def eq_13_14_reference(W0, Q, K, V, theta, eta, alpha, chunk, clip=None):
    """Depth-1 memory M(x) = x W, token by token from Eq 13–14 with every gradient at the chunk-start W
    (Eq 16) and the per-token read y_t = q_t W_t (no chunk algebra). ℓ = ‖kW − v‖², so ∇_W ℓ = 2 kᵀ(kW − v);
    α may be per output channel (columns of W)."""
    W, S, W_start, ys = W0.copy(), np.zeros_like(W0), W0.copy(), []
    for t in range(K.shape[0]):
        k, v = K[t : t + 1], V[t : t + 1]
        u = 2.0 * k.T @ (k @ W_start - v)
        th = theta[t] if clip is None else theta[t] * min(1.0, clip / max(np.linalg.norm(u), 1e-12))
        S = eta[t] * S - th * u
        W = (1.0 - alpha[t])[None, :] * W + S
        ys.append(Q[t] @ W)
        if (t + 1) % chunk == 0:
            W_start = W.copy()
    return np.stack(ys), W, S


@pytest.mark.parametrize("chunk,C,clip", [(1, 1, None), (4, D, 0.05), (16, 1, 0.05)])
def test_depth_one_equals_the_eq_13_14_numpy_loop(chunk, C, clip):
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(40 + chunk + C, 19, D, 1, C=C)
        args = [np.asarray(a) for a in (p0["w0"], q, k, v, gates.theta_T, gates.eta_T, gates.alpha_TxC)]
        y_ref, W_ref, S_ref = eq_13_14_reference(*args, chunk, clip)
        calls = [(rule, aligned) for rule in rules(chunk, clip) for aligned in (True, False)]
        every = jax.jit(lambda *a: [run(r, model, *a, aligned=al) for r, al in calls])  # one compiled program
        for y, state in every(p0, q, k, v, gates):
            np.testing.assert_allclose(np.asarray(y), y_ref, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(np.asarray(state.memory["w0"]), W_ref, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(np.asarray(state.surprise["w0"]), S_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("depth", [1, 2])
def test_chunk_one_token_read_is_chunk_read_shifted_by_one_token(depth):
    """With b = 1, read: chunk gives token t the M_{t−1}, read: token the M_t: feeding the chunk read the
    query one token later (and one extra token at the end) reproduces the token read exactly."""
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(3 + depth, 12, D, depth)
        y_tok, s_tok = run(MomentumScanRule(chunk_size=1, read="token"), model, p0, q, k, v, gates)
        pad = lambda x: jnp.concatenate([x, x[-1:]])  # noqa: E731  (the extra token's write is never read)
        q_late = jnp.concatenate([q[:1], q])  # position t + 1 reads q_t
        late = (q_late, pad(k), pad(v), jax.tree.map(pad, gates))
        y_chk, _ = run(MomentumScanRule(chunk_size=1, read="chunk"), model, p0, *late)
        assert max_rel_err(y_tok, y_chk[1:]) < TOL
        y_plain, s_chk = run(MomentumScanRule(chunk_size=1, read="chunk"), model, p0, q, k, v, gates)
        assert max_rel_err(tuple(s_tok), tuple(s_chk)) == 0.0  # same writes
        assert max_rel_err(y_tok, y_plain) > 1e-3  # but not the same reads


def test_token_read_sees_its_own_write():
    """θ = 0.5, ‖k‖ = 1, W_0 = 0: one step gives exactly k W = v, and with read: token, token 0 reads it."""
    model = MLPMemory(MLPMemoryConfig(depth=1))
    key = jax.random.normal(jax.random.key(2), (1, 8))
    k, v = key / jnp.linalg.norm(key), jax.random.normal(jax.random.key(3), (1, 8))
    p0 = jax.tree.map(jnp.zeros_like, model.init(jax.random.key(0), 8))
    gates = Gates(jnp.full((1,), 0.5), jnp.zeros((1,)), jnp.zeros((1, 1)))
    rules = (
        MomentumScanRule(chunk_size=4, read="token"),
        SequentialRule(chunk_size=4, read="token"),
        MomentumScanRule(chunk_size=4, read="chunk"),
    )
    calls = jax.jit(lambda *a: [r(model, r.init_state(p0), *a)[0] for r in rules])  # one compiled program
    *token_reads, y_chunk = calls(k, k, v, gates)
    for y in token_reads:
        assert jnp.allclose(y[0], v[0], atol=1e-5)
    assert float(jnp.max(jnp.abs(y_chunk))) == 0.0  # read: chunk sees the empty memory


def brute_force_coefficients(theta, eta, alpha, mask):
    """m_{t,i} = Σ_{i ≤ s ≤ t} mask_s θ_i P_γ(s+1..t) P_η(i+1..s), c_t, keep_t by explicit products."""
    b, C = alpha.shape
    gamma, P = 1.0 - alpha, lambda x, i, j: np.prod(x[i : j + 1], axis=0)  # noqa: E731  (P over i..j, 0-based)
    m, c = np.zeros((b, b, C)), np.zeros((b, C))
    for t in range(b):
        for s in range(t + 1):
            c[t] += mask[s] * P(gamma, s + 1, t) * P(eta, 0, s)
            for i in range(s + 1):
                m[t, i] += mask[s] * theta[i] * P(gamma, s + 1, t) * P(eta, i + 1, s)
    return np.stack([P(gamma, 0, t) for t in range(b)]), c, m


@pytest.mark.parametrize("C", [1, 3])
def test_token_coefficients_against_explicit_products_and_the_chunk_end(C):
    """Including η = 0, α = 1 and padding slots (mask 0 with θ = 0, η = 1, α = 0)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(C)
        b = 7
        theta, eta, alpha = rng.uniform(0, 0.5, b), rng.uniform(0, 1, b), rng.uniform(0, 0.5, (b, C))
        eta[3], alpha[5] = 0.0, 1.0
        mask = np.ones(b)
        mask[[0, 6]] = 0.0
        theta[[0, 6]], eta[[0, 6]], alpha[[0, 6]] = 0.0, 1.0, 0.0
        both = jax.jit(lambda *a: (token_coefficients(*a), chunk_coefficients(*a)))  # one compiled program
        (keep, s_to_M, m), chunk_end = both(*map(jnp.asarray, (theta, eta, alpha, mask)))
        expected = brute_force_coefficients(theta, eta, alpha, mask)
        for got, want in zip((keep, s_to_M, m), expected, strict=True):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-15)
        assert np.all(np.asarray(m)[np.triu_indices(b, k=1)] == 0.0)
        _, m_end, keep_end, _, s_to_M_end = chunk_end
        for got, want in zip((m[-1], keep[-1], s_to_M[-1]), (m_end, keep_end, s_to_M_end), strict=True):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12)


class WithoutFastPath:
    """An MLPMemory seen through the bare MemoryModel protocol: the rules must take their generic paths."""

    def __init__(self, model):
        self.model, self.channel_axis_ok = model, model.channel_axis_ok

    def init(self, key, dim):
        return self.model.init(key, dim)

    def apply(self, params, x_TxD):
        return self.model.apply(params, x_TxD)


@pytest.mark.parametrize("depth,C", [(1, D), (2, 1)])
def test_generic_per_token_path_equals_the_mlp_fast_path(depth, C):
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(9 + depth, 13, D, depth, C=C)
        _, par = rules(4, 0.05)
        calls = [(m, aligned) for aligned in (True, False) for m in (model, WithoutFastPath(model))]
        every = jax.jit(lambda *a: [run(par, m, *a, aligned=al) for m, al in calls])  # one compiled program
        outs = every(p0, q, k, v, gates)
        for (y_fast, s_fast), (y_gen, s_gen) in (outs[:2], outs[2:]):
            assert max_rel_err(y_fast, y_gen) < TOL and max_rel_err(tuple(s_fast), tuple(s_gen)) < TOL


def test_swiglu_plugin_memory_token_read_equals_sequential():
    """A model without ``read_after_updates`` (the example plugin): outputs, state and outer gradients."""
    with jax.enable_x64(True):
        _, _, q, k, v, gates = random_problem(21, 11, D, 1)
        model = SwiGLUMemory(SwiGLUMemoryConfig(expansion=1.5, out_init_scale=1.0))
        p0 = jax.tree.map(lambda x: x.astype(jnp.float64), model.init(jax.random.key(4), D))
        y = assert_rules_agree(model, p0, q, k, v, gates, chunk=4)
        y_chunk, _ = run(MomentumScanRule(chunk_size=4, read="chunk"), model, p0, q, k, v, gates)
        assert max_rel_err(y, y_chunk) > 1e-3  # the token read is not the chunk read
