"""A training run end to end (in this process): files, metrics, progress, dry run, schema, run-directory
rules,
resume, corrupt checkpoints, divergence, gradient accumulation and bfloat16."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from titans_train.checkpoint import Checkpoints
from titans_train.progress import TrainProgress
from train.conftest import CliResult, losses, metrics, run_cli, run_cli_in_fixture, toy_spec, write_spec


def _train(capsys, tmp_path: Path, spec: dict, *args: str, name: str = "spec.yaml"):
    return run_cli(capsys, [str(write_spec(tmp_path / name, spec)), *args])


#: the schedule of the six_steps run: its first 3 steps are those of a 3-step run of the same spec (resumed runs
#: are exact, test_resume_is_exact_and_spec_changes_are_refused)
SCHEDULE = {"warmup_steps": 2, "decay_steps": 6}


@pytest.fixture(scope="module")
def six_steps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CliResult]:
    """The default 6-step toy run (evals and checkpoints at 3 and 6, an 8-byte sample; the schedule fixed over 6
    steps) and its CLI result: read by several tests below (they copy it before changing it)."""
    root = tmp_path_factory.mktemp("six-steps")
    spec = toy_spec(root / "run", schedule=SCHEDULE, sample={"max_new_tokens": 8, "prompt": "def "})
    return root / "run", run_cli_in_fixture([str(write_spec(root / "spec.yaml", spec))])


def test_run_writes_metrics_checkpoints_and_progress(six_steps: tuple[Path, CliResult]) -> None:
    run_dir, result = six_steps
    assert result.code == 0, result.err
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoints",
        "metrics.jsonl",
        "run.json",
        "spec.yaml",
    ]
    train = metrics(run_dir)
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    for record in train:
        assert record["bpb"] == pytest.approx(record["loss"] / math.log(2))
        assert {"lr", "grad_norm", "tokens_per_s", "time"} <= set(record)
    # the first step's time includes compiling: not a throughput (null, not 0.0); every later step has one
    assert train[0]["tokens_per_s"] is None and all(r["tokens_per_s"] > 0 for r in train[1:])
    assert [r["step"] for r in metrics(run_dir, "eval")] == [3, 6]
    assert Checkpoints(run_dir, read_only=True).steps() == [3, 6]
    assert "step 6/6  loss" in result.out and "bpb" in result.out and "tok/s" in result.out and "ETA" in result.out
    assert "eval step 6: loss" in result.out
    assert "sample (step 6):\ndef " in result.out
    facts = json.loads((run_dir / "run.json").read_text())
    assert facts["byte_level"] is True and facts["param_count"] > 0


def test_progress_bar_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    progress = TrainProgress(total=4, start=0, unit="bpb", tokens_per_step=100, log_every=1, console=console)
    for step in range(1, 5):
        progress.update(step, 2.0, first=step == 1)
    progress.close()
    text = out.getvalue()
    assert "4/4" in text and "loss 2.0000" in text and "2.885 bpb" in text and "tok/s" in text and "ETA" in text


def test_dry_run_prints_plan_and_writes_nothing(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    result = _train(
        capsys, tmp_path, toy_spec(run_dir), "--dry-run", "--set", "trainer.steps=7", "--set", "mesh.fsdp=2"
    )
    assert result.code == 0, result.err
    assert "# resolved spec" in result.out and "  steps: 7" in result.out
    assert "model: toy, 10,112 parameters" in result.out
    assert "mesh: data=4 × fsdp=2 × tensor=1" in result.out
    assert "embed.embedding" in result.out and "('tensor', 'fsdp')" in result.out
    assert not run_dir.exists()


def test_schema(capsys) -> None:
    for args in (["schema"], ["--schema"]):
        result = run_cli(capsys, args)
        schema = json.loads(result.out)
        assert result.code == 0
        assert {"model", "data", "optimizer", "schedule", "trainer", "mesh", "checkpoint"} <= set(schema["properties"])


def test_resume_is_exact_and_spec_changes_are_refused(tmp_path: Path, capsys, six_steps) -> None:
    straight, split = six_steps[0], tmp_path / "split"  # the straight run: the same spec in one go
    assert six_steps[1].code == 0
    spec = toy_spec(split, schedule=SCHEDULE)
    assert _train(capsys, tmp_path, spec, "--set", "trainer.steps=3", name="split.yaml").code == 0
    assert len(losses(split)) == 3
    result = _train(capsys, tmp_path, spec, name="split.yaml")  # trainer.steps back to 6: resumes
    assert result.code == 0 and "resumed" in result.out
    assert losses(split) == losses(straight)

    before = {p: p.stat().st_mtime_ns for p in split.rglob("*")}
    refused = _train(capsys, tmp_path, spec, "--set", "optimizer.lr=0.5", name="split.yaml")
    assert refused.code == 2 and "holds a run with a different spec (optimizer.lr: 0.01 → 0.5)" in refused.err
    assert {p: p.stat().st_mtime_ns for p in split.rglob("*")} == before


def test_foreign_directory_is_refused(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    result = _train(capsys, tmp_path, toy_spec(run_dir))
    assert result.code == 2 and "is not empty and holds no spec.yaml" in result.err
    assert [p.name for p in run_dir.iterdir()] == ["notes.txt"]


def _corrupt(step_dir: Path) -> None:
    """Truncate the arrays and garble the metadata files (orbax logs its own ERROR lines reading those)."""
    for file in step_dir.rglob("*"):
        if file.is_file() and file.stat().st_size > 0 and "state" in file.parts:
            file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
        elif file.is_file() and "METADATA" in file.name.upper():
            file.write_bytes(b"\x8f not json \x00")


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path: Path, capsys, caplog) -> None:
    run_dir = tmp_path / "run"
    spec = toy_spec(run_dir, schedule={"warmup_steps": 2, "decay_steps": 9})
    assert _train(capsys, tmp_path, spec).code == 0
    original = losses(run_dir)
    _corrupt(run_dir / "checkpoints" / "6")
    caplog.clear()
    result = _train(capsys, tmp_path, spec, "--set", "trainer.steps=9")
    assert result.code == 0, result.err
    assert "warning: checkpoint" in result.err and "6 is unreadable" in result.err
    assert "using step 3 instead" in result.err and "resumed" in result.out
    orbax_errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name in ("absl", "orbax")]
    assert orbax_errors == [], orbax_errors  # the failure is said once, by the warning above
    assert losses(run_dir)[:6] == original
    assert [r["step"] for r in metrics(run_dir)] == list(range(1, 10))
    assert (run_dir / "corrupt-checkpoints").is_dir()
    assert Checkpoints(run_dir, read_only=True).steps()[-1] == 9


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    spec = toy_spec(
        run_dir,
        optimizer={"lr": 1e30, "clip_norm": None},
        schedule={"warmup_steps": 0},
        trainer={"steps": 12, "max_weight": None},  # the non-finite check alone
        checkpoint={"every": 1, "keep": 2},
    )
    result = _train(capsys, tmp_path, spec)
    assert result.code == 3, result.err
    line = next(line for line in result.err.splitlines() if line.startswith("error:"))
    assert "training diverged at step" in line and "not finite" in line and "Traceback" not in result.err
    diverged = int(line.split("at step ")[1].split()[0])
    kept = Checkpoints(run_dir, read_only=True).steps()
    assert kept and kept[-1] == diverged - 1  # every finished step was checkpointed, and nothing is deleted
    # a checkpoint is offered only if its weights gave a finite loss ≤ 2·ln(vocab_size) at the next step
    step_loss = {r["step"]: r["loss"] for r in metrics(run_dir)}
    step_loss[diverged] = float(line.split("(loss ")[1].split(")")[0])
    sound = [c for c in kept if step_loss[c + 1] <= 2 * math.log(256)]
    expected = f"the last good checkpoint is step {sound[-1]}" if sound else "no checkpoint is good"
    assert expected in line, line
    generated = run_cli(capsys, ["generate", str(run_dir), "--prompt", "x", "-n", "2", "--temperature", "0"])
    assert generated.code == 0, generated.err


def test_blown_up_weights_stop_the_run_and_the_fork_advice_names_a_sound_checkpoint(tmp_path: Path, capsys) -> None:
    """Warming up to lr 3 the loss stays finite while the weights blow up: the run stops at the first step whose
    largest parameter exceeds trainer.max_weight. The checkpoints whose weights already gave a loss above
    2·ln(vocab_size) at the next step (collapsed, though below max_weight) are not offered: the advice forks the
    last one whose weights were sound, and that fork trains on."""
    run_dir = tmp_path / "run"
    spec = toy_spec(
        run_dir,
        optimizer={"lr": 3.0, "clip_norm": None},
        schedule={"warmup_steps": 6},
        trainer={"steps": 12, "max_weight": 10.0},
        checkpoint={"every": 1, "keep": 12},
    )
    result = _train(capsys, tmp_path, spec)
    assert result.code == 3, result.err
    line = next(line for line in result.err.splitlines() if line.startswith("error:"))
    assert "above trainer.max_weight = 10" in line and "--fork-from" in line, line
    diverged = int(line.split("at step ")[1].split()[0])
    good = int(line.split("the last good checkpoint is step ")[1].split()[0])
    bound = 2 * math.log(256)
    step_loss = {r["step"]: r["loss"] for r in metrics(run_dir)}
    step_loss[diverged] = float(line.split("(loss ")[1].split(")")[0])
    assert 1 <= good < diverged - 1, line  # this run has collapsed checkpoints to skip
    assert step_loss[good + 1] <= bound and all(step_loss[c + 1] > bound for c in range(good + 1, diverged)), line
    assert Checkpoints(run_dir, read_only=True).steps() == list(range(1, diverged))  # nothing is deleted
    # the documented way on with another lr: fork the named checkpoint into a new run directory
    named = run_dir / "checkpoints" / str(good)
    forked_spec = write_spec(tmp_path / "forked.yaml", {**spec, "optimizer": {**spec["optimizer"], "lr": 1e-3}})
    refused = run_cli(capsys, [str(forked_spec), "--fork-from", str(named)])
    assert refused.code == 2 and "holds a run with a different spec" in refused.err, refused.err
    assert "choose another output.dir (add --fork-from" in refused.err
    new_dir = tmp_path / "forked"
    args = [str(forked_spec), "--fork-from", str(named), "--set", f"output.dir={new_dir}"]
    forked = run_cli(capsys, [*args, "--set", f"trainer.steps={diverged + 1}"])
    assert forked.code == 0, forked.err
    assert f"forked from {named}" in forked.out
    assert [r["step"] for r in metrics(new_dir)] == list(range(1, diverged + 2))
    assert losses(new_dir)[:good] == losses(run_dir)[:good]
    assert all(loss <= bound for loss in losses(new_dir)[good:])


def test_gradient_accumulation_matches_one_big_batch(tmp_path: Path, capsys, six_steps) -> None:
    two = tmp_path / "two"
    spec = toy_spec(two, schedule=SCHEDULE, trainer={"steps": 3, "grad_accum": 2}, mesh={"data": 4})
    result = _train(capsys, tmp_path, spec, "--set", "mesh.num_devices=4")
    assert result.code == 0, result.err
    assert losses(two) == pytest.approx(losses(six_steps[0])[:3], abs=1e-5)


def test_bfloat16_compute(tmp_path: Path, capsys, six_steps) -> None:
    f32, bf16 = losses(six_steps[0])[:3], tmp_path / "bf16"
    spec = toy_spec(bf16, schedule=SCHEDULE, trainer={"steps": 3}, precision={"compute_dtype": "bfloat16"})
    result = _train(capsys, tmp_path, spec)
    assert result.code == 0, result.err
    assert all(math.isfinite(x) for x in losses(bf16))
    assert losses(bf16) == pytest.approx(f32, abs=0.05)
    assert losses(bf16) != f32


def test_completed_run_is_not_retrained(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    spec = toy_spec(run_dir, trainer={"steps": 2}, checkpoint={"every": 1})
    assert _train(capsys, tmp_path, spec).code == 0
    again = _train(capsys, tmp_path, spec)
    assert again.code == 0 and "resumed" in again.out and len(losses(run_dir)) == 2


def test_plot_and_generate(tmp_path: Path, capsys, six_steps) -> None:
    run_dir = tmp_path / "run"
    assert six_steps[1].code == 0
    shutil.copytree(six_steps[0], run_dir)  # plotting writes into the run directory
    plotted = run_cli(capsys, ["plot", str(run_dir)])
    assert plotted.code == 0 and (run_dir / "plots" / "loss.png").stat().st_size > 1000
    assert (run_dir / "plots" / "eval.png").read_bytes()[:4] == b"\x89PNG"
    generated = run_cli(capsys, ["generate", str(run_dir), "--prompt", "def ", "-n", "12", "--temperature", "0"])
    assert generated.code == 0, generated.err
    assert generated.out.startswith("def ") and "(step 6 of" in generated.err
    again = run_cli(capsys, ["generate", str(run_dir), "--prompt", "def ", "-n", "12", "--temperature", "0"])
    assert again.out == generated.out  # greedy decoding is deterministic
    by_ids = run_cli(capsys, ["generate", str(run_dir), "--prompt-ids", "100 101 102 32", "-n", "3"])
    assert by_ids.code == 0 and by_ids.out.startswith("100 101 102 32 ")


def test_plot_and_generate_errors(tmp_path: Path, capsys, six_steps) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(capsys, ["plot", str(empty)]).code == 2
    result = run_cli(capsys, ["generate", str(empty), "--prompt", "x"])
    assert result.code == 2 and "not a titans-train run directory" in result.err
    run_dir = tmp_path / "run"
    shutil.copytree(six_steps[0], run_dir)
    shutil.rmtree(run_dir / "checkpoints")
    result = run_cli(capsys, ["generate", str(run_dir), "--prompt", "x"])
    assert result.code == 2 and "has no checkpoint" in result.err
