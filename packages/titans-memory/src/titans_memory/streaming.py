"""Streaming a NeuralMemory with a bounded number of compiled programs.

A jitted ``memory(x, state)`` compiles once per piece length T, so a stream of arbitrary lengths (chat turns,
documents, decoded tokens) compiles again and again (10–25 s each on a CPU). :class:`MemoryStream` cuts every
piece into sub-pieces whose lengths are powers of two up to ``max_piece`` (T = 37 → 32 + 4 + 1) and runs each with
the carried state. Nothing is padded, so the result is the one-pass result: the memory's state is per row and
exact at any position in its chunk (``aligned=False``), and a piece split at any point equals the unsplit piece
(``tests/memory/test_streaming.py``) up to rounding. Rounding is the only difference, and it is that of any split:
in float32 it grows along a long recurrent stream (``benchmarks/stream_compiles.py``). Only
``log2(max_piece) + 1`` lengths can ever occur, so at most that many programs are compiled per batch size and
dtype, whatever the stream.

Decision: split, not pad. Padding to a bucket with a store mask would keep the number of calls at one, but a padded
token still takes its place in the chunk grid and the convolution context (titans-pytorch's ``store_mask`` does the
same), so the next piece would not continue the stream exactly. The split costs at most log2(max_piece) extra
calls per piece, each on a shorter piece.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
from flax import nnx

from titans_memory.memory import MemoryState, NeuralMemory


def piece_lengths(T: int, max_piece: int) -> list[int]:
    """The sub-piece lengths a piece of T tokens is cut into: as many ``max_piece`` as fit, then the powers of two
    of the remainder, largest first (their sum is T; each is a power of two ≤ ``max_piece``)."""
    if max_piece < 1 or max_piece & (max_piece - 1):
        raise ValueError(f"max_piece must be a power of two ≥ 1, got {max_piece}")
    if T < 0:
        raise ValueError(f"a piece has a non-negative length, got {T}")
    full, rest = divmod(T, max_piece)
    bits = [1 << b for b in range(max_piece.bit_length() - 1, -1, -1) if rest & (1 << b)]
    return [max_piece] * full + bits


class MemoryStream:
    """Feed ``memory`` pieces of any length, carrying its state, with at most ``log2(max_piece) + 1`` compiled
    programs (per batch size, dtype and store-mask presence)::

        stream = MemoryStream(memory, max_piece=256)
        state = memory.init_state(B)
        for x_BxTxD in pieces:                      # any lengths
            y_BxTxD, state = stream(x_BxTxD, state)  # = memory(x, state), jitted, exact

    ``store_mask_BxT`` is passed through (cut with the piece). The memory is a module argument of one ``nnx.jit``,
    so parameter updates between calls are seen without recompiling. ``traces`` counts the programs traced (each is
    compiled once) so far."""

    def __init__(self, memory: NeuralMemory, *, max_piece: int = 256):
        piece_lengths(0, max_piece)  # validates max_piece
        self.memory, self.max_piece = memory, max_piece
        self.traces = 0

        def call(memory: NeuralMemory, x_BxTxD, state, store_mask_BxT):
            self.traces += 1  # runs while tracing only: once per compiled program
            return memory(x_BxTxD, state, store_mask_BxT=store_mask_BxT)

        self._step = nnx.jit(call)

    def pieces(self, T: int) -> Iterator[slice]:
        """The consecutive slices of a T-token piece that are run one by one."""
        start = 0
        for n in piece_lengths(T, self.max_piece):
            yield slice(start, start + n)
            start += n

    def __call__(
        self,
        x_BxTxD: jax.Array,
        state: MemoryState | None = None,
        *,
        store_mask_BxT: jax.Array | None = None,
    ) -> tuple[jax.Array, MemoryState]:
        """``memory(x, state, store_mask_BxT=…)`` for any T, as sub-pieces; returns (output B×T×D, state after x)."""
        B, T = x_BxTxD.shape[:2]
        if state is None:
            state = self.memory.init_state(B)
        self.memory.check_state(state, B)  # a clear error here rather than inside the jitted call
        if store_mask_BxT is not None and jnp.shape(store_mask_BxT) != (B, T):
            raise ValueError(f"store_mask_BxT must have shape {(B, T)}, got {jnp.shape(store_mask_BxT)}")
        outputs = []
        for s in self.pieces(T):
            mask = None if store_mask_BxT is None else jnp.asarray(store_mask_BxT)[:, s]
            y, state = self._step(self.memory, x_BxTxD[:, s], state, mask)
            outputs.append(y)
        if not outputs:  # T = 0: nothing read, nothing written
            return jnp.zeros(x_BxTxD.shape, x_BxTxD.dtype), state
        return jnp.concatenate(outputs, axis=1), state
