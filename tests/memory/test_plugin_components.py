"""Components written only against titans_core's protocols work inside NeuralMemory: a memory model with
nested parameters, a rule that builds its state with ``titans_core.init_rule_state``; ones that do not fit are
refused when the memory is built, in one line."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from memory_utils import max_rel_err
from titans_core import ContractError, init_rule_state
from titans_memory import MomentumScanRule, NeuralMemory, NeuralMemoryConfig, SequentialRule
from titans_memory.testing import check_rules_agree

D = 8


class NestedMLP:
    """M(x) = x + tanh(x W1 + b1) W2 with parameters {"hidden": {"w": …, "b": …}, "out": [W2]}: a nested
    pytree (dicts and a list), as a third-party memory model may well return."""

    channel_axis_ok = False

    def init(self, key, dim):
        k1, k2 = jax.random.split(key)
        return {
            "hidden": {
                "w": jax.random.normal(k1, (dim, 2 * dim)) / jnp.sqrt(dim),
                "b": jnp.zeros((2 * dim,)),
            },
            "out": [0.1 * jax.random.normal(k2, (2 * dim, dim)) / jnp.sqrt(2 * dim)],
        }

    def apply(self, params, x_TxD):
        h = jnp.tanh(x_TxD @ params["hidden"]["w"].astype(x_TxD.dtype) + params["hidden"]["b"].astype(x_TxD.dtype))
        return x_TxD + h @ params["out"][0].astype(x_TxD.dtype)


class ForgetfulRule:
    """A plugin's rule written against titans_core only: M_t = (1 − α_t) M_{t−1} (forgetting, no learning);
    every token reads the memory before its own step."""

    chunk_size = 1

    def init_state(self, params0):
        return init_rule_state(params0)

    def __call__(self, model, state, q_TxD, k_TxD, v_TxD, gates, *, aligned=False, objective=None):
        def step(st, inp):
            q, alpha = inp
            y = model.apply(st.memory, q[None])[0]
            memory = jax.tree.map(lambda m: (1.0 - alpha[0]) * m, st.memory)
            return st._replace(start=memory, memory=memory), y

        state, y = jax.lax.scan(step, state, (q_TxD, gates.alpha_TxC))
        return y, state


def memory(rule=None, *, model=None, learn_init=True, seed=0):
    cfg = NeuralMemoryConfig(num_heads=2, learn_init=learn_init)
    return NeuralMemory(cfg, d_model=D, rngs=nnx.Rngs(seed), memory_model=model or NestedMLP(), update_rule=rule)


def call(m, x, state=None):
    return nnx.jit(lambda m, x, s: m(x, s))(m, x, state)


def test_nested_parameters_train_and_keep_their_structure():
    m = memory(MomentumScanRule(chunk_size=4))
    assert jax.tree.structure(m.initial_params()) == jax.tree.structure(NestedMLP().init(jax.random.key(0), 4))
    assert m.initial_params()["out"][0].shape == (2, 2 * (D // 2), D // 2)  # H × …
    params = nnx.to_pure_dict(nnx.state(m, nnx.Param))
    assert set(params["memory_init"]) == {"hidden", "out"}
    x = jax.random.normal(jax.random.key(1), (2, 10, D))
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(x)[0] ** 2)))(m)
    init_grads = jax.tree.leaves(nnx.to_pure_dict(grads)["memory_init"])
    assert len(init_grads) == 3 and all(float(jnp.max(jnp.abs(g))) > 0 for g in init_grads)
    fixed = memory(MomentumScanRule(chunk_size=4), learn_init=False)
    assert "memory_init" not in nnx.to_pure_dict(nnx.state(fixed, nnx.Param))


def test_nested_parameters_split_state_and_rules_agree():
    x = jax.random.normal(jax.random.key(2), (2, 11, D))
    seq, par = memory(SequentialRule(chunk_size=4)), memory(MomentumScanRule(chunk_size=4))

    @nnx.jit
    def whole_and_split(seq, par, x):  # one compiled program for the four calls
        y1, mid = par(x[:, :5])
        return seq(x), par(x), (y1, mid), par(x[:, 5:], mid)

    (y_s, s_s), (y_p, s_p), (y1, mid), (y2, s2) = whole_and_split(seq, par, x)
    assert max_rel_err(y_s, y_p) < 1e-5 and max_rel_err(s_s.rule, s_p.rule) < 1e-5
    assert max_rel_err(y_p, jnp.concatenate([y1, y2], axis=1)) < 1e-5
    assert max_rel_err(s_p, s2) < 1e-5
    check_rules_agree(model=NestedMLP())  # float64, outer gradients included (the jax.vjp path)


def test_a_plugin_rule_built_on_titans_core_runs_in_the_memory():
    m = memory(ForgetfulRule())
    x = jax.random.normal(jax.random.key(3), (2, 6, D))
    y, state = call(m, x)
    assert y.shape == x.shape
    alpha = m._gates(x).alpha_TxC[..., 0]  # B×H×T
    kept = jnp.prod(1.0 - alpha, axis=-1)  # B×H
    w0 = m.initial_params()["hidden"]["w"]
    expected = kept[..., None, None] * w0[None]
    assert max_rel_err(state.rule.memory["hidden"]["w"], expected) < 1e-5


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"update_rule": "tuple"}, "init_state(params0) must return titans_core.RuleState"),
        ({"update_rule": "no-aligned"}, "got an unexpected keyword argument 'aligned'"),
        ({"memory_model": "int"}, "parameter ['w'] must be a float array, got int32"),
    ],
)
def test_misfits_are_refused_when_the_memory_is_built(kwargs, expected):
    class TupleState(ForgetfulRule):
        def init_state(self, params0):
            return tuple(init_rule_state(params0))

    class NoAligned(ForgetfulRule):
        def __call__(self, model, state, q_TxD, k_TxD, v_TxD, gates):
            return q_TxD, state

    class IntModel(NestedMLP):
        def init(self, key, dim):
            return {"w": jnp.zeros((dim, dim), jnp.int32)}

    objects = {"tuple": TupleState(), "no-aligned": NoAligned(), "int": IntModel()}
    given = {k: objects[v] for k, v in kwargs.items()}
    with pytest.raises(ContractError) as info:
        NeuralMemory(NeuralMemoryConfig(num_heads=2), d_model=D, rngs=nnx.Rngs(0), **given)
    assert expected in str(info.value) and "\n" not in str(info.value)
