"""A tiny stand-in for the Titans variants, registered as the variant ``toy`` for the titans-train tests.

``ToyLM``: byte embedding (vocab, embed) → one block [RMSNorm → causal depthwise conv (heads) → SwiGLU (embed, mlp)]
→ RMSNorm → output head (embed, vocab). Every parameter carries logical axis names, so all mesh layouts apply, and
it implements ``__call__``, ``init_cache``, ``prefill`` and ``decode`` like a real variant (the conv cache makes
decoding depend on the context).

``register_toy()`` adds it to the process-wide registry (idempotent); subprocess scripts call it before the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import jax
import jax.numpy as jnp
from flax import nnx
from pydantic import Field
from titans_core import ComponentConfig, Registry, get_registry, reset_registry
from titans_core.layers import CausalDepthwiseConv, RMSNorm, SwiGLU, linear, sharded


class ToyConfig(ComponentConfig):
    """Options of the toy language model."""

    vocab_size: int = Field(256, ge=2, description="token ids 0..vocab_size−1")
    d_model: int = Field(16, ge=1, description="width")
    hidden: int = Field(32, ge=1, description="SwiGLU hidden width")
    kernel: int = Field(4, ge=1, description="causal conv kernel size")


class ToyLM(nnx.Module):
    """The toy model (see the module docstring)."""

    def __init__(self, config: ToyConfig, *, rngs: nnx.Rngs):
        self.config = config
        D, V = config.d_model, config.vocab_size
        self.embed = nnx.Embed(V, D, embedding_init=sharded(nnx.initializers.normal(1.0), "vocab", "embed"), rngs=rngs)
        self.norm = RMSNorm(D, axis="embed")
        self.conv = CausalDepthwiseConv(D, config.kernel, rngs=rngs)
        self.ffn_norm = RMSNorm(D, axis="embed")
        self.ffn = SwiGLU(D, config.hidden, rngs=rngs)
        self.final_norm = RMSNorm(D, axis="embed")
        self.head = linear(D, V, "embed", "vocab", rngs=rngs, use_bias=True)

    def _body(self, x, cache=None):
        y, cache = self.conv(self.norm(x), cache)
        x = x + y
        x = x + self.ffn(self.ffn_norm(x))
        return self.head(self.final_norm(x)).astype(jnp.float32), cache

    def __call__(self, tokens_BxT: jax.Array) -> jax.Array:
        return self._body(self.embed(tokens_BxT))[0]

    def init_cache(self, batch_size: int):
        return self.conv.init_cache(batch_size)

    def prefill(self, tokens_BxT: jax.Array):
        return self._body(self.embed(tokens_BxT))

    def decode(self, tokens_BxT: jax.Array, cache):
        return self._body(self.embed(tokens_BxT), cache)


def register_toy() -> None:
    """Register ``variant/toy`` in the process-wide registry unless it is there (for subprocess scripts)."""
    registry = get_registry()
    if "toy" not in registry.names("variant"):
        registry.register("variant", "toy", ToyConfig, ToyLM)


@contextmanager
def toy_registered() -> Iterator[Registry]:
    """Install a copy of the process-wide registry plus ``variant/toy``; restore the original afterwards (so
    other test suites never see the toy)."""
    original = get_registry()
    registry = Registry()
    for c in original.components():
        registry.register(c.kind, c.name, c.config_cls, c.factory, dist=c.dist, version=c.version)
    registry.load_errors, registry.warnings = original.load_errors, original.warnings
    registry.allow = original.allow
    if "toy" not in registry.names("variant"):
        registry.register("variant", "toy", ToyConfig, ToyLM)
    reset_registry(registry)
    try:
        yield registry
    finally:
        reset_registry(original)
