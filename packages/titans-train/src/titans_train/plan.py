"""Everything decided before training starts — and before anything is written: the devices and mesh, the abstract
model (shapes only), the shardings of the whole training state, the optimizer, the batch layout of this process and
the data, and a training step's memory against the machine's (:mod:`titans_train.resources`). Any problem is
raised here (:class:`~titans_core.SpecError` or :class:`~titans_train.errors.DataError`), so a bad spec or bad
data never leaves an output directory behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from titans_attention.params import count_params
from titans_core import get_registry
from titans_core.layers import LOGICAL_AXES

from titans_train import distributed
from titans_train import mesh as mesh_lib
from titans_train.carry import CarrySetup, cache_structure, carry_shapes, zero_carry
from titans_train.data import BatchLayout, LabelledTask, Splits, TaskSplits, split_corpus, split_task
from titans_train.data.streams import TASK_STREAM, stream_period, windows_per_stream
from titans_train.optim import lr_schedule, make_optimizer
from titans_train.resources import StepMemory, check_step_memory, memory_limit, step_memory
from titans_train.spec import TrainSpec
from titans_train.spec_check import SpecLocator
from titans_train.steps import State


def build_model(spec: TrainSpec) -> nnx.Module:
    """The model the spec selects, initialised from ``trainer.seed``."""
    return get_registry().build(spec.model, rngs=nnx.Rngs(spec.trainer.seed))


def abstract_model(spec: TrainSpec) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, params, other variables) of the model, as shapes only (nothing is computed)."""
    return split_params(nnx.eval_shape(lambda: build_model(spec)))


def split_params(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, the nnx.Param variables, every other variable) of ``model``."""
    graphdef, params, *rest = nnx.split(model, nnx.Param, ...)
    return graphdef, params, rest[0]


@dataclass
class Plan:
    """The resolved set-up of a run (see the module docstring)."""

    spec: TrainSpec
    locator: SpecLocator
    mesh: Mesh
    mesh_shape: dict[str, int]
    graphdef: nnx.GraphDef
    abstract_params: nnx.State
    abstract_rest: nnx.State
    param_count: int
    layouts: list[mesh_lib.ParamLayout]
    rules: dict[str, str | None]
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    state_shardings: dict[str, Any]
    batch_sharding: NamedSharding
    replicated: NamedSharding
    layout: BatchLayout
    splits: Splits | TaskSplits | None
    carry: CarrySetup | None = None  # trainer.carry_memory: the carried cache (titans_train.carry)
    memory: StepMemory | None = None  # a lower bound of a training step's memory (titans_train.resources)

    @property
    def labelled(self) -> bool:
        """Whether the data are labelled examples of a task (batches carry explicit targets)."""
        return isinstance(self.splits, TaskSplits)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Global shape of a batch: (grad_accum, micro_batch, seq_len + 1) for windows of a stream,
        (grad_accum, micro_batch, 2, seq_len) for labelled examples (inputs, targets)."""
        t = self.spec.trainer
        rows = (2, self.spec.data.seq_len) if self.labelled else (self.spec.data.seq_len + 1,)
        return (t.grad_accum, t.batch_size // t.grad_accum, *rows)

    @property
    def compute_dtype(self) -> Any:
        return jnp.bfloat16 if self.spec.precision.compute_dtype == "bfloat16" else jnp.float32

    def abstract_state(self) -> State:
        """ShapeDtypeStructs (with shardings) of the whole training state, for checkpoint restores."""
        shapes = self.state_shapes()
        return jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, self.state_shardings
        )

    def state_shapes(self) -> State:
        params = nnx.to_pure_dict(self.abstract_params)
        return {
            "params": params,
            "opt": jax.eval_shape(self.tx.init, params),
            "rest": nnx.to_pure_dict(self.abstract_rest),
            "step": jax.ShapeDtypeStruct((), jnp.int32),
            "rng": jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))),
        } | self._carry_part(carry_shapes)

    def _carry_part(self, make: Any) -> State:
        """``{"carry": make(cache leaves, grad_accum)}`` with trainer.carry_memory, else nothing."""
        return {} if self.carry is None else {"carry": make(self.carry.leaves, self.spec.trainer.grad_accum)}

    def init_state(self) -> State:
        """A fresh training state, created directly in its shardings (one jit; no host copy of the model)."""
        spec, tx, carry_part = self.spec, self.tx, self._carry_part

        def init() -> State:
            _, param_state, rest = split_params(build_model(spec))
            params = nnx.to_pure_dict(param_state)
            return {
                "params": params,
                "opt": tx.init(params),
                "rest": nnx.to_pure_dict(rest),
                "step": jnp.zeros((), jnp.int32),
                "rng": jax.random.key_data(jax.random.key(spec.trainer.seed + 1)),
            } | carry_part(zero_carry)

        return jax.jit(init, out_shardings=self.state_shardings)()


def _select_devices(spec: TrainSpec) -> tuple[list[Any], list[tuple[str, str]]]:
    devices = jax.devices()
    wanted = spec.mesh.num_devices
    if wanted is None:
        return devices, []
    if jax.process_count() > 1:
        return devices, [("mesh.num_devices", f"must be null in a run of {jax.process_count()} processes")]
    if wanted > len(devices):
        return devices, [("mesh.num_devices", f"{wanted} devices asked for, but only {len(devices)} exist")]
    return devices[:wanted], []


