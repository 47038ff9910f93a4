"""The Pallas kernel of the ``fused`` rule for the two-layer MLP memory: the chunk loop of Eq 13–16 for one head.

The memory (``MLPMemory`` with depth 2, declared as a ``TwoLayerForm``) is M(x) = x + γ ⊙ LN(W_1 σ(W_0 x))
(``residual_norm``) or W_1 σ(W_0 x), with W_0 (D×H), W_1 (H×D) and γ (D). One program runs every chunk of one
(batch element, head) in sequence, keeping M_{t'} (``start``), M and S of every parameter on chip. Per chunk, with
Q_c, K_c, V_c its b rows and every product taken at M_{t'} (Eq 16):

    y_c   = M_{t'}(Q_c)                                          (Eq 15, read-before-write)
    h     = σ(K_c W_0),  P = M_{t'}(K_c),  R = ∂ℓ/∂M(k) at P     (the objective's cotangent; ℓ2: 2(P − V_c), Eq 12)
    Δ_1   = LN-backward(R ⊙ γ)  (or R without the norm),  Δ_0 = (Δ_1 W_1ᵀ) ⊙ σ'(K_c W_0)
    u_i   = {W_0: k_iᵀ δ0_i,  W_1: h_iᵀ δ1_i,  γ: r_i ⊙ n_i}       (per-token gradients, never materialised)
    S     ← keep_S S − Σ_i a_i u_i                               (Eq 13 unrolled over the chunk)
    M     ← keep_M M + s_to_M S_old − Σ_i m_i u_i                (Eq 14 unrolled)
    M_{t'} ← M  where the chunk closes

The backward rows are MLPMemory._linearize's (the LayerNorm and activation pieces are the shared pure-jnp helpers of
memory_models.py); each weighted sum Σ_i w_i h_iᵀ δ_i is one token-contracting product per matrix. Coefficients
(a, m, keep_M, keep_S, s_to_M) come from ``momentum_scan.chunk_coefficients`` outside the kernel, with C = 1 (a
depth-2 memory has no per-channel α).

Surprise clamp (``max_grad_norm``): every matrix gradient of token i is an outer product, so the norm of its whole
gradient tree has the closed form ‖u_i‖² = ‖k_i‖²‖δ0_i‖² + ‖h_i‖²‖δ1_i‖² + ‖r_i ⊙ n_i‖² (the last term with the norm
only), which is what ``momentum_scan`` gets from its one-hot weightings. a and m are linear in θ_i, so the clamp is
a per-token factor min(1, max/‖u_i‖) on both, as in the matrix kernel. Decision: the squared norms are summed in
the state's dtype (float32 for bf16 inputs: the exact norm of the bf16 factors' outer products, where
``momentum_scan`` rounds each product to bf16 first); the products run in the inputs' dtype, the state stays in its
own. The step is run by the chunk loop shared with the matrix kernel (``run_chunks``, rules/fused_kernel.py), and
differentiated by the reverse-time kernel of rules/fused_backward.py (the VJP of this same step per chunk).

Dims below ``MIN_DOT`` (b, D or H) use broadcast-and-sum products instead of ``tl.dot`` (see fused_kernel.py).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from titans_memory.memory_models import TwoLayerForm, layer_norm, layer_norm_backward, value_and_slope
from titans_memory.rules.base import clip_scale, safe_sqrt
from titans_memory.rules.fused_kernel import MIN_DOT, _dot, _dot_tn, chunk_loop_with_vjp


def _dot_nt(a_bxD: jax.Array, w_HxD: jax.Array, use_dot: bool) -> jax.Array:
    """a wᵀ, contracting the last axes."""
    if use_dot:
        return jax.lax.dot_general(a_bxD, w_HxD, (((1,), (1,)), ((), ())))
    return jnp.sum(a_bxD[:, None, :] * w_HxD[None, :, :], axis=2)


def _row_sq(x_bxD: jax.Array, dtype) -> jax.Array:
    x = x_bxD.astype(dtype)
    return jnp.sum(x * x, axis=-1, keepdims=True)


def two_layer_step(form: TwoLayerForm, cotangent: Callable, max_grad_norm: float | None, use_dot: bool) -> Callable:
    """One chunk of the two-layer MLP memory (the equations above): step(start, memory, surprise, q, k, v, a, m,
    keep_M, keep_S, s_to_M, closes) -> (y, start, memory, surprise), each state a tuple over ``form.names`` (γ 1×D)."""
    act, norm = form.activation, form.residual_norm

    def apply(w, x, keep=False):
        """M(x) at weights w (inputs' dtype); with ``keep``, also what the backward rows need."""
        pre = _dot(x, w[0], use_dot)
        hidden, slope = value_and_slope(act, pre) if keep else (act(pre), None)
        out = _dot(hidden, w[1], use_dot)
        if not norm:
            return out, hidden, slope, None
        normed, rstd = layer_norm(out)
        return x + w[2] * normed, hidden, slope, (normed, rstd)

    def step(start, memory, surprise, q, k, v, a, m, keepM, keepS, sToM, closes):
        sdt = memory[0].dtype  # state dtype (float32 even when the inputs are bf16)
        cdt = q.dtype  # compute dtype of the products: the inputs' (as MLPMemory does)
        w = [x.astype(cdt) for x in start]
        y = apply(w, q)[0]  # Eq 15: tokens of the chunk read M_{t'}
        pred, hidden, slope, ln = apply(w, k, keep=True)
        resid = cotangent(pred, v)  # ∂ℓ_i/∂M(k_i) at M_{t'} (Eq 12, 16)
        # backward rows (MLPMemory._linearize): factors (h, δ) with u = hᵀ δ per matrix, and γ's rows
        delta1 = resid if ln is None else layer_norm_backward(resid * w[2], *ln)
        delta0 = _dot_nt(delta1, w[1], use_dot) * slope
        factors = [(k, delta0), (hidden, delta1)]
        gain_rows = None if ln is None else resid * ln[0]
        if max_grad_norm is not None:  # ‖u_i‖² = Σ_layers ‖h_i‖²‖δ_i‖² (+ ‖r_i ⊙ n_i‖²)
            sq = sum(_row_sq(h, sdt) * _row_sq(d, sdt) for h, d in factors)
            if gain_rows is not None:
                sq = sq + _row_sq(gain_rows, sdt)
            # √ with a finite derivative at 0 (the backward kernel differentiates this step)
            scale = clip_scale(safe_sqrt(sq), max_grad_norm)
            a, m = a * scale.astype(a.dtype), m * scale.astype(m.dtype)
        a, m = a.astype(cdt), m.astype(cdt)
        # −Σ_i w_i u_i for w = a (into S) and w = m (into M): the sign goes on the small δ rows
        d_S = [_dot_tn(a * h, -d, use_dot).astype(sdt) for h, d in factors]
        d_M = [_dot_tn(m * h, -d, use_dot).astype(sdt) for h, d in factors]
        if gain_rows is not None:
            d_S.append(jnp.sum(a * -gain_rows, axis=0, keepdims=True).astype(sdt))
            d_M.append(jnp.sum(m * -gain_rows, axis=0, keepdims=True).astype(sdt))
        keepM, keepS, sToM = (x.astype(sdt) for x in (keepM, keepS, sToM))
        new_surprise = tuple(keepS * s + d for s, d in zip(surprise, d_S, strict=True))
        new_memory = tuple(keepM * mem + sToM * s + d for mem, s, d in zip(memory, surprise, d_M, strict=True))
        start = tuple(jnp.where(closes, new, old) for new, old in zip(new_memory, start, strict=True))
        return y, start, new_memory, new_surprise

    return step


def two_layer_chunk_loop(
    form: TwoLayerForm,
    start: dict,
    memory: dict,
    surprise: dict,
    q_LxD,
    k_LxD,
    v_LxD,
    coefs,
    *,
    chunk_size,
    cotangent,
    max_grad_norm,
    interpret,
):
    """Run the kernel on one head: L = n·b tokens (already padded to whole chunks), parameter dicts (M_{t'}, M, S),
    ``coefs`` = (a_Lx1, m_Lx1, keep_M_nx1, keep_S_nx1, s_to_M_nx1, closes_nx1). Returns (y_LxD, start, memory,
    surprise), the dicts with the same names and shapes; differentiable (``chunk_loop_with_vjp``)."""
    D = q_LxD.shape[1]
    names = form.names
    if coefs[1].shape[-1] != 1:
        raise ValueError("the two-layer kernel takes one α per token (C = 1)")
    H = memory[form.w_in].shape[-1]
    as2d = lambda tree: [tree[name].reshape(1, -1) if tree[name].ndim == 1 else tree[name] for name in names]  # noqa: E731
    states = [x for tree in (start, memory, surprise) for x in as2d(tree)]
    step = two_layer_step(form, cotangent, max_grad_norm, min(chunk_size, D, H) >= MIN_DOT)
    y, outs = chunk_loop_with_vjp(
        step, states, q_LxD, k_LxD, v_LxD, coefs, chunk_size=chunk_size, interpret=interpret, name="titans_fused_mlp2"
    )
    P = len(names)
    trees = [
        {name: x.reshape(memory[name].shape) for name, x in zip(names, outs[i * P : (i + 1) * P], strict=True)}
        for i in range(3)
    ]
    return y, trees[0], trees[1], trees[2]
