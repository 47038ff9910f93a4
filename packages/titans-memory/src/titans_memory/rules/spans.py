"""Products of per-token gates over spans of one chunk, P_x(i+1..t), as one lower-triangular matrix.

Every coefficient that carries (M_0, S_0, u_1..u_b) through Eq 13–14 inside a chunk is a sum of such products
(rules/momentum_scan.py, rules/token_read.py). With the b×b matrix

    P[t, i] = ∏_{i < l ≤ t} x_l   (i ≤ t; 1 on the diagonal),      P[t, i] = 0   (i > t)

each of them is an einsum, so a chunk costs a handful of operations whatever b is.

Why a matrix and a hand-written derivative (a decision, measured): the coefficients used to be six
``jax.lax.associative_scan`` calls per chunk. Each one unrolls into ~2·log2(b) levels of slices, pads and
concatenations: 42% of the equations of the quickstart model's forward pass, inside the chunk scan, under
``jax.checkpoint`` and ``vmap``, where every transformation of the training step (JVP, partial evaluation,
transposition, batching) walks them again. Here the forward pass is one ``cumprod`` and the derivative is
a product of three matrices, with no division, so η = 0 and α = 1 (γ = 0) stay exact, values and gradients:

    dP[t, i] = Σ_{i < l ≤ t} P[t, l] · dx_l · P[l − 1, i]      (the product without its factor x_l)

Cost: b²·C numbers per chunk and channel for P, b³·C multiply-adds for its derivative (C = 1 unless α is per
channel); the scans were O(b·C·log b) in the forward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_jvp
def span_products(x_bxC: jax.Array) -> jax.Array:
    """P[t, i, c] = ∏_{i < l ≤ t} x[l, c] for i ≤ t (1 when i = t), 0 for i > t; shape b×b×C."""
    b = x_bxC.shape[0]
    idx = jnp.arange(b)
    after_bxb = idx[:, None] > idx[None, :]  # [l, i]: l > i
    factors_bxbxC = jnp.where(after_bxb[:, :, None], x_bxC[:, None, :], jnp.ones((), x_bxC.dtype))
    upto_bxbxC = jnp.cumprod(factors_bxbxC, axis=0)  # [t, i]: ∏_{l ≤ t, l > i} x_l
    return jnp.where((idx[:, None] >= idx[None, :])[:, :, None], upto_bxbxC, jnp.zeros((), x_bxC.dtype))


@span_products.defjvp
def _span_products_jvp(primals, tangents):
    (x_bxC,), (dx_bxC,) = primals, tangents
    P_bxbxC = span_products(x_bxC)
    b = x_bxC.shape[0]
    idx = jnp.arange(b)
    # before[l, i] = P[l − 1, i] for l > i (the factors strictly between i and l), 0 otherwise
    shifted = jnp.concatenate([jnp.zeros_like(P_bxbxC[:1]), P_bxbxC[:-1]], axis=0)
    before_bxbxC = jnp.where((idx[:, None] > idx[None, :])[:, :, None], shifted, jnp.zeros((), x_bxC.dtype))
    dP_bxbxC = jnp.einsum("tlc,lic->tic", P_bxbxC * dx_bxC[None, :, :], before_bxbxC)
    return P_bxbxC, dP_bxbxC


def gate_spans(eta_b: jax.Array, alpha_bxC: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(P_η as b×b, P_γ as b×b×C) with γ = 1 − α: the two matrices every chunk coefficient is made of, computed
    once per chunk and shared by ``chunk_coefficients`` and ``token_coefficients``."""
    return span_products(eta_b[:, None])[:, :, 0], span_products(1.0 - alpha_bxC)
