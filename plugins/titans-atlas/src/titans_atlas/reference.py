"""The per-token reference of the Omega and Atlas rules: a plain Python loop, straight from the equations.

It is the oracle ``OmegaRule`` is tested against (outputs, final state and outer gradients, in float64): written for
clarity, not speed — one ``jax.grad`` per token of every window. For every token t (0-based), with b the chunk size
and t' the start of t's chunk:

    M_{t'} := M_{t−1}  when t opens a chunk (t mod b = 0)
    y_t    = M_{t'}(q_t)                                                         (read-before-write)
    g_t    = Σ_{i = max(0, t−c+1)..t} w_{t,i} ∇ℓ(M_{t'}; k_i, v_i)              (the Omega window, ATLAS §3)
             w_{t,i} = θ_i (gamma: theta) or θ_t (gamma: uniform), divided by c when ``normalize``
    S_t    = η_t S_{t−1} − g_t                                                   (momentum)
    M_t    = (1 − α_t) M_{t−1} + S_t            (omega)
    M_t    = (1 − α_t) M_{t−1} + θ_t NS5(S_t)   (atlas: orthogonalize)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from titans_core import Gates, MemoryModel, Objective, RuleState
from titans_memory import L2Objective

from titans_atlas.newton_schulz import orthogonalize_tree
from titans_atlas.omega import OmegaRuleConfig

__all__ = ["omega_reference"]


def omega_reference(
    config: OmegaRuleConfig,
    model: MemoryModel,
    params0,
    q_TxD: jax.Array,
    k_TxD: jax.Array,
    v_TxD: jax.Array,
    gates: Gates,
    objective: Objective | None = None,
) -> tuple[jax.Array, RuleState]:
    """(y_TxD, state after the sequence) of the Omega (or, with ``config.orthogonalize``, Atlas) rule from a fresh
    state M_0 = ``params0``, S_0 = 0. ``state.extra`` is () (the reference keeps the whole sequence)."""
    objective = objective if objective is not None else L2Objective()
    c, b, T = config.context, config.chunk_size, q_TxD.shape[0]

    def window_loss(params, t):  # Σ_i w_{t,i} ℓ(M; k_i, v_i) over the window of token t
        i = slice(max(0, t - c + 1), t + 1)
        w_W = (
            gates.theta_T[i] if config.gamma == "theta" else jnp.broadcast_to(gates.theta_T[t], gates.theta_T[i].shape)
        )
        if config.normalize:
            w_W = w_W / c
        return jnp.sum(w_W * objective.loss(model.apply(params, k_TxD[i]), v_TxD[i]))

    memory, start = params0, params0
    surprise = jax.tree.map(jnp.zeros_like, params0)
    ys = []
    for t in range(T):
        if t % b == 0:
            start = memory
        ys.append(model.apply(start, q_TxD[t][None])[0])
        g = jax.grad(lambda p, t=t: window_loss(p, t))(start)  # the gradient of the window loss at M_{t'}
        eta, theta = gates.eta_T[t], gates.theta_T[t]
        surprise = jax.tree.map(lambda s, g_, eta=eta: eta * s - g_, surprise, g)
        keep_C = 1.0 - gates.alpha_TxC[t]
        if config.orthogonalize:
            step = jax.tree.map(lambda o, theta=theta: theta * o, orthogonalize_tree(surprise, config.ns_steps))
        else:
            step = surprise
        memory = jax.tree.map(lambda m, s, keep_C=keep_C: keep_C * m + s, memory, step)
        if (t + 1) % b == 0:
            start = memory
    pos = jnp.asarray(T % b, jnp.int32)
    return jnp.stack(ys), RuleState(start, memory, surprise, pos)
