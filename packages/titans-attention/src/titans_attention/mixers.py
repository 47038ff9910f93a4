"""Sequence mixers — the parts of a Titans block that look across time (paper §4).

Each mixer maps a normalised input x_BxTxD to an update of the residual stream, and has the same three entry points:
``__call__`` (a full parallel pass from a fresh state), ``prefill`` (the same pass, also returning the cache) and
``decode`` (continue from a cache with T ≥ 1 new tokens). prefill(x[:, :a]) then decode(x[:, a:]) equals the full
pass, so generation costs the same per token at any context length.

- ``AttentionMixer``: attention with persistent memory alone (the SWA baseline, MAL's attention, memory-less blocks).
- ``MemoryMixer``: the neural long-term memory; with ``warm=True`` it first reads the persistent tokens, so it sees
  x̃ = [p ‖ x] (Eq 26, 29); used for LMM and MAL.
- ``MAGMixer``: o = y ⊗ M(x̃) with y = SW-Attn*(x̃) (Eq 26–28).
- ``MACMixer``: memory as context, segment by segment (Eq 21–25).

The gate ⊗ (where the paper is silent on its form): o = RMSNorm_a(y) ⊙ σ(RMSNorm_b(m)), each branch normalised with
its own learnable vector and the memory branch passed through a sigmoid.

Memory diagnostics: the full passes (``prefill``) report each memory's whole input sequence and starting state
through ``titans_attention.diagnostics.record_memory_input`` (a no-op unless diagnostics are being captured).
"""

from __future__ import annotations

from typing import NamedTuple, get_args

import jax
import jax.numpy as jnp
from flax import nnx
from titans_core.layers import RMSNorm, persistent_param
from titans_core.protocols import AttentionBlock
from titans_memory import MemoryState, NeuralMemory, NeuralMemoryConfig

from titans_attention.attention import SegmentCache
from titans_attention.config import MacWrite
from titans_attention.diagnostics import capturing, record_memory_input


class Gate(nnx.Module):
    """o = RMSNorm_a(y) ⊙ σ(RMSNorm_b(m)) — the non-linear gate ⊗ of Eq 25 and 28."""

    def __init__(self, d_model: int):
        self.norm_y = RMSNorm(d_model, axis="embed")
        self.norm_m = RMSNorm(d_model, axis="embed")

    def __call__(self, y: jax.Array, m: jax.Array) -> jax.Array:
        return self.norm_y(y) * jax.nn.sigmoid(self.norm_m(m))


class AttentionMixer(nnx.Module):
    """Attention alone: sliding-window (the SWA baseline; MAG/MAL's attention) or segment attention (MAC blocks
    without a memory)."""

    def __init__(self, attn: AttentionBlock):
        self.attn = attn

    def __call__(self, x):
        return self.attn(x)

    def init_cache(self, batch_size: int):
        return self.attn.init_cache(batch_size)

    def prefill(self, x):
        return self.attn.prefill(x)

    def decode(self, x, cache):
        return self.attn.decode(x, cache)


class MemoryMixer(nnx.Module):
    """The neural memory as a sequence layer. ``warm``: the memory first consumes the learnable persistent tokens
    p_1 … p_Np (Eq 19) at the start of every sequence, so it models x̃ = [p ‖ x]; only x's outputs are returned."""

    def __init__(self, d_model: int, config: NeuralMemoryConfig, num_persistent: int, warm: bool, *, rngs):
        self.memory = NeuralMemory(config, d_model=d_model, rngs=rngs)
        self.num_persistent = num_persistent if warm else 0
        self.persistent_PxD = persistent_param(rngs, (self.num_persistent, d_model), (None, "embed"))

    def init_cache(self, batch_size: int) -> MemoryState:
        state = self.memory.init_state(batch_size)
        if self.persistent_PxD is not None:  # num_persistent > 0
            p = self.persistent_PxD[...]
            _, state = self.memory(jnp.broadcast_to(p, (batch_size,) + p.shape), state)
        return state

    def __call__(self, x):
        return self.prefill(x)[0]

    def prefill(self, x):
        n = self.num_persistent
        state = self.init_cache(x.shape[0]) if n else None
        record_memory_input(self.memory, x, state)
        return self.memory(x, state, aligned=self.memory.on_chunk_boundary(n))

    def decode(self, x, cache: MemoryState):
        return self.memory(x, cache)


