"""The registered variants: one factory per name, all configured by ``VariantConfig`` (see ``recipes``)."""

from __future__ import annotations

from flax import nnx

from titans_attention.config import VariantConfig
from titans_attention.recipes import FACTORIES, RECIPES, build_recipe_variant

__all__ = ["FACTORIES", "build_variant"]


def build_variant(config: VariantConfig, *, variant: str, rngs: nnx.Rngs | None = None, seed: int = 0):
    """Factory of a built-in variant: ``get_registry().build(spec.model, rngs=nnx.Rngs(0))``."""
    return build_recipe_variant(config, variant=variant, recipe=RECIPES[variant], rngs=rngs, seed=seed)
