"""The surprise clamp's per-token gradient norms: ``MLPMemory.grad_norms`` (closed form) equals the norm of each
token's gradient tree, and the chunked rule gives the same outputs, state and outer gradients with it as through
the generic path (one gradient tree per token), compared in float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from memory_utils import agreement_program, max_rel_err, random_problem
from titans_memory import MLPMemory, MLPMemoryConfig, MomentumScanRule, SequentialRule, UpdateRuleConfig
from titans_memory.testing import check_grad_norms, check_memory_model


@pytest.mark.parametrize(
    ("depth", "options"), [(1, {}), (2, {}), (2, {"residual_norm": False}), (3, {}), (2, {"activation": "tanh"})]
)
def test_grad_norms_equal_the_norm_of_each_tokens_gradient(depth, options):
    with jax.enable_x64(True):
        model, p0, q, k, v, _ = random_problem(depth, 9, 5, depth, **options)
        cot = (q - v).at[3].set(0.0)  # token 3: a zero gradient, norm 0
        got = jax.jit(model.grad_norms)(p0, k, cot)
        assert got.shape == (9,) and got.dtype == jnp.float64
        assert float(got[3]) == 0.0
    # against autodiff's tree norm of each token's gradient (float64, ≤ 1e-12), as the plugin kit checks it
    check_grad_norms(model, T=9, D=5, seed=depth, tol=1e-12)


def test_grad_norms_have_a_finite_gradient_at_zero():
    """The clamp differentiates through the norms: a token with a zero gradient must not make the outer gradient
    NaN (``safe_sqrt``)."""
    with jax.enable_x64(True):
        model, p0, _, k, v, _ = random_problem(4, 6, 4, 2)
        cot = v.at[2].set(0.0)
        g = jax.grad(lambda p, c: jnp.sum(model.grad_norms(p, k, c)), argnums=(0, 1))(p0, cot)
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g))


class GenericMemory:
    """The MLP memory without ``grad_norms``: the chunked rule then takes the generic path for the clamp."""

    def __init__(self, model):
        self.model, self.channel_axis_ok = model, model.channel_axis_ok
        self.init, self.apply = model.init, model.apply
        self.read_and_linearize, self.read_after_updates = model.read_and_linearize, model.read_after_updates


@pytest.mark.parametrize(("depth", "read"), [(1, "token"), (2, "chunk")])  # (the norms do not depend on the read)
def test_clamped_rule_equals_generic_path_and_reference(depth, read):
    """With a clamp that binds for some tokens and not others, the closed form and the per-token trees give the
    same outputs, state and outer gradients; both equal the sequential reference."""
    T, chunk = 19, 4
    CLAMP = 5.0 if depth == 1 else 8.0
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(10 + depth, T, 5, depth)
        cfg = UpdateRuleConfig(chunk_size=chunk, max_grad_norm=CLAMP, read=read)
        fast = agreement_program(SequentialRule(cfg), MomentumScanRule(cfg), model)
        generic = agreement_program(SequentialRule(cfg), MomentumScanRule(cfg), GenericMemory(model))
        _, ((_, (y_ref, s_ref)), g_ref), ((_, (y_f, s_f)), g_f) = fast(p0, q, k, v, gates)
        _, _, ((_, (y_g, s_g)), g_g) = generic(p0, q, k, v, gates)
        norms = model.grad_norms(p0, k, 2 * (model.apply(p0, k) - v))  # ℓ2's cotangent, at M_0 (the first chunk)
        assert bool(jnp.any(norms > CLAMP)) and bool(jnp.any(norms < CLAMP))  # the clamp binds for some tokens only
        for got in ((y_f, tuple(s_f), g_f), (y_g, tuple(s_g), g_g)):
            assert max_rel_err(got[0], y_ref) < 1e-10
            assert max_rel_err(got[1], tuple(s_ref)) < 1e-10
            assert max_rel_err(got[2], g_ref) < 1e-9
        assert max_rel_err((y_f, tuple(s_f), g_f), (y_g, tuple(s_g), g_g)) < 1e-10


class OffByOnePercent(MLPMemory):
    def grad_norms(self, params, k_TxD, cot_TxD):
        return 1.01 * super().grad_norms(params, k_TxD, cot_TxD)


def test_plugin_kit_checks_grad_norms():
    """``check_memory_model`` checks a model's grad_norms against autodiff: the MLP's pass, a wrong one fails."""
    check_memory_model(MLPMemory(MLPMemoryConfig(depth=2, expansion=2.0)), D=4)
    with pytest.raises(AssertionError, match="grad_norms differ from the norms of the gradient trees"):
        check_grad_norms(OffByOnePercent(MLPMemoryConfig(depth=1)), D=4)
