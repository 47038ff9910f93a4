"""Which implementation computes a full attention pass: the blocked reference or ``jax.nn.dot_product_attention``.

The blocked functions of ``attention.py`` are the reference and the CPU path. On GPU, where the mask is one that
``jax.nn.dot_product_attention`` expresses natively — causal, optionally within a left window — the full pass runs
there instead (cuDNN's fused flash attention). Decided here, when the pass is traced:

- ``implementation: auto`` (the default) picks ``cudnn`` when the default backend is a GPU, the inputs are
  bfloat16/float16 (cuDNN's flash kernels take nothing else) and the mask has no extra parts; otherwise
  ``reference``. The extra parts are the persistent tokens (Eq 19: visible to every query, which neither a causal
  nor a window mask expresses) and MAC's prefix rows h_j (Eq 21–22). So a model with ``num_persistent > 0``
  keeps the reference path everywhere: same numbers on every machine.
- ``reference``, ``xla``, ``cudnn`` force one. ``xla`` runs anywhere (the tests compare it with the reference on
  CPU); forcing ``xla``/``cudnn`` with persistent tokens or prefix rows is an error, not a silent fallback.

Decoding (a few tokens against a cache) always uses the reference path: its cost is O(T·window) already.
"""

from __future__ import annotations

from typing import Literal, cast

import jax
import jax.numpy as jnp

Implementation = Literal["auto", "reference", "xla", "cudnn"]
IMPLEMENTATIONS: tuple[str, ...] = ("auto", "reference", "xla", "cudnn")
_FLASH_DTYPES = (jnp.bfloat16, jnp.float16)


def choose(implementation: str, dtype, *, extra_parts: bool) -> str:
    """The implementation a full pass uses: ``reference``, ``xla`` or ``cudnn`` (see the module docstring)."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}, got {implementation!r}")
    if implementation == "auto":
        flash = jax.default_backend() == "gpu" and jnp.dtype(dtype) in [jnp.dtype(d) for d in _FLASH_DTYPES]
        return "cudnn" if flash and not extra_parts else "reference"
    if implementation != "reference" and extra_parts:
        raise ValueError(
            f"implementation {implementation!r} cannot express persistent tokens or prefix rows "
            "(set num_persistent: 0, or implementation: auto / reference)"
        )
    return implementation


Impl = Literal["xla", "cudnn"]  # what jax.nn.dot_product_attention accepts


def flash_sliding_window(q_BxTxHxDh, k_BxTxHxDh, v_BxTxHxDh, *, window: int, implementation: str) -> jax.Array:
    """i − window < j ≤ i (no persistent tokens) through ``jax.nn.dot_product_attention``; B×T×H×Dh."""
    Dh = q_BxTxHxDh.shape[-1]
    T = q_BxTxHxDh.shape[1]
    local = None if window >= T else (window - 1, 0)  # a window covering the sequence is plain causal
    return jax.nn.dot_product_attention(
        q_BxTxHxDh,
        k_BxTxHxDh,
        v_BxTxHxDh,
        scale=float(Dh) ** -0.5,
        is_causal=True,
        local_window_size=local,
        implementation=cast(Impl, implementation),
    )


def flash_segment(q_BxTxHxDh, k_BxTxHxDh, v_BxTxHxDh, *, segment: int, implementation: str) -> jax.Array:
    """Causal within each segment [nS, (n+1)S) (no persistent tokens, no prefix rows): the segments become batch
    rows; the last one is padded at its end, which no earlier query sees under the causal mask. B×T×H×Dh."""
    B, T, H, Dh = q_BxTxHxDh.shape
    C = min(segment, T)
    N = -(-T // C)

    def rows(x):
        x = jnp.pad(x, ((0, 0), (0, N * C - T), (0, 0), (0, 0)))
        return x.reshape(B * N, C, H, Dh)

    y = jax.nn.dot_product_attention(
        rows(q_BxTxHxDh),
        rows(k_BxTxHxDh),
        rows(v_BxTxHxDh),
        scale=float(Dh) ** -0.5,
        is_causal=True,
        implementation=cast(Impl, implementation),
    )
    return y.reshape(B, N * C, H, Dh)[:, :T]