class MAGMixer(nnx.Module):
    """Memory as a gate (Eq 26–28): y = SW-Attn*(x̃), o = y ⊗ M(x̃), x̃ = [p ‖ x].

    Takes its parts built (``titans_attention.recipes.Parts.gated`` builds them from a spec): any attention
    mixer (``swa``, the name kept from the sliding-window default), a memory mixer and the gate."""

    def __init__(self, attention: AttentionMixer, memory: MemoryMixer, gate: Gate):
        self.swa, self.mem, self.gate = attention, memory, gate

    def __call__(self, x):
        return self.gate(self.swa(x), self.mem(x))

    def init_cache(self, batch_size: int):
        return self.swa.init_cache(batch_size), self.mem.init_cache(batch_size)

    def prefill(self, x):
        (y, c_attn), (m, c_mem) = self.swa.prefill(x), self.mem.prefill(x)
        return self.gate(y, m), (c_attn, c_mem)

    def decode(self, x, cache):
        (y, c_attn), (m, c_mem) = self.swa.decode(x, cache[0]), self.mem.decode(x, cache[1])
        return self.gate(y, m), (c_attn, c_mem)


class MACCache(NamedTuple):
    attn: SegmentCache  # keys/values and h rows of the current segment; ``pos`` counts every token so far
    memory: MemoryState  # the long-term memory after the last token (updated with the written u: y or x + y)
    seg_start: dict  # M_{t−1}: the memory weights as the current segment began — what h is read from


