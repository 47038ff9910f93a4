"""A SwiGLU memory model: M(x) = x + W_out (silu(x W_gate) ⊙ (x W_up)).

It satisfies ``titans_core.protocols.MemoryModel``: ``init(key, dim)`` draws the parameters of one head,
``apply(params, x_TxD)`` is the forward pass, and the update rules differentiate ``apply`` with respect to the
parameters at test time. Parameters are a flat dict of arrays laid out ``x @ W`` (input axis first), like the
built-in ``mlp`` memory.

Initialisation (the paper is silent on it for this architecture): ``W_gate`` and ``W_up`` are drawn
N(0, 1/dim), ``W_out`` is drawn N(0, 1/hidden) and multiplied by ``out_init_scale`` (default 0.1). With the
residual form the memory therefore starts close to the identity map — retrieval returns roughly the query
until the memory has learned something — while every matrix still receives a non-zero gradient from the first
step (a zero ``W_out`` would leave ``W_gate`` and ``W_up`` without gradient).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from pydantic import Field
from titans_core import ComponentConfig


class SwiGLUMemoryConfig(ComponentConfig):
    """Options of the ``swiglu`` memory model."""

    expansion: float = Field(2.0, gt=0, description="hidden width = round(expansion * head_dim)")
    residual: bool = Field(True, description="M(x) = x + SwiGLU(x); false: M(x) = SwiGLU(x)")
    out_init_scale: float = Field(
        0.1, ge=0, description="W_out is drawn N(0, 1/hidden) times this; small → M starts near the identity"
    )


class SwiGLUMemory:
    """The ``swiglu`` memory model (see the module docstring). ``factory(config)`` of the registration."""

    #: α per output channel is not meaningful: M is not linear in its parameters.
    channel_axis_ok = False

    def __init__(self, config: SwiGLUMemoryConfig | None = None) -> None:
        self.config = config if config is not None else SwiGLUMemoryConfig()

    def hidden_width(self, dim: int) -> int:
        """Width of the gated hidden layer for a head of width ``dim``."""
        return max(1, round(self.config.expansion * dim))

    def init(self, key: jax.Array, dim: int) -> dict[str, jax.Array]:
        """Parameters M_0 of one head: ``w_gate``, ``w_up`` (dim × hidden) and ``w_out`` (hidden × dim)."""
        hidden = self.hidden_width(dim)
        k_gate, k_up, k_out = jax.random.split(key, 3)
        return {
            "w_gate": jax.random.normal(k_gate, (dim, hidden), jnp.float32) / jnp.sqrt(dim),
            "w_up": jax.random.normal(k_up, (dim, hidden), jnp.float32) / jnp.sqrt(dim),
            "w_out": jax.random.normal(k_out, (hidden, dim), jnp.float32)
            * (self.config.out_init_scale / jnp.sqrt(hidden)),
        }

    def apply(self, params: dict[str, jax.Array], x_TxD: jax.Array) -> jax.Array:
        """y = x + W_out(silu(x W_gate) ⊙ (x W_up)) (without ``x +`` when ``residual`` is false)."""
        dtype = x_TxD.dtype
        gate_TxH = jax.nn.silu(x_TxD @ params["w_gate"].astype(dtype))
        up_TxH = x_TxD @ params["w_up"].astype(dtype)
        y_TxD = (gate_TxH * up_TxH) @ params["w_out"].astype(dtype)
        return x_TxD + y_TxD if self.config.residual else y_TxD
