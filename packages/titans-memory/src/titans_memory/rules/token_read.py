"""``read: token`` — every token reads the memory after its own write (TTT's dual form, arXiv 2407.04620).

With ``read: chunk`` token t of a chunk reads M_{t'}, the chunk-start weights (read-before-write).
With ``read: token`` (the default) it reads M_t, the weights after its own write, y_t = M_t(q_t)
(Eq 15 with the M of Eq 14), while every gradient inside the chunk is still taken at M_{t'} (Eq 16): the
update is the same, only the read moves.

Unrolling Eq 13–14 from the chunk start (M_0, S_0: the carried memory and surprise; u_i = ∇ℓ(M_{t'}; x_i);
P_x(i..j) = ∏_{i ≤ l ≤ j} x_l; γ = 1 − α; mask_s = 0 on padding slots, which do not add S to M) to EVERY end
point t, not only to the chunk's end as ``chunk_coefficients`` does:

    S_t = P_η(1..t) S_0 − Σ_{i ≤ t} A_{t,i} u_i,      A_{t,i} = θ_i P_η(i+1..t)
    M_t = P_γ(1..t) M_0 + c_t S_0 − Σ_{i ≤ t} m_{t,i} u_i,
    c_t = Σ_{s ≤ t} mask_s P_γ(s+1..t) P_η(1..s),     m_{t,i} = Σ_{i ≤ s ≤ t} mask_s P_γ(s+1..t) A_{s,i}.

With the span-product matrices P_η[t, i] = P_η(i+1..t) and P_γ (rules/spans.py: no division, so η = 0 and
α = 1 are exact) each is one einsum: A = P_η · diag(θ), m = P_γ · diag(mask) · A, c = P_γ (mask ⊙ P_η(1..·)).
m is lower-triangular b×b (b×b×C with per-channel α); its last row is ``chunk_coefficients``' m, and the last
row of A is its a.

The read then needs M_t(q_t) for every t. ``MLPMemory.read_after_updates`` does it without any per-token
parameter tree: every weight gradient of an MLP is an outer product h_iᵀ δ_i, so layer by layer
q_t W_t = (base terms) − Σ_i m_{t,i} (q_t·h_i) δ_i, a masked attention-like product (m ⊙ Q Hᵀ) Δ. Models
without that method take the generic path here: one vector–Jacobian product per end point t (the weighting
m_t, vmapped over t), i.e. a parameter tree per token — slow, but exact for any model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from titans_core import MemoryModel

from titans_memory.rules.base import GradsAndRead, GradSums, PyTree, decay
from titans_memory.rules.spans import gate_spans


def token_coefficients(
    theta_b: jax.Array, eta_b: jax.Array, alpha_bxC: jax.Array, mask_b: jax.Array, spans=None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Coefficients that carry (M_0, S_0, u_1..u_b) to every token t of one chunk (see module docstring).

    Masked (padding) tokens must come with θ = 0, η = 1, α = 0 (as for ``chunk_coefficients``).
    Returns (keep_bxC, s_to_M_bxC, m_bxbxC): M_t = keep_t ⊙ M_0 + s_to_M_t ⊙ S_0 − Σ_i m_{t,i} ⊙ u_i, with
    m_{t,i} = 0 for i > t (⊙ over the output-channel axis when C > 1). ``spans``: ``spans.gate_spans``' result
    when the caller has it already.
    """
    eta_bxb, gamma_bxbxC = gate_spans(eta_b, alpha_bxC) if spans is None else spans  # [t, i]: P(i+1..t)
    keep_bxC = gamma_bxbxC[:, 0] * (1.0 - alpha_bxC[0])  # P_γ(1..t)
    eta_upto_b = eta_bxb[:, 0] * eta_b[0]  # P_η(1..t)
    A_bxb = eta_bxb * theta_b[None, :]  # row t: A_{t,·}
    m_bxbxC = jnp.einsum("tsc,si->tic", gamma_bxbxC, mask_b[:, None] * A_bxb)
    s_to_M_bxC = jnp.einsum("tsc,s->tc", gamma_bxbxC, mask_b * eta_upto_b)
    return keep_bxC, s_to_M_bxC, m_bxbxC


def linearize_for_token_read(
    model: MemoryModel, params: PyTree, q_TxD: jax.Array, k_TxD: jax.Array
) -> tuple[jax.Array, GradSums, GradsAndRead]:
    """(M(k), grad_sums, grads_and_read) at ``params`` = M_{t'}: ``read_and_linearize`` for ``read: token``.

    grad_sums is ``read_and_linearize``'s. grads_and_read(cot_TxD, weights, memory, surprise, keep_TxC,
    s_to_M_TxC, m_TxTxC) returns (sums, y_TxD): sums = grad_sums(cot_TxD, *weights), one tree
    Σ_i w_i ⊙ ∂⟨cot_i, M(k_i)⟩/∂params per weighting w, and y_t = M_t(q_t) with
    M_t = keep_t ⊙ memory + s_to_M_t ⊙ surprise + Σ_i m_{t,i} ⊙ ∂⟨cot_i, M(k_i)⟩/∂params.
    Uses the model's ``read_after_updates`` when it has one (MLPMemory), else the generic per-token path.
    """
    if hasattr(model, "read_after_updates"):
        return model.read_after_updates(params, q_TxD, k_TxD)
    pred, vjp = jax.vjp(lambda p: model.apply(p, k_TxD), params)

    def grad_sums(cot_TxD, *weights):
        return tuple(vjp(w * cot_TxD)[0] for w in weights)

    def grads_and_read(cot_TxD, weights, memory, surprise, keep_TxC, s_to_M_TxC, m_TxTxC):
        sums = grad_sums(cot_TxD, *weights)
        per_token = jax.vmap(lambda w: vjp(w * cot_TxD)[0])(m_TxTxC)  # one parameter tree per end point t

        def read_one(d, keep_C, s_to_M_C, q_D):
            base = decay(memory, keep_C), decay(surprise, s_to_M_C)
            params_t = jax.tree.map(lambda a, b, c: a + b + c, *base, d)
            return model.apply(params_t, q_D[None])[0]

        return sums, jax.vmap(read_one)(per_token, keep_TxC, s_to_M_TxC, q_TxD)

    return pred, grad_sums, grads_and_read
