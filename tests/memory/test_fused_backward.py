"""The ``fused`` rule's backward kernel (rules/fused_backward.py, interpret mode on CPU): its outer gradients with
respect to every input (q, k, v, the gates θ, η, α) and the whole initial state (M_{t'}, M, S) equal
``momentum_scan``'s in float64, for the matrix memory (depth 1) and the two-layer MLP memory (depth 2, with and
without the residual LayerNorm), with the surprise clamp, per-channel α, a non-ℓ2 objective and a call that starts in
the middle of a chunk; and a gradient runs the forward kernel once and the backward kernel once (no second forward
pass); the backward kernel passes Pallas' Triton lowering for CUDA (checked without a GPU)."""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import pytest
from memory_utils import max_rel_err, random_problem, skip_mosaic_gpu_interpreter_import
from titans_memory import FusedRule, HuberObjective, MomentumScanRule, RuleState
from titans_memory.rules.base import token_grad, tree_norm

TOL = 1e-10  # float64: the same arithmetic up to reassociation

skip_mosaic_gpu_interpreter_import()


def random_state(model, p0, pos: int, seed: int) -> RuleState:
    """A state with M_{t'} ≠ M and S ≠ 0 (as in the middle of a chunk) at chunk offset ``pos``."""
    keys = iter(jax.random.split(jax.random.key(seed), 2 * len(jax.tree.leaves(p0))))
    noise = lambda scale: jax.tree.map(lambda x: scale * jax.random.normal(next(keys), x.shape, x.dtype), p0)  # noqa: E731
    memory = jax.tree.map(jnp.add, p0, noise(0.1))
    return RuleState(p0, memory, noise(0.01), jnp.asarray(pos, jnp.int32))


def gradients(rules, model, state, q, k, v, gates, aligned, objective):
    """For each rule, ∂/∂(state, q, k, v, gates) of a scalar that depends on every output and on the final M_{t'},
    M and S (one compiled program for all the rules). ``aligned`` (a chunk boundary: M_{t'} = M) ties the start to
    the memory, so ∂/∂start is 0 there."""

    def loss(rule, start, memory, surprise, q, k, v, gates):
        st = RuleState(memory if aligned else start, memory, surprise, state.pos)
        y, out = rule(model, st, q, k, v, gates, aligned=aligned, objective=objective)
        leaves = jax.tree.leaves((out.memory, out.surprise, out.start))
        return jnp.sum(jnp.sin(y)) + sum(jnp.sum(jnp.cos(x)) for x in leaves)

    grads = jax.jit(lambda *a: [jax.grad(loss, argnums=tuple(range(1, 8)))(rule, *a) for rule in rules])
    return grads(state.start, state.memory, state.surprise, q, k, v, gates)


CASES = {  # (depth, max_grad_norm, C (α channels), objective, pos, aligned, model options)
    "depth1-aligned": (1, None, 1, None, 0, True, {}),
    "depth1-clamp-per-channel-huber-mid-chunk": (1, 0.05, 4, HuberObjective(delta=0.3), 2, False, {}),
    "depth2-norm-aligned": (2, None, 1, None, 0, True, {}),
    "depth2-norm-clamp-mid-chunk": (2, 1.0, 1, None, 3, False, {}),
    "depth2-plain-silu-mid-chunk": (2, None, 1, None, 1, False, {"residual_norm": False, "activation": "silu"}),
}
FAST = {"depth1-clamp-per-channel-huber-mid-chunk", "depth2-norm-clamp-mid-chunk"}


