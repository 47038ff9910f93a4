"""TitansLM: token embedding → Llama-style blocks (pre-RMSNorm, residual, mixer, SwiGLU) → RMSNorm → output head.

Which mixers each block uses is the variant's recipe (``titans_attention.recipes``; paper §4): ``mac`` (Eq 21–25),
``mag`` (Eq 26–28), ``mal`` (Eq 29–31), ``lmm`` (memory only; it first reads the persistent tokens, as MAL's memory
does), ``swa`` (the attention-only baseline), or any recipe a plugin registers. Blocks listed outside
``memory_layers`` use the variant's attention alone (segment attention for MAC, sliding-window attention
otherwise, unless the spec names an ``attention``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from titans_core.layers import RMSNorm, SwiGLU, linear, sharded

from titans_attention.config import VariantConfig
from titans_attention.recipes import RECIPES, Recipe

VARIANTS = ("mac", "mag", "mal", "lmm", "swa")
"""The paper's variants; any registered variant (``titans-plugins list``) builds the same way."""


class Block(nnx.Module):
    """x ← x + mixer(RMSNorm(x)) for each mixer, then x ← x + SwiGLU(RMSNorm(x))."""

    def __init__(self, recipe: Recipe, cfg: VariantConfig, layer: int, *, rngs: nnx.Rngs):
        self.mixers: nnx.List[Any] = nnx.List(recipe.mixers(cfg, layer, rngs))  # __call__, init_cache, prefill, decode
        self.norms = nnx.List([RMSNorm(cfg.d_model, axis="embed") for _ in self.mixers])
        self.ffn_norm = RMSNorm(cfg.d_model, axis="embed")
        self.ffn = SwiGLU(cfg.d_model, cfg.hidden(), rngs=rngs)

    def __call__(self, x):
        for norm, mixer in zip(self.norms, self.mixers, strict=True):
            x = x + mixer(norm(x))
        return x + self.ffn(self.ffn_norm(x))

    def init_cache(self, batch_size: int) -> list[Any]:
        return [m.init_cache(batch_size) for m in self.mixers]

    def prefill(self, x):
        caches: list[Any] = []
        for norm, mixer in zip(self.norms, self.mixers, strict=True):
            y, c = mixer.prefill(norm(x))
            x, caches = x + y, caches + [c]
        return x + self.ffn(self.ffn_norm(x)), caches

    def decode(self, x, caches):
        new: list[Any] = []
        for norm, mixer, c in zip(self.norms, self.mixers, caches, strict=True):
            y, c = mixer.decode(norm(x), c)
            x, new = x + y, new + [c]
        return x + self.ffn(self.ffn_norm(x)), new


class TitansLM(nnx.Module):
    """A Titans language model (satisfies ``titans_core.Variant``): tokens_BxT → logits_BxTxV (float32)."""

    def __init__(self, config: VariantConfig, *, variant: str, rngs: nnx.Rngs, recipe: Recipe | None = None):
        if recipe is None:
            if variant not in RECIPES:
                raise ValueError(f"unknown variant {variant!r}; known: {', '.join(RECIPES)} (or pass a recipe)")
            recipe = RECIPES[variant]
        self.config, self.variant = config, variant
        D, V = config.d_model, config.vocab_size
        self.embed = nnx.Embed(V, D, embedding_init=sharded(nnx.initializers.normal(1.0), "vocab", "embed"), rngs=rngs)
        self.blocks = nnx.List([Block(recipe, config, i, rngs=rngs) for i in range(config.num_layers)])
        self.final_norm = RMSNorm(D, axis="embed")
        self.head = None if config.tie_embeddings else linear(D, V, "embed", "vocab", rngs=rngs)

    def _logits(self, x_BxTxD: jax.Array) -> jax.Array:
        x = self.final_norm(x_BxTxD)
        if self.head is None:
            return self.embed.attend(x) / jnp.sqrt(self.config.d_model).astype(x.dtype)
        return self.head(x)

    def __call__(self, tokens_BxT: jax.Array) -> jax.Array:
        return self.from_embeddings(self.embed(tokens_BxT))

    def from_embeddings(self, x_BxTxD: jax.Array) -> jax.Array:
        """The forward pass after the token embedding (used to test causality with respect to the inputs)."""
        for block in self.blocks:
            x_BxTxD = block(x_BxTxD)
        return self._logits(x_BxTxD).astype(jnp.float32)

    def init_cache(self, batch_size: int):
        return [b.init_cache(batch_size) for b in self.blocks]

    def prefill(self, tokens_BxT: jax.Array):
        """The full parallel pass, plus the cache to continue decoding from."""
        x, caches = self.embed(tokens_BxT), []
        for block in self.blocks:
            x, c = block.prefill(x)
            caches.append(c)
        return self._logits(x).astype(jnp.float32), caches

    def decode(self, tokens_BxT: jax.Array, caches):
        """Continue from ``caches`` with T ≥ 1 new tokens; the memory keeps learning from them (test-time)."""
        x, new = self.embed(tokens_BxT), []
        for block, c in zip(self.blocks, caches, strict=True):
            x, c = block.decode(x, c)
            new.append(c)
        return self._logits(x).astype(jnp.float32), new
