"""No variant has a zero-size parameter (orbax cannot checkpoint empty arrays), not any with
``num_persistent: 0``; those models still run and checkpoint. LMM uses its persistent tokens (its memory reads
them first, as MAL's does)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from titans_train.checkpoint import Checkpoints
from variants_utils import VARIANTS, tiny

VOCAB, T = 32, 9  # crosses windows and segments (4) and chunks (2)


def _param_sizes(model: nnx.Module) -> dict[str, int]:
    params = nnx.state(model, nnx.Param)
    return {
        jax.tree_util.keystr(path): int(np.prod(leaf.shape))
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }


def _tokens(B: int = 2) -> jax.Array:
    return jax.random.randint(jax.random.key(1), (B, T), 0, VOCAB)


@cache
def _without_persistent(variant: str) -> nnx.Module:
    """One model per variant with ``num_persistent: 0``, shared by the tests below (none changes it)."""
    return tiny(variant, vocab=VOCAB, layers=1, num_persistent=0)


# One compiled full pass per model, shared: test_decoding_without_persistent_tokens_equals_the_full_pass reuses
# the program test_forward_without_persistent_tokens compiled for the same model.
_forward = nnx.jit(lambda m, t: m(t))


@pytest.mark.parametrize("num_persistent", [2, 0])
@pytest.mark.parametrize("variant", VARIANTS)
def test_no_zero_size_parameter(variant: str, num_persistent: int) -> None:
    model = _without_persistent(variant) if num_persistent == 0 else tiny(variant, vocab=VOCAB, layers=1)
    sizes = _param_sizes(model)
    assert sizes, variant
    empty = [name for name, size in sizes.items() if size == 0]
    assert not empty, (variant, num_persistent, empty)
    persistent = [name for name in sizes if "persistent" in name]
    if num_persistent == 0:  # every variant uses its persistent tokens (LMM's memory reads them first)
        assert not persistent, persistent
    else:
        assert persistent and all(sizes[name] % num_persistent == 0 for name in persistent)


def test_lmm_memory_first_reads_the_persistent_tokens() -> None:
    """num_persistent is not ignored by LMM: its persistent tokens change what the memory returns."""
    model = tiny("lmm", vocab=VOCAB, layers=1, num_persistent=2)  # its own: this test changes it
    toks = _tokens()
    before = _forward(model, toks)
    for path, leaf in nnx.iter_graph(model):
        if isinstance(leaf, nnx.Param) and "persistent" in str(path[-1]):
            leaf[...] = leaf[...] + 1.0
    assert not np.allclose(np.asarray(before), np.asarray(_forward(model, toks)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_without_persistent_tokens(variant: str) -> None:
    model = _without_persistent(variant)
    toks = _tokens()
    full = _forward(model, toks)
    assert full.shape == (2, T, VOCAB) and full.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(full)))
    assert not np.allclose(np.asarray(full[0]), np.asarray(full[1]))  # the two rows' tokens differ


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["mac", "mal"])  # segment attention; window attention + warm memory
def test_decoding_without_persistent_tokens_equals_the_full_pass(variant: str) -> None:
    model = _without_persistent(variant)
    toks = _tokens()
    full = _forward(model, toks)
    logits, cache = nnx.jit(lambda m, t: m.prefill(t))(model, toks[:, :5])  # ends mid-window / -segment
    rest, _ = nnx.jit(lambda m, t, c: m.decode(t, c))(model, toks[:, 5:], cache)
    pieces = jnp.concatenate([logits, rest], axis=1)
    assert float(jnp.max(jnp.abs(pieces - full)) / jnp.max(jnp.abs(full))) < 1e-4


@pytest.mark.parametrize("variant", ["lmm", "swa"])
def test_params_without_persistent_tokens_checkpoint(variant: str, tmp_path: Path) -> None:
    model = _without_persistent(variant)
    state = {"params": nnx.to_pure_dict(nnx.state(model, nnx.Param)), "step": jnp.asarray(1, jnp.int32)}
    checkpoints = Checkpoints(tmp_path, keep=1, asynchronous=False)
    checkpoints.save(1, state, {"next_index": 4})
    checkpoints.wait()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored = Checkpoints(tmp_path, read_only=True).restore_latest(abstract, quarantine=False)
    checkpoints.close()
    assert restored is not None
    step, got, data = restored
    assert step == 1 and data == {"next_index": 4}
    assert jax.tree.structure(got) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
