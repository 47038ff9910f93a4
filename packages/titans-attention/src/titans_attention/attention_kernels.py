"""Masked multi-part softmax attention and the incremental-decoding caches of the short-term-memory attention.

``attend`` is the one place where logits are formed and normalised: every query attends to several *parts*
(persistent tokens, a cache, the new tokens, MAC prefix rows), each with its own boolean mask; the softmax
runs jointly over all parts in float32 with the usual max-subtraction. The blocked full-sequence functions in
``attention.py`` and the decode steps below both go through it.

Caches are ``NamedTuple`` pytrees of fixed shapes (they never grow with the context) and hold *rotated* keys
(RoPE uses absolute positions, so a key rotated once stays valid). ``pos`` is an int32 scalar array: the
number of tokens consumed so far, i.e. the absolute position of the next token. One ``pos`` is shared by the
whole batch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

# A part: (keys, values, mask). Keys/values are B x N x L x H x Dh (or L x H x Dh for the input-independent
# persistent tokens); the mask is None (all visible) or a boolean array broadcastable to N x C x L.
Part = tuple[jax.Array, jax.Array, jax.Array | None]


def attend(q_BxNxCxHxDh: jax.Array, parts: list[Part]) -> jax.Array:
    """softmax(q kᵀ / √Dh + mask) v jointly over all ``parts``; returns B x N x C x H x Dh in q's dtype.

    Masked logits are replaced by −∞ *before* the exponential (``jnp.where``), so masked keys get exactly zero
    weight and exactly zero gradient. The row maximum is taken under ``stop_gradient`` (softmax is
    shift-invariant, so this is exact). Every caller guarantees at least one visible key per query (the token
    itself), so no row is all −∞.
    """
    Dh = q_BxNxCxHxDh.shape[-1]
    q32 = q_BxNxCxHxDh.astype(jnp.float32) * (1.0 / jnp.sqrt(jnp.float32(Dh)))
    logits, values = [], []
    for k, v, mask in parts:
        if k.shape[-3] == 0:
            continue
        k32, v32 = k.astype(jnp.float32), v.astype(jnp.float32)
        if k.ndim == 3:  # persistent tokens: L x H x Dh, shared by every position
            s_BxNxCxHxL = jnp.einsum("bnchd,lhd->bnchl", q32, k32)
        else:
            s_BxNxCxHxL = jnp.einsum("bnchd,bnlhd->bnchl", q32, k32)
        if mask is not None:
            m = jnp.asarray(mask, bool)
            m_NxCx1xL = m.reshape(m.shape[:-1] + (1, m.shape[-1]))
            s_BxNxCxHxL = jnp.where(m_NxCx1xL, s_BxNxCxHxL, -jnp.inf)
        logits.append(s_BxNxCxHxL)
        values.append(v32)
    row_max = jax.lax.stop_gradient(jnp.max(jnp.stack([jnp.max(s, axis=-1) for s in logits]), axis=0))[..., None]
    num: Any = 0.0  # Σ exp(s − max) v and Σ exp(s − max), accumulated over the parts
    den: Any = 0.0
    for s, v32 in zip(logits, values, strict=True):
        e = jnp.exp(s - row_max)
        den = den + jnp.sum(e, axis=-1, keepdims=True)
        spec = "bnchl,lhd->bnchd" if v32.ndim == 3 else "bnchl,bnlhd->bnchd"
        num = num + jnp.einsum(spec, e, v32)
    return (num / den).astype(q_BxNxCxHxDh.dtype)


def attend_flat(q_BxTxHxDh: jax.Array, parts: list[Part]) -> jax.Array:
    """``attend`` for one block: keys B x L x H x Dh (or persistent L x H x Dh) and masks T x L."""
    lifted = [(k if k.ndim == 3 else k[:, None], v if v.ndim == 3 else v[:, None], m) for k, v, m in parts]
    return attend(q_BxTxHxDh[:, None], lifted)[:, 0]


def _write(
    buf_BxSx: jax.Array,
    new_BxTx: jax.Array,
    slot_abs_S: jax.Array,
    pos: jax.Array,
    valid_S: jax.Array | None = None,
) -> jax.Array:
    """Fill slot s with absolute token ``slot_abs_S[s]``: from the new tokens (positions pos … pos+T−1) where
    it is one of them, else keep the old slot; invalid slots become zeros. A gather, not a scatter, so there
    are no duplicate-index writes even when T exceeds the buffer length."""
    T = new_BxTx.shape[1]
    from_new = slot_abs_S >= pos
    gathered = jnp.take(new_BxTx, jnp.clip(slot_abs_S - pos, 0, T - 1), axis=1)
    shape = (1, -1) + (1,) * (buf_BxSx.ndim - 2)
    out = jnp.where(from_new.reshape(shape), gathered.astype(buf_BxSx.dtype), buf_BxSx)
    if valid_S is not None:
        out = jnp.where(valid_S.reshape(shape), out, jnp.zeros_like(out))
    return out


# --------------------------------------------------------------------------------------------- sliding window
class SlidingWindowCache(NamedTuple):
    """Ring buffer of the last ``window`` rotated keys/values. Slot s holds the latest position p < pos with
    p ≡ s (mod window); a slot is empty while that p is negative (see ``ring_positions``)."""

    k_BxWxHxDh: jax.Array
    v_BxWxHxDh: jax.Array
    pos: jax.Array  # int32 scalar


def init_sliding_window_cache(
    batch_size: int, window: int, num_heads: int, head_dim: int, dtype: Any = jnp.float32
) -> SlidingWindowCache:
    z = jnp.zeros((batch_size, window, num_heads, head_dim), dtype)
    return SlidingWindowCache(z, z, jnp.zeros((), jnp.int32))


def ring_positions(pos: jax.Array, window: int) -> jax.Array:
    """Absolute position held by each ring slot after ``pos`` tokens (negative: empty slot)."""
    s = jnp.arange(window, dtype=jnp.int32)
    return pos - 1 - jnp.mod(pos - 1 - s, window)


def sliding_window_decode(
    q_BxTxHxDh: jax.Array,
    k_BxTxHxDh: jax.Array,
    v_BxTxHxDh: jax.Array,
    cache: SlidingWindowCache,
    *,
    window: int,
    persistent_k_PxHxDh: jax.Array | None = None,
    persistent_v_PxHxDh: jax.Array | None = None,
) -> tuple[jax.Array, SlidingWindowCache]:
    """T new tokens at positions pos … pos+T−1 (already rotated) against the ring buffer; same mask as
    ``sliding_window_attention`` (Eq 19 persistent tokens + i−window < j ≤ i). Cost O(T·(window+T))."""
    T = q_BxTxHxDh.shape[1]
    pos = cache.pos
    q_pos = pos + jnp.arange(T, dtype=jnp.int32)
    c_pos = ring_positions(pos, window)
    m_cache = (c_pos[None] >= 0) & (c_pos[None] > q_pos[:, None] - window)
    m_new = (q_pos[None] <= q_pos[:, None]) & (q_pos[None] > q_pos[:, None] - window)
    parts: list[Part] = []
    if persistent_k_PxHxDh is not None:
        assert persistent_v_PxHxDh is not None, "persistent_k_PxHxDh and persistent_v_PxHxDh go together"
        parts.append((persistent_k_PxHxDh, persistent_v_PxHxDh, None))
    parts += [(cache.k_BxWxHxDh, cache.v_BxWxHxDh, m_cache), (k_BxTxHxDh, v_BxTxHxDh, m_new)]
    y = attend_flat(q_BxTxHxDh, parts)
    return y, sliding_window_write(cache, k_BxTxHxDh, v_BxTxHxDh, window=window)


def sliding_window_write(
    cache: SlidingWindowCache, k_BxTxHxDh: jax.Array, v_BxTxHxDh: jax.Array, *, window: int
) -> SlidingWindowCache:
    """Append T rotated keys/values to the ring buffer (only the last ``window`` of them survive)."""
    pos2 = cache.pos + k_BxTxHxDh.shape[1]
    slot_abs = ring_positions(pos2, window)
    k = _write(cache.k_BxWxHxDh, k_BxTxHxDh, slot_abs, cache.pos)
    v = _write(cache.v_BxWxHxDh, v_BxTxHxDh, slot_abs, cache.pos)
    return SlidingWindowCache(k, v, pos2.astype(jnp.int32))


# ---------------------------------------------------------------------------------------------------- segment
class SegmentCache(NamedTuple):
    """The current segment so far. Slot s holds token seg_start + s (seg_start = pos − pos mod segment) and is
    valid iff s < pos mod segment; all slots are empty again as soon as a segment completes. ``hk``/``hv`` are
    the MAC prefix rows h_j (rotated like token j); ``has_prefix_S`` says which slots have one."""

    k_BxSxHxDh: jax.Array
    v_BxSxHxDh: jax.Array
    hk_BxSxHxDh: jax.Array
    hv_BxSxHxDh: jax.Array
    has_prefix_S: jax.Array  # bool
    pos: jax.Array  # int32 scalar


def init_segment_cache(
    batch_size: int, segment: int, num_heads: int, head_dim: int, dtype: Any = jnp.float32
) -> SegmentCache:
    z = jnp.zeros((batch_size, segment, num_heads, head_dim), dtype)
    return SegmentCache(z, z, z, z, jnp.zeros((segment,), bool), jnp.zeros((), jnp.int32))


def segment_decode(
    q_BxTxHxDh: jax.Array,
    k_BxTxHxDh: jax.Array,
    v_BxTxHxDh: jax.Array,
    cache: SegmentCache,
    *,
    segment: int,
    prefix_k_BxTxHxDh: jax.Array | None = None,
    prefix_v_BxTxHxDh: jax.Array | None = None,
    persistent_k_PxHxDh: jax.Array | None = None,
    persistent_v_PxHxDh: jax.Array | None = None,
) -> tuple[jax.Array, SegmentCache]:
    """T new tokens (indices pos … pos+T−1, possibly spanning segment boundaries) against the segment cache;
    same mask as ``segment_causal_attention`` (Eq 21–25): persistent tokens, and tokens/prefix rows j ≤ i of
    i's own segment. Cost O(T·(segment+T)) per call."""
    T = q_BxTxHxDh.shape[1]
    pos = cache.pos
    q_idx = pos + jnp.arange(T, dtype=jnp.int32)
    s = jnp.arange(segment, dtype=jnp.int32)
    c_idx = pos - jnp.mod(pos, segment) + s
    c_valid = s < jnp.mod(pos, segment)
    q_seg = q_idx // segment
    m_cache = c_valid[None] & (c_idx[None] // segment == q_seg[:, None])
    m_new = (q_idx[None] <= q_idx[:, None]) & (q_seg[None] == q_seg[:, None])
    parts: list[Part] = []
    if persistent_k_PxHxDh is not None:
        assert persistent_v_PxHxDh is not None, "persistent_k_PxHxDh and persistent_v_PxHxDh go together"
        parts.append((persistent_k_PxHxDh, persistent_v_PxHxDh, None))
    parts += [(cache.k_BxSxHxDh, cache.v_BxSxHxDh, m_cache), (k_BxTxHxDh, v_BxTxHxDh, m_new)]
    parts.append((cache.hk_BxSxHxDh, cache.hv_BxSxHxDh, m_cache & cache.has_prefix_S[None]))
    if prefix_k_BxTxHxDh is not None:
        assert prefix_v_BxTxHxDh is not None, "prefix_k_BxTxHxDh and prefix_v_BxTxHxDh go together"
        parts.append((prefix_k_BxTxHxDh, prefix_v_BxTxHxDh, m_new))
    y = attend_flat(q_BxTxHxDh, parts)
    return y, segment_write(cache, k_BxTxHxDh, v_BxTxHxDh, prefix_k_BxTxHxDh, prefix_v_BxTxHxDh, segment=segment)


def segment_write(
    cache: SegmentCache,
    k_BxTxHxDh: jax.Array,
    v_BxTxHxDh: jax.Array,
    prefix_k_BxTxHxDh: jax.Array | None,
    prefix_v_BxTxHxDh: jax.Array | None,
    *,
    segment: int,
) -> SegmentCache:
    """Append T tokens (and their prefix rows, if any); keeps only the tokens of the segment now open."""
    T = k_BxTxHxDh.shape[1]
    pos2 = cache.pos + T
    s = jnp.arange(segment, dtype=jnp.int32)
    slot_abs = pos2 - jnp.mod(pos2, segment) + s
    valid = s < jnp.mod(pos2, segment)
    has_h = prefix_k_BxTxHxDh is not None
    hk_new = prefix_k_BxTxHxDh if prefix_k_BxTxHxDh is not None else jnp.zeros_like(k_BxTxHxDh)
    hv_new = prefix_v_BxTxHxDh if prefix_v_BxTxHxDh is not None else jnp.zeros_like(v_BxTxHxDh)
    flags = _write(cache.has_prefix_S[None], jnp.full((1, T), has_h), slot_abs, cache.pos, valid)[0]
    return SegmentCache(
        _write(cache.k_BxSxHxDh, k_BxTxHxDh, slot_abs, cache.pos, valid),
        _write(cache.v_BxSxHxDh, v_BxTxHxDh, slot_abs, cache.pos, valid),
        _write(cache.hk_BxSxHxDh, hk_new, slot_abs, cache.pos, valid),
        _write(cache.hv_BxSxHxDh, hv_new, slot_abs, cache.pos, valid),
        flags,
        pos2.astype(jnp.int32),
    )
