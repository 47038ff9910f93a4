"""Memory models: the inner network M of the neural long-term memory (paper §3.1).

A memory model is a pure function of its own parameters (``MemoryModel`` protocol in titans_core.protocols): the
update rules differentiate ``apply`` with respect to the parameters at test time (Eq 12–14), and the outer loop learns
the initial parameters M_0. Parameters are a flat dict of arrays, laid out ``x @ W`` (input axis first), so the last
axis of every matrix is its output channel.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from pydantic import Field
from titans_core.config import ComponentConfig

ACTIVATIONS = {"gelu": jax.nn.gelu, "silu": jax.nn.silu, "relu": jax.nn.relu, "tanh": jnp.tanh}


class MLPMemoryConfig(ComponentConfig):
    """Options of the ``mlp`` memory model."""

    depth: int = Field(2, ge=1, description="number of layers L_M; 1 is a linear matrix memory M(x) = x W")
    expansion: float = Field(4.0, gt=0, description="hidden width = round(expansion * head_dim) for depth ≥ 2")
    activation: Literal["gelu", "silu", "relu", "tanh"] = Field("gelu", description="hidden activation σ")
    residual_norm: bool = Field(
        True, description="depth ≥ 2: the revision's form M(x) = x + LN(MLP(x)); false: plain MLP(x)"
    )


class MLPMemory:
    """M(x) = x + γ ⊙ LN(W_L σ(… σ(W_1 x))) (paper §3.1, revision's residual form), or x W for depth 1.

    Decisions where the paper is silent: matrices are drawn N(0, 1/fan_in); the LayerNorm has a gain γ (initialised to
    1, no bias) that is part of the memory's weights, so it is learned at test time like the matrices; depth 1 is a
    plain matrix memory (no residual, no norm), the form the gated delta rule of Appendix C uses.
    """

    def __init__(self, config: MLPMemoryConfig | None = None, **overrides):
        self.config = (config or MLPMemoryConfig()).model_copy(update=overrides) if overrides else (
            config or MLPMemoryConfig()
        )
        self.channel_axis_ok = self.config.depth == 1

    def hidden_width(self, dim: int) -> int:
        return max(1, round(self.config.expansion * dim))

    def init(self, key: jax.Array, dim: int) -> dict[str, jax.Array]:
        cfg = self.config
        if cfg.depth == 1:
            return {"w0": jax.random.normal(key, (dim, dim), jnp.float32) / jnp.sqrt(dim)}
        hid = self.hidden_width(dim)
        widths = [dim] + [hid] * (cfg.depth - 1) + [dim]
        keys = jax.random.split(key, cfg.depth)
        params = {
            f"w{i}": jax.random.normal(keys[i], (a, b), jnp.float32) / jnp.sqrt(a)
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
        }
        if cfg.residual_norm:
            params["ln_gain"] = jnp.ones((dim,), jnp.float32)
        return params

    def apply(self, params: dict[str, jax.Array], x_TxD: jax.Array) -> jax.Array:
        cfg = self.config
        act = ACTIVATIONS[cfg.activation]
        h = x_TxD
        for i in range(cfg.depth):
            h = h @ params[f"w{i}"].astype(x_TxD.dtype)
            if i < cfg.depth - 1:
                h = act(h)
        if cfg.depth == 1 or not cfg.residual_norm:
            return h
        mu = jnp.mean(h, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(h - mu), axis=-1, keepdims=True)
        return x_TxD + params["ln_gain"].astype(x_TxD.dtype) * (h - mu) * jax.lax.rsqrt(var + 1e-5)
