"""The specs of the variant comparison (specs/experiments/TASK/VARIANT.yaml): valid, comparable within a task,
of equal size, the recall tasks' answers beyond every attention window; and benchmarks/experiments.py --smoke
runs the whole pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from benchmark_scripts import benchmark_script
from titans_attention import count_params
from titans_train.plan import abstract_model
from titans_train.spec import TrainSpec
from titans_train.spec_check import load_train_spec
from titans_train.tasks.mqar import IGNORE_INDEX, mqar_batch
from titans_train.tasks.niah import make_niah_example
from xla_env import subprocess_xla_flags

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs" / "experiments"
TASKS = ("lm", "mqar", "niah")
VARIANTS = ("lmm", "mac", "mag", "mal", "swa")
SHARED_SECTIONS = ("data", "optimizer", "schedule", "trainer", "precision", "mesh", "checkpoint", "sample")
SHARED_MODEL = ("vocab_size", "d_model", "num_layers", "num_heads", "window", "segment", "num_persistent")


@pytest.fixture(scope="module")
def specs() -> dict[tuple[str, str], TrainSpec]:
    return {(p.parent.name, p.stem): load_train_spec(p)[0] for p in sorted(SPECS.glob("*/*.yaml"))}


def test_exactly_three_tasks_times_five_variants(specs) -> None:
    assert set(specs) == {(t, v) for t in TASKS for v in VARIANTS}
    for (task, variant), spec in specs.items():
        assert spec.model.name == variant
        assert Path(spec.output.dir) == Path("runs/experiments") / task / variant


def test_variants_of_a_task_share_data_training_and_model_shape(specs) -> None:
    for task in TASKS:
        group = {v: specs[task, v] for v in VARIANTS}
        for section in SHARED_SECTIONS:
            dumps = {v: getattr(s, section).model_dump() for v, s in group.items()}
            assert all(d == dumps["swa"] for d in dumps.values()), (task, section, dumps)
        for key in SHARED_MODEL:
            values = {v: getattr(s.model, key) for v, s in group.items()}
            assert len(set(values.values())) == 1, (task, key, values)
        memories = {v: group[v].model.memory.model_dump() for v in ("lmm", "mac", "mag", "mal")}
        assert all(m == memories["mac"] for m in memories.values()), (task, memories)
    data = {t: specs[t, "swa"].data.source.name for t in TASKS}
    assert data == {"lm": "python_stdlib", "mqar": "mqar", "niah": "niah"}


def reach(spec: TrainSpec) -> int:
    """How far back attention alone can see: L stacked windows of W reach L·(W − 1) tokens (MAC's segments
    never cross a segment boundary, so they reach less)."""
    return spec.model.num_layers * (max(spec.model.window, spec.model.segment) - 1)


def test_mqar_puts_every_pair_beyond_the_reach_of_attention(specs) -> None:
    """No query can attend to its pair through any stack of windows (SWA, MAG, MAL) or segments (MAC)."""
    for variant in VARIANTS:
        spec = specs["mqar", variant]
        source = spec.data.source
        assert spec.data.seq_len >= 4 * spec.model.window  # context ≥ 4 windows (the recall experiments)
        inputs, labels = mqar_batch(
            0,
            64,
            source.vocab_size,
            spec.data.seq_len,
            source.num_kv_pairs,
            source.power_a,
            source.random_non_queries,
            source.delay,
        )
        for r in range(64):
            value_at = {int(inputs[r, 2 * i]): 2 * i + 1 for i in range(source.num_kv_pairs)}
            for p in np.flatnonzero(labels[r] != IGNORE_INDEX):
                assert p - value_at[int(inputs[r, p])] > reach(spec)


def test_niah_needle_is_beyond_the_reach_of_attention(specs) -> None:
    """The question alone is longer than the attention's reach, so the needle always lies beyond it."""
    for variant in VARIANTS:
        spec = specs["niah", variant]
        for seed in range(20):
            example = make_niah_example(np.random.default_rng(seed), spec.data.seq_len + 1, "number")
            needle_end = example.prompt.index(example.answer) + len(example.answer)
            distance = len(example.prompt) - needle_end
            assert distance > reach(spec) and distance >= 2 * spec.model.window


