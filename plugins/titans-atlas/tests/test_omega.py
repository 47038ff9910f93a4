"""The Omega and Atlas rules: the chunked rule equals the per-token reference (float64: outputs, state, outer
gradients); c = 1 is Titans; split state, causality, and use inside NeuralMemory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from titans_atlas import OmegaRule, OmegaRuleConfig, PolyMemory, PolyMemoryConfig, omega_reference, register_components
from titans_core import Gates, Registry, RuleState, TitansUserError, check_contract, reset_registry
from titans_memory import MLPMemory, MLPMemoryConfig, NeuralMemory, NeuralMemoryConfig, SequentialRule
from titans_memory.testing import check_rules_agree, random_problem

TOL = 1e-10
LINEAR = MLPMemory(MLPMemoryConfig(depth=1))
MLP = MLPMemory(MLPMemoryConfig(depth=2, expansion=1.5))


def _err(a, b) -> float:  # in NumPy: eager jnp compiled a few small programs per leaf shape
    pairs = zip(*(map(np.asarray, jax.tree.leaves(t)) for t in (a, b)), strict=True)
    return max(float(np.max(np.abs(x - y)) / (np.max(np.abs(x)) + 1e-30)) for x, y in pairs)


def _fast(rule, model, p0, q, k, v, gates):
    return rule(model, rule.init_state(p0), q, k, v, gates, aligned=True)


def _slice(gates: Gates, s: slice) -> Gates:
    return jax.tree.map(lambda x: x[s], gates)


CASES = [  # (model, T, C, config): windows inside a chunk, across chunks, longer than a chunk; both γ; per-channel α
    (LINEAR, 9, 3, dict(context=3, chunk_size=4)),
    pytest.param(MLP, 7, 1, dict(context=6, chunk_size=2, gamma="uniform", normalize=False), marks=pytest.mark.slow),
    (LINEAR, 7, 1, dict(context=2, chunk_size=3, orthogonalize=True)),
    pytest.param(MLP, 6, 1, dict(context=3, chunk_size=4, orthogonalize=True), marks=pytest.mark.slow),
]


@pytest.mark.parametrize("model, T, C, options", CASES)
def test_chunked_rule_equals_the_per_token_reference(model, T, C, options):
    config = OmegaRuleConfig(**options)
    with jax.enable_x64(True):
        p0, q, k, v, gates = random_problem(1, T, 3, model, C=C)
        both = jax.jit(lambda *a: (omega_reference(config, model, *a), _fast(OmegaRule(config), model, *a)))
        (y_ref, s_ref), (y, s) = both(p0, q, k, v, gates)  # one compiled program
        assert _err(y_ref, y) < TOL and _err(s_ref[:3], s[:3]) < TOL
        assert int(s.pos) == int(s_ref.pos) == T % config.chunk_size
        assert _err(p0, s.memory) > 1e-3  # the memory learned something


@pytest.mark.slow
@pytest.mark.parametrize("orthogonalize", [False, True])
def test_outer_gradients_equal_the_reference(orthogonalize):
    config = OmegaRuleConfig(context=3, chunk_size=2, orthogonalize=orthogonalize)
    model = PolyMemory(PolyMemoryConfig(degree=2), inner=MLP)  # also: φ's coefficients get inner and outer gradients

    def outer(run, *args):
        y, state = run(*args)
        return jnp.sum(jnp.sin(y)) + sum(jnp.sum(jnp.cos(x)) for x in jax.tree.leaves(state[:3]))

    with jax.enable_x64(True):
        args = random_problem(2, 5, 3, model)
        grad = lambda run: jax.grad(lambda *a: outer(run, *a), argnums=(0, 1, 2, 3, 4))  # noqa: E731
        g_ref, g_fast = jax.jit(  # one compiled program
            lambda *a: (
                grad(lambda *a: omega_reference(config, model, *a))(*a),
                grad(lambda *a: _fast(OmegaRule(config), model, *a))(*a),
            )
        )(*args)
        assert _err(g_ref, g_fast) < TOL
        assert float(jnp.abs(g_fast[0]["phi"]).max()) > 0


@pytest.mark.parametrize("gamma", ["theta", pytest.param("uniform", marks=pytest.mark.slow)])
def test_context_one_is_titans_momentum_rule(gamma):
    rule = OmegaRule(OmegaRuleConfig(context=1, chunk_size=3, gamma=gamma))
    check_rules_agree(rules=(SequentialRule(chunk_size=3, read="chunk"), rule), model=LINEAR, T=7, D=3)


@pytest.mark.parametrize("orthogonalize", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_split_state_equals_the_whole_sequence_and_decoding_token_by_token(orthogonalize):
    rule = OmegaRule(OmegaRuleConfig(context=4, chunk_size=3, orthogonalize=orthogonalize))
    with jax.enable_x64(True):
        p0, q, k, v, gates = random_problem(3, 8, 3, LINEAR)
        call = jax.jit(lambda st, *a, rule=rule: rule(LINEAR, st, *a))
        y, whole = jax.jit(lambda *a, rule=rule: _fast(rule, LINEAR, *a))(p0, q, k, v, gates)
        # splits mid-chunk; pieces shorter than the window (c = 4) that start mid-chunk and cross a chunk boundary
        # (2 → 4, 5 → 7); 1 by 1. Piece lengths 6, 2 and 1 only: one compiled program per length
        for pieces in (
            [0, 2, 8],
            [0, 2, 4, 5, 7, 8],
            list(range(9)),
        ):
            state, ys = rule.init_state(p0), []
            for a, b in zip(pieces[:-1], pieces[1:], strict=True):
                y_piece, state = call(state, q[a:b], k[a:b], v[a:b], _slice(gates, slice(a, b)))
                ys.append(y_piece)
            assert _err(y, jnp.concatenate(ys)) < TOL and _err(whole, state) < TOL, pieces


def test_reads_are_causal_and_the_window_reaches_back():
    rule = OmegaRule(OmegaRuleConfig(context=3, chunk_size=2))
    with jax.enable_x64(True):
        p0, q, k, v, gates = random_problem(4, 8, 3, LINEAR)
        t = 5  # change every input after t: reads up to t are unchanged, later ones are not
        later = lambda x: x.at[t + 1 :].add(1.0)  # noqa: E731

        @jax.jit
        def runs(p0, q, k, v, gates):  # one compiled program: the rule on both inputs, the reference on the first
            bumped = (later(q), later(k), later(v), Gates(later(gates.theta_T), gates.eta_T, gates.alpha_TxC))
            reference = omega_reference(OmegaRuleConfig(context=3, chunk_size=2), LINEAR, p0, q, k, v, gates)
            return _fast(rule, LINEAR, p0, q, k, v, gates), _fast(rule, LINEAR, p0, *bumped), reference

        (y, state), (y2, _), (_, s_ref) = runs(p0, q, k, v, gates)
        assert jnp.array_equal(y[: t + 1], y2[: t + 1]) and not jnp.allclose(y[t + 1 :], y2[t + 1 :])
        # token 7's update (chunk 6–7) sees k_5 through its window (c = 3), not through chunk 4–5's read of it
        assert _err(s_ref[:3], state[:3]) < TOL
        assert state.extra["k"].shape == (2, 3) and jnp.array_equal(state.extra["k"], k[-2:])


@pytest.mark.slow
def test_omega_and_atlas_inside_neural_memory_pass_the_contract_and_continue_pieces():
    reset_registry(Registry.from_entry_points())  # the installed plugins, this one included
    try:
        for rule_name in ("omega", "atlas"):
            config = NeuralMemoryConfig.model_validate(
                {
                    "num_heads": 2,
                    "model": {"name": "poly", "degree": 2, "inner": {"name": "mlp", "depth": 1}},
                    "rule": {"name": rule_name, "context": 3, "chunk_size": 2},
                }
            )
            memory = NeuralMemory(config, d_model=8, rngs=nnx.Rngs(0))
            check_contract("update_rule", memory.update_rule, who=rule_name)
            state = memory.init_state(2)
            assert state.rule.extra["k"].shape == (2, 2, 2, 4)  # B×H×(c − 1)×head_dim from the first token on
            x = jax.random.normal(jax.random.key(0), (2, 7, 8))

            @nnx.jit
            def whole_and_pieces(m, x):  # one compiled program for the three calls (eager: op by op)
                y1, s1 = m(x[:, :3])
                return m(x), (y1, s1), m(x[:, 3:], s1)

            (y, whole), (y1, s1), (y2, s2) = whole_and_pieces(memory, x)
            assert jnp.allclose(y, jnp.concatenate([y1, y2], axis=1), atol=1e-5)
            assert _err(whole.rule, s2.rule) < 1e-5
            assert isinstance(whole.rule, RuleState)
    finally:
        reset_registry()


def test_an_objective_with_per_token_parameters_is_refused_at_build_time():
    """The window loss calls the objective without per-token parameters: one clear error, not a trace-time crash."""

    class PerTokenDelta:  # as miras' yaad, which learns δ_t per token
        token_params = {"delta": 1.0}

    with pytest.raises(TitansUserError, match=r"PerTokenDelta has \['delta'\].*momentum_scan"):
        OmegaRule(OmegaRuleConfig(context=2)).check_model(MLPMemory(MLPMemoryConfig(depth=1)), PerTokenDelta())
    OmegaRule(OmegaRuleConfig(context=2)).check_model(MLPMemory(MLPMemoryConfig(depth=1)), None)  # l2: fine


def test_hook_registers_the_rules_and_the_memory_model():
    calls = []
    register_components(register=lambda *args: calls.append(args[:2]))
    assert calls == [("update_rule", "omega"), ("update_rule", "atlas"), ("memory_model", "poly")]
