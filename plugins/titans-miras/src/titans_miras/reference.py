"""Float64 numpy references, token by token, straight from the equations, for a matrix memory M(k) = k W.

Each loops over the tokens with Titans' chunk semantics (Eq 16): the gradient of token t is taken at W_{t'}, the
weights at the start of its chunk of b tokens, and token t reads W_{t'} (b = 1: W_{t−1}). Gates are Titans' (θ step,
η momentum, α forget, shape T, T, T×C); with a matrix memory ∇_W ℓ(k W, v) = kᵀ ∂ℓ/∂(k W).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Cotangent = Callable[[np.ndarray, int], np.ndarray]  # (residual r = kW − v, token index t) → ∂ℓ_t/∂(kW)


def l2_cotangent(r: np.ndarray, t: int) -> np.ndarray:
    """ℓ = ‖r‖² (Titans Eq 12)."""
    return 2.0 * r


def lp_cotangent(p: float) -> Cotangent:
    """ℓ = Σ_d |r_d|^p (Moneta's attentional bias)."""
    return lambda r, t: p * np.abs(r) ** (p - 1.0) * np.sign(r)


def yaad_cotangent(delta_T: np.ndarray) -> Cotangent:
    """ℓ_t = ‖r‖² if ‖r‖₂ ≤ δ_t else 2δ_t‖r‖₁ − δ_t² (Yaad, scaled like Eq 12)."""
    return lambda r, t: 2.0 * r if np.linalg.norm(r) <= delta_T[t] else 2.0 * delta_T[t] * np.sign(r)


def _loop(W0, A0, q, k, v, cot: Cotangent, b: int, update):
    """The common loop: update(A, u, t) → (A_t, W_t)."""
    start, W, A = W0, W0, A0  # (never modified in place)
    ys = []
    for t in range(len(q)):
        r = k[t] @ start - v[t]
        u = np.outer(k[t], cot(r, t))  # ∇_W ℓ_t at the chunk start
        ys.append(q[t] @ start)  # read-before-write
        A, W = update(A, u, t)
        if (t + 1) % b == 0:
            start = W
    return np.stack(ys), start, W, A


def titans_reference(W0, q, k, v, theta, eta, alpha, cot: Cotangent, b: int):
    """S_t = η_t S_{t−1} − θ_t u_t (Eq 13), M_t = (1 − α_t) M_{t−1} + S_t (Eq 14). Returns (y, start, M, S)."""

    def update(SM, u, t):
        S, M = SM
        S = eta[t] * S - theta[t] * u
        M = (1.0 - alpha[t]) * M + S
        return (S, M), M

    y, start, M, (S, _) = _loop(W0, (np.zeros_like(W0), W0), q, k, v, cot, b, update)
    return y, start, M, S


def moneta_reference(W0, q, k, v, theta, alpha, cot: Cotangent, b: int, q_norm: float = 4.0, eps: float = 1e-12):
    """A_t = (1 − α_t) A_{t−1} − θ_t u_t, W_t = A_t / ‖A_t‖_q^{q−2}, A_0 = W_0 = M_0. Returns (y, start, W, A)."""

    def update(A, u, t):
        A = (1.0 - alpha[t]) * A - theta[t] * u
        return A, A / (np.sum(np.abs(A) ** q_norm) + eps) ** ((q_norm - 2.0) / q_norm)

    return _loop(W0, W0, q, k, v, cot, b, update)


def memora_reference(L0, q, k, v, theta, alpha, cot: Cotangent, b: int):
    """W_t = softmax_rows((1 − α_t) log W_{t−1} − θ_t u_t), W_0 = softmax_rows(L_0). Returns (y, start, W, L)."""

    def softmax(L):
        e = np.exp(L - L.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def update(L, u, t):
        L = (1.0 - alpha[t]) * np.log(softmax(L)) - theta[t] * u
        return L, softmax(L)

    return _loop(softmax(L0), L0, q, k, v, cot, b, update)