def test_task_data_fit_the_sequence_length(specs) -> None:
    from titans_core import get_registry
    from titans_train.data import LabelledTask, split_task

    for task in ("mqar", "niah"):
        spec = specs[task, "swa"]
        source = get_registry().build(spec.data.source).load()
        assert isinstance(source, LabelledTask)
        splits = split_task(source, seq_len=spec.data.seq_len, vocab_size=spec.vocab_size)
        assert splits.train[0].shape == (2, spec.data.seq_len)


def test_parameter_counts_are_equal_within_two_percent(specs) -> None:
    counts = {k: count_params(abstract_model(s)[1]) for k, s in specs.items()}
    assert all(c > 0 for c in counts.values())
    for task in TASKS:
        group = [counts[task, v] for v in VARIANTS]
        assert max(group) / min(group) - 1 < 0.02, (task, counts)  # designed within 1%


def test_experiment_steps_run_as_processes_or_in_process(tmp_path: Path) -> None:
    """``run`` (each step of benchmarks/experiments.py): as ``python -m MODULE`` (the default; the smoke run below
    uses --in-process) or as ``MODULE.main`` in this process, the output appended to the log, an exit status
    that is not allowed stops the script."""
    experiments, log = benchmark_script("experiments"), tmp_path / "experiments.log"
    status, _ = experiments.run([sys.executable, "-m", "titans_train.cli", "--help"], log)
    assert status == 0 and "$ " in log.read_text() and "Usage: titans-train" in log.read_text()
    missing = [sys.executable, "-m", "titans_train.cli", str(tmp_path / "missing.yaml")]
    status, _ = experiments.run(missing, log, allowed=(0, 2), in_process=True)
    assert status == 2 and log.read_text().count("error:") == 1 and "missing.yaml" in log.read_text()
    with pytest.raises(SystemExit, match=r"failed \(2\): .* — see "):
        experiments.run(missing, log, in_process=True)


@pytest.mark.slow
def test_experiments_smoke_run(tmp_path: Path) -> None:
    runs, out = tmp_path / "runs", tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TITANS_")}
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = subprocess_xla_flags(1)  # one CPU device, as a user runs it (not the tests' 8)
    # --in-process: titans-train and titans-eval run inside the script's one process (the same commands; one
    # interpreter start instead of seven, which were most of this test's time)
    cmd = [sys.executable, "benchmarks/experiments.py", "--smoke", "--in-process", "--variants", "swa"]
    done = subprocess.run(
        [*cmd, "--runs", str(runs), "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    log = (out / "experiments.log").read_text() if (out / "experiments.log").exists() else ""
    assert done.returncode == 0, done.stdout + done.stderr + log[-3000:]
    for task in TASKS:
        assert (out / f"{task}.json").stat().st_size > 0
        assert (out / f"{task}.png").read_bytes()[:4] == b"\x89PNG"
        assert (runs / task / "swa" / "metrics.jsonl").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["smoke"] is True and summary["tasks"] == list(TASKS) and summary["variants"] == ["swa"]
    assert set(summary["results"]) == set(TASKS) and set(summary["train_seconds"]) == set(TASKS)
    table = (out / "results.md").read_text().splitlines()
    heads = [i for i, line in enumerate(table) if line.startswith("| variant | params |")]
    assert len(heads) == len(TASKS)  # one table per task
    rows = [line for line in table if line.startswith("| SWA |")]
    assert len(rows) == len(TASKS)
    for i in heads:
        assert table[i + 2].startswith("| SWA |") and table[i + 2].count("|") == table[i].count("|")
