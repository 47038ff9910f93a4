"""The ``fused`` rule (one Pallas kernel, interpret mode on CPU) equals the sequential reference: outputs, final state
and outer gradients, for the matrix memory (depth 1, rules/fused_kernel.py) and the two-layer MLP memory (depth 2,
rules/fused_mlp_kernel.py, with and without the residual LayerNorm); it trains a variant with momentum_scan's
gradients; it refuses memory models and options its kernels do not implement."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx
from hypothesis import example, given, settings
from hypothesis import strategies as st
from memory_utils import (
    agreement_program,
    max_rel_err,
    random_problem,
    run,
    skip_mosaic_gpu_interpreter_import,
    split_and_whole,
)
from titans_core import get_registry
from titans_core.spec import make_config
from titans_memory import (
    FusedConfig,
    FusedRule,
    FusedUnsupportedError,
    HuberObjective,
    MLPMemory,
    MLPMemoryConfig,
    MomentumScanRule,
    NeuralMemory,
    NeuralMemoryConfig,
    SequentialRule,
    UpdateRuleConfig,
)
from titans_memory.rules.base import token_grad, tree_norm
from variants_utils import tiny

TOL = 1e-10  # float64: the same arithmetic up to reassociation

skip_mosaic_gpu_interpreter_import()


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("chunk", "depth"),
    [pytest.param(c, d, marks=SLOW if c != 4 else ()) for d in (1, 2) for c in (1, 4, 16)],
)
def test_fused_equals_sequential_outputs_state_and_gradients(chunk, depth):
    """Depth 1 (w0) and depth 2 (w0, w1, ln_gain; hidden width 8), aligned and not."""
    T = 19  # never a multiple of the chunk
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(chunk, T, 4, depth)
        assert set(p0) == ({"w0"} if depth == 1 else {"w0", "w1", "ln_gain"})
        cfg = UpdateRuleConfig(chunk_size=chunk, read="chunk")
        seq, fused = SequentialRule(cfg), FusedRule(chunk_size=chunk)
        everything = agreement_program(seq, fused, model)  # one compiled program
        aligned, ((_, (y_s, s_s)), g_s), ((_, unaligned), g_f) = everything(p0, q, k, v, gates)
        for y_f, s_f in (aligned, unaligned):  # (the gradients' call is aligned=False)
            assert max_rel_err(y_s, y_f) < TOL
            assert max_rel_err(tuple(s_s), tuple(s_f)) < TOL
            assert int(s_f.pos) == T % chunk
        assert max_rel_err(g_s, g_f) < TOL
        assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(g_f))


@pytest.mark.slow
@settings(max_examples=1, deadline=None)  # each draw compiles one program of its own (the examples below: two more)
@given(
    chunk=st.sampled_from([1, 3, 4]),
    T=st.integers(1, 12),
    split_frac=st.floats(0, 1),
    depth=st.sampled_from([1, 2]),
    per_channel=st.booleans(),
    clip=st.sampled_from([None, 0.05]),
    seed=st.integers(0, 2**16),
)
@example(chunk=3, T=11, split_frac=0.5, depth=2, per_channel=False, clip=0.05, seed=7)  # always both kernels
@example(chunk=4, T=10, split_frac=0.3, depth=1, per_channel=True, clip=None, seed=3)  # depth 1, starts at pos 3
def test_fused_split_anywhere_equals_sequential(chunk, T, split_frac, depth, per_channel, clip, seed):
    """Any split point (so the second call starts mid-chunk), both kernels (depth 1 and 2), per-channel α (depth 1:
    a depth-2 memory has one α per token) and the surprise clamp."""
    D = 4
    per_channel = per_channel and depth == 1
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(seed, T, D, depth, C=D if per_channel else 1)
        seq = SequentialRule(chunk_size=chunk, max_grad_norm=clip, read="chunk")
        fused = FusedRule(chunk_size=chunk, max_grad_norm=clip)
        a = int(split_frac * T)
        (y_s, s_s), (y1, _), (y2, s_f) = split_and_whole(seq, fused, model, a, p0, q, k, v, gates)
        assert max_rel_err(y_s, jnp.concatenate([y1, y2])) < TOL
        assert max_rel_err(tuple(s_s), tuple(s_f)) < TOL


@pytest.mark.parametrize(("residual_norm", "activation"), [(True, "gelu"), (False, "silu")])
def test_fused_two_layer_mid_chunk_start_equals_sequential(residual_norm, activation):
    """Depth 2, a sequence split in two calls: the second starts mid-chunk (state.pos = 2 of 4); with the plain MLP
    (residual_norm false: no γ) too."""
    T, a = 17, 6
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(3, T, 4, 2, residual_norm=residual_norm, activation=activation)
        assert ("ln_gain" in p0) == residual_norm
        seq, fused = SequentialRule(chunk_size=4, read="chunk"), FusedRule(chunk_size=4)
        (y_s, s_s), (y1, mid), (y2, s_f) = split_and_whole(seq, fused, model, a, p0, q, k, v, gates)
        assert int(mid.pos) == 2
        assert max_rel_err(y_s, jnp.concatenate([y1, y2])) < TOL
        assert max_rel_err(tuple(s_s), tuple(s_f)) < TOL


@pytest.mark.parametrize(("depth", "residual_norm", "clip"), [(1, True, 0.05), (2, True, 3.0), (2, False, 1.0)])
def test_fused_surprise_clamp_and_objective_match_sequential(depth, residual_norm, clip):
    """A clamp that binds (depth 1: on every token; depth 2: on half the first chunk's, through the closed-form norm
    over W_0, W_1 and γ), with a non-ℓ2 objective (its cotangent runs inside the kernel)."""
    with jax.enable_x64(True):
        model, p0, q, k, v, gates = random_problem(7, 10, 4, depth, residual_norm=residual_norm)
        huber = HuberObjective(delta=0.3)
        token_norm = lambda k, v: tree_norm(token_grad(model, p0, k, v, huber))  # noqa: E731
        norms = jax.jit(jax.vmap(token_norm))(k[:4], v[:4])  # ‖u_i‖ of the first chunk's tokens (at M_0)
        assert float(jnp.max(norms)) > clip  # it clips
        seq = SequentialRule(chunk_size=4, max_grad_norm=clip, read="chunk")
        fused = FusedRule(chunk_size=4, max_grad_norm=clip)
        three = jax.jit(  # one compiled program for the three calls
            lambda *a: [run(r, model, *a, objective=huber) for r in (seq, fused, FusedRule(chunk_size=4))]
        )
        (y_s, s_s), (y_f, s_f), (_, free) = three(p0, q, k, v, gates)
        assert max_rel_err(y_s, y_f) < TOL
        assert max_rel_err(tuple(s_s), tuple(s_f)) < TOL
        assert max_rel_err(free.memory, s_f.memory) > 1e-3  # the clamp binds


@pytest.mark.parametrize(("depth", "clip"), [(1, None), (2, 1.0)])
def test_fused_float32_and_bf16_inputs(depth, clip):
    """float32: ≤ 1e-5 relative to sequential. bf16 inputs with float32 state: the state stays float32 and agrees
    with momentum_scan (the same bf16 products) to bf16 precision. D and b = 16 (depth 2: hidden 32): the kernels'
    matmul path (smaller tiles broadcast and sum)."""
    model, p0, q, k, v, gates = random_problem(11, 19, 16, depth, dtype=jnp.float32)
    fused = FusedRule(chunk_size=16, max_grad_norm=clip)
    seq = SequentialRule(chunk_size=16, read="chunk", max_grad_norm=clip)
    scan = MomentumScanRule(chunk_size=16, read="chunk", max_grad_norm=clip)
    bf = lambda x: x.astype(jnp.bfloat16)  # noqa: E731

    @jax.jit
    def four(p0, q, k, v, gates):  # one compiled program for the four calls
        args = (bf(q), bf(k), bf(v), jax.tree.map(bf, gates))
        return [run(r, model, p0, q, k, v, gates) for r in (seq, fused)] + [
            run(r, model, p0, *args) for r in (scan, fused)
        ]

    (y_s, s_s), (y_f, s_f), (y_m, s_m), (y_b, s_b) = four(p0, q, k, v, gates)
    assert max_rel_err(y_s, y_f) < 1e-5
    assert max_rel_err(tuple(s_s), tuple(s_f)) < 1e-5
    assert y_b.dtype == jnp.bfloat16 and all(x.dtype == jnp.float32 for x in jax.tree.leaves(tuple(s_b)[:3]))
    assert max_rel_err(y_m.astype(jnp.float32), y_b.astype(jnp.float32)) < 2e-2
    assert max_rel_err(tuple(s_m)[:3], tuple(s_b)[:3]) < 2e-2
    assert max_rel_err(tuple(s_s)[:3], tuple(s_b)[:3]) < 5e-2  # and stays near the float32 reference


# One variant per way a variant calls the memory (titans_attention/recipes.py, mixers.py): mac's MACMixer (retrieve,
# then a write per segment inside a lax.scan, aligned) and mal's MemoryMixer(warm=True) (the persistent tokens, then
# the sequence from the middle of a chunk), which is also how mag (MAGMixer's memory) and lmm call it. The rule-level
# fused == reference checks above and in test_fused_backward.py prove both kernels' values and gradients at depth 1
# and 2; here the two depths are split across the two calling paths.
@SLOW
@pytest.mark.parametrize(("variant", "depth"), [("mac", 2), ("mal", 1)])
def test_fused_trains_each_memory_calling_path_with_the_reference_gradients(variant, depth):
    """Each way a variant calls the memory, with the fused rule (both kernels: depth 1 and depth 2): the outer
    gradients equal momentum_scan's (float32, ≤ 1e-4 for a whole model), and two optimiser steps lower the loss."""
    memory = lambda rule: {  # noqa: E731
        "num_heads": 2,
        "rule": {"name": rule, "chunk_size": 4, "read": "chunk"},
        "model": {"name": "mlp", "depth": depth, "expansion": 2.0},
    }
    # 16 inputs: whole segments only (4 of them), so mac writes each segment aligned from the scan. An unfinished
    # last segment would add mac's tail call, an unaligned call like the one the mal case makes (from the middle of a
    # chunk), and about 40% more to trace and compile
    toks = jnp.array([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2]])
    inputs, targets = toks[:, :-1], toks[:, 1:]
    loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(inputs), targets).mean()  # noqa: E731
    ref, fused = (tiny(variant, layers=1, memory=memory(rule)) for rule in ("momentum_scan", "fused"))
    opt = nnx.Optimizer(fused, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(ref, model, opt):  # one compiled program: the reference's gradients and the fused model's step
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return nnx.grad(loss_fn)(ref), loss, grads

    g_ref, loss0, g_fused = step(ref, fused, opt)
    leaves = lambda g: [x[...] for _, x in nnx.to_flat_state(g)]  # noqa: E731
    assert max_rel_err(leaves(g_ref), leaves(g_fused)) < 1e-4
    _, loss1, _ = step(ref, fused, opt)  # ref is not updated: only the fused model steps
    assert float(loss1) < float(loss0)


def test_fused_refuses_unsupported_models_and_options():
    """A depth-3 MLP memory and the SwiGLU plugin's memory: one clear error at build time naming the model and
    pointing to momentum_scan (depth 2 builds); read: token is refused by the config."""
    rule = make_config("update_rule", "fused")
    for model, name in (
        (make_config("memory_model", "mlp", depth=3), r"MLPMemory \(depth 3\)"),
        (make_config("memory_model", "swiglu"), "SwiGLUMemory"),
    ):
        cfg = NeuralMemoryConfig(num_heads=2, rule=rule, model=model)
        with pytest.raises(FusedUnsupportedError, match=name + " is not supported: use update_rule momentum_scan"):
            NeuralMemory(cfg, d_model=8, rngs=nnx.Rngs(0))
    depth2 = NeuralMemoryConfig(num_heads=2, rule=rule, model=make_config("memory_model", "mlp", depth=2))
    assert isinstance(NeuralMemory(depth2, d_model=8, rngs=nnx.Rngs(0)).update_rule, FusedRule)
    with pytest.raises(ValueError, match="read: chunk only"):
        FusedConfig(read="token")
    with pytest.raises(ValueError, match="read: chunk only"):
        FusedRule(read="token")
    rule = get_registry().build(make_config("update_rule", "fused", chunk_size=4))  # passes the contract check
    assert isinstance(rule, FusedRule) and rule.chunk_size == 4

    class PerTokenDelta:  # an objective with per-token parameters (as yaad's δ_t): the kernel does not pass them
        token_params = {"delta": 1.0}

    with pytest.raises(FusedUnsupportedError, match=r"PerTokenDelta has \['delta'\].*momentum_scan"):
        rule.check_model(MLPMemory(MLPMemoryConfig(depth=1)), PerTokenDelta())


def test_fused_kernel_lowers_for_gpu_through_triton():
    """The compiled path (``interpret: false``) passes Pallas' Triton lowering for CUDA, checked here without a GPU:
    batched over heads (the grid), a length that is not a whole number of chunks and the clamp; depth 1 with
    per-channel α, depth 2 with and without the norm."""
    cases = [  # (depth, D, chunk, C, model options): tl.dot tiles, and tiles below its minimum of 16 (broadcast, sum)
        (1, 16, 16, 16, {}),
        (1, 8, 4, 8, {}),
        (2, 16, 16, 1, {}),
        (2, 8, 4, 1, {"residual_norm": False, "activation": "silu"}),
    ]
    for depth, D, chunk, C, options in cases:
        model, p0, q, k, v, gates = random_problem(0, 40, D, depth, C=C, dtype=jnp.float32, **options)
        rule = FusedRule(chunk_size=chunk, interpret=False, max_grad_norm=1.0)
        heads = jax.vmap(lambda p0, *a, r=rule, m=model: r(m, r.init_state(p0), *a), in_axes=(None, 0, 0, 0, None))
        lowered = jax.jit(heads).trace(p0, q[None], k[None], v[None], gates).lower(lowering_platforms=("cuda",))
        text = lowered.as_text()
        assert "triton" in text.lower() and ("titans_fused_matrix" if depth == 1 else "titans_fused_mlp2") in text
