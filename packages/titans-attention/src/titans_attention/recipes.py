"""Variants as recipes: which sequence mixers (memory, attention, gate) make up each block.

A :class:`Recipe` says what a block that carries a memory is made of; blocks outside ``memory_layers`` (and every
block of a recipe without memory) use the attention alone. :class:`Parts` builds the pieces from the spec — the
attention is the ``attention`` component the spec selects (``model.attention``, or the recipe's default with the
model's ``window`` / ``segment``), the memory is ``model.memory`` — so a recipe only arranges them. The five
variants of the paper (§4) are recipes registered through the ``titans`` entry point like any plugin's:

- ``mac`` (Eq 21–25): ``[memory_as_context]``, default attention ``segment``;
- ``mag`` (Eq 26–28): ``[gated]`` — o = SW-Attn*(x̃) ⊗ M(x̃);
- ``mal`` (Eq 29–31): ``[memory(warm), attention]`` — y = M(x̃), o = SW-Attn(y);
- ``lmm``: ``[memory(warm)]`` — the memory alone; it first reads the persistent tokens, as MAL's does;
- ``swa``: ``[attention]`` — the attention-only baseline.

A plugin registers a new variant from these parts without touching titans-attention::

    from titans_attention.recipes import Recipe, recipe_variant
    from titans_attention import VariantConfig

    def parallel(parts):  # attention, then the memory, each with its own residual
        return [parts.attention_mixer(), parts.memory(warm=False)]

    register("variant", "my_variant", VariantConfig, recipe_variant(Recipe(parallel)))

The parts are built in the order the recipe asks for them, from one ``nnx.Rngs``; the built-ins ask in the order
the hard-coded variants did, so their parameters (values and tree paths) are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from flax import nnx
from titans_core.registry import get_registry
from titans_core.spec import make_config
from titans_memory import NeuralMemory

from titans_attention.config import VariantConfig
from titans_attention.mixers import AttentionMixer, Gate, MACMixer, MAGMixer, MemoryMixer


class Parts:
    """Builds the mixers of one block (``layer``) of a model configured by ``cfg``."""

    def __init__(self, cfg: VariantConfig, layer: int, rngs: nnx.Rngs, *, default_attention: str):
        self.cfg, self.layer, self.rngs = cfg, layer, rngs
        self.default_attention = default_attention

    def attention_config(self):
        """The spec's ``attention``, else the recipe's default with the model's ``window`` / ``segment``."""
        if self.cfg.attention is not None:
            return self.cfg.attention
        if self.default_attention == "segment":
            return make_config("attention", "segment", segment=self.cfg.segment)
        if self.default_attention == "sliding_window":
            return make_config("attention", "sliding_window", window=self.cfg.window)
        return make_config("attention", self.default_attention)

    def attention(self):
        """The attention component itself (``titans_core.AttentionBlock``), built through the registry."""
        c = self.cfg
        return get_registry().build(
            self.attention_config(),
            d_model=c.d_model,
            num_heads=c.num_heads,
            num_persistent=c.num_persistent,
            rope_base=c.rope_base,
            rngs=self.rngs,
        )

    def attention_mixer(self) -> AttentionMixer:
        """The attention as a mixer: y = Attn*(x̃) (persistent tokens included, Eq 19)."""
        return AttentionMixer(self.attention())

    def memory(self, *, warm: bool = True) -> MemoryMixer:
        """The neural memory as a mixer; ``warm``: it first reads the persistent tokens (x̃ = [p ‖ x])."""
        c = self.cfg
        return MemoryMixer(c.d_model, c.memory, c.num_persistent, warm=warm, rngs=self.rngs)

    def gate(self) -> Gate:
        """o = RMSNorm(y) ⊙ σ(RMSNorm(m)), the ⊗ of Eq 25 and 28."""
        return Gate(self.cfg.d_model)

    def gated(self) -> MAGMixer:
        """Memory as a gate (Eq 26–28): Attn*(x̃) ⊗ M(x̃)."""
        attention = self.attention_mixer()
        return MAGMixer(attention, self.memory(warm=True), self.gate())

    def memory_as_context(self) -> MACMixer:
        """Memory as a context (Eq 21–25); the attention must be a segment attention."""
        attention = self.attention()
        memory = NeuralMemory(self.cfg.memory, d_model=self.cfg.d_model, rngs=self.rngs)
        return MACMixer(attention, memory, self.gate(), write=self.cfg.mac_write)


@dataclass(frozen=True)
class Recipe:
    """A variant: ``memory_block(parts)`` → the mixers, in order, of a block that carries a memory (each gets its
    own pre-norm and residual); other blocks are ``[parts.attention_mixer()]``. ``attention``: the attention
    component used when the spec names none (built with the model's ``window``, or ``segment`` for ``segment``)."""

    memory_block: Callable[[Parts], list[nnx.Module]]
    attention: str = "sliding_window"
    uses_memory: bool = True

    def mixers(self, cfg: VariantConfig, layer: int, rngs: nnx.Rngs) -> list[nnx.Module]:
        parts = Parts(cfg, layer, rngs, default_attention=self.attention)
        if not self.uses_memory or not cfg.has_memory(layer):
            return [parts.attention_mixer()]
        mixers = list(self.memory_block(parts))
        if not mixers:
            raise ValueError("a recipe's memory_block must return at least one mixer")
        return mixers


RECIPES: dict[str, Recipe] = {
    "mac": Recipe(lambda p: [p.memory_as_context()], attention="segment"),
    "mag": Recipe(lambda p: [p.gated()]),
    "mal": Recipe(lambda p: [p.memory(warm=True), p.attention_mixer()]),
    "lmm": Recipe(lambda p: [p.memory(warm=True)]),
    "swa": Recipe(lambda p: [p.attention_mixer()], uses_memory=False),
}
"""The paper's variants (see the module docstring)."""


def build_recipe_variant(config: VariantConfig, *, variant: str, recipe: Recipe, rngs=None, seed: int = 0):
    """A ``TitansLM`` whose blocks follow ``recipe`` (the registered factory of every recipe variant)."""
    from titans_attention.model import TitansLM

    return TitansLM(config, variant=variant, recipe=recipe, rngs=rngs if rngs is not None else nnx.Rngs(seed))


def recipe_variant(recipe: Recipe) -> Callable[..., object]:
    """The factory to register a recipe as a variant: ``register("variant", name, VariantConfig,
    recipe_variant(recipe))``; the model's ``variant`` is the spec's name."""

    def factory(config: VariantConfig, *, rngs=None, seed: int = 0):
        name = str(getattr(config, "name", ""))  # the spec's name: set on every ComponentConfig by the registry
        return build_recipe_variant(config, variant=name, recipe=recipe, rngs=rngs, seed=seed)

    factory.recipe = recipe  # type: ignore[attr-defined]
    factory.__qualname__ = f"recipe_variant({getattr(recipe.memory_block, '__qualname__', 'recipe')})"  # for `list`
    return factory


FACTORIES = {name: partial(build_recipe_variant, variant=name, recipe=recipe) for name, recipe in RECIPES.items()}