def make_plan(spec: TrainSpec, locator: SpecLocator, *, load_data: bool = True, multi_process: bool = True) -> Plan:
    """Resolve the spec against this machine (devices, model shapes, data); raises on any problem.

    ``multi_process``: start ``jax.distributed`` when the spec or the environment asks for it.
    """
    if multi_process:
        setup, problems = distributed.resolve(spec.distributed)
        locator.check(problems)
        distributed.initialize(setup)
    devices, problems = _select_devices(spec)
    locator.check(problems)
    shape, problems = mesh_lib.resolve_shape(spec.mesh, len(devices))
    locator.check(problems)
    assert shape is not None
    mesh_shape = dict(zip(mesh_lib.AXES, shape, strict=True))
    rules = spec.mesh.resolved_rules()

    try:
        graphdef, abstract_params, abstract_rest = abstract_model(spec)
    except ValueError as exc:  # an option combination the components reject only when built: a spec error
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise locator.error([("model", f"cannot build the model: {message}")]) from None
    layouts = mesh_lib.param_layouts(abstract_params, rules) + mesh_lib.param_layouts(abstract_rest, rules)
    problems = mesh_lib.divisibility_problems(layouts, mesh_shape)
    used = {name for layout in layouts for name in layout.names if name is not None}
    for name in sorted(set(spec.mesh.rules) - used - set(LOGICAL_AXES)):
        problems.append(
            (
                f"mesh.rules.{name}",
                f"no parameter has the logical axis {name!r} (the model uses: {', '.join(sorted(used)) or 'none'})",
            )
        )
    t = spec.trainer
    data_parallel = mesh_shape["data"] * mesh_shape["fsdp"]
    micro = t.batch_size // t.grad_accum
    if micro % data_parallel:
        per = f" (micro-batch {micro} = batch_size / grad_accum)" if t.grad_accum > 1 else ""
        problems.append(
            (
                "trainer.batch_size",
                f"{t.batch_size}{per} is not divisible by the data-parallel size "
                f"mesh.data × mesh.fsdp = {data_parallel}",
            )
        )
    if t.carry_memory and (len(devices) > 1 or jax.process_count() > 1):
        where = f"{jax.process_count()} processes" if jax.process_count() > 1 else f"a mesh of {len(devices)} devices"
        problems.append(
            (
                "trainer.carry_memory",
                f"needs a single device (the carried state is not sharded with the batch), got {where}; "
                "set mesh.num_devices: 1 or turn carry_memory off",
            )
        )
    locator.check(problems)

    mesh = mesh_lib.make_mesh(shape, devices)
    params_sh = mesh_lib.state_shardings(abstract_params, mesh, rules)
    shapes_params = nnx.to_pure_dict(abstract_params)
    tx = make_optimizer(spec, shapes_params)
    opt_shapes = jax.eval_shape(tx.init, shapes_params)
    memory = step_memory(spec, shapes_params, nnx.to_pure_dict(abstract_rest), opt_shapes)
    locator.check(check_step_memory(memory, spec, memory_limit(devices)))  # before any batch or state exists
    opt_sh = mesh_lib.opt_state_shardings(tx, opt_shapes, params_sh, mesh)
    replicated = mesh_lib.replicated(mesh)
    state_shardings = {
        "params": params_sh,
        "opt": opt_sh,
        "rest": mesh_lib.state_shardings(abstract_rest, mesh, rules),
        "step": replicated,
        "rng": replicated,
    }
    batch_sharding = mesh_lib.batch_sharding(mesh)
    global_shape = (t.grad_accum, micro, spec.data.seq_len + 1)
    lo, hi = mesh_lib.local_rows(batch_sharding, global_shape)
    splits = load_splits(spec) if load_data else None
    carry = None
    if t.carry_memory:
        if isinstance(splits, TaskSplits):
            windows = TASK_STREAM  # a task row's stream is its examples, one after another (titans_train.carry)
        else:
            windows = windows_per_stream(splits.train.size, spec.data.seq_len, t.batch_size) if splits else 1
        treedef, leaves = cache_structure(graphdef, abstract_params, abstract_rest, micro)
        W, R = stream_period(windows, t.carry_reset_every)
        carry = CarrySetup(treedef, leaves, W, R)
        state_shardings["carry"] = [replicated for _ in leaves]
    return Plan(
        spec=spec,
        locator=locator,
        mesh=mesh,
        mesh_shape=mesh_shape,
        graphdef=graphdef,
        abstract_params=abstract_params,
        abstract_rest=abstract_rest,
        param_count=count_params(abstract_params),
        layouts=layouts,
        rules=rules,
        tx=tx,
        schedule=lr_schedule(spec),
        state_shardings=state_shardings,
        batch_sharding=batch_sharding,
        replicated=replicated,
        layout=BatchLayout(t.batch_size, t.grad_accum, lo, hi),
        splits=splits,
        carry=carry,
        memory=memory,
    )


def load_splits(spec: TrainSpec) -> Splits | TaskSplits:
    """Load the data source and hold out the validation split (DataError on bad data)."""
    source = get_registry().build(spec.data.source)
    corpus = source.load()
    if isinstance(corpus, LabelledTask):
        return split_task(corpus, seq_len=spec.data.seq_len, vocab_size=spec.vocab_size)
    return split_corpus(
        corpus, seq_len=spec.data.seq_len, val_fraction=spec.data.val_fraction, vocab_size=spec.vocab_size
    )
