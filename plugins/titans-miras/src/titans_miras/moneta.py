"""Moneta (MIRAS, arXiv 2504.13173): ℓp attentional bias with ℓq-normalised retention.

    A_t = α_t A_{t−1} − η_t ∇ℓ_p(W_{t'}; k_t, v_t)          (t' the chunk start; b = 1: t' = t − 1)
    W_t = A_t / ‖A_t‖_q^{q−2}                              (q = 4)

with MIRAS' α_t = Titans' 1 − α_t and MIRAS' η_t = Titans' θ_t (retention.py). The attentional bias is the memory's
configured objective: Moneta is this rule with the ``lp`` objective (p = 3, Titans' built-in); the rule works with any
objective.

Decisions where the paper is silent: ‖A‖_q is the entry-wise ℓq norm of each parameter leaf separately (a matrix,
a bias, a LayerNorm gain), ‖A‖_q = (Σ|A|^q + ε)^{1/q} with ε = ``eps`` (default 1e-12) so that W stays finite
(and differentiable) near A = 0; before the first token A_0 = W_0 = M_0, the memory model's initial weights, so that
M_0 is used as it is (normalising it would need its per-head shape, which ``init_state`` does not see: it gets leaves
with batch axes).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from pydantic import Field

from titans_miras.retention import RetentionRule, RetentionRuleConfig, scale_last_axis

PyTree = Any


class MonetaConfig(RetentionRuleConfig):
    """Options of the ``moneta`` update rule."""

    q: float = Field(4.0, ge=2, description="W_t = A_t / ‖A_t‖_q^{q−2} (q = 2: no normalisation)")
    eps: float = Field(1e-12, ge=0, description="‖A‖_q = (Σ|A|^q + eps)^{1/q}: keeps W finite near A = 0")


class MonetaRule(RetentionRule):
    """A_t = α_t A_{t−1} − η_t u_t, W_t = A_t / ‖A_t‖_q^{q−2} per leaf (see the module docstring)."""

    config_class = MonetaConfig
    config: MonetaConfig

    def init_accumulator(self, params0: PyTree) -> PyTree:
        return params0

    def initial_weights(self, params0: PyTree) -> PyTree:
        return params0

    def accumulate(self, acc: PyTree, grad: PyTree, step: jax.Array, keep_C: jax.Array) -> PyTree:
        return jax.tree.map(lambda a, g: a - step * g, scale_last_axis(acc, keep_C), grad)

    def weights(self, acc: PyTree) -> PyTree:
        q, eps = self.config.q, self.config.eps
        if q == 2:
            return acc

        def normalise(a):
            power = jnp.sum(jnp.abs(a) ** q) + eps  # ‖A‖_q^q
            return a / power ** ((q - 2.0) / q)

        return jax.tree.map(normalise, acc)
