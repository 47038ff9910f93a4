"""Checkpoints are verified and never harmed: array digests, a full disk, a moved run directory."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from train.conftest import losses, metrics, run_cli, script_env, start_cli, toy_spec, write_spec
from train.test_bad_input import _assert_one_error


def _change_a_recorded_digest(checkpoint: Path) -> str:
    """Change the checksum recorded for one parameter array (as if its saved data no longer matched); its path.

    Decision: the test changes the record, not the array bytes on disk. Flipping bytes of orbax's data files was
    not deterministic: their layout varies from run to run, so the same flip was sometimes a decode error and once
    (1 full suite run in 4) fell on bytes the restore does not read back. That any changed word of an array
    changes its digest is test_digest_detects_any_changed_word_whatever_the_sharding's."""
    record = checkpoint / "digest" / "metadata"
    saved = json.loads(record.read_text())
    name = min(k for k in saved["arrays"] if k.startswith("params."))
    first, second = saved["arrays"][name].split(":")
    saved["arrays"][name] = f"{int(first, 16) ^ 1:08x}:{second}"
    record.write_text(json.dumps(saved))
    return name


def test_digest_mismatch_falls_back_to_the_previous_checkpoint(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    spec = toy_spec(run_dir, schedule={"warmup_steps": 2, "decay_steps": 9})
    spec_file = write_spec(tmp_path / "spec.yaml", spec)
    # trained in another process: tensorstore's in-process cache would serve the bytes it wrote
    first = start_cli(tmp_path, [str(spec_file)], script_env(), "first.log")
    first.communicate(timeout=900)
    assert first.returncode == 0, (tmp_path / "first.log").read_text()
    original = losses(run_dir)
    assert (run_dir / "checkpoints" / "6" / "digest").is_dir()
    changed = _change_a_recorded_digest(run_dir / "checkpoints" / "6")
    result = run_cli(capsys, [str(spec_file), "--set", "trainer.steps=9"])
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"6 is unreadable (ValueError: digest mismatch: the data of {changed}" in warnings[0]
    assert "using step 3 instead" in warnings[0] and f"resumed {run_dir} at step 3" in result.out
    assert losses(run_dir)[:6] == original
    assert [r["step"] for r in metrics(run_dir)] == list(range(1, 10))


def test_digest_detects_any_changed_word_whatever_the_sharding() -> None:
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec
    from titans_train.digest import state_digest

    x = jnp.arange(64, dtype=jnp.float32).reshape(8, 8) / 7
    state = {"a": x, "b": jnp.ones((3,), jnp.bfloat16), "k": jnp.arange(4, dtype=jnp.uint32)}
    digest = state_digest(state)
    mesh = jax.make_mesh((8,), ("d",))
    sharded = {**state, "a": jax.device_put(x, NamedSharding(mesh, PartitionSpec("d")))}
    assert state_digest(sharded) == digest
    for i in range(0, 64, 9):  # one bit of an element
        bits = np.asarray(x).view(np.uint32).copy().reshape(-1)
        bits[i] ^= np.uint32(1 << (i % 32))
        changed = state_digest({**state, "a": jnp.asarray(bits.view(np.float32).reshape(8, 8))})
        assert changed["a"] != digest["a"] and changed["b"] == digest["b"]
    swapped = np.asarray(x).copy()
    swapped[0, 0], swapped[0, 1] = swapped[0, 1], swapped[0, 0]
    assert state_digest({**state, "a": jnp.asarray(swapped)})["a"] != digest["a"]


def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """The write of checkpoint 6 fails with ENOSPC inside orbax's background save (simulated at orbax's file
    writer); checkpoint 3 stays intact and the rerun continues from it exactly."""
    from orbax.checkpoint._src.path import async_path

    straight = tmp_path / "straight"
    assert run_cli(capsys, [str(write_spec(tmp_path / "straight.yaml", toy_spec(straight)))]).code == 0

    run_dir = tmp_path / "run"
    spec_file = write_spec(tmp_path / "spec.yaml", toy_spec(run_dir))
    real_write_text = async_path.write_text

    async def full_disk(path, text):
        if f"{run_dir / 'checkpoints' / '6'}" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return await real_write_text(path, text)

    monkeypatch.setattr(async_path, "write_text", full_disk)
    result = run_cli(capsys, [str(spec_file)])
    _assert_one_error(
        result,
        f"cannot write checkpoint 6 in {run_dir / 'checkpoints'}: no space left on the device; it needs",
    )
    assert "the last good checkpoint, step 3, is intact" in result.err
    assert "RESOURCE_EXHAUSTED" not in result.err and "orbax" not in result.err  # no orbax tracebacks
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["3"]
    monkeypatch.setattr(async_path, "write_text", real_write_text)

    resumed = run_cli(capsys, [str(spec_file)])
    assert resumed.code == 0, resumed.err
    assert f"resumed {run_dir} at step 3" in resumed.out
    assert losses(run_dir) == losses(straight)
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("how", ["moved", "copied"])
def test_moved_run_directory_resumes_with_the_new_output_dir(tmp_path: Path, capsys, how: str) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    spec = toy_spec(old, trainer={"steps": 3}, schedule={"warmup_steps": 2, "decay_steps": 6})
    spec_file = write_spec(tmp_path / "spec.yaml", spec)
    assert run_cli(capsys, [str(spec_file)]).code == 0
    (shutil.move if how == "moved" else shutil.copytree)(old, new)
    result = run_cli(capsys, [str(spec_file), "--set", f"output.dir={new}", "--set", "trainer.steps=6"])
    assert result.code == 0, result.err
    assert f"resumed {new} at step 3" in result.out
    assert [r["step"] for r in metrics(new)] == [1, 2, 3, 4, 5, 6]
    assert f"dir: {new}" in (new / "spec.yaml").read_text()


def test_missing_digest_is_corrupt_and_no_usable_checkpoint_needs_restart(tmp_path: Path, capsys) -> None:
    """A checkpoint without its digest is unreadable (never restored unverified); when no checkpoint is usable the
    run is refused on this and every later start until ``--restart``, which keeps the old metrics aside."""
    run_dir = tmp_path / "run"
    spec_file = write_spec(tmp_path / "spec.yaml", toy_spec(run_dir, schedule={"warmup_steps": 2, "decay_steps": 9}))
    assert run_cli(capsys, [str(spec_file)]).code == 0
    shutil.rmtree(run_dir / "checkpoints" / "6" / "digest")
    result = run_cli(capsys, [str(spec_file), "--set", "trainer.steps=7"])
    assert result.code == 0, result.err
    assert "6 is unreadable (ValueError: its digest is missing" in result.err and "using step 3 instead" in result.err
    for digest in (run_dir / "checkpoints").glob("*/digest"):
        shutil.rmtree(digest)
    before = (run_dir / "metrics.jsonl").read_text()
    for _ in range(2):  # refused now and on the next identical start: never a silent restart
        result = run_cli(capsys, [str(spec_file), "--set", "trainer.steps=7"])
        assert result.code == 2, result.err
        errors = [line for line in result.err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "no usable checkpoint" in errors[0] and "--restart" in errors[0], result.err
        assert "Traceback" not in result.err and (run_dir / "metrics.jsonl").read_text() == before
    result = run_cli(capsys, [str(spec_file), "--set", "trainer.steps=7", "--restart"])
    assert result.code == 0, result.err
    assert [r["step"] for r in metrics(run_dir)] == list(range(1, 8))
    (kept,) = run_dir.glob("metrics-before-restart-*.jsonl")
    assert kept.read_text() == before
    # --restart on a run that can continue is refused: it never throws a usable checkpoint away
    after = (run_dir / "metrics.jsonl").read_text()
    result = run_cli(capsys, [str(spec_file), "--set", "trainer.steps=8", "--restart"])
    assert result.code == 2 and "holds a usable checkpoint (step 7)" in result.err, result.err
    assert (run_dir / "metrics.jsonl").read_text() == after and "Traceback" not in result.err
