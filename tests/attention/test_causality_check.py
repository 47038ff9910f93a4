"""``titans_attention.testing.check_gradient_causality``, the causality check every registered variant passes: it takes
the Jacobian in forward mode, and in reverse mode for a model whose forward pass holds a ``jax.custom_vjp`` (such as
the fused rule's kernel), which has no forward mode. On both paths it finds a dependence on a later input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from titans_attention.testing import check_gradient_causality


@jax.custom_vjp
def _prefix_sum(x):  # B × T × D: a causal mixer whose gradient is hand-written, as a kernel's is
    return jnp.cumsum(x, axis=1)


def _fwd(x):
    return _prefix_sum(x), None


def _bwd(_, g):
    return (jnp.flip(jnp.cumsum(jnp.flip(g, 1), 1), 1),)


_prefix_sum.defvjp(_fwd, _bwd)


class _Toy(nnx.Module):
    """``from_embeddings`` of a variant: prefix sums (causal), plus, if ``peek``, the next token (not causal)."""

    def __init__(self, *, custom_vjp: bool, peek: bool):
        self.custom_vjp, self.peek = custom_vjp, peek

    def from_embeddings(self, x):
        y = _prefix_sum(x) if self.custom_vjp else jnp.cumsum(x, axis=1)
        if self.peek:
            y = y + jnp.concatenate([x[:, 1:], jnp.zeros_like(x[:, :1])], axis=1)
        return y


def test_forward_mode_does_not_apply_to_a_custom_vjp():
    """The premise of the fallback: forward mode refuses a ``custom_vjp`` with a TypeError naming it."""
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jacfwd(_prefix_sum)(jnp.ones((1, 3, 2)))


@pytest.mark.parametrize("custom_vjp", [False, True])
def test_causal_model_passes_and_a_peek_is_found(custom_vjp):
    check_gradient_causality(_Toy(custom_vjp=custom_vjp, peek=False), d_model=2, T=5)
    with pytest.raises(AssertionError, match="not causal"):
        check_gradient_causality(_Toy(custom_vjp=custom_vjp, peek=True), d_model=2, T=5)
