"""Memora (MIRAS, arXiv 2504.13173): KL-divergence retention, a softmax (mirror-descent) update.

    W_t = softmax(α_t log W_{t−1} − η_t ∇ℓ₂(W_{t'}; k_t, v_t))      (t' the chunk start; b = 1: t' = t − 1)

with MIRAS' α_t = Titans' 1 − α_t and MIRAS' η_t = Titans' θ_t (retention.py). The attentional bias is the memory's
configured objective (Memora's is ℓ2, Titans' default ``l2``).

Decisions where the paper is silent: the softmax runs over the last axis of every parameter leaf — every row of a
weight matrix (laid out ``x @ W``: the output channels of one input channel) and every vector (a bias, a LayerNorm
gain) is a probability distribution; so W stays positive and normalised by construction. The state keeps the
logits L_t = α_t log W_{t−1} − η_t u_t (``RuleState.surprise``) and W_t = softmax(L_t), so log W_{t−1} =
log_softmax(L_{t−1}) is never the log of a rounded-to-zero weight. The learned initial weights M_0 are the logits
L_0: W_0 = softmax(M_0). With a plain matrix memory (``mlp`` depth 1) M(k) = k W mixes the rows of a row-stochastic
W; the residual ``mlp`` (depth ≥ 2) works too, its LayerNorm gain becoming a distribution over channels.
"""

from __future__ import annotations

from typing import Any

import jax

from titans_miras.retention import RetentionRule, RetentionRuleConfig, scale_last_axis

PyTree = Any


class MemoraConfig(RetentionRuleConfig):
    """Options of the ``memora`` update rule."""


class MemoraRule(RetentionRule):
    """L_t = α_t log_softmax(L_{t−1}) − η_t u_t, W_t = softmax(L_t) over each leaf's last axis."""

    config_class = MemoraConfig

    def init_accumulator(self, params0: PyTree) -> PyTree:
        return params0

    def initial_weights(self, params0: PyTree) -> PyTree:
        return self.weights(params0)

    def accumulate(self, acc: PyTree, grad: PyTree, step: jax.Array, keep_C: jax.Array) -> PyTree:
        log_w = jax.tree.map(lambda a: jax.nn.log_softmax(a, axis=-1), acc)
        return jax.tree.map(lambda lw, g: lw - step * g, scale_last_axis(log_w, keep_C), grad)

    def weights(self, acc: PyTree) -> PyTree:
        return jax.tree.map(lambda a: jax.nn.softmax(a, axis=-1), acc)
