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

The chunk loop itself (``run_chunks``) is shared with the depth-2 kernel (rules/fused_mlp_kernel.py): a memory
supplies only its per-chunk step, a pure function of (M_{t'}, M, S) and the chunk's rows. ``chunk_loop_with_vjp``
makes the loop differentiable: its forward pass also writes every chunk's start state (M_{t'}, M, S), and its
backward pass is the reverse-time kernel of rules/fused_backward.py, which takes the VJP of the same step per chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from titans_memory.rules.base import clip_scale, safe_sqrt
from titans_memory.rules.fused_backward import run_chunks_backward

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
    return safe_sqrt(jnp.sum(x_bxD * x_bxD, axis=-1, keepdims=True))


def matrix_step(cotangent: Callable, max_grad_norm: float | None, use_dot: bool) -> Callable:
    """One chunk of the matrix memory (the equations above): step(start, memory, surprise, q, k, v, a, m, keep_M,
    keep_S, s_to_M, closes) -> (y, start, memory, surprise), each state a 1-tuple (W,)."""

    def step(start, memory, surprise, q, k, v, a, m, keepM, keepS, sToM, closes):
        (start,), (memory,), (surprise,) = start, memory, surprise
        sdt = memory.dtype  # state dtype (float32 even when the inputs are bf16)
        cdt = q.dtype  # compute dtype of the products: the inputs' (as MLPMemory does)
        w = start.astype(cdt)
        y = _dot(q, w, use_dot)  # Eq 15: tokens of the chunk read M_{t'}
        resid = cotangent(_dot(k, w, use_dot), v)  # ∂ℓ_i/∂M(k_i) at M_{t'} (Eq 12, 16)
        if max_grad_norm is not None:  # ‖u_i‖ = ‖k_i‖‖r_i‖ for u_i = k_iᵀ r_i
            norm = _row_norm(k) * _row_norm(resid)
            scale = clip_scale(norm, max_grad_norm).astype(a.dtype)
            a, m = a * scale, m * scale
        neg = -resid
        d_S = _dot_tn(a.astype(cdt) * k, neg, use_dot).astype(sdt)
        d_M = _dot_tn(k, m.astype(cdt) * neg, use_dot).astype(sdt)
        new_surprise = keepS.astype(sdt) * surprise + d_S
        new_memory = keepM.astype(sdt) * memory + sToM.astype(sdt) * surprise + d_M
        start = jnp.where(closes, new_memory, start)
        return y, (start,), (new_memory,), (new_surprise,)

    return step


def _forward_kernel(step: Callable, P: int, n_chunks: int, b: int, save: bool):
    """refs: 3P states (M_{t'}, M, S: P arrays each), q, k, v, a, m, keep_M, keep_S, s_to_M, closes | y, 3P final
    states (and, with ``save``, 3P traces: the state at every chunk's start, stacked along rows)."""

    def kernel(*refs):
        state_refs, (q_ref, k_ref, v_ref, a_ref, m_ref, *chunk_refs) = refs[: 3 * P], refs[3 * P : 3 * P + 9]
        y_ref, final_refs, trace_refs = refs[3 * P + 9], refs[3 * P + 10 : 6 * P + 10], refs[6 * P + 10 :]

        def chunk(c, carry):
            if save:  # the chunk's start state, for the backward kernel
                for ref, x in zip(trace_refs, [x for group in carry for x in group], strict=True):
                    ref[pl.ds(c * x.shape[0], x.shape[0]), :] = x
            rows = pl.ds(c * b, b)
            per_chunk = [r[pl.ds(c, 1), :] for r in chunk_refs]  # keep_M, keep_S, s_to_M, closes: 1×C, 1×1, …
            closes = per_chunk.pop() > 0
            tokens = (q_ref[rows, :], k_ref[rows, :], v_ref[rows, :], a_ref[rows, :], m_ref[rows, :])
            y, *state = step(*carry, *tokens, *per_chunk, closes)
            y_ref[rows, :] = y.astype(y_ref.dtype)
            return tuple(state)

        carry = tuple(tuple(r[...] for r in state_refs[i * P : (i + 1) * P]) for i in range(3))
        final = jax.lax.fori_loop(0, n_chunks, chunk, carry)
        for ref, value in zip(final_refs, [x for group in final for x in group], strict=True):
            ref[...] = value

    return kernel


