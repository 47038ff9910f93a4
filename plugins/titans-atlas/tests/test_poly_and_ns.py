"""The ``poly`` memory model (φ of ATLAS) and the Newton–Schulz orthogonalisation (the Atlas update)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pydantic import ValidationError
from titans_atlas import PolyMemory, PolyMemoryConfig, newton_schulz, orthogonalize_tree
from titans_core import MemoryModel, check_contract
from titans_memory import MLPMemory, MLPMemoryConfig

LINEAR = MLPMemory(MLPMemoryConfig(depth=1))


def test_poly_starts_at_the_taylor_coefficients_and_keeps_the_width():
    poly = PolyMemory(PolyMemoryConfig(degree=3), inner=LINEAR)
    assert isinstance(poly, MemoryModel) and poly.channel_axis_ok is False
    params = poly.init(jax.random.key(0), 4)
    assert jnp.allclose(params["phi"], jnp.asarray([1.0, 1 / 2, 1 / 6]))
    assert params["inner"]["w0"].shape == (4, 4)
    x = jax.random.normal(jax.random.key(1), (5, 4))
    assert jnp.allclose(poly.features(params["phi"], x), x + x**2 / 2 + x**3 / 6, atol=1e-6)
    assert jnp.allclose(poly.apply(params, x), (x + x**2 / 2 + x**3 / 6) @ params["inner"]["w0"], atol=1e-5)
    check_contract("memory_model", poly, who="poly")


def test_normalised_poly_ignores_forgetting_and_the_plain_one_does_not():
    x = jax.random.normal(jax.random.key(2), (3, 4))
    phi = jnp.asarray([0.7, -0.2, 0.4])
    for normalize in (True, False):
        poly = PolyMemory(PolyMemoryConfig(degree=3, normalize=normalize), inner=LINEAR)
        same = jnp.allclose(poly.features(0.5 * phi, x), poly.features(phi, x), atol=1e-6)
        assert same == normalize
    plain = PolyMemory(PolyMemoryConfig(degree=3, normalize=False), inner=LINEAR)
    assert jnp.allclose(plain.features(phi, x), 0.7 * x - 0.2 * x**2 + 0.4 * x**3, atol=1e-6)


def test_gradients_reach_the_coefficients_and_the_inner_memory():
    poly = PolyMemory(PolyMemoryConfig(degree=2), inner=MLPMemory(MLPMemoryConfig(depth=2, expansion=1.0)))
    params = poly.init(jax.random.key(0), 4)
    k, v = jax.random.normal(jax.random.key(3), (2, 6, 4))
    grads = jax.jit(jax.grad(lambda p: jnp.sum(jnp.square(poly.apply(p, k) - v))))(params)  # one compiled program
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_poly_config_validation():
    with pytest.raises(ValidationError):
        PolyMemoryConfig(degree=0)
    with pytest.raises(ValidationError):
        PolyMemoryConfig(inner={"name": "no_such_model"})


def _muon_numpy(G, steps=5):  # Muon's zeropower_via_newtonschulz5, in numpy float64
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.T if G.shape[0] > G.shape[1] else G
    X = X / np.sqrt(np.sum(X * X) + 1e-14)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if G.shape[0] > G.shape[1] else X


@pytest.mark.parametrize("shape", [(4, 4), (3, 6), (6, 3)])
def test_newton_schulz_is_muons_iteration_and_nearly_orthogonal(shape):
    G = np.random.default_rng(0).normal(size=shape)
    with jax.enable_x64(True):
        X = np.asarray(jax.jit(newton_schulz)(jnp.asarray(G)))  # one compiled program (eager: op by op)
    assert np.allclose(X, _muon_numpy(G), atol=1e-12)
    singular = np.linalg.svd(X, compute_uv=False)
    assert singular.min() > 0.5 and singular.max() < 1.3  # Muon's coefficients: ≈ 1, not exactly
    U, _, Vt = np.linalg.svd(G, full_matrices=False)
    assert np.sum(X * (U @ Vt)) / math.sqrt(np.sum(X * X) * min(shape)) > 0.95  # it points along U Vᵀ


def test_newton_schulz_of_zero_is_zero_with_finite_gradients_and_vectors_pass_through():
    @jax.jit
    def everything(zero, tree):  # one compiled program (eager: each op of the five iterations compiled alone)
        grad = jax.grad(lambda g: jnp.sum(newton_schulz(g)))(zero)
        return newton_schulz(zero), grad, orthogonalize_tree(tree), newton_schulz(tree["w"])

    zero = jnp.zeros((3, 3))
    tree = {"w": jnp.eye(2) * 3.0, "gain": jnp.asarray([2.0, -1.0])}
    ns_zero, grad, out, ns_w = everything(zero, tree)
    assert jnp.array_equal(ns_zero, zero)
    assert bool(jnp.all(jnp.isfinite(grad)))
    assert jnp.array_equal(out["gain"], tree["gain"]) and jnp.allclose(out["w"], ns_w)
