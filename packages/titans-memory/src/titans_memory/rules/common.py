"""What every update rule shares: the state, the gates, the associative loss (Eq 12) and its gradient.

All functions here work on ONE head of ONE sequence; the NeuralMemory module vmaps them over batch and heads.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from pydantic import Field
from titans_core.config import ComponentConfig
from titans_core.protocols import MemoryModel

PyTree = Any


class UpdateRuleConfig(ComponentConfig):
    """Options shared by the update rules."""

    chunk_size: int = Field(16, ge=1, description="b of Eq 16: gradients inside a chunk are taken at its start weights")
    max_grad_norm: float | None = Field(
        None, gt=0, description="clamp on the momentary surprise: each token's ∇ℓ is rescaled to at most this norm"
    )
    read: Literal["chunk", "token"] = Field(
        "chunk",
        description="chunk: token t reads M_{t'}, the chunk-start weights (read-before-write); token: it "
        "reads M_t, the weights after its own write (TTT's dual form); gradients are taken at M_{t'} either "
        "way (Eq 16)",
    )


class Gates(NamedTuple):
    """Per-token gates of one head (paper Eq 13–14): θ step size, η surprise decay (momentum), α forgetting.

    ``alpha_TxC`` has C = 1 (one α per token and head) or C = head width (per-channel α, matrix memory only).
    """

    theta_T: jax.Array
    eta_T: jax.Array
    alpha_TxC: jax.Array


class RuleState(NamedTuple):
    """The memory of one head of one sequence.

    ``start`` is M_{t'}, the weights at the last chunk boundary: tokens of the current chunk take their
    gradients at them (Eq 16) and, with ``read: chunk``, read them (read-before-write; ``read: token`` reads
    M_t instead). ``memory`` is M_t and ``surprise`` S_t after the last token seen;
    ``pos`` counts the tokens seen in the current, unfinished chunk (0 ≤ pos < b). When a chunk completes, start := memory.
    """

    start: PyTree
    memory: PyTree
    surprise: PyTree
    pos: jax.Array


class RuleBase:
    """What every rule shares: its config (``UpdateRuleConfig`` or keyword overrides), ``chunk_size`` and the
    initial state."""

    def __init__(self, config: UpdateRuleConfig | None = None, **overrides):
        cfg = config or UpdateRuleConfig()
        self.config = cfg.model_copy(update=overrides) if overrides else cfg
        self.chunk_size = self.config.chunk_size

    def init_state(self, params0: PyTree) -> RuleState:
        return init_rule_state(params0)


def init_rule_state(params0: PyTree) -> RuleState:
    """State before the first token: M_0 everywhere, S_0 = 0."""
    return RuleState(params0, params0, jax.tree.map(jnp.zeros_like, params0), jnp.zeros((), jnp.int32))


def assoc_loss(model: MemoryModel, params: PyTree, k_TxD: jax.Array, v_TxD: jax.Array) -> jax.Array:
    """ℓ(M; x) = Σ_t ‖M(k_t) − v_t‖² (Eq 12). We use the paper's Eq 12 (no ½), so ∇ℓ = 2 Jᵀ(M(k) − v)."""
    return jnp.sum(jnp.square(model.apply(params, k_TxD) - v_TxD))


def token_grad(model: MemoryModel, params: PyTree, k_D: jax.Array, v_D: jax.Array) -> PyTree:
    """u_t = ∇ℓ(M; x_t) for one token."""
    return jax.grad(assoc_loss, argnums=1)(model, params, k_D[None], v_D[None])


def tree_norm(tree: PyTree) -> jax.Array:
    """Global ℓ2 norm of a pytree, with a finite gradient at 0 (the double-where trick)."""
    sq = sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def clip_scale(norm: jax.Array, max_norm: float | None) -> jax.Array:
    """Factor that rescales a gradient of the given norm to at most max_norm (1 when no clamp is set)."""
    if max_norm is None:
        return jnp.ones_like(norm)
    return jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))


def decay(tree: PyTree, keep_C: jax.Array) -> PyTree:
    """(1 − α) M: scales every leaf; a per-channel factor (C > 1) broadcasts over the last (output-channel) axis."""
    return jax.tree.map(lambda x: x * keep_C.astype(x.dtype), tree)
