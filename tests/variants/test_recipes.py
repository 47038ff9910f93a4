"""Variants are recipes of mixers: the built-ins are registered recipes, a plugin adds one without touching
titans-attention, a spec chooses the attention, and the generic conformance check passes every registered variant
(and fails a leaky one)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from titans_attention import VariantConfig
from titans_attention.mixers import AttentionMixer, MAGMixer, MemoryMixer
from titans_attention.recipes import RECIPES, Recipe, recipe_variant
from titans_attention.testing import build_tiny, check_registered_variant
from titans_core import Registry, get_registry, reset_registry
from titans_core.errors import TitansUserError


def params(model) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_the_built_in_variants_are_registered_recipes():
    registry = get_registry()
    for name in RECIPES:
        component = registry.get("variant", name)
        assert component.dist == "titans-attention" and component.factory.recipe is RECIPES[name]


# The built-ins' causality and decoding are tested in depth in test_variants.py (MAC's segments, prefix rows and scan
# over segments included); the generic check runs here on LMM, the cheapest built-in to compile (that the check passes
# a correct variant; test_the_conformance_check_fails_a_leaky_variant shows it can fail), and on every variant a plugin
# adds. (It ran on MAC until it was the suite's slowest test: 100 s for what test_variants.py already proves.)
CONFORMANCE = ["lmm"] + sorted(set(get_registry().names("variant")) - set(RECIPES))


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFORMANCE)
def test_registered_variants_pass_the_conformance_check(name):
    # a built-in with one block (LMM: one memory block); the caches chained from block to block are tested with
    # two layers in test_variants.py (test_incremental_decoding_equals_full_pass[lmm]). A plugin's variant: as is.
    check_registered_variant(name, **({"num_layers": 1} if name in RECIPES else {}))


def parallel(parts):
    """Attention, then a memory that does not read the persistent tokens: each with its own residual."""
    return [parts.attention_mixer(), parts.memory(warm=False)]


@pytest.fixture
def with_plugin_variant():
    """The built-ins plus a variant registered the way a plugin registers it (kind, name, config, factory)."""
    registry = Registry.from_entry_points(allow=["titans-memory", "titans-attention"])
    registry.register("variant", "parallel", VariantConfig, recipe_variant(Recipe(parallel)), dist="my-variants")
    reset_registry(registry)
    yield registry
    reset_registry()


def test_a_plugin_variant_from_existing_mixers_conforms(with_plugin_variant):
    model = build_tiny("parallel", attention={"name": "global", "max_len": 32})
    assert [type(m).__name__ for m in model.blocks[0].mixers] == ["AttentionMixer", "MemoryMixer"]
    assert model.variant == "parallel" and model.blocks[0].mixers[0].attn.window == 32
    # One block (its attention and its memory): that decoding chains the caches of several blocks is the variant-
    # independent TitansLM's, tested in test_variants.py (test_incremental_decoding_equals_full_pass, two layers).
    check_registered_variant("parallel", num_layers=1)


class PeekNext(nnx.Module):
    """A broken mixer: position t sees x_{t+1}."""

    def __call__(self, x):
        return jnp.roll(x, -1, axis=1)

    def init_cache(self, batch_size):
        return ()

    def prefill(self, x):
        return self(x), ()

    def decode(self, x, cache):
        return self(x), cache


def test_the_conformance_check_fails_a_leaky_variant(with_plugin_variant):
    leaky = Recipe(lambda p: [p.attention_mixer(), PeekNext()])
    with_plugin_variant.register("variant", "leaky", VariantConfig, recipe_variant(leaky))
    with pytest.raises(AssertionError, match="not causal"):
        check_registered_variant("leaky")


def test_a_spec_chooses_the_attention_and_the_default_is_unchanged():
    default = build_tiny("mag", num_layers=1)  # one MAG block holds the attention the spec chooses
    explicit = build_tiny("mag", num_layers=1, attention={"name": "sliding_window", "window": 4})
    a, b = params(default), params(explicit)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    toks = jnp.arange(26).reshape(2, 13) % 32
    forward = nnx.jit(lambda m, t: m(t))  # compiled: eagerly, each of the model's ops compiles on its own
    assert np.array_equal(np.asarray(forward(default, toks)), np.asarray(forward(explicit, toks)))
    wide = build_tiny("mal", attention={"name": "global", "max_len": 16})
    assert [m.attn.window for m in wide.blocks[0].mixers if isinstance(m, AttentionMixer)] == [16]


def test_memory_layers_and_parameter_paths_keep_their_layout():
    model = build_tiny("mag", memory_layers=[0])
    assert isinstance(model.blocks[0].mixers[0], MAGMixer) and isinstance(model.blocks[1].mixers[0], AttentionMixer)
    paths = params(model)
    assert "blocks.0.mixers.0.swa.attn.q_proj.kernel" in paths
    assert "blocks.0.mixers.0.mem.memory.memory_init.w0" in paths  # M_0 of the memory in MAG's block
    assert not any(".mem." in k for k in paths if k.startswith("blocks.1.")), "block 1 is attention only"
    mac = params(build_tiny("mac"))
    assert "blocks.0.mixers.0.attn.persistent_k_PxHxDh" in mac and any(
        k.startswith("blocks.0.mixers.0.memory.") for k in mac
    )
    lmm = build_tiny("lmm")
    assert isinstance(lmm.blocks[0].mixers[0], MemoryMixer)


def test_memory_as_context_needs_a_segment_attention():
    with pytest.raises((ValueError, TitansUserError), match="needs a segment attention"):
        build_tiny("mac", attention={"name": "sliding_window", "window": 4})
