"""Newton–Schulz orthogonalisation (the Muon update, used by ATLAS' "Atlas" rule, arXiv 2505.23735 §4).

NS5(G) ≈ U Vᵀ for G = U Σ Vᵀ: five steps of the quintic iteration X ← aX + (b XXᵀ + c (XXᵀ)²) X with Muon's
coefficients (a, b, c) = (3.4445, −4.7750, 2.0315), starting from X = G / ‖G‖_F. The singular values land in
roughly [0.7, 1.2] rather than exactly 1 (the coefficients trade exactness for speed, as in Muon).

Decisions where the paper is silent: the Frobenius norm is √(‖G‖²_F + ε²) with ε = 1e-7 (finite, differentiable at
G = 0, where NS5(0) = 0); a wide-or-square matrix is iterated as is, a tall one through its transpose (the smaller
Gram matrix); only leaves with at least two axes are orthogonalised (over their last two axes) — vectors such as a
LayerNorm gain or the polynomial coefficients of φ keep their plain momentum update.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

MUON_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
EPS = 1e-7

__all__ = ["MUON_COEFFICIENTS", "newton_schulz", "orthogonalize_tree"]


def newton_schulz(G_MxN: jax.Array, steps: int = 5) -> jax.Array:
    """NS_steps(G) over the last two axes (see the module docstring)."""
    a, b, c = MUON_COEFFICIENTS
    tall = G_MxN.shape[-2] > G_MxN.shape[-1]
    X = jnp.swapaxes(G_MxN, -1, -2) if tall else G_MxN
    X = X / jnp.sqrt(jnp.sum(X * X, axis=(-2, -1), keepdims=True) + EPS * EPS)
    for _ in range(steps):
        A = X @ jnp.swapaxes(X, -1, -2)
        X = a * X + (b * A + c * (A @ A)) @ X
    return jnp.swapaxes(X, -1, -2) if tall else X


def orthogonalize_tree(tree: Any, steps: int = 5) -> Any:
    """NS_steps on every leaf with ≥ 2 axes; other leaves are returned unchanged."""
    return jax.tree.map(lambda x: newton_schulz(x, steps) if x.ndim >= 2 else x, tree)
