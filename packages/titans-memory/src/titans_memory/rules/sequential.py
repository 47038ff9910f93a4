"""The ``sequential`` update rule: the plain reference, token by token, straight from Eq 13–14 and 16.

It is the oracle the fast rules are tested against: written for clarity, not speed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from titans_core import MemoryModel, Objective

from titans_memory.rules.base import (
    Gates,
    RuleBase,
    RuleState,
    clip_scale,
    decay,
    mask_gates,
    token_grad,
    tree_norm,
)


class SequentialRule(RuleBase):
    """For each token t, with b the chunk size and t' the start of t's chunk (Eq 16):

        u_t = ∇ℓ(M_{t'}; x_t),  ℓ = ‖M(k_t) − v_t‖²          (Eq 12, 16; ℓ is the ``objective``, default ℓ2)
        S_t = η_t S_{t−1} − θ_t u_t                         (Eq 13)
        M_t = (1 − α_t) M_{t−1} + S_t                       (Eq 14)
        y_t = M_{t'}(q_t)   (read: chunk, read-before-write)   or   y_t = M_t(q_t)   (read: token)   (Eq 15)

    and when t closes a chunk, M_{t'} := M_t. A token with ``store_T`` = 0 is read but not written:
    S_t = S_{t−1}, M_t = M_{t−1} (it keeps its place in the chunk: boundaries do not move). With b = 1 and
    read: chunk this is plain online gradient descent with momentum where token t reads M_{t−1}; read: token
    reads the weights after t's own write (TTT's per-token read, arXiv 2407.04620),
    while every gradient is still taken at M_{t'}.
    """

    def __call__(
        self,
        model: MemoryModel,
        state: RuleState,
        q_TxD: jax.Array,
        k_TxD: jax.Array,
        v_TxD: jax.Array,
        gates: Gates,
        *,
        aligned: bool = False,
        objective: Objective | None = None,
        store_T: jax.Array | None = None,
    ) -> tuple[jax.Array, RuleState]:
        del aligned  # any position works token by token
        b = self.chunk_size

        def step(carry: RuleState, inp):
            q, k, v, theta, eta, alpha, objective_1, store = inp
            u = token_grad(model, carry.start, k, v, objective, objective_1)
            theta = theta * clip_scale(tree_norm(u), self.config.max_grad_norm)
            surprise = jax.tree.map(lambda s, g: eta * s - theta * g, carry.surprise, u)
            # a skipped token (θ = 0, η = 1, α = 0) keeps S; it must not add S to M either
            memory = jax.tree.map(lambda m, s: jnp.where(store, m + s, m), decay(carry.memory, 1.0 - alpha), surprise)
            y = model.apply(memory if self.config.read == "token" else carry.start, q[None])[0]
            pos = carry.pos + 1
            closes = pos == b
            start = jax.tree.map(lambda m, s: jnp.where(closes, m, s), memory, carry.start)
            return RuleState(start, memory, surprise, jnp.where(closes, 0, pos)), y

        store = jnp.ones(q_TxD.shape[0], bool) if store_T is None else store_T.astype(bool)
        gates = mask_gates(gates, store_T)
        xs = (q_TxD, k_TxD, v_TxD, gates.theta_T, gates.eta_T, gates.alpha_TxC, gates.objective_T, store)
        state, y_TxD = jax.lax.scan(step, state, xs)
        return y_TxD, state
