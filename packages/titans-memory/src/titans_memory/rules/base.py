"""What every update rule shares: the state, the gates, the associative loss (Eq 12) and its gradient.

``Gates``, ``RuleState`` and ``init_rule_state`` live in ``titans_core.protocols`` (so that a plugin rule
builds the state NeuralMemory expects without depending on titans-memory); they are re-exported here.

All functions here work on ONE head of ONE sequence; the NeuralMemory module vmaps them over batch and heads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from pydantic import Field
from titans_core.config import ComponentConfig
from titans_core.protocols import Gates, MemoryModel, Objective, RuleState, init_rule_state

from titans_memory.objectives import resolve

__all__ = [
    "Gates",
    "RuleBase",
    "RuleState",
    "UpdateRuleConfig",
    "assoc_loss",
    "clip_scale",
    "decay",
    "init_rule_state",
    "mask_gates",
    "safe_sqrt",
    "token_grad",
    "tree_norm",
]

PyTree = Any
#: ``grad_sums(cot_TxD, *w_TxC)``: one parameter tree Σ_t w_t ⊙ ∂⟨cot_t, M(k_t)⟩/∂params per weighting w.
GradSums = Callable[..., tuple[PyTree, ...]]
#: ``grads_and_read(cot_TxD, weights, memory, surprise, keep_TxC, s_to_M_TxC, m_TxTxC)`` → (grad sums, y_TxD).
GradsAndRead = Callable[..., tuple[tuple[PyTree, ...], jax.Array]]


class UpdateRuleConfig(ComponentConfig):
    """Options shared by the update rules."""

    chunk_size: int = Field(16, ge=1, description="b of Eq 16: gradients inside a chunk are taken at its start weights")
    max_grad_norm: float | None = Field(
        None, gt=0, description="clamp on the momentary surprise: each token's ∇ℓ is rescaled to at most this norm"
    )
    # The default is `token`, chosen from measurements (benchmarks/results/recall/sweep_read.md): on Zoology MQAR
    # (LMM, 600 steps) 81.3% with `token` against 21.5% with `chunk`, at 0.83x the tokens/s
    # (benchmarks/results/read_token_throughput.json). It is also Eq 15 read literally: y_t = M*_t(q_t).
    read: Literal["chunk", "token"] = Field(
        "token",
        description="token: token t reads M_t, the weights after its own write (TTT's dual form); chunk: it "
        "reads M_{t'}, the chunk-start weights (read-before-write, faster); gradients are taken at M_{t'} "
        "either way (Eq 16)",
    )


class RuleBase:
    """What every rule shares: its config (``UpdateRuleConfig`` or keyword overrides), ``chunk_size`` and the
    initial state."""

    def __init__(self, config: UpdateRuleConfig | None = None, **overrides):
        cfg = config or UpdateRuleConfig()
        self.config = cfg.model_copy(update=overrides) if overrides else cfg
        self.chunk_size = self.config.chunk_size

    def init_state(self, params0: PyTree) -> RuleState:
        return init_rule_state(params0)


def assoc_loss(
    model: MemoryModel,
    params: PyTree,
    k_TxD: jax.Array,
    v_TxD: jax.Array,
    objective: Objective | None = None,
    objective_T: dict[str, jax.Array] | None = None,
) -> jax.Array:
    """ℓ(M; x) = Σ_t ℓ(M(k_t), v_t) of the objective; by default ℓ2: Σ_t ‖M(k_t) − v_t‖² (Eq 12, no ½).
    ``objective_T``: the objective's per-token parameters (``Gates.objective_T``), each of shape T."""
    return jnp.sum(resolve(objective).loss(model.apply(params, k_TxD), v_TxD, **(objective_T or {})))


def token_grad(
    model: MemoryModel,
    params: PyTree,
    k_D: jax.Array,
    v_D: jax.Array,
    objective: Objective | None = None,
    objective_1: dict[str, jax.Array] | None = None,
) -> PyTree:
    """u_t = ∇ℓ(M; x_t) for one token (Eq 12–13), by automatic differentiation of the objective's loss;
    ``objective_1``: the objective's per-token parameters for this token (scalars)."""
    per_token = {name: x[None] for name, x in (objective_1 or {}).items()}
    return jax.grad(assoc_loss, argnums=1)(model, params, k_D[None], v_D[None], objective, per_token)


def safe_sqrt(sq: jax.Array | float) -> jax.Array:
    """√sq for sq ≥ 0 with a finite gradient at 0 (the double-where trick): norms the clamp differentiates through."""
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def tree_norm(tree: PyTree) -> jax.Array:
    """Global ℓ2 norm of a pytree, with a finite gradient at 0 (``safe_sqrt``)."""
    return safe_sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def clip_scale(norm: jax.Array, max_norm: float | None) -> jax.Array:
    """Factor that rescales a gradient of the given norm to at most max_norm (1 when no clamp is set)."""
    if max_norm is None:
        return jnp.ones_like(norm)
    return jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))


def decay(tree: PyTree, keep_C: jax.Array) -> PyTree:
    """(1 − α) M: scales every leaf; a per-channel factor (C > 1) broadcasts over the last (output-channel) axis."""
    return jax.tree.map(lambda x: x * keep_C.astype(x.dtype), tree)


def mask_gates(gates: Gates, store_T: jax.Array | None) -> Gates:
    """The gates of a piece with a store mask (1: write the token, 0: skip it): a skipped token gets θ = 0, α = 0
    and η = 1, so that S_t = η_t S_{t−1} − θ_t u_t leaves S exactly as it was (with the paper's η < 1 the surprise
    would still decay on a skipped token), and the rules' write mask (the one that stops padding from adding S to M)
    keeps M exactly as it was. ``None``: every token is written."""
    if store_T is None:
        return gates
    w_T = store_T.astype(bool)
    return gates._replace(
        theta_T=jnp.where(w_T, gates.theta_T, jnp.zeros_like(gates.theta_T)),
        eta_T=jnp.where(w_T, gates.eta_T, jnp.ones_like(gates.eta_T)),
        alpha_TxC=jnp.where(w_T[:, None], gates.alpha_TxC, jnp.zeros_like(gates.alpha_TxC)),
    )
