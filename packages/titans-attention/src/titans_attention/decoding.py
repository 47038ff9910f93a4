"""Cached generation: a parallel prefill, then one token at a time against the caches (the memory keeps learning
from the generated tokens, as at test time). The cost per generated token does not grow with the context."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import jax
import jax.numpy as jnp
from flax import nnx

if TYPE_CHECKING:
    from titans_attention.model import TitansLM


def filter_logits(
    logits_BxV: jax.Array, *, top_k: int | jax.Array | None = None, top_p: float | jax.Array | None = None
) -> jax.Array:
    """Mask (to −inf) all but the top_k largest logits, then all outside the smallest set with probability ≥ top_p.

    ``top_k`` and ``top_p`` may be traced scalars, so that one compiled program serves every value (top_k ≥ the
    vocabulary and top_p > 1 mask nothing). Ties with the k-th largest logit are kept."""
    if top_k is None and top_p is None:
        return logits_BxV
    sorted_desc = -jnp.sort(-logits_BxV, axis=-1)
    if top_k is not None:
        k = jnp.clip(jnp.asarray(top_k, jnp.int32), 1, logits_BxV.shape[-1])
        kth = jax.lax.dynamic_index_in_dim(sorted_desc, k - 1, axis=-1)  # B × 1
        logits_BxV = jnp.where(logits_BxV < kth, -jnp.inf, logits_BxV)
        sorted_desc = jnp.where(sorted_desc < kth, -jnp.inf, sorted_desc)
    if top_p is not None:
        probs = jax.nn.softmax(sorted_desc, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly larger logits
        cutoff = jnp.min(jnp.where(before < top_p, sorted_desc, jnp.inf), axis=-1, keepdims=True)
        logits_BxV = jnp.where(logits_BxV < cutoff, -jnp.inf, logits_BxV)
    return logits_BxV


def sample_token(
    logits_BxV: jax.Array,
    key: jax.Array,
    temperature: float | jax.Array,
    top_k: int | jax.Array | None,
    top_p: float | jax.Array | None,
) -> jax.Array:
    """Greedy (argmax) when temperature == 0, else a draw from softmax(filtered logits / temperature). Every option
    may be a traced scalar (one program for all sampling settings)."""
    greedy = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    if isinstance(temperature, (int, float)) and temperature == 0:
        return greedy
    t = jnp.asarray(temperature, jnp.float32)
    logits = filter_logits(logits_BxV / jnp.where(t > 0, t, 1.0), top_k=top_k, top_p=top_p)
    return jnp.where(t > 0, jax.random.categorical(key, logits, axis=-1).astype(jnp.int32), greedy)


def _options(
    model: TitansLM, max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None
) -> dict[str, Any]:
    """The sampling options checked, as arrays (traced: one program for all of them); None → a value that filters
    nothing."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be ≥ 0, got {temperature}")
    if top_k is not None and not 1 <= top_k <= model.config.vocab_size:
        raise ValueError(f"top_k must be in [1, {model.config.vocab_size}], got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    return dict(
        max_new_tokens=max_new_tokens,
        temperature=jnp.float32(temperature),
        top_k=jnp.int32(model.config.vocab_size if top_k is None else top_k),
        top_p=jnp.float32(2.0 if top_p is None else top_p),  # cumulative mass before any token is ≤ 1 < 2
    )


def generate(
    model: TitansLM,
    prompt_BxT: jax.Array,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
) -> jax.Array:
    """Returns the ``max_new_tokens`` generated ids (B × max_new_tokens). Greedy decoding (temperature 0) is
    deterministic; sampling is reproducible from ``seed``."""
    options = _options(model, max_new_tokens, temperature, top_k, top_p)
    prompt_BxT = jnp.asarray(prompt_BxT, jnp.int32)
    return _generate_compiled(model, prompt_BxT, jax.random.key(seed), None, keep_cache=False, **options)[0]


def generate_with_cache(
    model: TitansLM,
    prompt_BxT: jax.Array,
    max_new_tokens: int,
    cache: Any = None,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
) -> tuple[jax.Array, Any]:
    """Generation that continues a stream (a memory *session*): ``(generated ids, cache)``.

    ``cache=None`` starts from a fresh memory (a parallel prefill of the prompt); otherwise the prompt is decoded
    against ``cache`` — the memory state and attention caches of everything before it — so the memory goes on
    learning at test time across calls. The returned cache has consumed the prompt *and every generated token*
    (one decode step more than :func:`generate`), so calling again with the next prompt equals one call whose
    prompt is everything so far: prompt₁ ‖ generated₁ ‖ prompt₂ (tested). Save it with any pytree serialiser to
    carry the session across processes (``titans-train generate --session`` does)."""
    options = _options(model, max_new_tokens, temperature, top_k, top_p)
    prompt_BxT = jnp.asarray(prompt_BxT, jnp.int32)
    return _generate_compiled(model, prompt_BxT, jax.random.key(seed), cache, keep_cache=True, **options)


def _generate(
    model: TitansLM,
    prompt_BxT: jax.Array,
    key: jax.Array,
    cache: Any,
    *,
    max_new_tokens: int,
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
    keep_cache: bool,
) -> tuple[jax.Array, Any]:
    logits, cache = model.prefill(prompt_BxT) if cache is None else model.decode(prompt_BxT, cache)
    keys = jax.random.split(key, max_new_tokens)
    first = sample_token(logits[:, -1], keys[0], temperature, top_k, top_p)

    def step(carry, key):
        token, cache = carry
        logits, cache = model.decode(token[:, None], cache)
        nxt = sample_token(logits[:, -1], key, temperature, top_k, top_p)
        return (nxt, cache), token

    (last, cache), tokens = jax.lax.scan(step, (first, cache), keys[1:])
    out = jnp.concatenate([tokens.T, last[:, None]], axis=1)
    if not keep_cache:
        return out, None
    _, cache = model.decode(last[:, None], cache)  # the session has seen every token it returns
    return out, cache


# One compiled program per model structure, prompt shape, max_new_tokens and cache presence: calls with other seeds,
# temperatures, top_k or top_p (traced, not static) reuse it.
_generate_compiled = cast(
    Callable[..., tuple[jax.Array, Any]], nnx.jit(_generate, static_argnames=("max_new_tokens", "keep_cache"))
)
