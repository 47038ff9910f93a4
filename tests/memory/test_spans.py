"""``span_products``: P[t, i] = ∏_{i < l ≤ t} x_l, and its hand-written derivative (rules/spans.py).

Values against a Python loop, and first and second derivatives against JAX's own derivative of a plain
``jnp.prod`` over masked factors (which has no division either), in float64, with zero factors (η = 0, α = 1).
Also: a chunk's coefficients trace to far fewer equations than the associative scans they replaced.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from titans_memory.rules.momentum_scan import chunk_coefficients
from titans_memory.rules.spans import span_products
from titans_memory.rules.token_read import token_coefficients


def products_by_prod(x_bxC):
    """The same matrix from ``jnp.prod`` over a b×b×b tensor of masked factors (JAX differentiates it)."""
    b = x_bxC.shape[0]
    t, i, l = jnp.meshgrid(jnp.arange(b), jnp.arange(b), jnp.arange(b), indexing="ij")
    inside = (l > i) & (l <= t)
    factors = jnp.where(inside[..., None], x_bxC[None, None, :, :], 1.0)
    return jnp.where((t[..., 0] >= i[..., 0])[..., None], jnp.prod(factors, axis=2), 0.0)


def loop_products(x_bxC):
    b, C = x_bxC.shape
    out = np.zeros((b, b, C))
    for t in range(b):
        for i in range(t + 1):
            out[t, i] = np.prod(x_bxC[i + 1 : t + 1], axis=0)
    return out


@settings(max_examples=5, deadline=None)  # each (b, C) compiles a program; the examples add both extremes
@given(
    b=st.integers(1, 9),
    C=st.sampled_from([1, 3]),
    zeros=st.lists(st.integers(0, 8), max_size=2),
    seed=st.integers(0, 2**16),
)
@example(b=1, C=3, zeros=[0], seed=1)  # the extremes of the chunk size, whatever hypothesis draws
@example(b=9, C=3, zeros=[2, 8], seed=2)
def test_values_and_derivatives_equal_plain_products(b, C, zeros, seed):
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        x = rng.uniform(0.0, 1.2, (b, C))
        for z in zeros:
            x[z % b, 0] = 0.0  # η = 0 or γ = 0 (α = 1): exact, no division anywhere
        w = rng.normal(size=(b, b, C))
        v = rng.normal(size=(b, C))
        P, grads, hvps = jax.device_get(_values_and_derivatives(jnp.asarray(x), jnp.asarray(w), jnp.asarray(v)))
        np.testing.assert_allclose(P, loop_products(x), rtol=1e-14, atol=0)
        np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(hvps[0], hvps[1], rtol=1e-12, atol=1e-13)


@jax.jit
def _values_and_derivatives(x, w, v):
    """span_products(x); the gradient of Σ w·P and its Hessian-vector product along v, for ours and for
    ``products_by_prod``: one compiled program per shape (op by op, the test compiled ~580 small programs)."""
    ours = lambda x: jnp.sum(w * span_products(x))  # noqa: E731
    plain = lambda x: jnp.sum(w * products_by_prod(x))  # noqa: E731
    hvp = lambda f: jax.jvp(jax.grad(f), (x,), (v,))[1]  # noqa: E731
    return span_products(x), (jax.grad(ours)(x), jax.grad(plain)(x)), (hvp(ours), hvp(plain))


def test_chunk_coefficients_trace_to_few_equations():
    """The reason for the module: both reads' coefficients are a fixed number of equations, whatever b is. The
    associative scans they replaced: 622 equations (1,464 with the gradient) at b = 16, 902 (2,128) at b = 64;
    now 131 (322) at both."""

    def count(jaxpr):
        n = 0
        for eqn in jaxpr.eqns:
            n += 1
            for param in eqn.params.values():
                if isinstance(param, jax.extend.core.ClosedJaxpr):
                    n += count(param.jaxpr)
        return n

    def both(theta, eta, alpha, mask):
        return chunk_coefficients(theta, eta, alpha, mask), token_coefficients(theta, eta, alpha, mask)

    def grad_of_both(theta, eta, alpha, mask):
        return jax.grad(lambda *g: sum(jnp.sum(x) for x in jax.tree.leaves(both(*g))), argnums=(0, 1, 2))(
            theta, eta, alpha, mask
        )

    sizes = {}
    for b in (16, 64):
        args = (jnp.ones(b), jnp.ones(b), jnp.ones((b, 1)), jnp.ones(b))
        sizes[b] = (count(jax.make_jaxpr(both)(*args).jaxpr), count(jax.make_jaxpr(grad_of_both)(*args).jaxpr))
    assert sizes[16] == sizes[64]  # independent of the chunk size
    assert sizes[16][0] <= 150 and sizes[16][1] <= 350, sizes