class MACMixer(nnx.Module):
    """Memory as a context (Eq 21–25), for each segment S^(t):

        h_t = M*_{t−1}(q_t)                      (Eq 21: read the memory as it stood before the segment)
        y_t = Attn*([p ‖ h_t ‖ S^(t)])           (Eq 22–23: token i sees p, h_j and S_j for j ≤ i only)
        M_t = M_{t−1}(u_t), o_t = y_t ⊗ M*_t(u_t)  (Eq 24–25: write u_t (below), read it back)

    Causality: h_j is derived from token j, so token i may attend to h_j only for j ≤ i (the attention's prefix mask);
    the write/read of Eq 24–25 is the memory's (``read: token``: M*_t(u_i) reflects u_j for j ≤ i only;
    ``read: chunk``: only the chunks before i's). Segments run in sequence (``lax.scan``): the next segment's h
    depends on this segment's writes.

    What the memory writes (``write``; the paper's Eq 24 says y_t, and is silent on the scale of y or on the
    residual stream): ``"y"`` writes and reads back the attention output alone, as printed; ``"x+y"`` writes
    u_t = x_t + y_t, the block's normalised input plus the attention output (the signal every other variant's
    memory sees, plus what attention found); ``"norm(x+y)"`` writes RMSNorm(x_t + y_t) with its own learnable
    scale; ``"x"`` writes the block's normalised input alone, the signal MAG's and LMM's memories write, from which
    Eq 21's read h = M*(q_t) takes its queries too. In each case the read of Eq 25 takes the same input, M*_t(u_t),
    and the gate is o_t = y_t ⊗ M*_t(u_t).
    Why ``x+y`` matters: at initialisation y has RMS ≈ 0.3 and near-uniform attention makes its keys alike, so a
    memory fed y alone starts almost blind to which token it stores (README, "MAC's write").

    Takes its parts built (``titans_attention.recipes.Parts.memory_as_context``): an attention that takes prefix
    rows and has a ``segment`` (the ``segment`` attention), the neural memory and the gate.
    """

    WRITES = get_args(MacWrite)

    def __init__(self, attention: AttentionBlock, memory: NeuralMemory, gate: Gate, *, write: str = "x+y"):
        segment = getattr(attention, "segment", None)
        if not isinstance(segment, int):
            raise ValueError(
                f"memory as context needs a segment attention (attention: {{name: segment}}); "
                f"{type(attention).__name__} has no integer `segment`"
            )
        if write not in self.WRITES:
            raise ValueError(f"MAC write must be one of {', '.join(self.WRITES)}; got {write!r}")
        self.attn, self.memory, self.gate, self.segment = attention, memory, gate, segment
        self.write = write
        d_model = gate.norm_y.scale.shape[-1]
        self.write_norm = RMSNorm(d_model, axis="embed") if write == "norm(x+y)" else None

    def _written(self, x, y):
        """u_t, what the memory writes (Eq 24) and reads back (Eq 25): y, x + y, RMSNorm(x + y) or x."""
        if self.write == "y":
            return y
        if self.write == "x":
            return x
        u = x + y
        return self.write_norm(u) if self.write_norm is not None else u

    def init_cache(self, batch_size: int) -> MACCache:
        state = self.memory.init_state(batch_size)
        return MACCache(self.attn.init_cache(batch_size), state, state.rule.start)

    def _segment(self, x, state: MemoryState, positions):
        h, state = self.memory.retrieve(x, state)
        y = self.attn(x, prefix_BxTxD=h, positions=positions)
        # every segment starts on a chunk boundary when the segment is a multiple of the chunk
        u = self._written(x, y)
        m, state = self.memory(u, state, aligned=self.memory.on_chunk_boundary(self.segment))
        return self.gate(y, m), u, state

    def __call__(self, x):
        return self.prefill(x)[0]

    def _segments(self, x, state: MemoryState, start, keep: bool):
        """Whole segments: x (T a multiple of the segment) from the memory ``state`` at token index ``start`` (a
        segment boundary), segment after segment (``lax.scan``). Returns (o, u or None, the state after x)."""
        B, T, D = x.shape
        S = self.segment
        xs = x.reshape(B, T // S, S, D).swapaxes(0, 1)

        def step(state, inp):
            x_s, s = inp
            o, u, state = self._segment(x_s, state, start + s * S + jnp.arange(S))
            return state, ((o, u) if keep else o)

        state, out = jax.lax.scan(step, state, (xs, jnp.arange(T // S)))
        flat = lambda a: a.swapaxes(0, 1).reshape(B, T, D)  # noqa: E731
        return (flat(out[0]), flat(out[1]), state) if keep else (flat(out), None, state)

    def prefill(self, x):
        B, T, D = x.shape
        S = self.segment
        n_full = T // S
        cache = self.init_cache(B)
        state, outs = cache.memory, []
        keep, written = capturing(), []  # the memory's inputs u, kept only when diagnostics are captured
        if n_full:
            o, u, state = self._segments(x[:, : n_full * S], state, 0, keep)
            outs.append(o)
            written.append(u)
        attn_cache = cache.attn._replace(pos=jnp.asarray(n_full * S, jnp.int32))
        cache = MACCache(attn_cache, state, state.rule.start)
        if T > n_full * S:  # the unfinished last segment continues exactly as decoding would
            o, u, cache = self._decode_segment_tail(x[:, n_full * S :], cache)
            outs.append(o)
            written.append(u)
        if keep:
            record_memory_input(self.memory, jnp.concatenate(written, axis=1), None)
        return jnp.concatenate(outs, axis=1), cache

    def _decode_segment_tail(self, x, cache: MACCache):
        """Tokens that all lie in the segment that starts at cache.attn.pos (which is a segment boundary)."""
        h, state = self.memory.retrieve(x, cache.memory)
        y, attn_cache = self.attn.decode(x, cache.attn, prefix_BxTxD=h)
        u = self._written(x, y)
        m, state = self.memory(u, state)
        return self.gate(y, m), u, MACCache(attn_cache, state, cache.memory.rule.start)

    def decode(self, x, cache: MACCache):
        """Continue from ``cache`` with x. Token by token, as a segment boundary may fall anywhere inside x; when
        x is whole segments and the cache sits on a segment boundary (checked at run time: ``lax.cond``), segment
        by segment as in ``prefill`` instead — the same computation in parallel within each segment (what carried
        memory's training windows take: ``titans_train.carry``)."""
        if x.shape[1] % self.segment:
            return self._decode_tokens(x, cache)
        return jax.lax.cond(cache.attn.pos % self.segment == 0, self._decode_segments, self._decode_tokens, x, cache)

    def _decode_segments(self, x, cache: MACCache):
        o, _, state = self._segments(x, cache.memory, cache.attn.pos, keep=False)
        # on a boundary the segment cache holds no token (its slots are zeros), nor does it after whole segments
        attn_cache = cache.attn._replace(pos=cache.attn.pos + x.shape[1])
        return o, MACCache(attn_cache, state, state.rule.start)

    def _decode_tokens(self, x, cache: MACCache):
        def step(cache: MACCache, x_t):
            x_t = x_t[:, None]
            starts = cache.attn.pos % self.segment == 0
            seg_start = jax.tree.map(
                lambda now, kept: jnp.where(starts, now, kept), cache.memory.rule.start, cache.seg_start
            )
            reader = cache.memory._replace(rule=cache.memory.rule._replace(start=seg_start))
            h, read = self.memory.retrieve(x_t, reader)
            y, attn_cache = self.attn.decode(x_t, cache.attn, prefix_BxTxD=h)
            m, state = self.memory(self._written(x_t, y), cache.memory._replace(conv=read.conv))
            return MACCache(attn_cache, state, seg_start), self.gate(y, m)[:, 0]

        cache, o = jax.lax.scan(step, cache, x.swapaxes(0, 1))
        return o.swapaxes(0, 1), cache
