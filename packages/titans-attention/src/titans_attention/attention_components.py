"""The built-in components of kind ``attention`` (protocol ``titans_core.AttentionBlock``), one config each.

A variant's spec selects one with ``attention: {name: …, ...options}``; without it each variant keeps its own
(MAC: ``segment`` with the model's ``segment``; the others: ``sliding_window`` with the model's ``window``), so
existing specs build exactly the models they always did.

- ``sliding_window``: i − window < j ≤ i plus the persistent tokens (SW-Attn of MAG/MAL, Eq 26–31).
- ``segment``: causal within segments of ``segment`` tokens, plus persistent tokens and MAC's prefix rows
  (Eq 21–25). The memory-as-context mixer needs it (it reads ``segment`` and passes prefix rows).
- ``global``: causal attention over the whole context, plus persistent tokens. Decision (the paper's "full
  attention" baseline is silent on decoding): it is the sliding window with window = ``max_len``, so training
  on sequences of at most ``max_len`` tokens is exact full causal attention and decoding keeps a fixed-size
  cache of ``max_len`` keys (past ``max_len`` it slides).

Every one takes ``implementation`` (``auto`` | ``reference`` | ``xla`` | ``cudnn``, see ``attention_fast``).
"""

from __future__ import annotations

from pydantic import Field
from titans_core.config import ComponentConfig

from titans_attention.attention import SegmentAttention, SlidingWindowAttention
from titans_attention.attention_fast import Implementation

_IMPL = "full pass: auto (cuDNN flash on GPU where the mask allows, else the blocked reference), reference, xla, cudnn"


class SlidingWindowConfig(ComponentConfig):
    """Sliding-window attention with persistent memory (MAG / MAL / SWA)."""

    window: int = Field(128, ge=1, description="each token sees itself and the window − 1 tokens before it")
    block_size: int | None = Field(None, ge=1, description="query block of the reference pass; default: window")
    implementation: Implementation = Field("auto", description=_IMPL)


class SegmentConfig(ComponentConfig):
    """Segment-causal attention with persistent memory and MAC's memory prefix rows."""

    segment: int = Field(128, ge=1, description="segment length; a multiple of the memory's chunk size in MAC")
    implementation: Implementation = Field("auto", description=_IMPL)


class GlobalConfig(ComponentConfig):
    """Causal attention over the whole context (up to max_len tokens) with persistent memory."""

    max_len: int = Field(4096, ge=1, description="longest context attended to in full (the decoding cache size)")
    implementation: Implementation = Field("auto", description=_IMPL)


def sliding_window(config: SlidingWindowConfig, *, d_model, num_heads, num_persistent, rope_base, rngs):
    return SlidingWindowAttention(
        d_model,
        num_heads,
        config.window,
        num_persistent,
        rngs=rngs,
        rope_base=rope_base,
        block_size=config.block_size,
        implementation=config.implementation,
    )


def segment(config: SegmentConfig, *, d_model, num_heads, num_persistent, rope_base, rngs):
    return SegmentAttention(
        d_model,
        num_heads,
        config.segment,
        num_persistent,
        rngs=rngs,
        rope_base=rope_base,
        implementation=config.implementation,
    )


def global_causal(config: GlobalConfig, *, d_model, num_heads, num_persistent, rope_base, rngs):
    return SlidingWindowAttention(
        d_model,
        num_heads,
        config.max_len,
        num_persistent,
        rngs=rngs,
        rope_base=rope_base,
        implementation=config.implementation,
    )


ATTENTIONS = {
    "sliding_window": (SlidingWindowConfig, sliding_window),
    "segment": (SegmentConfig, segment),
    "global": (GlobalConfig, global_causal),
}
