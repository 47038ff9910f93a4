"""Small builders shared by the memory tests: random problems, jitted calls of a rule, comparisons."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from titans_memory import Gates, MLPMemory, MLPMemoryConfig
from titans_memory.testing.reference import _max_rel_err as max_rel_err  # noqa: F401  (max |a − b| / max |a| per leaf)


@functools.cache
def _model(depth: int, options: tuple) -> MLPMemory:
    return MLPMemory(MLPMemoryConfig(depth=depth, expansion=2.0, **dict(options)))


def random_problem(seed: int, T: int, D: int, depth: int, C: int = 1, dtype=jnp.float64, **model_options):
    """(model, M_0, q, k, v, gates) with random inputs and random gates in their valid ranges;
    ``model_options`` go to MLPMemoryConfig (e.g. residual_norm=False). One model object per configuration (it
    holds no state): a jitted function that takes the model as a static argument compiles once per configuration
    and shapes, not once per problem."""
    ks = jax.random.split(jax.random.key(seed), 8)
    model = _model(depth, tuple(sorted(model_options.items())))
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


def run(rule, model, p0, q, k, v, gates, aligned=False, objective=None):
    """One jitted call from a fresh state (jit keeps the suite fast: one compilation instead of op-by-op)."""
    fn = jax.jit(lambda p0, *a: rule(model, rule.init_state(p0), *a, aligned=aligned, objective=objective))
    return fn(p0, q, k, v, gates)


def outer_loss_and_outputs(rule, model, p0, q, k, v, gates):
    """(outer loss, (y, state)) of ``rule`` from M_0: the loss, a scalar that depends on every output and on the final
    memory, surprise and chunk-start weights; with ``jax.value_and_grad(..., has_aux=True)``, one compiled program
    gives the call's outputs and its outer gradients."""
    y, state = run(rule, model, p0, q, k, v, gates)
    leaves = jax.tree.leaves((state.memory, state.surprise, state.start))
    return jnp.sum(jnp.sin(y)) + sum(jnp.sum(jnp.cos(x)) for x in leaves), (y, state)


def skip_mosaic_gpu_interpreter_import():
    """Lowering any interpret-mode pallas_call imports JAX's Mosaic GPU interpreter (to check whether ``interpret``
    is its params object); without cached bytecode (PYTHONDONTWRITEBYTECODE) that import costs ~25 s of this
    machine's time per test process. The fused rule passes ``interpret=True``, never that object, so its tests make
    the import fail fast (JAX then skips it, as it does for jaxlib builds without Mosaic GPU)."""
    import sys

    name = "jax._src.pallas.mosaic_gpu.interpret"
    if not any(m.startswith(name) for m in sys.modules):
        sys.modules.setdefault(name + ".interpret_pallas_call", None)


def agreement_program(reference, rule, model):
    """One jitted program for an equivalence test of ``rule`` against ``reference`` (each call and gradient compiled
    alone would be five): ``rule`` from M_0 with ``aligned=True``, and for each rule ``jax.value_and_grad`` of
    ``outer_loss_and_outputs`` (``aligned=False``) with respect to (M_0, q, k, v, gates), with the call's
    (y, state) as aux. Called with (M_0, q, k, v, gates), it returns ``(aligned (y, state), ((loss, (y, state)),
    grads) of reference, the same of rule)``."""
    grad = jax.value_and_grad(lambda r, *a: outer_loss_and_outputs(r, model, *a), argnums=(1, 2, 3, 4, 5), has_aux=True)
    return jax.jit(lambda *a: (run(rule, model, *a, aligned=True), grad(reference, *a), grad(rule, *a)))


def split_and_whole(reference, rule, model, a, p0, q, k, v, gates):
    """One compiled program: ``reference`` on the whole sequence from M_0; ``rule`` on tokens [0, a) from M_0, then
    on [a, T) from the state it left. Returns ``((y, state) of reference, (y, state) of the first piece, (y, state)
    of the second)``."""

    @jax.jit
    def both(p0, q, k, v, gates):
        T = q.shape[0]
        y1, mid = rule(model, rule.init_state(p0), q[:a], k[:a], v[:a], slice_gates(gates, 0, a), aligned=False)
        rest = rule(model, mid, q[a:], k[a:], v[a:], slice_gates(gates, a, T))
        return run(reference, model, p0, q, k, v, gates), (y1, mid), rest

    return both(p0, q, k, v, gates)
