"""``titans-train SPEC.yaml --dry-run``: the resolved spec, the parameter count, the mesh plan and a lower bound of
a step's memory, as text."""

from __future__ import annotations

import jax
from rich.console import Console
from rich.table import Table
from rich.text import Text
from titans_core import dump_spec

from titans_train.data import Splits, TaskSplits
from titans_train.plan import Plan
from titans_train.resources import human_bytes, memory_limit


def _tokens(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n:,}"


def print_dry_run(plan: Plan, console: Console) -> None:
    """Print the resolved spec (YAML), then the plan: model size, data, devices, mesh, batch, parameters."""
    spec = plan.spec
    console.print(Text("# resolved spec"))
    console.print(Text(dump_spec(spec).rstrip()))
    console.print(Text("\n# plan"))
    t = spec.trainer
    lines = [f"model: {spec.model.name}, {plan.param_count:,} parameters ({len(plan.layouts)} tensors)"]
    if isinstance(plan.splits, TaskSplits):  # plan.labelled
        s = plan.splits
        lines.append(
            f"data: {s.description}; examples of {spec.data.seq_len} tokens with targets on the scored "
            f"positions only: train {len(s.train):,}, validation {len(s.val):,}"
        )
    elif isinstance(plan.splits, Splits):
        corpus = plan.splits
        window = spec.data.seq_len + 1
        val = (
            f"validation {_tokens(corpus.val.size)} tokens ({(corpus.val.size - 1) // spec.data.seq_len:,} windows)"
            if corpus.val is not None
            else "no validation split"
        )
        lines.append(
            f"data: {corpus.description}; train {_tokens(corpus.train.size)} tokens "
            f"({(corpus.train.size - 1) // spec.data.seq_len:,} windows of {window}), {val}"
        )
    devices = plan.mesh.devices.reshape(-1)
    kinds = sorted({d.platform for d in devices})
    lines.append(
        f"devices: {len(devices)} ({', '.join(kinds)}), {jax.process_count()} process(es); "
        f"this is process {jax.process_index()}"
    )
    lines.append("mesh: " + " × ".join(f"{axis}={size}" for axis, size in plan.mesh_shape.items()))
    lines.append("rules: " + ", ".join(f"{k}→{v or 'replicated'}" for k, v in sorted(plan.rules.items())))
    dp = plan.mesh_shape["data"] * plan.mesh_shape["fsdp"]
    micro = t.batch_size // t.grad_accum
    lines.append(
        f"batch: {t.batch_size} windows × {spec.data.seq_len} tokens = {t.batch_size * spec.data.seq_len:,} "
        f"tokens per step in {t.grad_accum} micro-batch(es) of {micro}, sharded over data×fsdp={dp} "
        f"({micro // dp} per shard); this process loads rows {plan.layout.row_lo}…{plan.layout.row_hi - 1}"
    )
    lines.append(
        f"precision: {spec.precision.compute_dtype} compute, float32 weights; "
        f"steps: {t.steps}, output: {spec.output.dir}"
    )
    if plan.memory is not None:
        limit = memory_limit(list(devices))
        lines.append(
            f"memory: a step needs at least {human_bytes(plan.memory.total)} ({plan.memory.describe()}) "
            f"of the {limit.describe()}"
        )
    for line in lines:
        console.print(Text(line), soft_wrap=True)
    table = Table("parameter", "shape", "logical axes", "mesh sharding", title="parameter layout")
    for layout in plan.layouts:
        table.add_row(
            Text(layout.path),
            Text(str(list(layout.shape))),
            Text(str(tuple(layout.names)) if layout.names else "-"),
            Text(str(tuple(layout.spec))),
        )
    console.print(table)
