"""Short-term memory of Titans: sliding-window attention (MAG/MAL, Eq 26–31) and segment-causal attention with
long-term-memory prefix rows (MAC, Eq 21–25), both with persistent memory (Eq 19).

Mask semantics (query i, key j; absolute indices within the sequence):

- ``sliding_window_attention``: i − window < j ≤ i, plus every persistent token.
- ``segment_causal_attention``: segments are [0, S), [S, 2S), … (the last may be shorter); token i sees every
  persistent token, the tokens j ≤ i of its own segment and — when given — the prefix rows h_j with j ≤ i of
  its own segment. In MAC h_j = M*(q_j) is the long-term-memory retrieval for token j (Eq 21), so it is
  derived from x_j: letting token i see h_j for j > i would leak the future, and the shared causal mask makes
  that impossible.

Both are computed in blocks (memory O(T·block), never O(T²)). Softmax in float32, scale 1/√Dh. The modules add
q/k/v/o projections (no bias), RoPE on sequence queries/keys at absolute positions (persistent tokens are not
rotated; prefix row h_j is rotated at token j's position) and learnable persistent keys/values per head,
initialised N(0, 0.02²). Incremental decoding: see ``attention_kernels``. On GPU a full pass whose mask allows it runs
through ``jax.nn.dot_product_attention`` (see ``attention_fast``); these blocked functions stay the reference.
"""

from __future__ import annotations

from numbers import Integral

import jax
import jax.numpy as jnp
from flax import nnx
from titans_core.layers import head_width, linear, persistent_param, rope

from titans_attention.attention_fast import choose, flash_segment, flash_sliding_window
from titans_attention.attention_kernels import (
    Part,
    SegmentCache,
    SlidingWindowCache,
    attend,
    init_segment_cache,
    init_sliding_window_cache,
    segment_decode,
    segment_write,
    sliding_window_decode,
    sliding_window_write,
)

__all__ = [
    "SegmentAttention",
    "SegmentCache",
    "SlidingWindowAttention",
    "SlidingWindowCache",
    "segment_causal_attention",
    "sliding_window_attention",
]


# ------------------------------------------------------------------------------------------------- validation
def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")


def _check_qkv(q: jax.Array, k: jax.Array, v: jax.Array) -> None:
    if q.ndim != 4:
        raise ValueError(f"q_BxTxHxDh must have 4 axes (B, T, H, Dh), got shape {q.shape}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k and v must have the same shape, got {q.shape}, {k.shape}, {v.shape}")
    if q.shape[1] < 1:
        raise ValueError("the sequence must have at least one token (T ≥ 1)")


def _persistent_parts(q: jax.Array, pk: jax.Array | None, pv: jax.Array | None) -> list[Part]:
    if (pk is None) != (pv is None):
        raise ValueError("persistent_k_PxHxDh and persistent_v_PxHxDh must be given together")
    if pk is None:
        return []
    assert pv is not None  # checked above: given together
    want = (pk.shape[0],) + q.shape[2:]
    if pk.shape != want or pv.shape != want:
        raise ValueError(
            f"persistent_k_PxHxDh and persistent_v_PxHxDh must have shape (P, H, Dh) = {want}, "
            f"got {pk.shape} and {pv.shape}"
        )
    return [(pk, pv, None)]


def _blocks(x_BxTxHxDh: jax.Array, n_blocks: int, block: int) -> jax.Array:
    """Pad the time axis at the end to n_blocks·block and split it: B x N x C x H x Dh."""
    B, T, H, Dh = x_BxTxHxDh.shape
    x = jnp.pad(x_BxTxHxDh, ((0, 0), (0, n_blocks * block - T), (0, 0), (0, 0)))
    return x.reshape(B, n_blocks, block, H, Dh)


