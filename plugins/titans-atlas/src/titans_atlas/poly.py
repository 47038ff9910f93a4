"""The ``poly`` memory model: M(φ(x)), a polynomial feature map φ in front of any memory model (ATLAS §3,
arXiv 2505.23735).

ATLAS raises the memory's capacity by mapping keys (and queries) through a polynomial feature map φ with learnable
coefficients, initialised to 1/i! so that φ starts as the Taylor expansion of exp (the softmax kernel). Here

    φ(x) = Z₀ · Σ_{i=1..p} a_i x^{⊙i} / Σ_{i=1..p} |a_i|,     a_i initialised to 1/i!,  Z₀ = Σ_{i=1..p} 1/i!

(x^{⊙i}: the element-wise power), and M(x) = M_inner(φ(x)) with any registered memory model as M_inner.

Decisions where the paper is silent or does not fit this library:

- **Element-wise powers, not the concatenated monomials** of the polynomial kernel: φ keeps the width of x, so the
  inner memory and the memory contract (T×D → T×D) are unchanged, and the cost is p element-wise products.
- **No constant term** (i starts at 1): a constant feature carries nothing about the key.
- **The coefficients are memory parameters** (leaf ``phi`` of the parameter tree, next to ``inner``): the outer
  loop learns their initial value (M_0, ``learn_init``) and the update rule adapts them at test time like every
  other weight. The rules' forgetting multiplies every weight by (1 − α_t) each token, which would shrink φ
  towards 0 within a few hundred tokens; dividing by Σ|a_i| (``normalize: true``, the default) makes φ invariant to
  that uniform scaling, while the gradient still changes the mix of the powers. Z₀ makes φ at initialisation
  exactly Σ x^{⊙i}/i!. ``normalize: false`` gives the plain Σ a_i x^{⊙i}.
- ``channel_axis_ok`` is false: φ's coefficients are shared by all channels.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from pydantic import Field
from titans_core import ComponentConfig, ComponentRef, MemoryModel, component_field, get_registry

__all__ = ["PolyMemory", "PolyMemoryConfig"]


class PolyMemoryConfig(ComponentConfig):
    """Options of the ``poly`` memory model."""

    degree: int = Field(3, ge=1, le=8, description="p: φ(x) = Σ_{i=1..p} a_i x^{⊙i} (element-wise powers)")
    normalize: bool = Field(True, description="divide by Σ|a_i| (times Σ 1/i!): φ is invariant to forgetting")
    inner: ComponentRef("memory_model") = component_field("memory_model", "mlp")  # type: ignore[valid-type]


class PolyMemory:
    """M(x) = M_inner(φ(x)) (see the module docstring). ``factory(config)`` of the registration; ``inner``
    overrides the configured inner memory model (e.g. in tests)."""

    channel_axis_ok = False

    def __init__(self, config: PolyMemoryConfig | None = None, *, inner: MemoryModel | None = None) -> None:
        self.config = config if config is not None else PolyMemoryConfig()
        self.inner = inner if inner is not None else get_registry().build(self.config.inner)

    def initial_coefficients(self) -> jax.Array:
        """a_i = 1/i!, i = 1..p."""
        return jnp.asarray([1.0 / math.factorial(i) for i in range(1, self.config.degree + 1)], jnp.float32)

    def init(self, key: jax.Array, dim: int) -> dict:
        """{"phi": a (p,), "inner": the inner model's M_0}."""
        return {"phi": self.initial_coefficients(), "inner": self.inner.init(key, dim)}

    def features(self, phi_P: jax.Array, x_TxD: jax.Array) -> jax.Array:
        """φ(x) for coefficients a = phi_P (T×D → T×D)."""
        phi_P = phi_P.astype(x_TxD.dtype)
        powers_PxTxD = jnp.cumprod(jnp.broadcast_to(x_TxD, (phi_P.shape[0],) + x_TxD.shape), axis=0)  # x, x², …
        feats_TxD = jnp.tensordot(phi_P, powers_PxTxD, axes=1)
        if self.config.normalize:
            z0 = sum(1.0 / math.factorial(i) for i in range(1, self.config.degree + 1))
            feats_TxD = feats_TxD * (z0 / jnp.sum(jnp.abs(phi_P)))
        return feats_TxD

    def apply(self, params: dict, x_TxD: jax.Array) -> jax.Array:
        return self.inner.apply(params["inner"], self.features(params["phi"], x_TxD))
