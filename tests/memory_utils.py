"""Small builders shared by the memory tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from titans_memory import Gates, MLPMemory, MLPMemoryConfig


def random_problem(seed: int, T: int, D: int, depth: int, C: int = 1, dtype=jnp.float64, **model_options):
    """(model, M_0, q, k, v, gates) with random inputs and random gates in their valid ranges;
    ``model_options`` go to MLPMemoryConfig (e.g. residual_norm=False)."""
    ks = jax.random.split(jax.random.key(seed), 8)
    model = MLPMemory(MLPMemoryConfig(depth=depth, expansion=2.0, **model_options))
    p0 = jax.tree.map(lambda x: x.astype(dtype), model.init(ks[0], D))
    q, k, v = (jax.random.normal(ks[i], (T, D), dtype) for i in (1, 2, 3))
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    gates = Gates(
        0.1 * jax.random.uniform(ks[4], (T,), dtype),
        jax.random.uniform(ks[5], (T,), dtype),
        0.3 * jax.random.uniform(ks[6], (T, C), dtype),
    )
    return model, p0, q, k, v, gates


def slice_gates(g: Gates, a: int, b: int) -> Gates:
    return jax.tree.map(lambda x: x[a:b], g)


def max_rel_err(a, b) -> float:
    """max |a − b| / max |a| over every leaf of two pytrees."""
    errs = [
        float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(x)) + 1e-30))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ]
    return max(errs)
