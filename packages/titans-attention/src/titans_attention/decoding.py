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


def filter_logits(logits_BxV: jax.Array, *, top_k: int | None = None, top_p: float | None = None) -> jax.Array:
    """Mask (to −inf) all but the top_k largest logits, then all outside the smallest set with probability ≥ top_p."""
    if top_k is not None:
        kth = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV < kth, -jnp.inf, logits_BxV)
    if top_p is not None:
        sorted_desc = -jnp.sort(-logits_BxV, axis=-1)
        probs = jax.nn.softmax(sorted_desc, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly larger logits
        cutoff = jnp.min(jnp.where(before < top_p, sorted_desc, jnp.inf), axis=-1, keepdims=True)
        logits_BxV = jnp.where(logits_BxV < cutoff, -jnp.inf, logits_BxV)
    return logits_BxV


def sample_token(
    logits_BxV: jax.Array, key: jax.Array, temperature: float, top_k: int | None, top_p: float | None
) -> jax.Array:
    """Greedy (argmax) when temperature == 0, else a draw from softmax(filtered logits / temperature)."""
    if temperature == 0:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits_BxV / temperature, top_k=top_k, top_p=top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _check_options(model: TitansLM, max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None):
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be ≥ 0, got {temperature}")
    if top_k is not None and not 1 <= top_k <= model.config.vocab_size:
        raise ValueError(f"top_k must be in [1, {model.config.vocab_size}], got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


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
    _check_options(model, max_new_tokens, temperature, top_k, top_p)
    prompt_BxT = jnp.asarray(prompt_BxT, jnp.int32)
    options = dict(max_new_tokens=max_new_tokens, temperature=float(temperature), top_k=top_k, top_p=top_p)
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
    _check_options(model, max_new_tokens, temperature, top_k, top_p)
    prompt_BxT = jnp.asarray(prompt_BxT, jnp.int32)
    options = dict(max_new_tokens=max_new_tokens, temperature=float(temperature), top_k=top_k, top_p=top_p)
    return _generate_compiled(model, prompt_BxT, jax.random.key(seed), cache, keep_cache=True, **options)


def _generate(
    model: TitansLM,
    prompt_BxT: jax.Array,
    key: jax.Array,
    cache: Any,
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
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
    if not keep_cache:
        return jnp.concatenate([tokens.T, last[:, None]], axis=1), None
    _, cache = model.decode(last[:, None], cache)  # the session has seen every token it returns
    return jnp.concatenate([tokens.T, last[:, None]], axis=1), cache


# One compiled program per model structure, prompt shape, cache presence and sampling options: repeated calls (other
# seeds, other prompts of the same shape) reuse it.
_generate_compiled = cast(
    Callable[..., tuple[jax.Array, Any]],
    nnx.jit(_generate, static_argnames=("max_new_tokens", "temperature", "top_k", "top_p", "keep_cache")),
)
