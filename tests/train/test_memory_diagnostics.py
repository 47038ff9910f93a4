"""Memory diagnostics in training and evaluation: the "memory" entries of metrics.jsonl (on the chosen
steps, never for SWA, the same losses with diagnostics on or off), ``plots/memory.png``, titans-eval's
JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from titans_memory import DIAGNOSTIC_KEYS
from titans_train.plot_memory import memory_series
from train.conftest import LINEAR_MEMORY, losses, metrics, run_cli, toy_spec, write_spec

TINY_LMM = {
    "name": "lmm",
    "d_model": 16,
    "num_layers": 1,  # one layer: the per-layer naming of several layers is tests/variants/test_diagnostics.py's
    "num_heads": 2,
    "window": 8,
    "segment": 8,
    "num_persistent": 2,
    "ffn_hidden": 24,
    # a linear (depth-1) memory: the diagnostics are the same keys for any memory model
    "memory": LINEAR_MEMORY,
}


def _spec(run_dir: Path, model: dict, every, steps: int = 4) -> dict:
    return toy_spec(
        run_dir,
        model=model,
        trainer={
            "steps": steps,
            "eval_every": None,
            "eval_batches": 1,
            "log_every": 1,
            "diagnostics_every": every,
        },
        checkpoint={"every": steps},
    )


def run_eval(capsys, args) -> tuple[int, str, str]:
    """``titans-eval ARGS`` in this process: (exit status, stdout, stderr)."""
    from titans_train.evaluate.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _train(capsys, tmp_path: Path, name: str, spec: dict):
    result = run_cli(capsys, [str(write_spec(tmp_path / f"{name}.yaml", spec))])
    assert result.code == 0, result.err
    return spec["output"]["dir"]


def test_training_records_plot_and_eval(tmp_path: Path, capsys) -> None:
    on = Path(_train(capsys, tmp_path, "on", _spec(tmp_path / "on", TINY_LMM, 2)))
    off = Path(_train(capsys, tmp_path, "off", _spec(tmp_path / "off", TINY_LMM, None)))
    assert losses(on) == losses(off)  # the training step is untouched by the diagnostics
    records = metrics(on)
    assert [r["step"] for r in records if "memory" in r] == [2, 4]
    assert not any("memory" in r for r in metrics(off))
    for record in (r for r in records if "memory" in r):
        assert {"loss", "lr", "grad_norm", "tokens_per_s", "time"} <= set(record)  # the usual keys stay
        assert list(record["memory"]) == ["layer0"]
        for stats in record["memory"].values():
            assert list(stats) == list(DIAGNOSTIC_KEYS)
            assert all(math.isfinite(v) for v in stats.values())
            assert stats["theta_min"] <= stats["theta_mean"] <= stats["theta_max"] <= 0.01
            assert stats["update_norm_mean"] > 0 and stats["surprise_norm_mean"] > 0
    series = memory_series(records)
    assert series["layer0"]["update_norm_max"][0] == [2, 4]

    plotted = run_cli(capsys, ["plot", str(on)])
    assert plotted.code == 0, plotted.err
    png = on / "plots" / "memory.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000

    out = tmp_path / "eval.json"
    args = [on, "--task", "lm", "--lm-tokens", "64", "--batch-size", "2", "-o", out]
    code, printed, err = run_eval(capsys, args)
    assert code == 0, err
    (result,) = json.loads(out.read_text())["runs"][0]["results"]
    assert list(result["memory"]) == ["layer0"]
    assert list(result["memory"]["layer0"]) == list(DIAGNOSTIC_KEYS)
    assert result["memory"]["layer0"]["update_norm_mean"] > 0
    assert "memory of lmm (lm @16): layer0 θ" in printed and "ΔM" in printed


def test_no_memory_no_records_and_no_memory_plot(tmp_path: Path, capsys) -> None:
    swa = {k: v for k, v in TINY_LMM.items() if k != "memory"} | {"name": "swa"}
    run_dir = Path(_train(capsys, tmp_path, "swa", _spec(tmp_path / "swa", swa, "log_every", steps=2)))
    assert len(metrics(run_dir)) == 2 and not any("memory" in r for r in metrics(run_dir))
    assert run_cli(capsys, ["plot", str(run_dir)]).code == 0
    assert not (run_dir / "plots" / "memory.png").exists()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(0, "got 0"), ("often", "got 'often'"), (2.5, "got 2.5"), (True, "got True")],
)
def test_bad_diagnostics_every(tmp_path: Path, capsys, value, fragment: str) -> None:
    spec = toy_spec(tmp_path / "run", trainer={"diagnostics_every": value})
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", spec))])
    assert result.code == 2
    assert result.err.count("error:") == 1 and len(result.err.strip().splitlines()) == 1, result.err
    assert f"trainer.diagnostics_every: expected an integer ≥ 1, 'log_every' or null, {fragment}" in result.err
    assert "Traceback" not in result.err and not (tmp_path / "run").exists()
