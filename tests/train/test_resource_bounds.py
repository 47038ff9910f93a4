"""Resource bounds checked from the spec before anything is allocated or written (titans_train.resources): a step
beyond the machine's memory, a step count beyond the int32 step counter, a device or FIFO as a spec or data
file. Each is one ``error:`` line naming the field or path, exit status 2, no traceback, no run directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from titans_train.resources import MEMORY_ENV, StepMemory
from train.conftest import run_cli, toy_spec, write_spec


def _assert_one_error(result, expected: str) -> str:
    assert result.code == 2, result
    assert "Traceback" not in result.err and "Traceback" not in result.out
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.err
    assert expected in errors[0], result.err
    return errors[0]


# (id, sections of the toy spec, extra CLI args, TITANS_MEMORY_LIMIT or None (physical memory), expected fragment)
MEMORY_CASES: list[tuple[str, dict[str, Any], list[str], str | None, str]] = [
    (
        "batch-1e12",
        {"trainer": {"batch_size": 10**12}},
        [],
        None,
        "trainer.batch_size: a training step needs at least 31.0 PiB",
    ),
    (
        "batch-1e12-dry-run",
        {"trainer": {"batch_size": 10**12}},
        ["--dry-run"],
        None,
        "trainer.batch_size: a training step needs at least 31.0 PiB",
    ),
    (
        "batch-override",
        {},
        ["--set", "trainer.batch_size=1000000000000"],
        None,
        "--set trainer.batch_size=1000000000000: trainer.batch_size: a training step needs at least",
    ),
    ("vocab-1e9", {"model": {"name": "toy", "vocab_size": 10**9}}, [], "16G", "model.vocab_size: a training step"),
    ("seq-len-1e8", {"data": {"seq_len": 10**8}}, [], "16G", "data.seq_len: a training step needs at least"),
    ("limit-override", {}, [], "1K", "more than the 1.0 KiB (TITANS_MEMORY_LIMIT=1K)"),
    ("limit-invalid", {}, [], "lots", "TITANS_MEMORY_LIMIT='lots': expected a number of bytes"),
]


@pytest.mark.parametrize(
    ("sections", "args", "limit", "expected"), [c[1:] for c in MEMORY_CASES], ids=[c[0] for c in MEMORY_CASES]
)
def test_a_step_beyond_the_memory_is_one_line(
    tmp_path: Path, capsys, monkeypatch, sections, args, limit, expected
) -> None:
    if limit is None:
        monkeypatch.delenv(MEMORY_ENV, raising=False)
    else:
        monkeypatch.setenv(MEMORY_ENV, limit)
    run_dir = tmp_path / "run"
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", toy_spec(run_dir, **sections))), *args])
    line = _assert_one_error(result, expected)
    if "needs at least" in line:
        assert "logits" in line and "optimizer state" in line and MEMORY_ENV in line
    assert not run_dir.exists()


def test_dry_run_prints_the_step_memory(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv(MEMORY_ENV, "2G")
    run_dir = tmp_path / "run"
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", toy_spec(run_dir))), "--dry-run"])
    assert result.code == 0, result
    text = " ".join(result.out.split())  # rich may wrap
    # toy: micro-batch 8 × seq_len 16 × vocab 256 float32 logits and their gradient = 256 KiB
    assert "memory: a step needs at least" in text and "logits 256.0 KiB" in text, text
    assert "of the 2.0 GiB (TITANS_MEMORY_LIMIT=2G)" in text
    assert not run_dir.exists()


def test_step_memory_is_a_lower_bound_of_what_xla_allocates(tmp_path: Path) -> None:
    """The estimate counts only what a step surely holds: XLA's compiled training step needs at least as much."""
    import jax
    import jax.numpy as jnp
    from titans_train.plan import make_plan
    from titans_train.spec_check import load_train_spec
    from titans_train.steps import make_steps

    sections = {"model": {"name": "toy", "vocab_size": 512}, "mesh": {"num_devices": 1}}
    spec, locator = load_train_spec(write_spec(tmp_path / "spec.yaml", toy_spec(tmp_path / "run", **sections)))
    plan = make_plan(spec, locator, load_data=False, multi_process=False)
    assert plan.memory is not None and plan.memory.logits == 2 * 8 * 16 * 512 * 4
    steps = make_steps(
        plan.graphdef,
        plan.tx,
        plan.schedule,
        compute_dtype=plan.compute_dtype,
        state_shardings=plan.state_shardings,
        batch_sharding=plan.batch_sharding,
        replicated=plan.replicated,
    )
    batch = jax.ShapeDtypeStruct(plan.batch_shape, jnp.int32, sharding=plan.batch_sharding)
    m = steps.train.lower(plan.abstract_state(), batch).compile().memory_analysis()
    xla = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    assert plan.memory.total <= xla, (plan.memory.describe(), xla)


def test_step_memory_sums_its_terms() -> None:
    memory = StepMemory(parameters=1, optimizer=2, gradients=1, logits=1 << 20, activations=3, batch=4)
    assert memory.total == 11 + (1 << 20)
    assert "logits 1.0 MiB" in memory.describe()


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"trainer": {"steps": 3_000_000_000}}, "trainer.steps"),
        ({"schedule": {"warmup_steps": 2, "decay_steps": 2**31}}, "schedule.decay_steps"),
    ],
    ids=["steps-3e9", "decay-steps-2e31"],
)
def test_step_counts_beyond_int32_are_one_line(tmp_path: Path, capsys, sections, field) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", toy_spec(run_dir, **sections)))])
    _assert_one_error(result, f"{field}: must be ≤ 2,147,483,647 (the step counter is a 32-bit integer)")
    assert not run_dir.exists()


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_a_device_or_fifo_as_spec_file_is_one_line(tmp_path: Path, capsys, kind: str) -> None:
    path = Path("/dev/zero") if kind == "dev-zero" else _fifo(tmp_path)
    result = run_cli(capsys, [str(path)])
    _assert_one_error(result, f"spec file {path}: not a regular file (a device, FIFO or socket)")


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ({"name": "text", "paths": ["/dev/zero"]}, "dev-zero"),
        ({"name": "text", "paths": ["FIFO"]}, "fifo"),
        ({"name": "tokens", "path": "/dev/zero"}, "dev-zero"),
        ({"name": "tokens", "path": str(Path(__file__)), "val_path": "/dev/zero"}, "dev-zero"),
    ],
    ids=["text-dev-zero", "text-fifo", "tokens-dev-zero", "tokens-val-dev-zero"],
)
def test_a_device_or_fifo_as_data_is_one_line(tmp_path: Path, capsys, source: dict, kind: str) -> None:
    if kind == "fifo":
        source = {**source, "paths": [str(_fifo(tmp_path))]}
    if source.get("name") == "tokens" and "val_path" in source:  # a readable training file, a device as validation
        train = tmp_path / "train.npy"
        np.save(train, np.arange(1000, dtype=np.int32) % 256)
        source = {**source, "path": str(train)}
    run_dir = tmp_path / "run"
    spec = toy_spec(run_dir, data={"source": source, "seq_len": 16})
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", spec))])
    path = source.get("val_path") or (source.get("paths") or [source.get("path")])[0]
    _assert_one_error(result, f"data: {path}: not a regular file (a device, FIFO or socket)")
    assert not run_dir.exists()
