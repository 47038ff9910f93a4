"""Tiny models of every variant for the tests: windows, segments and chunks small enough that short sequences cross
their boundaries."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from titans_core import get_registry
from titans_core.spec import make_config

VARIANTS = ["mac", "mag", "mal", "lmm", "swa"]


def tiny(variant: str, *, vocab=32, d_model=16, layers=2, chunk=2, seed=0, **over):
    options = dict(
        vocab_size=vocab,
        d_model=d_model,
        num_layers=layers,
        num_heads=2,
        window=4,
        segment=4,
        num_persistent=2,
        ffn_hidden=24,
        memory={
            "num_heads": 2,
            "rule": {"name": "momentum_scan", "chunk_size": chunk},
            "model": {"name": "mlp", "depth": 2, "expansion": 2.0},
        },
    )
    options.update(over)
    return get_registry().build(make_config("variant", variant, **options), rngs=nnx.Rngs(seed))


@nnx.jit
def full_pass_and_dependence(model, tokens):
    """One compiled program: the logits ``model(tokens)`` (B × T × V), which are
    ``model.from_embeddings(model.embed(tokens))``, and their dependence on the embedded inputs, max |∂ logits_(b,t,·)
    / ∂ x_(c,s,·)| (B × T × B × T). The Jacobian is taken in forward mode, beside the value (``has_aux``): the same
    matrix as reverse mode, whose program took about 1.7× as long to compile for these models."""

    def logits(x):
        y = model.from_embeddings(x)
        return y, y

    jac, full = jax.jacfwd(logits, has_aux=True)(model.embed(tokens))  # B×T×V×B×T×D
    return full, jnp.max(jnp.abs(jac), axis=(2, 5))
