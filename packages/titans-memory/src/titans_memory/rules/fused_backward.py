"""The backward kernel of the ``fused`` rule: the chunk loop of Eq 13–16 walked in reverse, for one head.

The forward kernel (``run_chunks`` in rules/fused_kernel.py) runs, per chunk c, a pure step

    (y_c, M_{t'}, M, S)_{c+1} = step((M_{t'}, M, S)_c, Q_c, K_c, V_c, a_c, m_c, keep_M_c, keep_S_c, s_to_M_c)

(the matrix memory's ``matrix_step``, the two-layer MLP's ``two_layer_step``). When it is differentiated it also
writes every chunk's start state (M_{t'}, M, S)_c: memory 3·n·|M| per (batch, head) for n = L/b chunks, the price
of a backward pass without a second forward pass of the chunk loop (with the paper's b = 16 and a 64 × 256 MLP
memory this is 3·|M|/16 ≈ 12 KiB per token and head in float32).

This kernel, one program per (batch, head) as the forward one, walks the chunks from the last to the first,
carrying the adjoint (M̄_{t'}, M̄, S̄) of the state at the chunk's end. Per chunk it reads the saved start state,
recomputes that chunk's internals and takes ``jax.vjp`` of the same step with the cotangents (ȳ_c, M̄_{t'}, M̄, S̄):
that gives the rows' cotangents (Q̄_c, K̄_c, V̄_c, ā_c, m̄_c), the chunk's gate coefficients' (keep_M, keep_S,
s_to_M) and the adjoint of its start state, carried to the previous chunk. The VJP is the step's own (so it is the
exact gradient of the forward kernel's arithmetic), including the second-order terms of a depth-2 memory (its
update depends on ∇ℓ(M_{t'}; k, v), so its VJP holds the inner loss's Hessian-vector products: JAX derives them
from the step's jnp code, the activation's slope included), the surprise clamp and the chunk-close select.
The cotangents of (a, m, keep_M, keep_S, s_to_M) go back to the gates θ, η, α through ``chunk_coefficients`` in
plain JAX outside the kernel (gate-only arithmetic on L scalars per head).

The VJP is traced inside the kernel body into ordinary primitives (dot products or broadcast-and-sum products,
elementwise ops, selects), which the Pallas interpreter runs on CPU and the Triton lowering compiles on GPU.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton


def _backward_kernel(step: Callable, P: int, n_chunks: int, b: int):
    """refs: 3P traces, q, k, v, a, m, keep_M, keep_S, s_to_M, closes, ȳ, 3P final-state cotangents | 3P start-state
    cotangents, q̄, k̄, v̄, ā, m̄, keep̄_M, keep̄_S, s̄_to_M."""

    def kernel(*refs):
        trace_refs, rest = refs[: 3 * P], refs[3 * P :]
        q_ref, k_ref, v_ref, a_ref, m_ref, keepM_ref, keepS_ref, sToM_ref, close_ref, dy_ref = rest[:10]
        d_final_refs, rest = rest[10 : 10 + 3 * P], rest[10 + 3 * P :]
        d_init_refs, (dq_ref, dk_ref, dv_ref, da_ref, dm_ref, dkeepM_ref, dkeepS_ref, dsToM_ref) = rest[:-8], rest[-8:]
        token_refs = (q_ref, k_ref, v_ref, a_ref, m_ref)
        token_outs = (dq_ref, dk_ref, dv_ref, da_ref, dm_ref)
        chunk_refs, chunk_outs = (keepM_ref, keepS_ref, sToM_ref), (dkeepM_ref, dkeepS_ref, dsToM_ref)
        state_rows = [r.shape[0] // n_chunks for r in trace_refs]

        def chunk(i, adjoint):
            c = n_chunks - 1 - i
            flat = [r[pl.ds(c * h, h), :] for r, h in zip(trace_refs, state_rows, strict=True)]
            state = tuple(tuple(flat[j * P : (j + 1) * P]) for j in range(3))
            rows = pl.ds(c * b, b)
            tokens = tuple(r[rows, :] for r in token_refs)
            per_chunk = tuple(r[pl.ds(c, 1), :] for r in chunk_refs)
            closes = close_ref[pl.ds(c, 1), :] > 0
            _, vjp = jax.vjp(lambda *args: step(*args, closes), *state, *tokens, *per_chunk)
            grads = vjp((dy_ref[rows, :].astype(q_ref.dtype), *adjoint))
            for ref, g in zip(token_outs, grads[3:8], strict=True):
                ref[rows, :] = g.astype(ref.dtype)
            for ref, g in zip(chunk_outs, grads[8:], strict=True):
                ref[pl.ds(c, 1), :] = g.astype(ref.dtype)
            return tuple(grads[:3])

        adjoint = tuple(tuple(r[...] for r in d_final_refs[j * P : (j + 1) * P]) for j in range(3))
        adjoint = jax.lax.fori_loop(0, n_chunks, chunk, adjoint)
        for ref, g in zip(d_init_refs, [x for group in adjoint for x in group], strict=True):
            ref[...] = g.astype(ref.dtype)

    return kernel


def run_chunks_backward(
    step: Callable, traces, q_LxD, k_LxD, v_LxD, coefs, dy_LxD, d_final, *, chunk_size, interpret, name
):
    """The backward kernel on one head: ``traces`` = the 3P saved start states (n·rows × cols each, from
    ``run_chunks(save=True)``), the forward inputs, ȳ and the final states' cotangents. Returns the cotangents of
    ``run_chunks``' inputs: (3P initial states, q, k, v, coefs) (closes, a flag, gets zeros)."""
    L, D = q_LxD.shape
    n = L // chunk_size
    P = len(traces) // 3
    a, m, keepM, keepS, sToM, closes = coefs
    state_shapes = [jax.ShapeDtypeStruct((x.shape[0] // n, x.shape[1]), x.dtype) for x in traces]
    like = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    out_shape = (*state_shapes, *(like(x) for x in (q_LxD, k_LxD, v_LxD, a, m, keepM, keepS, sToM)))
    params = None if interpret else pltriton.CompilerParams(num_warps=4, num_stages=1)  # as the forward kernel
    call = pl.pallas_call(
        _backward_kernel(step, P, n, chunk_size),
        out_shape=out_shape,
        interpret=interpret,
        compiler_params=params,
        name=name + "_bwd",
    )
    d_final = [g.astype(s.dtype) for g, s in zip(d_final, state_shapes, strict=True)]
    outs = call(*traces, q_LxD, k_LxD, v_LxD, *coefs, dy_LxD, *d_final)
    d_states, (dq, dk, dv, da, dm, dkeepM, dkeepS, dsToM) = outs[: 3 * P], outs[3 * P :]
    return list(d_states), dq, dk, dv, (da, dm, dkeepM, dkeepS, dsToM, jnp.zeros_like(closes))
