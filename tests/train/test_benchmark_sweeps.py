"""The benchmark sweeps' rows are valid specs, and the S-NIAH by-depth table groups what titans-eval counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_scripts import benchmark_script
from titans_train.spec_check import load_train_spec

ROOT = Path(__file__).resolve().parents[2]


SWEEPS = benchmark_script("seeded_sweep").SWEEPS
ROWS = [(sweep, row) for sweep, s in SWEEPS.items() for row in s.rows]


@pytest.mark.parametrize("sweep, row", ROWS, ids=[f"{s}:{r}" for s, r in ROWS])
def test_every_seeded_sweep_row_is_a_valid_spec(sweep, row):
    spec_path, overrides = SWEEPS[sweep].rows[row]
    spec, _ = load_train_spec(ROOT / "specs" / spec_path, overrides)
    assert spec.data.source.name == SWEEPS[sweep].task  # the row is scored on the task it trains


def test_niah_by_depth_groups_depths_in_order_and_keeps_every_count():
    by_depth = {f"{d:.3f}": [i % 3, 2] for i, d in enumerate(x / 39 for x in range(40))}
    groups = benchmark_script("niah_by_depth").buckets(by_depth, 5)
    assert len(groups) == 5
    assert [t for _, t in groups] == [16] * 5
    assert sum(c for c, _ in groups) == sum(c for c, _ in by_depth.values())
    assert groups[0][0] == sum(i % 3 for i in range(8))  # the 8 lowest depths come first


def test_a_run_is_scored_again_only_when_its_evaluation_differs(tmp_path):
    module = benchmark_script("seeded_sweep")
    sweep = module.Sweep("mqar", (64, 128), 256, {})
    scored = tmp_path / "eval_mqar.json"
    assert not module._scored_as(scored, sweep)  # never scored
    results = [{"context": c, "examples": 256, "seed": 1} for c in (64, 128)]
    scored.write_text(json.dumps({"runs": [{"results": results}]}))
    assert module._scored_as(scored, sweep)
    assert not module._scored_as(scored, module.Sweep("mqar", (64, 128, 256), 256, {}))  # a context more
    assert not module._scored_as(scored, module.Sweep("mqar", (64, 128), 64, {}))  # fewer examples


def test_an_interrupted_sweep_keeps_the_earlier_results_it_did_not_replace(tmp_path, monkeypatch):
    module = benchmark_script("seeded_sweep")
    name, row = "horizon_mqar", "lmm"
    score = lambda a: {str(c): a for c in module.SWEEPS[name].contexts}  # noqa: E731
    earlier = [{"row": row, "seed": s, "status": 0, "train_minutes": 1.0, "accuracy": score(0.5)} for s in (0, 1)]
    (tmp_path / f"{name}.json").write_text(json.dumps({"runs": earlier}))

    def fake(sweep, sweep_name, row_name, seed, runs, log, core):
        if seed == 1:
            raise KeyboardInterrupt  # stopped before its run finished again
        return {"row": row_name, "seed": seed, "status": 0, "train_minutes": 2.0, "accuracy": score(0.9)}

    monkeypatch.setattr(module, "train_and_score", fake)
    with pytest.raises(KeyboardInterrupt):
        module.main([name, "--only", row, "--seeds", "0", "1", "--out", str(tmp_path), "--runs", str(tmp_path)])
    runs = {r["seed"]: r for r in json.loads((tmp_path / f"{name}.json").read_text())["runs"]}
    assert runs[0]["accuracy"] == score(0.9)  # replaced by the new result
    assert runs[1]["accuracy"] == score(0.5)  # kept


def test_two_processes_on_one_sweep_keep_each_others_runs(tmp_path, monkeypatch):
    """While this process trains seed 1, another one (simulated) finishes seed 0 and writes it: both survive."""
    module = benchmark_script("seeded_sweep")
    name, row = "horizon_mqar", "lmm"
    sweep = module.SWEEPS[name]
    score = lambda a: {str(c): a for c in sweep.contexts}  # noqa: E731
    result = lambda seed, a: {"row": row, "seed": seed, "status": 0, "train_minutes": 1.0, "accuracy": score(a)}  # noqa: E731

    def fake(sweep_, sweep_name, row_name, seed, runs, log, core):
        other = {(row, 0): result(0, 0.7)}  # the other process's run, written while this one trains
        module.write_results(tmp_path / f"{name}.json", tmp_path / "runs" / f"{name}.lock", name, sweep, other)
        return result(seed, 0.9)

    monkeypatch.setattr(module, "train_and_score", fake)
    module.main([name, "--only", row, "--seeds", "1", "--out", str(tmp_path), "--runs", str(tmp_path / "runs")])
    runs = {r["seed"]: r for r in json.loads((tmp_path / f"{name}.json").read_text())["runs"]}
    assert runs[0]["accuracy"] == score(0.7) and runs[1]["accuracy"] == score(0.9)
    assert "| `lmm` | 0,1 |" in (tmp_path / f"{name}.md").read_text()
