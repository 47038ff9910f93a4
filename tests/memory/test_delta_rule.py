"""A depth-1 (matrix) memory without momentum is the gated delta rule (paper Appendix C), computed here in numpy."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from memory_utils import random_problem
from titans_memory import Gates, MomentumScanRule, SequentialRule


def gated_delta_rule(W0, K, V, Q, theta, alpha, chunk):
    """Closed form, row-vector convention M(k) = k W, ℓ = ‖kW − v‖², ∇_W ℓ = 2 kᵀ(kW − v), η = 0.

    Within a chunk every gradient is at the chunk-start W_0 (Eq 16), so with β_t = ∏_{j≤t}(1 − α_j) the chunk's end is
    the matmul form of Eq 17:  W_b = β_b W_0 − 2 Kᵀ diag(θ_i β_b / β_i) (K W_0 − V).
    Reads at the chunk-start weights."""
    T = K.shape[0]
    W = W0.copy()
    ys = []
    for s in range(0, T, chunk):
        k, v, q = K[s : s + chunk], V[s : s + chunk], Q[s : s + chunk]
        th, keep = theta[s : s + chunk], 1.0 - alpha[s : s + chunk, 0]
        ys.append(q @ W)
        beta = np.cumprod(keep)
        W = beta[-1] * W - 2.0 * k.T @ np.diag(th * beta[-1] / beta) @ (k @ W - v)
    return np.concatenate(ys), W


@pytest.mark.parametrize("rule_cls", [SequentialRule, MomentumScanRule])
@pytest.mark.parametrize("chunk", [1, 4, 16])
def test_linear_memory_without_momentum_is_the_gated_delta_rule(rule_cls, chunk):
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(11, 32, 5, depth=1)
        gates = Gates(gates.theta_T, np.zeros(32), gates.alpha_TxC)  # η = 0: no momentum
        rule = rule_cls(chunk_size=chunk, read="chunk")  # the reference reads at the chunk start
        y, state = jax.jit(lambda *a: rule(model, rule.init_state(p0), *a))(q, k, v, gates)  # one compiled program
        args = [np.asarray(a) for a in (p0["w0"], k, v, q, gates.theta_T, gates.alpha_TxC)]
        y_ref, W_ref = gated_delta_rule(*args, chunk)
        np.testing.assert_allclose(np.asarray(y), y_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(state.memory["w0"]), W_ref, rtol=1e-10, atol=1e-12)
