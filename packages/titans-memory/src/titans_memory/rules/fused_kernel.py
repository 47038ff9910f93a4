"""The Pallas kernel of the ``fused`` rule: the whole chunk loop of Eq 13–16 for one head of one matrix memory.

One program runs every chunk of one (batch element, head) in sequence, keeping M_{t'} (``start``), M and S on chip:

    y_c    = Q_c M_{t'}                                       (Eq 15, read-before-write)
    R_c    = ∂ℓ/∂M(k) at K_c M_{t'}  (the objective's cotangent; ℓ2: 2(K_c M_{t'} − V_c))   (Eq 12, 16)
    u_i    = k_iᵀ r_i,  ‖u_i‖ = ‖k_i‖ ‖r_i‖  (the surprise clamp rescales a_i and m_i by min(1, max/‖u_i‖))
    S     ← keep_S S − (a ⊙ K_c)ᵀ R_c                        (Eq 13 unrolled over the chunk)
    M     ← keep_M ⊙ M + s_to_M ⊙ S_old − K_cᵀ (m ⊙ R_c)     (Eq 14 unrolled; ⊙ over the output channel)
    M_{t'} ← M  where the chunk closes

The coefficients (a, m, keep_M, keep_S, s_to_M) depend on the gates only, so they are computed outside the kernel
by ``momentum_scan.chunk_coefficients`` (the suffix products and the reverse recurrence); the clamp, the only part
that depends on M, is linear in θ and is applied inside as a per-token factor on a and m.

The kernel is written for one head; ``NeuralMemory`` vmaps the rule over batch and heads, and the ``pallas_call``
batching rule turns that into ONE launch whose grid is (batch, head). ``interpret=True`` runs the same kernel as
plain JAX (CPU, and the float64 tests); otherwise Pallas lowers it for the backend (Triton on GPU).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from titans_memory.rules.base import clip_scale

MIN_DOT = 16  # Triton's tl.dot needs every dimension ≥ 16; smaller tiles use broadcast-and-sum products


def _dot(a_bxD: jax.Array, w_DxE: jax.Array, use_dot: bool) -> jax.Array:
    """a w."""
    return jnp.dot(a_bxD, w_DxE) if use_dot else jnp.sum(a_bxD[:, :, None] * w_DxE[None, :, :], axis=1)


def _dot_tn(a_bxD: jax.Array, b_bxE: jax.Array, use_dot: bool) -> jax.Array:
    """aᵀ b, contracting the token axis."""
    if use_dot:
        return jax.lax.dot_general(a_bxD, b_bxE, (((0,), (0,)), ((), ())))
    return jnp.sum(a_bxD[:, :, None] * b_bxE[:, None, :], axis=0)


def _row_norm(x_bxD: jax.Array) -> jax.Array:
    sq = jnp.sum(x_bxD * x_bxD, axis=-1, keepdims=True)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _make_kernel(n_chunks: int, b: int, cotangent: Callable, max_grad_norm: float | None, use_dot: bool):
    def kernel(
        start_ref, mem_ref, sur_ref, q_ref, k_ref, v_ref, a_ref, m_ref, keepM_ref, keepS_ref, sToM_ref, close_ref,
        y_ref, start_out, mem_out, sur_out,
    ):  # fmt: skip
        sdt = mem_ref.dtype  # state dtype (float32 even when the inputs are bf16)

        def chunk(c, carry):
            start, memory, surprise = carry
            rows = pl.ds(c * b, b)
            q, k, v = q_ref[rows, :], k_ref[rows, :], v_ref[rows, :]
            cdt = q.dtype  # compute dtype of the products: the inputs' (as MLPMemory does)
            w = start.astype(cdt)
            y_ref[rows, :] = _dot(q, w, use_dot).astype(y_ref.dtype)  # Eq 15: tokens of the chunk read M_{t'}
            resid = cotangent(_dot(k, w, use_dot), v)  # ∂ℓ_i/∂M(k_i) at M_{t'} (Eq 12, 16)
            a, m = a_ref[rows, :], m_ref[rows, :]  # b×1, b×C
            if max_grad_norm is not None:  # ‖u_i‖ = ‖k_i‖‖r_i‖ for u_i = k_iᵀ r_i
                norm = _row_norm(k) * _row_norm(resid)
                scale = clip_scale(norm, max_grad_norm).astype(a.dtype)
                a, m = a * scale, m * scale
            neg = -resid
            d_S = _dot_tn(a.astype(cdt) * k, neg, use_dot).astype(sdt)
            d_M = _dot_tn(k, m.astype(cdt) * neg, use_dot).astype(sdt)
            keepM, keepS, sToM = keepM_ref[pl.ds(c, 1), :], keepS_ref[pl.ds(c, 1), :], sToM_ref[pl.ds(c, 1), :]
            new_surprise = keepS.astype(sdt) * surprise + d_S
            new_memory = keepM.astype(sdt) * memory + sToM.astype(sdt) * surprise + d_M
            closes = close_ref[pl.ds(c, 1), :] > 0  # 1×1
            start = jnp.where(closes, new_memory, start)
            return start, new_memory, new_surprise

        carry = (start_ref[...], mem_ref[...], sur_ref[...])
        start, memory, surprise = jax.lax.fori_loop(0, n_chunks, chunk, carry)
        start_out[...] = start
        mem_out[...] = memory
        sur_out[...] = surprise

    return kernel


def matrix_chunk_loop(
    start_DxD, memory_DxD, surprise_DxD, q_LxD, k_LxD, v_LxD, coefs, *, chunk_size, cotangent, max_grad_norm, interpret
):
    """Run the kernel on one head: L = n·b tokens (already padded to whole chunks), ``coefs`` =
    (a_Lx1, m_LxC, keep_M_nxC, keep_S_nx1, s_to_M_nxC, closes_nx1). Returns (y_LxD, start, memory, surprise)."""
    L, D = q_LxD.shape
    n = L // chunk_size
    kernel = _make_kernel(n, chunk_size, cotangent, max_grad_norm, min(chunk_size, D) >= MIN_DOT)
    state_shape = jax.ShapeDtypeStruct(memory_DxD.shape, memory_DxD.dtype)
    out_shape = (jax.ShapeDtypeStruct((L, D), q_LxD.dtype), state_shape, state_shape, state_shape)
    # compiled: the Triton lowering (JAX's default GPU lowering is Mosaic GPU, whose TMA copies need 16-byte
    # strides that the per-token coefficient columns do not have)
    params = None if interpret else pltriton.CompilerParams(num_warps=4, num_stages=1)
    call = pl.pallas_call(
        kernel, out_shape=out_shape, interpret=interpret, compiler_params=params, name="titans_fused_matrix"
    )
    return call(start_DxD, memory_DxD, surprise_DxD, q_LxD, k_LxD, v_LxD, *coefs)
