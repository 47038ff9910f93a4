"""The registered variants: one factory per name, all configured by ``VariantConfig``."""

from __future__ import annotations

from functools import partial

from flax import nnx

from titans_attention.config import VariantConfig
from titans_attention.model import VARIANTS, TitansLM


def build_variant(config: VariantConfig, *, variant: str, rngs: nnx.Rngs | None = None, seed: int = 0) -> TitansLM:
    """Factory registered for each variant name: ``get_registry().build(spec.model, rngs=nnx.Rngs(0))``."""
    return TitansLM(config, variant=variant, rngs=rngs if rngs is not None else nnx.Rngs(seed))


FACTORIES = {name: partial(build_variant, variant=name) for name in VARIANTS}
