"""Shared small layers (Flax NNX): RMSNorm, a causal depthwise 1-D convolution with an incremental cache, a SwiGLU
feed-forward and rotary position embeddings. Used by titans-memory and titans-attention.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

#: Logical axis names carried by parameters as Flax NNX partitioning metadata (``out_sharding``). The trainer maps
#: them onto mesh axes (e.g. embed → fsdp, heads/mlp/vocab → tensor); code at call sites never shards by hand.
LOGICAL_AXES = {
    "embed": "the model width D",
    "heads": "attention / memory heads (H, or H·Dh when flattened)",
    "mlp": "feed-forward hidden width",
    "vocab": "vocabulary",
}


def sharded(init, *names: str | None):
    """Wrap an initializer so its parameter carries logical axis names (one per array axis; None = replicated)."""
    return nnx.with_partitioning(init, tuple(names), eager_sharding=False)


def head_width(d_model: int, num_heads: int, *, even: bool = False, prefix: str = "", suffix: str = "") -> int:
    """The per-head width d_model // num_heads; one clear error when num_heads does not divide d_model, or when
    ``even`` and the width is odd (rotary embeddings rotate pairs of channels). ``prefix`` names the field (e.g.
    "memory."), ``suffix`` ends the divisibility message (e.g. " when head_dim is not set")."""
    if d_model % num_heads:
        raise ValueError(f"{prefix}num_heads ({num_heads}) must divide d_model ({d_model}){suffix}")
    width = d_model // num_heads
    if even and width % 2:
        raise ValueError(f"the head width d_model // num_heads = {width} must be even for rotary embeddings")
    return width


def persistent_param(
    rngs: nnx.Rngs, shape: tuple[int, ...], out_sharding: tuple[str | None, ...], dtype: jnp.dtype | None = None
) -> nnx.Param | None:
    """Learnable persistent tokens (Eq 19) ~ N(0, 0.02²) of ``shape``, whose first axis counts the tokens; None when
    that count is 0, so a model never holds a zero-size parameter (orbax cannot checkpoint empty arrays). ``dtype``
    None draws in JAX's default float type."""
    if not shape[0]:
        return None
    w = 0.02 * jax.random.normal(rngs.params(), shape, float if dtype is None else dtype)
    return nnx.Param(w, out_sharding=out_sharding, eager_sharding=False)


def linear(d_in: int, d_out: int, in_axis: str | None, out_axis: str | None, *, rngs: nnx.Rngs, **kw) -> nnx.Linear:
    """nnx.Linear (no bias unless asked) whose kernel carries the logical axes (in_axis, out_axis)."""
    kernel_init = kw.pop("kernel_init", nnx.initializers.lecun_normal())
    use_bias = kw.pop("use_bias", False)
    if use_bias:
        bias_init = kw.pop("bias_init", nnx.initializers.zeros_init())
        kw["bias_init"] = sharded(bias_init, out_axis)
    return nnx.Linear(
        d_in, d_out, use_bias=use_bias, kernel_init=sharded(kernel_init, in_axis, out_axis), rngs=rngs, **kw
    )


class RMSNorm(nnx.Module):
    """y = x / rms(x) · (1 + γ) over the last axis; γ starts at 0 so the layer starts as a plain normalisation."""

    def __init__(self, dim: int, *, eps: float = 1e-6, axis: str | None = None, rngs: nnx.Rngs | None = None):
        del rngs  # no random initialisation; accepted for a uniform constructor signature
        self.scale = nnx.Param(jnp.zeros((dim,), jnp.float32), out_sharding=(axis,), eager_sharding=False)
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * (1.0 + self.scale[...])).astype(x.dtype)


class CausalDepthwiseConv(nnx.Module):
    """Depthwise 1-D convolution over time with no look-ahead: y_t = Σ_j w_j ⊙ x_{t−K+1+j} (j = 0..K−1).

    ``cache_BxKm1xC`` holds the last K−1 inputs of the previous call, so processing a sequence in pieces equals one
    call on the whole (zeros before the first token). The kernel starts as the identity (the last tap is 1) plus a small
    random perturbation, so a fresh layer passes its input through.
    """

    def __init__(self, channels: int, kernel_size: int = 4, *, rngs: nnx.Rngs):
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be ≥ 1, got {kernel_size}")
        w = 0.02 * jax.random.normal(rngs.params(), (kernel_size, channels), jnp.float32)
        meta = {"eager_sharding": False}
        self.kernel_KxC = nnx.Param(w.at[-1].add(1.0), out_sharding=(None, "heads"), **meta)
        self.bias_C = nnx.Param(jnp.zeros((channels,), jnp.float32), out_sharding=("heads",), **meta)
        self.kernel_size = kernel_size
        self.channels = channels

    def init_cache(self, batch_size: int, dtype=jnp.float32) -> jax.Array:
        return jnp.zeros((batch_size, self.kernel_size - 1, self.channels), dtype)

    def __call__(self, x_BxTxC: jax.Array, cache_BxKm1xC: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Returns (y_BxTxC, new cache holding the last K−1 inputs)."""
        B, T, C = x_BxTxC.shape
        K = self.kernel_size
        if cache_BxKm1xC is None:
            cache_BxKm1xC = self.init_cache(B, x_BxTxC.dtype)
        xp = jnp.concatenate([cache_BxKm1xC.astype(x_BxTxC.dtype), x_BxTxC], axis=1)  # B x (K-1+T) x C
        w = self.kernel_KxC[...].astype(x_BxTxC.dtype)
        y = sum(xp[:, j : j + T] * w[j] for j in range(K)) + self.bias_C[...].astype(x_BxTxC.dtype)
        return y, xp[:, T:]


class SwiGLU(nnx.Module):
    """Feed-forward W_down(silu(x W_gate) ⊙ x W_up) (Llama style)."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.gate = linear(dim, hidden, "embed", "mlp", rngs=rngs)
        self.up = linear(dim, hidden, "embed", "mlp", rngs=rngs)
        self.down = linear(hidden, dim, "mlp", "embed", rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.silu(self.gate(x)) * self.up(x))


def rope(x_BxTxHxDh: jax.Array, positions_BxT: jax.Array, *, base: float = 10_000.0) -> jax.Array:
    """Rotary position embedding (RoFormer), rotating pairs (i, i + Dh/2) by angle position · base^(−2i/Dh)."""
    Dh = x_BxTxHxDh.shape[-1]
    if Dh % 2:
        raise ValueError(f"rotary embeddings need an even head width, got {Dh}")
    half = Dh // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions_BxT.astype(jnp.float32)[..., None] * freqs  # B x T x half
    cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
    x32 = x_BxTxHxDh.astype(jnp.float32)
    x1, x2 = x32[..., :half], x32[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return out.astype(x_BxTxHxDh.dtype)