def compiler_params(interpret: bool):
    """compiled: the Triton lowering (JAX's default GPU lowering is Mosaic GPU, whose TMA copies need 16-byte
    strides that the per-token coefficient columns do not have)."""
    return None if interpret else pltriton.CompilerParams(num_warps=4, num_stages=1)


def run_chunks(step: Callable, states, q_LxD, k_LxD, v_LxD, coefs, *, chunk_size, interpret, name, save=False):
    """The forward kernel on one head: ``states`` = 3P two-dimensional arrays (M_{t'}, M, S), L = n·b tokens
    (already padded to whole chunks), ``coefs`` = (a_Lx1, m_LxC, keep_M_nxC, keep_S_nx1, s_to_M_nxC, closes_nx1).
    Returns (y_LxD, 3P final states) and, with ``save``, the 3P traces (n·rows × cols: each chunk's start state)."""
    L, D = q_LxD.shape
    n = L // chunk_size
    P = len(states) // 3
    shapes = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in states]
    traces = [jax.ShapeDtypeStruct((n * x.shape[0], x.shape[1]), x.dtype) for x in states] if save else []
    out_shape = (jax.ShapeDtypeStruct((L, D), q_LxD.dtype), *shapes, *traces)
    kernel = _forward_kernel(step, P, n, chunk_size, save)
    call = pl.pallas_call(
        kernel, out_shape=out_shape, interpret=interpret, compiler_params=compiler_params(interpret), name=name
    )
    y, *outs = call(*states, q_LxD, k_LxD, v_LxD, *coefs)
    return (y, outs[: 3 * P], outs[3 * P :]) if save else (y, outs)


def chunk_loop_with_vjp(step: Callable, states, q_LxD, k_LxD, v_LxD, coefs, *, chunk_size, interpret, name):
    """``run_chunks`` as a differentiable function: a ``jax.custom_vjp`` whose forward pass is the forward kernel
    (saving each chunk's start state: memory 3·n·|M| per head, n = L/b chunks) and whose backward pass is the
    reverse-time kernel of rules/fused_backward.py. Returns (y_LxD, 3P final states)."""
    options = dict(chunk_size=chunk_size, interpret=interpret, name=name)

    @jax.custom_vjp
    def loop(states, q, k, v, coefs):
        return run_chunks(step, states, q, k, v, coefs, **options)

    def fwd(states, q, k, v, coefs):
        y, final, traces = run_chunks(step, states, q, k, v, coefs, save=True, **options)
        return (y, final), (traces, q, k, v, coefs)

    def bwd(residuals, cotangents):
        traces, q, k, v, coefs = residuals
        dy, d_final = cotangents
        return run_chunks_backward(step, traces, q, k, v, coefs, dy, d_final, **options)

    loop.defvjp(fwd, bwd)
    return loop(list(states), q_LxD, k_LxD, v_LxD, tuple(coefs))


def matrix_chunk_loop(
    start_DxD, memory_DxD, surprise_DxD, q_LxD, k_LxD, v_LxD, coefs, *, chunk_size, cotangent, max_grad_norm, interpret
):
    """Run the kernel on one head: L = n·b tokens (already padded to whole chunks), ``coefs`` =
    (a_Lx1, m_LxC, keep_M_nxC, keep_S_nx1, s_to_M_nxC, closes_nx1). Returns (y_LxD, start, memory, surprise);
    differentiable (``chunk_loop_with_vjp``)."""
    D = q_LxD.shape[1]
    step = matrix_step(cotangent, max_grad_norm, min(chunk_size, D) >= MIN_DOT)
    y, final = chunk_loop_with_vjp(
        step,
        [start_DxD, memory_DxD, surprise_DxD],
        q_LxD,
        k_LxD,
        v_LxD,
        coefs,
        chunk_size=chunk_size,
        interpret=interpret,
        name="titans_fused_matrix",
    )
    return y, *final