@pytest.mark.parametrize("case", [pytest.param(name, marks=() if name in FAST else pytest.mark.slow) for name in CASES])
def test_fused_backward_kernel_equals_momentum_scan_gradients(case):
    depth, clip, C, objective, pos, aligned, options = CASES[case]
    T, chunk = 10, 4  # not a multiple of the chunk: a closing and a non-closing chunk
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(5, T, 4, depth, C=C, **options)
        state = random_state(model, p0, pos, seed=9)
        if clip is not None:  # the clamp binds on some token of the first chunk (its ‖u_i‖ at M_{t'})
            norm = lambda k, v: tree_norm(token_grad(model, state.start, k, v, objective))  # noqa: E731
            assert float(jnp.max(jax.jit(jax.vmap(norm))(k[:chunk], v[:chunk]))) > clip
        reference = MomentumScanRule(chunk_size=chunk, read="chunk", max_grad_norm=clip)
        fused = FusedRule(chunk_size=chunk, max_grad_norm=clip)
        g_ref, g_fused = gradients((reference, fused), model, state, q, k, v, gates, aligned, objective)
        assert max_rel_err(g_ref, g_fused) < TOL
        for name, g in zip(("start", "memory", "surprise", "q", "k", "v", "gates"), g_fused, strict=True):
            if name == "start" and aligned:
                continue
            assert all(float(jnp.max(jnp.abs(x))) > 0 for x in jax.tree.leaves(g)), name  # every input matters


def _pallas_calls(jaxpr) -> list[str]:
    """Names of the pallas_calls in a jaxpr, sub-jaxprs included."""
    names = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "pallas_call":
            names.append(str(eqn.params.get("name_and_src_info", eqn.params.get("name"))).split()[0])
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            names += _pallas_calls(sub)
    return names


@pytest.mark.parametrize("depth", [1, 2])
def test_fused_gradient_runs_each_kernel_once(depth):
    """value_and_grad of a fused call: one forward kernel (which also saves the chunk-start states) and one backward
    kernel; no momentum_scan recomputation, no second forward pass of the chunk loop."""
    model, p0, q, k, v, gates = random_problem(0, 10, 4, depth, dtype=jnp.float32)
    rule = FusedRule(chunk_size=4, max_grad_norm=1.0)
    loss = lambda p0, q: jnp.sum(rule(model, rule.init_state(p0), q, k, v, gates)[0] ** 2)  # noqa: E731
    jaxpr = jax.make_jaxpr(jax.value_and_grad(loss, argnums=(0, 1)))(p0, q).jaxpr
    name = "titans_fused_matrix" if depth == 1 else "titans_fused_mlp2"
    assert _pallas_calls(jaxpr) == [name, name + "_bwd"]


@pytest.mark.parametrize(
    ("depth", "D", "chunk", "C", "options"),
    [
        (1, 16, 16, 16, {}),  # tl.dot tiles, per-channel α
        (2, 8, 4, 1, {"residual_norm": False, "activation": "silu"}),  # tiles below 16: broadcast-and-sum products
        pytest.param(1, 8, 4, 8, {}, marks=pytest.mark.slow),
        pytest.param(2, 16, 16, 1, {}, marks=pytest.mark.slow),
    ],
)
def test_fused_backward_kernel_lowers_for_gpu_through_triton(depth, D, chunk, C, options):
    """The gradient of a compiled (``interpret: false``) call, batched over heads (the grid), with the clamp and a
    length that is not a whole number of chunks, lowers for CUDA: both kernels go through the Triton lowering (the
    VJP traced inside the backward kernel's body is made of primitives it supports)."""
    model, p0, q, k, v, gates = random_problem(0, 40, D, depth, C=C, dtype=jnp.float32, **options)
    rule = FusedRule(chunk_size=chunk, interpret=False, max_grad_norm=1.0)

    def loss(p0, q, k, v, gates):
        heads = jax.vmap(lambda p0, *a: rule(model, rule.init_state(p0), *a), in_axes=(None, 0, 0, 0, None))
        y, state = heads(p0, q, k, v, gates)
        return jnp.sum(y**2) + sum(jnp.sum(x) for x in jax.tree.leaves((state.memory, state.surprise)))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))
    text = grad.trace(p0, q[None], k[None], v[None], gates).lower(lowering_platforms=("cuda",)).as_text()
    name = "titans_fused_matrix" if depth == 1 else "titans_fused_mlp2"
    assert "triton" in text.lower() and name + "_bwd" in text
