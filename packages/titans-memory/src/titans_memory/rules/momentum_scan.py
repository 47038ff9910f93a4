"""The ``momentum_scan`` update rule (default): chunked and parallel (paper §3.2).

Inside a chunk every gradient is taken at the chunk-start weights M_{t'} (Eq 16), so the per-token gradients
u_i = ∇ℓ(M_{t'}; x_i) are all known at once, and the recurrences

    S_t = η_t S_{t−1} − θ_t u_t          (Eq 13)
    M_t = (1 − α_t) M_{t−1} + S_t        (Eq 14)

are linear. Unrolled to the chunk's end (token b), with P_x(i..j) = ∏_{i ≤ l ≤ j} x_l and γ = 1 − α:

    S_b = P_η(1..b) S_0 − Σ_i a_i u_i,              a_i = θ_i P_η(i+1..b)
    M_b = P_γ(1..b) M_0 + η_1 G_1 S_0 − Σ_i θ_i G_i u_i,
    G_i = Σ_{t ≥ i} P_γ(t+1..b) P_η(i+1..t),   i.e.  G_i = P_γ(i+1..b) + η_{i+1} G_{i+1}   (a reverse linear recurrence)

The scalar (or per-channel) coefficients come from ``jax.lax.associative_scan`` over the chunk with the operator
(a1, b1) ∘ (a2, b2) = (a2·a1, a2·b1 + b2). The weighted sums Σ_i c_i u_i are then ONE vector–Jacobian product of the
memory's forward pass on the chunk's keys with the cotangent c_i · 2(M(k_i) − v_i): the gradient of a weighted sum of
losses is the weighted sum of gradients, so no parameter tree is ever materialised per token (only per chunk).
Chunks run in sequence under ``lax.scan`` (the next chunk's gradients depend on M), each under ``jax.checkpoint``
so training memory grows linearly with sequence length.

A call may start mid-chunk (``state.pos`` > 0, e.g. after a prefill that ended mid-chunk): the tokens are placed at
offset pos of a zero-padded buffer of whole chunks; padding tokens are the identity (θ = 0, η = 1, α = 0, and they do
not add S to M), so the result equals the sequential rule token for token.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from titans_core import MemoryModel

from titans_memory.rules.common import (
    Gates,
    RuleState,
    UpdateRuleConfig,
    clip_scale,
    decay,
    init_rule_state,
    tree_norm,
)


def _affine_combine(earlier, later):
    """(a1, b1) ∘ (a2, b2) = (a2·a1, a2·b1 + b2): compose x ↦ a1 x + b1, then x ↦ a2 x + b2."""
    a1, b1 = earlier
    a2, b2 = later
    return a2 * a1, a2 * b1 + b2


def _suffix_products(x_TxC: jax.Array) -> jax.Array:
    """P(i+1..T) = ∏_{j > i} x_j for every i (exclusive suffix product), by associative scan."""
    incl = jax.lax.associative_scan(jnp.multiply, x_TxC, reverse=True)
    return jnp.concatenate([incl[1:], jnp.ones_like(incl[:1])], axis=0)


def chunk_coefficients(theta_b, eta_b, alpha_bxC, mask_b):
    """Coefficients that carry (M_0, S_0, u_1..u_b) to the end of one chunk (see module docstring).

    Masked (padding) tokens must come with θ = 0, η = 1, α = 0; ``mask_b`` stops them from adding S to M.
    Returns (a_b, m_bxC, keep_M_C, keep_S, s_to_M_C): S_b = keep_S·S_0 − Σ a_i u_i and
    M_b = keep_M ⊙ M_0 + s_to_M ⊙ S_0 − Σ m_i ⊙ u_i (⊙ over the output-channel axis when C > 1).
    """
    gamma_bxC = 1.0 - alpha_bxC
    eta_after_b = _suffix_products(eta_b[:, None])[:, 0]  # P_η(i+1..b)
    gamma_after_bxC = _suffix_products(gamma_bxC)  # P_γ(i+1..b)
    # G_i = η_{i+1} G_{i+1} + μ_i P_γ(i+1..b), G_{b+1} = 0: a reverse linear recurrence.
    eta_next_bx1 = jnp.concatenate([eta_b[1:], jnp.zeros_like(eta_b[:1])])[:, None]
    drive_bxC = mask_b[:, None] * gamma_after_bxC
    _, G_bxC = jax.lax.associative_scan(
        _affine_combine, (jnp.broadcast_to(eta_next_bx1, drive_bxC.shape), drive_bxC), reverse=True
    )
    a_b = theta_b * eta_after_b
    m_bxC = theta_b[:, None] * G_bxC
    keep_M_C = jnp.prod(gamma_bxC, axis=0)
    keep_S = jnp.prod(eta_b)
    s_to_M_C = eta_b[0] * G_bxC[0]
    return a_b, m_bxC, keep_M_C, keep_S, s_to_M_C


class MomentumScanRule:
    """Chunked parallel form of Eq 13–14 and 16; equals ``SequentialRule`` (outputs, state and gradients)."""

    def __init__(self, config: UpdateRuleConfig | None = None, **overrides):
        cfg = config or UpdateRuleConfig()
        self.config = cfg.model_copy(update=overrides) if overrides else cfg
        self.chunk_size = self.config.chunk_size

    def init_state(self, params0) -> RuleState:
        return init_rule_state(params0)

    def _chunk(self, model: MemoryModel, carry, inp):
        start, memory, surprise = carry
        q_bxD, k_bxD, v_bxD, theta_b, eta_b, alpha_bxC, mask_b, closes = inp
        y_bxD = model.apply(start, q_bxD)  # read-before-write: the chunk reads M_{t'}
        pred_bxD, vjp = jax.vjp(lambda p: model.apply(p, k_bxD), start)
        resid_bxD = 2.0 * (pred_bxD - v_bxD)  # ∂ℓ_i/∂M(k_i) for ℓ = ‖M(k) − v‖²
        if self.config.max_grad_norm is not None:  # per-token ‖u_i‖, only when the clamp is on
            norms = jax.vmap(lambda r: tree_norm(vjp(r)[0]), in_axes=0)(
                jnp.eye(k_bxD.shape[0], dtype=resid_bxD.dtype)[:, :, None] * resid_bxD[None]
            )
            theta_b = theta_b * clip_scale(norms, self.config.max_grad_norm)
        a_b, m_bxC, keep_M, keep_S, s_to_M = chunk_coefficients(theta_b, eta_b, alpha_bxC, mask_b)
        cot = jnp.stack([a_b[:, None] * resid_bxD, m_bxC * resid_bxD])  # C ∈ {1, D} broadcasts
        grads = jax.vmap(lambda c: vjp(c)[0])(cot)  # Σ_i a_i u_i and Σ_i m_i u_i in one batched VJP
        g_S = jax.tree.map(lambda g: g[0], grads)
        g_M = jax.tree.map(lambda g: g[1], grads)
        new_surprise = jax.tree.map(lambda s, g: keep_S * s - g, surprise, g_S)
        new_memory = jax.tree.map(lambda m, s, g: m + s - g, decay(memory, keep_M), decay(surprise, s_to_M), g_M)
        new_start = jax.tree.map(lambda n, o: jnp.where(closes, n, o), new_memory, start)
        return (new_start, new_memory, new_surprise), y_bxD

    def __call__(
        self, model: MemoryModel, state: RuleState, q_TxD, k_TxD, v_TxD, gates: Gates, *, aligned: bool = False
    ) -> tuple[jax.Array, RuleState]:
        """``aligned=True`` promises state.pos == 0 (a fresh sequence), which saves one chunk of padding."""
        T, b = q_TxD.shape[0], self.chunk_size
        offset = 0 if aligned else state.pos
        n_chunks = math.ceil(T / b) if aligned else math.ceil((T + b - 1) / b)
        L = n_chunks * b

        def place(x, fill):
            buf = jnp.full((L,) + x.shape[1:], fill, x.dtype)
            return jax.lax.dynamic_update_slice_in_dim(buf, x, offset, axis=0)

        slots = jnp.arange(L)
        mask = ((slots >= offset) & (slots < offset + T)).astype(q_TxD.dtype)
        xs = (
            place(q_TxD, 0.0),
            place(k_TxD, 0.0),
            place(v_TxD, 0.0),
            place(gates.theta_T, 0.0),
            place(gates.eta_T, 1.0),
            place(gates.alpha_TxC, 0.0),
            mask,
        )
        xs = tuple(x.reshape((n_chunks, b) + x.shape[1:]) for x in xs)
        closes = (jnp.arange(1, n_chunks + 1) * b) <= offset + T
        body = jax.checkpoint(lambda c, i: self._chunk(model, c, i))
        (start, memory, surprise), y = jax.lax.scan(
            body, (state.start, state.memory, state.surprise), xs + (closes,)
        )
        y_TxD = jax.lax.dynamic_slice_in_dim(y.reshape((L,) + y.shape[2:]), offset, T, axis=0)
        pos = (jnp.asarray(offset, jnp.int32) + T) % b
        return y_TxD, RuleState(start, memory, surprise, pos.astype(jnp.int32))
