"""NNX modules: projections, RoPE and persistent memory vs the dense oracle; causality, gradients, errors."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from titans_attention.attention import SegmentAttention, SlidingWindowAttention
from titans_core.layers import rope
from titans_core.protocols import AttentionBlock

D, H, T = 8, 2, 10


def _x(seed: int, B: int = 1, T: int = T) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (B, T, D), jnp.float32)


def _heads(y):
    return y.reshape(y.shape[0], y.shape[1], H, D // H)


@pytest.mark.parametrize(
    ("cls", "with_prefix"),
    [(SlidingWindowAttention, False), (SegmentAttention, False), (SegmentAttention, True)],
)
def test_modules_match_dense_oracle(oracle, cls, with_prefix):
    """y = W_O · Attn(rope(x W_Q), rope(x W_K), x W_V) with unrotated persistent k/v; h_j rotated like x_j."""
    m = cls(D, H, 3, 2, rngs=nnx.Rngs(0))
    mask = oracle.swa_mask(T, 3) if cls is SlidingWindowAttention else oracle.segment_mask(T, 3)
    x, h = _x(0, 2), _x(1, 2)
    pos = jnp.broadcast_to(jnp.arange(T), (2, T))

    @jax.jit
    def projections(x, h):
        q, k = rope(_heads(m.q_proj(x)), pos), rope(_heads(m.k_proj(x)), pos)
        return q, k, _heads(m.v_proj(x)), rope(_heads(m.k_proj(h)), pos), _heads(m.v_proj(h))

    q, k, v, hk, hv = projections(x, h)
    extra = (hk, hv, mask) if with_prefix else ()
    o = oracle.dense_attention(q, k, v, mask, m.persistent_k_PxHxDh[...], m.persistent_v_PxHxDh[...], *extra)
    want = jax.jit(m.o_proj)(jnp.asarray(o.reshape(2, T, D), jnp.float32))
    got = jax.jit(lambda x, p: m(x, prefix_BxTxD=p))(x, h if with_prefix else None)
    oracle.assert_close(got, want, rtol=1e-5)


def _influence(f, x) -> np.ndarray:
    """I[t, s] = Σ |∂y_t / ∂x_s| for one sequence."""
    J = jax.jit(jax.jacrev(f))(x)  # 1 x T x D x 1 x T x D
    return np.abs(np.asarray(J[0, :, :, 0])).sum(axis=(1, 3))


def test_sliding_window_causality_and_window():
    m = SlidingWindowAttention(D, H, 3, 2, rngs=nnx.Rngs(1))
    I = _influence(lambda x: m(x), _x(2))
    t, s = np.arange(T)[:, None], np.arange(T)[None]
    visible = (s <= t) & (s > t - 3)
    assert np.all(I[~visible] == 0.0), "future or out-of-window inputs must have exactly zero gradient"
    assert np.all(I[visible] > 0.0)


@pytest.mark.parametrize("with_prefix", [False, True])
def test_segment_causality_across_segment_boundaries(with_prefix):
    S = 4
    m = SegmentAttention(D, H, S, 2, rngs=nnx.Rngs(2))
    x, h = _x(3), _x(4)
    t, s = np.arange(T)[:, None], np.arange(T)[None]
    visible = (s <= t) & (s // S == t // S)
    if with_prefix:
        I_x = _influence(lambda x: m(x, prefix_BxTxD=h), x)
        I_h = _influence(lambda h: m(x, prefix_BxTxD=h), h)
        assert np.all(I_h[~visible] == 0.0), "h_s of a later token (or another segment) must not reach y_t"
        assert np.all(I_h[visible] > 0.0)
    else:
        I_x = _influence(lambda x: m(x), x)
    assert np.all(I_x[~visible] == 0.0)
    assert np.all(I_x[visible] > 0.0)


def test_module_prefix_future_leak():
    """Changing the prefix row of token j leaves every earlier token's output unchanged (bit for bit)."""
    m = SegmentAttention(D, H, 5, 2, rngs=nnx.Rngs(3))
    f = jax.jit(lambda x, h: m(x, prefix_BxTxD=h))
    x, h = _x(5, 2), _x(6, 2)
    base = np.asarray(f(x, h))
    for j in range(T):
        out = np.asarray(f(x, h.at[:, j].add(2.0)))
        np.testing.assert_array_equal(out[:, :j], base[:, :j])
        assert np.all(out[:, j] != base[:, j])


