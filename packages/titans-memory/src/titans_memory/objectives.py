"""Objectives: the memory's inner loss ℓ(M(k), v) — its attentional bias (MIRAS, arXiv 2504.13173) — and ℓ's
gradient with respect to the prediction (the ``Objective`` protocol in titans_core.protocols).

Both update rules take the objective as a keyword: ``sequential`` differentiates ``loss`` through the memory
model (u_t = ∇_M ℓ(M(k_t), v_t), Eq 12–13), ``momentum_scan`` only needs ``cotangent`` (∂ℓ_t/∂M(k_t); the
parameter gradients are its vector–Jacobian products through M), so any objective keeps the fast chunked path.
Each built-in's ``cotangent`` is written out by hand and equals the autodiff gradient of its ``loss``,
including its own derivative (the outer loop differentiates through it); ``titans_memory.testing`` checks that
for any objective. Per token, with r = M(k) − v ∈ R^D:

- ``l2`` (default, Eq 12, no ½): ℓ = ‖r‖², cotangent 2r.
- ``huber`` with threshold δ, scaled like Eq 12 so that it equals ``l2`` where the residual is small:
  ``elementwise``: ℓ = Σ_d h(r_d), h(x) = x² for |x| ≤ δ, else 2δ|x| − δ² (C¹; cotangent
  2·clip(r, −δ, δ)); ``yaad`` (MIRAS' Yaad, a switch on the whole residual): ℓ = ‖r‖² if ‖r‖₂ ≤ δ, else
  2δ‖r‖₁ − δ² (cotangent 2r, else 2δ·sign(r)).
- ``lp`` (MIRAS' Moneta attentional bias): ℓ = ‖r‖_p^p = Σ_d |r_d|^p, p > 1 (default 3);
  cotangent p·|r|^{p−1}·sign(r).
- ``dot``: ℓ = −⟨M(k), v⟩ (the linear-attention / Hebbian bias), cotangent −v.

Decisions where the papers leave room: Huber's δ is a fixed option, or with ``per_token: true`` Yaad's
data-dependent δ_t, learned by the neural memory as a gate (``Objective.token_params``; the ``yaad`` objective of
plugins/titans-miras is the same loss as a plugin); the ℓ1 branch of Yaad is offset by −δ² so that ℓ is continuous
along the axes.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from pydantic import Field
from titans_core.config import ComponentConfig
from titans_core.protocols import Objective


class L2Config(ComponentConfig):
    """The ``l2`` objective has no options."""


class L2Objective:
    """ℓ = ‖M(k) − v‖² (paper Eq 12, no ½), ∂ℓ/∂M(k) = 2(M(k) − v): Titans' associative loss."""

    def __init__(self, config: L2Config | None = None):
        self.config = config or L2Config()

    def loss(self, pred_TxD: jax.Array, v_TxD: jax.Array) -> jax.Array:
        return jnp.sum(jnp.square(pred_TxD - v_TxD), axis=-1)

    def cotangent(self, pred_TxD: jax.Array, v_TxD: jax.Array) -> jax.Array:
        return 2.0 * (pred_TxD - v_TxD)


class HuberConfig(ComponentConfig):
    """Options of the ``huber`` objective."""

    delta: float = Field(1.0, gt=0, description="δ: the residual size where ℓ turns from quadratic to ℓ1")
    form: Literal["elementwise", "yaad"] = Field(
        "elementwise", description="elementwise: Huber per coordinate (C¹); yaad: switch on ‖M(k) − v‖₂ ≤ δ"
    )
    per_token: bool = Field(
        False,
        description="learn δ_t per token and head (δ_t = softplus(x_t w_δ + b_δ), starting at delta), as Yaad",
    )