# --------------------------------------------------------------------------------------------- pure functions
def sliding_window_attention(
    q_BxTxHxDh: jax.Array,
    k_BxTxHxDh: jax.Array,
    v_BxTxHxDh: jax.Array,
    *,
    window: int,
    persistent_k_PxHxDh: jax.Array | None = None,
    persistent_v_PxHxDh: jax.Array | None = None,
    block_size: int | None = None,
) -> jax.Array:
    """SW-Attn of MAG/MAL (Eq 26, 31) with persistent memory (Eq 19): position i attends to the keys j with
    i − window < j ≤ i and to all P persistent tokens.

    Blocked: queries in blocks of C = min(block_size or window, T); block n attends to its own key block and
    the R = ⌈(window−1)/C⌉ previous ones, so memory is O(T·(window + C)) rather than O(T²).
    Returns B x T x H x Dh.
    """
    _check_positive("window", window)
    if block_size is not None:
        _check_positive("block_size", block_size)
    _check_qkv(q_BxTxHxDh, k_BxTxHxDh, v_BxTxHxDh)
    parts = _persistent_parts(q_BxTxHxDh, persistent_k_PxHxDh, persistent_v_PxHxDh)
    B, T, H, Dh = q_BxTxHxDh.shape
    C = min(block_size or window, T)
    N = -(-T // C)
    R = min(-(-(window - 1) // C), N - 1)  # previous key blocks needed
    L = (R + 1) * C

    def key_windows(x_BxTxHxDh: jax.Array) -> jax.Array:  # B x N x L x H x Dh: blocks n−R … n
        xb = _blocks(jnp.pad(x_BxTxHxDh, ((0, 0), (R * C, 0), (0, 0), (0, 0))), N + R, C)
        return jnp.concatenate([xb[:, r : r + N] for r in range(R + 1)], axis=2)

    q_pos = (jnp.arange(N)[:, None] * C + jnp.arange(C)[None])[:, :, None]  # N x C x 1
    k_pos = (jnp.arange(N)[:, None] * C - R * C + jnp.arange(L)[None])[:, None, :]  # N x 1 x L
    mask_NxCxL = (k_pos <= q_pos) & (k_pos > q_pos - window) & (k_pos >= 0)
    parts.append((key_windows(k_BxTxHxDh), key_windows(v_BxTxHxDh), mask_NxCxL))
    y = attend(_blocks(q_BxTxHxDh, N, C), parts)
    return y.reshape(B, N * C, H, Dh)[:, :T]


def segment_causal_attention(
    q_BxTxHxDh: jax.Array,
    k_BxTxHxDh: jax.Array,
    v_BxTxHxDh: jax.Array,
    *,
    segment: int,
    prefix_k_BxTxHxDh: jax.Array | None = None,
    prefix_v_BxTxHxDh: jax.Array | None = None,
    persistent_k_PxHxDh: jax.Array | None = None,
    persistent_v_PxHxDh: jax.Array | None = None,
) -> jax.Array:
    """The attention of MAC (Eq 21–25): within each segment, causal attention over [p ‖ h ‖ S^(t)].

    Token i of a segment attends to every persistent token, to the tokens j ≤ i of its own segment and, when
    ``prefix_k/v`` are given, to the prefix rows h_j with j ≤ i of its own segment (the same causal mask as
    the tokens: h_j = M*(q_j) depends on x_j). Computed one segment at a time: memory O(T·segment).
    Returns B x T x H x Dh.
    """
    _check_positive("segment", segment)
    _check_qkv(q_BxTxHxDh, k_BxTxHxDh, v_BxTxHxDh)
    parts = _persistent_parts(q_BxTxHxDh, persistent_k_PxHxDh, persistent_v_PxHxDh)
    if (prefix_k_BxTxHxDh is None) != (prefix_v_BxTxHxDh is None):
        raise ValueError("prefix_k_BxTxHxDh and prefix_v_BxTxHxDh must be given together")
    B, T, H, Dh = q_BxTxHxDh.shape
    C = min(segment, T)  # with T < segment there is a single (short) segment
    N = -(-T // C)
    causal_CxC = jnp.tril(jnp.ones((C, C), bool))
    parts.append((_blocks(k_BxTxHxDh, N, C), _blocks(v_BxTxHxDh, N, C), causal_CxC))
    if prefix_k_BxTxHxDh is not None:
        assert prefix_v_BxTxHxDh is not None  # checked above: given together
        if prefix_k_BxTxHxDh.shape != q_BxTxHxDh.shape or prefix_v_BxTxHxDh.shape != q_BxTxHxDh.shape:
            raise ValueError(
                f"prefix_k_BxTxHxDh and prefix_v_BxTxHxDh must have the shape of q {q_BxTxHxDh.shape}, "
                f"got {prefix_k_BxTxHxDh.shape} and {prefix_v_BxTxHxDh.shape}"
            )
        parts.append((_blocks(prefix_k_BxTxHxDh, N, C), _blocks(prefix_v_BxTxHxDh, N, C), causal_CxC))
    y = attend(_blocks(q_BxTxHxDh, N, C), parts)
    return y.reshape(B, N * C, H, Dh)[:, :T]


# ---------------------------------------------------------------------------------------------------- modules
class _HeadsAttention(nnx.Module):
    """Shared parts: q/k/v/o projections (no bias), RoPE, persistent keys/values P x H x Dh ~ N(0, 0.02²)."""

    d_model: int
    num_heads: int
    head_dim: int
    num_persistent: int
    rope_base: float
    q_proj: nnx.Linear
    k_proj: nnx.Linear
    v_proj: nnx.Linear
    o_proj: nnx.Linear
    persistent_k_PxHxDh: nnx.Param | None  # None when num_persistent == 0
    persistent_v_PxHxDh: nnx.Param | None

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        num_persistent: int,
        *,
        rngs: nnx.Rngs,
        rope_base: float = 10_000.0,
    ):
        _check_positive("d_model", d_model)
        _check_positive("num_heads", num_heads)
        head_dim = head_width(d_model, num_heads, even=True)
        if not isinstance(num_persistent, Integral) or num_persistent < 0:
            raise ValueError(f"num_persistent must be an integer ≥ 0, got {num_persistent!r}")
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, head_dim
        self.num_persistent, self.rope_base = num_persistent, rope_base
        self.q_proj = linear(d_model, d_model, "embed", "heads", rngs=rngs)
        self.k_proj = linear(d_model, d_model, "embed", "heads", rngs=rngs)
        self.v_proj = linear(d_model, d_model, "embed", "heads", rngs=rngs)
        self.o_proj = linear(d_model, d_model, "heads", "embed", rngs=rngs)
        shape, axes = (num_persistent, num_heads, head_dim), (None, "heads", None)
        self.persistent_k_PxHxDh = persistent_param(rngs, shape, axes, jnp.float32)
        self.persistent_v_PxHxDh = persistent_param(rngs, shape, axes, jnp.float32)

    def _check_x(self, x_BxTxD: jax.Array, name: str = "x_BxTxD") -> None:
        if x_BxTxD.ndim != 3 or x_BxTxD.shape[-1] != self.d_model:
            raise ValueError(f"{name} must have shape (B, T, {self.d_model}), got {x_BxTxD.shape}")

    def _heads(self, y_BxTxD: jax.Array) -> jax.Array:
        B, T, _ = y_BxTxD.shape
        return y_BxTxD.reshape(B, T, self.num_heads, self.head_dim)

    def _positions(self, positions: jax.Array | None, B: int, T: int) -> jax.Array:
        if positions is None:
            return jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
        positions = jnp.asarray(positions)
        if positions.shape not in ((T,), (B, T)):
            raise ValueError(f"positions must have shape (T,) or (B, T) = ({B}, {T}), got {positions.shape}")
        return jnp.broadcast_to(positions, (B, T))

    def _kv(self, x_BxTxD: jax.Array, pos_BxT: jax.Array) -> tuple[jax.Array, jax.Array]:
        k = rope(self._heads(self.k_proj(x_BxTxD)), pos_BxT, base=self.rope_base)
        return k, self._heads(self.v_proj(x_BxTxD))

    def _qkv(self, x_BxTxD: jax.Array, pos_BxT: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        q = rope(self._heads(self.q_proj(x_BxTxD)), pos_BxT, base=self.rope_base)
        return (q, *self._kv(x_BxTxD, pos_BxT))

    def _persistent(self) -> dict:
        if self.persistent_k_PxHxDh is None or self.persistent_v_PxHxDh is None:  # num_persistent == 0
            return {}
        return {
            "persistent_k_PxHxDh": self.persistent_k_PxHxDh[...],
            "persistent_v_PxHxDh": self.persistent_v_PxHxDh[...],
        }

    def _out(self, o_BxTxHxDh: jax.Array) -> jax.Array:
        B, T = o_BxTxHxDh.shape[:2]
        return self.o_proj(o_BxTxHxDh.reshape(B, T, self.d_model))

    def _decode_positions(self, x_BxTxD: jax.Array, pos: jax.Array) -> jax.Array:
        B, T, _ = x_BxTxD.shape
        return jnp.broadcast_to(pos + jnp.arange(T, dtype=jnp.int32), (B, T))


class SlidingWindowAttention(_HeadsAttention):
    """Multi-head sliding-window attention with persistent memory (the SW-Attn of MAG/MAL, Eq 19, 26–31).

    ``__call__`` is the blocked full pass; ``prefill`` also returns the cache; ``decode`` consumes T ≥ 1
    further tokens against a ring buffer of exactly ``window`` keys/values, so the cost per token does not
    grow with the context. prefill(x[:, :a]) then decode(x[:, a:]) equals __call__(x)[:, a:]. Satisfies
    ``AttentionBlock``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        window: int,
        num_persistent: int = 0,
        *,
        rngs: nnx.Rngs,
        rope_base: float = 10_000.0,
        block_size: int | None = None,
        implementation: str = "auto",
    ):
        _check_positive("window", window)
        if block_size is not None:
            _check_positive("block_size", block_size)
        choose(implementation, jnp.float32, extra_parts=num_persistent > 0)  # a forced one must fit the mask
        super().__init__(d_model, num_heads, num_persistent, rngs=rngs, rope_base=rope_base)
        self.window, self.block_size, self.implementation = window, block_size, implementation

    @staticmethod
    def _no_prefix(prefix_BxTxD: jax.Array | None) -> None:
        if prefix_BxTxD is not None:
            raise ValueError("SlidingWindowAttention takes no prefix rows (prefix_BxTxD must be None)")

    def _forward(self, x_BxTxD: jax.Array, pos_BxT: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        q, k, v = self._qkv(x_BxTxD, pos_BxT)
        impl = choose(self.implementation, q.dtype, extra_parts=self.num_persistent > 0)  # at trace time
        if impl == "reference":
            o = sliding_window_attention(q, k, v, window=self.window, block_size=self.block_size, **self._persistent())
        else:
            o = flash_sliding_window(q, k, v, window=self.window, implementation=impl)
        return self._out(o), k, v

    def __call__(
        self, x_BxTxD: jax.Array, *, prefix_BxTxD: jax.Array | None = None, positions: jax.Array | None = None
    ) -> jax.Array:
        """y = SW-Attn(x) W_O. ``positions`` (T or B x T, default 0 … T−1) are the absolute RoPE positions."""
        self._no_prefix(prefix_BxTxD)
        self._check_x(x_BxTxD)
        B, T, _ = x_BxTxD.shape
        return self._forward(x_BxTxD, self._positions(positions, B, T))[0]

    def init_cache(self, batch_size: int) -> SlidingWindowCache:
        return init_sliding_window_cache(batch_size, self.window, self.num_heads, self.head_dim)

    def prefill(
        self, x_BxTxD: jax.Array, *, prefix_BxTxD: jax.Array | None = None
    ) -> tuple[jax.Array, SlidingWindowCache]:
        """The full pass at positions 0 … T−1 plus the cache to continue from (the last window keys)."""
        self._no_prefix(prefix_BxTxD)
        self._check_x(x_BxTxD)
        B, T, _ = x_BxTxD.shape
        y, k, v = self._forward(x_BxTxD, self._positions(None, B, T))
        return y, sliding_window_write(self.init_cache(B), k, v, window=self.window)

    def decode(
        self, x_BxTxD: jax.Array, cache: SlidingWindowCache, *, prefix_BxTxD: jax.Array | None = None
    ) -> tuple[jax.Array, SlidingWindowCache]:
        """T ≥ 1 new tokens at positions cache.pos … cache.pos+T−1; returns (y_BxTxD, new cache)."""
        self._no_prefix(prefix_BxTxD)
        self._check_x(x_BxTxD)
        q, k, v = self._qkv(x_BxTxD, self._decode_positions(x_BxTxD, cache.pos))
        o, cache = sliding_window_decode(q, k, v, cache, window=self.window, **self._persistent())
        return self._out(o), cache


class SegmentAttention(_HeadsAttention):
    """Multi-head segment-causal attention of MAC (Eq 21–25) with persistent memory and prefix rows.

    ``prefix_BxTxD`` (optional) holds h_j = M*(q_j), one row per token; it is projected with the same W_K/W_V
    as the tokens, rotated at token j's position, and visible to tokens i ≥ j of the same segment only.
    ``decode`` keeps the keys/values (and prefix rows) of the current segment in a fixed-size cache that is
    emptied when a segment completes. prefill(x[:, :a]) then decode(x[:, a:]) equals __call__(x)[:, a:].
    Satisfies ``AttentionBlock``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        segment: int,
        num_persistent: int = 0,
        *,
        rngs: nnx.Rngs,
        rope_base: float = 10_000.0,
        implementation: str = "auto",
    ):
        _check_positive("segment", segment)
        choose(implementation, jnp.float32, extra_parts=num_persistent > 0)  # a forced one must fit the mask
        super().__init__(d_model, num_heads, num_persistent, rngs=rngs, rope_base=rope_base)
        self.segment, self.implementation = segment, implementation

    def _prefix_kv(self, x_BxTxD: jax.Array, prefix_BxTxD: jax.Array | None, pos_BxT: jax.Array) -> dict:
        if prefix_BxTxD is None:
            return {}
        self._check_x(prefix_BxTxD, "prefix_BxTxD")
        if prefix_BxTxD.shape != x_BxTxD.shape:
            raise ValueError(f"prefix_BxTxD must have the shape of x_BxTxD {x_BxTxD.shape}, got {prefix_BxTxD.shape}")
        hk, hv = self._kv(prefix_BxTxD, pos_BxT)
        return {"prefix_k_BxTxHxDh": hk, "prefix_v_BxTxHxDh": hv}

    def _forward(self, x_BxTxD: jax.Array, prefix_BxTxD: jax.Array | None, pos_BxT: jax.Array):
        q, k, v = self._qkv(x_BxTxD, pos_BxT)
        h = self._prefix_kv(x_BxTxD, prefix_BxTxD, pos_BxT)
        impl = choose(self.implementation, q.dtype, extra_parts=bool(h) or self.num_persistent > 0)  # at trace time
        if impl == "reference":
            o = segment_causal_attention(q, k, v, segment=self.segment, **h, **self._persistent())
        else:
            o = flash_segment(q, k, v, segment=self.segment, implementation=impl)
        return self._out(o), k, v, h

    def __call__(
        self, x_BxTxD: jax.Array, *, prefix_BxTxD: jax.Array | None = None, positions: jax.Array | None = None
    ) -> jax.Array:
        """y = Attn*([p ‖ h ‖ S]) W_O per segment; ``positions`` (T or B x T, default 0 … T−1) for RoPE."""
        self._check_x(x_BxTxD)
        B, T, _ = x_BxTxD.shape
        return self._forward(x_BxTxD, prefix_BxTxD, self._positions(positions, B, T))[0]

    def init_cache(self, batch_size: int) -> SegmentCache:
        return init_segment_cache(batch_size, self.segment, self.num_heads, self.head_dim)

    def prefill(self, x_BxTxD: jax.Array, *, prefix_BxTxD: jax.Array | None = None) -> tuple[jax.Array, SegmentCache]:
        """The full pass at positions 0 … T−1 plus the cache (the tokens of the last, unfinished segment)."""
        self._check_x(x_BxTxD)
        B, T, _ = x_BxTxD.shape
        y, k, v, h = self._forward(x_BxTxD, prefix_BxTxD, self._positions(None, B, T))
        cache = segment_write(
            self.init_cache(B),
            k,
            v,
            h.get("prefix_k_BxTxHxDh"),
            h.get("prefix_v_BxTxHxDh"),
            segment=self.segment,
        )
        return y, cache

    def decode(
        self, x_BxTxD: jax.Array, cache: SegmentCache, *, prefix_BxTxD: jax.Array | None = None
    ) -> tuple[jax.Array, SegmentCache]:
        """T ≥ 1 new tokens (and their prefix rows, if any) at indices cache.pos …; returns (y, new cache)."""
        self._check_x(x_BxTxD)
        pos_BxT = self._decode_positions(x_BxTxD, cache.pos)
        q, k, v = self._qkv(x_BxTxD, pos_BxT)
        h = self._prefix_kv(x_BxTxD, prefix_BxTxD, pos_BxT)
        o, cache = segment_decode(q, k, v, cache, segment=self.segment, **h, **self._persistent())
        return self._out(o), cache