@pytest.mark.parametrize("cls", [SlidingWindowAttention, SegmentAttention])
def test_persistent_tokens_get_gradients(cls):
    m = cls(D, H, 4, 3, rngs=nnx.Rngs(4))
    x, r = _x(7, 2), _x(8, 2)
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(x) * r)))(m)
    for g in (grads["persistent_k_PxHxDh"][...], grads["persistent_v_PxHxDh"][...]):
        assert g.shape == (3, H, D // H)
        assert np.all(np.abs(np.asarray(g)).sum(axis=-1) > 0.0), "every persistent token and head must learn"


@pytest.mark.parametrize("cls", [SlidingWindowAttention, SegmentAttention])
def test_rope_relative_positions(oracle, cls):
    """With P = 0 the output depends only on relative positions: shifting all positions changes nothing."""
    m = cls(D, H, 4, 0, rngs=nnx.Rngs(5))
    x = _x(9, 2)
    f = jax.jit(lambda x, p: m(x, positions=p))
    oracle.assert_close(f(x, jnp.arange(T) + 7), f(x, jnp.arange(T)))
    assert not np.allclose(f(x, jnp.arange(T)[::-1]), f(x, jnp.arange(T)))


def test_protocol_and_shapes():
    for m in (
        SlidingWindowAttention(D, H, 4, 2, rngs=nnx.Rngs(0)),
        SegmentAttention(D, H, 4, 2, rngs=nnx.Rngs(0)),
    ):
        assert isinstance(m, AttentionBlock)
        assert jax.jit(m)(_x(0, 3)).shape == (3, T, D)
    m0 = SegmentAttention(D, H, 4, 0, rngs=nnx.Rngs(0))
    assert m0.persistent_k_PxHxDh is None and m0.persistent_v_PxHxDh is None  # no zero-size parameters
    assert jax.jit(m0)(_x(0, 3)).shape == (3, T, D)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda r: SlidingWindowAttention(8, 2, 0, 1, rngs=r), "window must be an integer ≥ 1, got 0"),
        (lambda r: SegmentAttention(8, 2, 0, 1, rngs=r), "segment must be an integer ≥ 1, got 0"),
        (lambda r: SegmentAttention(8, 3, 4, 1, rngs=r), "num_heads (3) must divide d_model (8)"),
        (lambda r: SlidingWindowAttention(8, 0, 4, 1, rngs=r), "num_heads must be an integer ≥ 1, got 0"),
        (
            lambda r: SlidingWindowAttention(6, 2, 4, 1, rngs=r),
            "the head width d_model // num_heads = 3 must be even for rotary embeddings",
        ),
        (lambda r: SegmentAttention(8, 2, 4, -1, rngs=r), "num_persistent must be an integer ≥ 0, got -1"),
        (
            lambda r: SlidingWindowAttention(8, 2, 4, 1, rngs=r, block_size=0),
            "block_size must be an integer ≥ 1, got 0",
        ),
    ],
)
def test_bad_constructor_arguments(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build(nnx.Rngs(0))


def test_bad_call_arguments():
    swa, seg = (
        SlidingWindowAttention(D, H, 4, 1, rngs=nnx.Rngs(0)),
        SegmentAttention(D, H, 4, 1, rngs=nnx.Rngs(0)),
    )
    x = _x(0)
    with pytest.raises(ValueError, match=re.escape("SlidingWindowAttention takes no prefix rows")):
        swa(x, prefix_BxTxD=x)
    with pytest.raises(ValueError, match=re.escape(f"x_BxTxD must have shape (B, T, {D}), got (1, {T}, 4)")):
        seg(x[..., :4])
    with pytest.raises(ValueError, match=re.escape(f"prefix_BxTxD must have the shape of x_BxTxD (1, {T}, {D})")):
        seg(x, prefix_BxTxD=x[:, :3])
    with pytest.raises(ValueError, match=re.escape(f"positions must have shape (T,) or (B, T) = (1, {T})")):
        seg(x, positions=jnp.arange(T + 1))