class HuberObjective:
    """Huber loss, scaled like Eq 12 (see the module docstring for both forms). With ``per_token`` the threshold
    is data-dependent, δ_t (Yaad, MIRAS): the objective declares ``token_params = {"delta": delta}``, so the neural
    memory learns a δ gate and every rule passes δ_t (shape T) to ``loss`` and ``cotangent``."""

    def __init__(self, config: HuberConfig | None = None, **overrides):
        cfg = config or HuberConfig()
        self.config = cfg.model_copy(update=overrides) if overrides else cfg
        self.token_params: dict[str, float] = {"delta": self.config.delta} if self.config.per_token else {}

    def _delta(self, delta: jax.Array | None, dtype) -> jax.Array:
        """δ as the rules pass it: per token (shape T) with ``per_token``, else the fixed option."""
        if self.config.per_token:
            if delta is None:
                raise ValueError("huber with per_token: true needs the per-token delta (Gates.objective_T)")
            return jnp.asarray(delta, dtype)
        return jnp.asarray(self.config.delta, dtype)

    def loss(self, pred_TxD: jax.Array, v_TxD: jax.Array, delta: jax.Array | None = None) -> jax.Array:
        r = pred_TxD - v_TxD
        d_T = self._delta(delta, r.dtype)
        d = d_T[..., None] if self.config.per_token else d_T
        if self.config.form == "elementwise":
            a = jnp.abs(r)
            return jnp.sum(jnp.where(a <= d, jnp.square(r), 2.0 * d * a - d * d), axis=-1)
        small = _norm(r) <= d_T
        return jnp.where(small, jnp.sum(jnp.square(r), -1), 2.0 * d_T * jnp.sum(jnp.abs(r), -1) - d_T * d_T)

    def cotangent(self, pred_TxD: jax.Array, v_TxD: jax.Array, delta: jax.Array | None = None) -> jax.Array:
        r = pred_TxD - v_TxD
        d_T = self._delta(delta, r.dtype)
        d = d_T[..., None] if self.config.per_token else d_T
        if self.config.form == "elementwise":
            return jnp.where(jnp.abs(r) <= d, 2.0 * r, 2.0 * d * jnp.sign(r))
        small = (_norm(r) <= d_T)[..., None]
        return jnp.where(small, 2.0 * r, 2.0 * d * jnp.sign(r))


def _norm(r_TxD: jax.Array) -> jax.Array:
    """‖r‖₂ per token, used only to choose a branch (no gradient flows through it)."""
    return jnp.sqrt(jnp.sum(jnp.square(jax.lax.stop_gradient(r_TxD)), axis=-1))


class LpConfig(ComponentConfig):
    """Options of the ``lp`` objective."""

    p: float = Field(3.0, gt=1, description="ℓ = Σ_d |M(k)_d − v_d|^p (Moneta uses p = 3)")


class LpObjective:
    """ℓ = ‖M(k) − v‖_p^p (MIRAS' Moneta), ∂ℓ/∂M(k) = p |r|^{p−1} sign(r)."""

    def __init__(self, config: LpConfig | None = None, **overrides):
        cfg = config or LpConfig()
        self.config = cfg.model_copy(update=overrides) if overrides else cfg

    def loss(self, pred_TxD: jax.Array, v_TxD: jax.Array) -> jax.Array:
        return jnp.sum(jnp.abs(pred_TxD - v_TxD) ** self.config.p, axis=-1)

    def cotangent(self, pred_TxD: jax.Array, v_TxD: jax.Array) -> jax.Array:
        r = pred_TxD - v_TxD
        p = self.config.p
        return p * jnp.abs(r) ** (p - 1.0) * jnp.sign(r)


class DotConfig(ComponentConfig):
    """The ``dot`` objective has no options."""


class DotObjective:
    """ℓ = −⟨M(k), v⟩: the linear-attention (Hebbian) attentional bias; ∂ℓ/∂M(k) = −v."""

    def __init__(self, config: DotConfig | None = None):
        self.config = config or DotConfig()

    def loss(self, pred_TxD: jax.Array, v_TxD: jax.Array) -> jax.Array:
        return -jnp.sum(pred_TxD * v_TxD, axis=-1)

    def cotangent(self, pred_TxD: jax.Array, v_TxD: jax.Array) -> jax.Array:
        return jnp.broadcast_to(-v_TxD, pred_TxD.shape).astype(pred_TxD.dtype)


L2 = L2Objective()

OBJECTIVES = {
    "l2": (L2Config, L2Objective),
    "huber": (HuberConfig, HuberObjective),
    "lp": (LpConfig, LpObjective),
    "dot": (DotConfig, DotObjective),
}


def resolve(objective: Objective | None) -> Objective:
    """The objective a rule uses: the one it is given, else ℓ2 (Eq 12)."""
    return L2 if objective is None else objective
