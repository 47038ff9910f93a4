"""Yaad's attentional bias (MIRAS, arXiv 2504.13173): a Huber loss whose threshold δ_t depends on the token.

Per token, with r = M(k_t) − v_t ∈ R^D and δ_t > 0 (scaled like Titans' Eq 12, so it equals ``l2`` for small
residuals):

    ℓ_t = ‖r‖²                 if ‖r‖₂ ≤ δ_t        ∂ℓ_t/∂M(k_t) = 2r
    ℓ_t = 2δ_t ‖r‖₁ − δ_t²      otherwise           ∂ℓ_t/∂M(k_t) = 2δ_t sign(r)

(MIRAS writes ½‖r‖² and δ‖r‖₁ − ½δ²; the factor 2 keeps Titans' unhalved ℓ2 scale, which θ's range was tuned for.)
``form: elementwise`` switches per coordinate instead (h(x) = x² for |x| ≤ δ_t, else 2δ_t|x| − δ_t²; C¹).

δ_t is data-dependent: the objective declares ``token_params = {"delta": init_delta}``, so the neural memory
computes δ_t = softplus(x_t w_δ + b_δ) per token and head (w_δ small, δ = init_delta for a fresh model), learned by
the outer loop like the gates θ, η, α, and every update rule passes it to ``loss`` / ``cotangent``
(``titans_core.protocols.Objective``). So Yaad runs in the fast chunked rule (``momentum_scan``) as well as in
``sequential``. Yaad's paper update is plain gradient descent with retention α (W_t = α_t W_{t−1} − η_t ∇ℓ);
with Titans' rules it gets Titans' momentum as well (set a small ``init_momentum`` to approach the paper's form).

Decisions: the branch is chosen on the value (no gradient flows through the switch itself, as for Titans' built-in
``huber``); the ℓ1 branch is offset by −δ_t² so that ℓ is continuous along the axes; the outer gradient reaches δ_t
through the ℓ1 branch's cotangent 2δ_t·sign(r).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from pydantic import Field
from titans_core import ComponentConfig


class YaadConfig(ComponentConfig):
    """Options of the ``yaad`` objective."""

    init_delta: float = Field(1.0, gt=0, description="δ_t of a fresh model (δ_t = softplus(x_t w_δ + b_δ))")
    form: Literal["yaad", "elementwise"] = Field(
        "yaad", description="yaad: switch on ‖M(k) − v‖₂ ≤ δ_t (MIRAS); elementwise: Huber per coordinate"
    )


class YaadObjective:
    """Huber loss with a per-token threshold δ_t (see the module docstring)."""

    def __init__(self, config: YaadConfig | None = None, **overrides):
        cfg = config or YaadConfig()
        self.config = cfg.model_copy(update=overrides) if overrides else cfg
        self.token_params = {"delta": self.config.init_delta}

    def loss(self, pred_TxD: jax.Array, v_TxD: jax.Array, delta: jax.Array) -> jax.Array:
        r = pred_TxD - v_TxD
        d_T = jnp.asarray(delta, r.dtype)
        if self.config.form == "elementwise":
            d = d_T[..., None]
            a = jnp.abs(r)
            return jnp.sum(jnp.where(a <= d, jnp.square(r), 2.0 * d * a - d * d), axis=-1)
        small = _norm(r) <= d_T
        return jnp.where(small, jnp.sum(jnp.square(r), -1), 2.0 * d_T * jnp.sum(jnp.abs(r), -1) - d_T * d_T)

    def cotangent(self, pred_TxD: jax.Array, v_TxD: jax.Array, delta: jax.Array) -> jax.Array:
        r = pred_TxD - v_TxD
        d = jnp.asarray(delta, r.dtype)[..., None]
        if self.config.form == "elementwise":
            return jnp.where(jnp.abs(r) <= d, 2.0 * r, 2.0 * d * jnp.sign(r))
        small = (_norm(r) <= d[..., 0])[..., None]
        return jnp.where(small, 2.0 * r, 2.0 * d * jnp.sign(r))


def _norm(r_TxD: jax.Array) -> jax.Array:
    """‖r‖₂ per token, used only to choose a branch (no gradient flows through it)."""
    return jnp.sqrt(jnp.sum(jnp.square(jax.lax.stop_gradient(r_TxD)), axis=-1))
