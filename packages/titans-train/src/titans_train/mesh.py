"""The device mesh (axes ``data``, ``fsdp``, ``tensor``) and the shardings of parameters, optimizer state and
batches.

- **Mesh**: ``mesh.data × mesh.fsdp × mesh.tensor`` must equal the number of devices used (one size may be -1:
  the rest). Devices are laid out in ``jax.devices()`` order (process by process), row-major over
  (data, fsdp, tensor).
- **Parameters** carry logical axis names (Flax NNX ``out_sharding`` metadata, e.g. ``("vocab", "embed")``);
  the
  rules (``mesh.rules`` over the defaults embed→fsdp, heads/mlp/vocab→tensor) map each to a mesh axis. A mesh
  axis
  is used at most once per parameter (a later logical axis mapping to it is replicated). A mesh axis that
  does not
  divide the dimension it shards is a spec error. Unannotated variables are replicated.
- **Optimizer state** mirrors the parameter shardings (``optax.tree_map_params``); scalars are replicated.
- **Batches** ``(grad_accum, micro_batch, seq_len + 1)`` are sharded over ``(data, fsdp)`` on the micro-batch
  axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from titans_train.spec import MeshSpec

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
Problem = tuple[str, str]  # (dotted spec path, message)


def resolve_shape(spec: MeshSpec, device_count: int) -> tuple[tuple[int, int, int] | None, list[Problem]]:
    """(data, fsdp, tensor) sizes for ``device_count`` devices, or None and the problems found."""
    sizes = {axis: getattr(spec, axis) for axis in AXES}
    problems: list[Problem] = [
        (f"mesh.{a}", "must be ≥ 1, or -1 for the remaining devices") for a, s in sizes.items() if s == 0
    ]
    auto = [a for a, s in sizes.items() if s == -1]
    if len(auto) > 1:
        problems.append((f"mesh.{auto[1]}", f"only one mesh axis can be -1 (got -1 for {' and '.join(auto)})"))
    if problems:
        return None, problems
    fixed = int(np.prod([s for s in sizes.values() if s != -1]))
    if auto:
        if device_count % fixed:
            sizes_text = " × ".join(f"{a}={s}" for a, s in sizes.items() if s != -1)
            culprit = max((a for a in sizes if sizes[a] != -1), key=lambda a: sizes[a])
            return None, [
                (
                    f"mesh.{culprit}",
                    f"{sizes_text} = {fixed} does not divide the {device_count} devices (mesh.{auto[0]} is -1)",
                )
            ]
        sizes[auto[0]] = device_count // fixed
    elif fixed != device_count:
        text = " × ".join(f"{a}={s}" for a, s in sizes.items())
        return None, [("mesh", f"{text} = {fixed} devices, but {device_count} are used")]
    return (sizes["data"], sizes["fsdp"], sizes["tensor"]), []


def make_mesh(shape: tuple[int, int, int], devices: Sequence[Any]) -> Mesh:
    """The mesh over ``devices`` (in order), reshaped to ``shape`` = (data, fsdp, tensor)."""
    return Mesh(np.asarray(devices, dtype=object).reshape(shape), AXES)


def logical_names(variable: nnx.Variable) -> tuple[str | None, ...]:
    """The logical axis names a variable carries (``()`` if none)."""
    names = variable.get_metadata().get("out_sharding") or ()
    return tuple(names)


def mesh_spec(names: Sequence[str | None], rules: dict[str, str | None]) -> P:
    """Logical names → PartitionSpec over mesh axes (unknown names and repeated mesh axes replicate)."""
    used: set[str] = set()
    out: list[str | None] = []
    for name in names:
        axis = rules.get(name) if name is not None else None
        if axis is not None and axis in used:
            axis = None
        if axis is not None:
            used.add(axis)
        out.append(axis)
    return P(*out)


@dataclass(frozen=True)
class ParamLayout:
    """One parameter: its path, shape, logical names and mesh PartitionSpec (for the dry-run plan)."""

    path: str
    shape: tuple[int, ...]
    names: tuple[str | None, ...]
    spec: P


def param_layouts(abstract_state: nnx.State, rules: dict[str, str | None]) -> list[ParamLayout]:
    """The layout of every variable of an (abstract) model state, in path order."""
    layouts = []
    for path, variable in nnx.to_flat_state(abstract_state):
        shape = tuple(getattr(variable, "shape", None) or np.shape(variable[...]))
        names = logical_names(variable)
        layouts.append(ParamLayout(".".join(map(str, path)), shape, names, mesh_spec(names, rules)))
    return layouts


def divisibility_problems(layouts: list[ParamLayout], mesh_shape: dict[str, int]) -> list[Problem]:
    """A problem for each mesh axis that does not divide a dimension it shards (first offender per axis)."""
    seen: dict[str, Problem] = {}
    counts: dict[str, int] = {}
    for layout in layouts:
        for dim, axis in enumerate(layout.spec):
            if axis is None or layout.shape[dim] % mesh_shape[axis] == 0:
                continue
            counts[axis] = counts.get(axis, 0) + 1
            seen.setdefault(
                axis,
                (
                    f"mesh.{axis}",
                    (
                        f"{mesh_shape[axis]} does not divide the {layout.names[dim]!r} axis "
                        f"(size {layout.shape[dim]}) of parameter {layout.path} {list(layout.shape)}"
                    ),
                ),
            )
    problems = []
    for axis, (path, message) in seen.items():
        more = counts[axis] - 1
        problems.append((path, message + (f" (and {more} more)" if more else "")))
    return problems


def state_shardings(abstract_state: nnx.State, mesh: Mesh, rules: dict[str, str | None]) -> Any:
    """A pure-dict tree (like ``nnx.to_pure_dict(state)``) of the NamedSharding of every variable."""

    def one(variable: Any) -> NamedSharding:
        names = logical_names(variable) if isinstance(variable, nnx.Variable) else ()
        return NamedSharding(mesh, mesh_spec(names, rules))

    tree = jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.to_pure_dict(tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def opt_state_shardings(tx: optax.GradientTransformation, abstract_opt: Any, param_shardings: Any, mesh: Mesh):
    """Shardings of the optimizer state: parameter-shaped leaves like their parameter, the rest replicated."""
    return optax.tree_map_params(
        tx,
        lambda _leaf, sharding: sharding,
        abstract_opt,
        param_shardings,
        transform_non_params=lambda _leaf: replicated(mesh),
        is_leaf=lambda x: isinstance(x, NamedSharding),
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches (grad_accum, micro_batch, seq_len + 1) or (grad_accum, micro_batch, 2, seq_len): the
    micro-batch axis over (data, fsdp), the other axes replicated."""
    return NamedSharding(mesh, P(None, BATCH_AXES, None))


def local_rows(sharding: NamedSharding, global_shape: tuple[int, ...]) -> tuple[int, int]:
    """The rows ``[lo, hi)`` of the micro-batch axis that this process's devices hold (must be contiguous)."""
    rows: set[int] = set()
    for index in sharding.addressable_devices_indices_map(global_shape).values():
        assert index is not None  # a sharding over a known global shape always gives each device an index
        start, stop, _ = index[1].indices(global_shape[1])
        rows.update(range(start, stop))
    lo, hi = min(rows), max(rows) + 1
    if len(rows) != hi - lo:
        raise RuntimeError(f"this process's batch rows are not contiguous: {sorted(rows)}")
    return lo, hi


def global_batch(local: np.ndarray, sharding: NamedSharding, global_shape: tuple[int, ...]) -> jax.Array:
    """Assemble the global batch array from this process's rows."""
    return jax.make_array_from_process_local_data(sharding, local, global_shape)
