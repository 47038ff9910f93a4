"""specs/quickstart.yaml: valid, and its whole flow (train with progress, evaluate, checkpoint, sample; plot;
generate) runs end to end with a tiny override. The flow uses the toy variant; the dry run MAC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from titans_core import get_registry
from titans_train.data.corpus import unigram_bits
from titans_train.spec_check import load_train_spec
from train.conftest import metrics, run_cli

QUICKSTART = Path(__file__).resolve().parents[2] / "specs" / "quickstart.yaml"
TINY = [
    "--set",
    "model={name: toy}",
    "--set",
    "data.source.max_bytes=40000",
    "--set",
    "data.seq_len=32",
    "--set",
    "trainer.steps=4",
    "--set",
    "trainer.batch_size=8",
    "--set",
    "trainer.eval_every=2",
    "--set",
    "trainer.log_every=1",
    "--set",
    "checkpoint.every=2",
    "--set",
    "sample.max_new_tokens=24",
]


def test_quickstart_spec_is_valid() -> None:
    if "mac" not in get_registry().names("variant"):
        pytest.skip("the mac variant is not registered yet")
    spec, _ = load_train_spec(QUICKSTART)
    assert spec.model.name == "mac" and spec.data.source.name == "python_stdlib" and spec.data.val_fraction > 0


@pytest.mark.skipif("mac" not in get_registry().names("variant"), reason="the mac variant is not registered")
def test_quickstart_dry_run_with_mac(tmp_path: Path, capsys) -> None:
    result = run_cli(capsys, [str(QUICKSTART), "--dry-run", "--set", f"output.dir={tmp_path / 'run'}"])
    assert result.code == 0, result.err
    assert "model: mac, " in result.out and "parameters" in result.out and "mesh: data=8" in result.out
    assert not (tmp_path / "run").exists()


def test_quickstart_flow_end_to_end(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "quickstart"
    result = run_cli(capsys, [str(QUICKSTART), *TINY, "--set", f"output.dir={run_dir}"])
    assert result.code == 0, result.err
    assert "step 4/4  loss" in result.out and "bpb" in result.out
    assert "eval step 2:" in result.out and "eval step 4:" in result.out
    evals = metrics(run_dir, "eval")
    assert all(r["unigram_bpb"] == evals[0]["unigram_bpb"] > 0 for r in evals)  # the baseline, on the held-out split
    assert f"(unigram {evals[0]['unigram_bpb']:.3f})" in result.out
    assert "sample (step 4):\ndef " in result.out
    assert [r["step"] for r in evals] == [2, 4]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]

    plotted = run_cli(capsys, ["plot", str(run_dir)])
    assert plotted.code == 0 and (run_dir / "plots" / "loss.png").exists() and (run_dir / "plots" / "eval.png").exists()

    generated = run_cli(capsys, ["generate", str(run_dir), "--prompt", "import ", "--max-new-tokens", "16"])
    assert generated.code == 0, generated.err
    assert generated.out.startswith("import ")


def test_unigram_baseline_is_the_smoothed_cross_entropy() -> None:
    """Counts 3, 1, 0 (+1 each) over a vocabulary of 3: p = 4/7, 2/7, 1/7; the held-out tokens 0, 2 cost
    (log2 7/4 + log2 7) / 2 bits each. A token never seen in training is finite (add-one smoothing)."""
    train, val = np.array([0, 0, 0, 1]), np.array([0, 2])
    expected = (np.log2(7 / 4) + np.log2(7)) / 2
    assert abs(unigram_bits(train, val, 3) - expected) < 1e-12
    uniform = unigram_bits(np.arange(256), np.arange(256), 256)
    assert abs(uniform - 8.0) < 1e-12  # every byte equally frequent: 8 bits per byte
