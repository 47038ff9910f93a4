"""Checkpoints are verified and never harmed: array digests, a full disk, a moved run directory."""

from __future__ import annotations

import errno
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from titans_train import write_errors
from train.conftest import losses, metrics, run_cli, run_cli_in_fixture, script_env, start_cli, toy_spec, write_spec
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


#: 6 steps, checkpoints 3 and 6, a schedule fixed over 9 steps (so the runs can be resumed to 7 or 9 steps)
SCHEDULE = {"warmup_steps": 2, "decay_steps": 9}


@pytest.fixture(scope="module")
def trained_elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 6-step run of :data:`SCHEDULE`, trained in another process (tensorstore's in-process cache would serve
    the bytes it wrote); tests resume copies of it, from a spec naming the copy as output.dir (read only)."""
    root = tmp_path_factory.mktemp("trained-elsewhere")
    spec_file = write_spec(root / "spec.yaml", toy_spec(root / "run", schedule=SCHEDULE))
    first = start_cli(root, [str(spec_file)], script_env(), "first.log")
    first.communicate(timeout=900)
    assert first.returncode == 0, (root / "first.log").read_text()
    return root / "run"


def _copy_of(trained: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the trained run directory and a spec file with the copy as output.dir (what a moved run directory
    resumes from, see test_moved_run_directory_resumes_with_the_new_output_dir)."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    return run_dir, write_spec(tmp_path / "spec.yaml", toy_spec(run_dir, schedule=SCHEDULE))


def test_digest_mismatch_falls_back_to_the_previous_checkpoint(tmp_path: Path, capsys, trained_elsewhere) -> None:
    run_dir, spec_file = _copy_of(trained_elsewhere, tmp_path)
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


def test_host_digest_equals_the_jitted_digest_for_every_dtype() -> None:
    """Arrays in host memory are summed by NumPy; arrays elsewhere (GPU, other processes) by the jitted reduction.
    Both give the same words, so a checkpoint saved by one verifies under the other: every dtype a training state
    holds, 0-d and empty arrays, 8-byte items (two words each)."""
    import jax
    import jax.numpy as jnp
    from titans_train.digest import _checksum_np, _jitted

    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        leaves = [
            jnp.asarray(rng.normal(size=(5, 7)), jnp.float32),
            jnp.asarray(rng.normal(size=(3, 4)), jnp.bfloat16),
            jnp.asarray(rng.normal(size=(6,)), jnp.float64),
            jnp.asarray(rng.integers(-(2**40), 2**40, size=(4,)), jnp.int64),
            jnp.asarray(rng.integers(-(2**31), 2**31 - 1, size=(9,)), jnp.int32),
            jnp.asarray(rng.integers(0, 255, size=(11,)), jnp.uint8),
            jnp.asarray(rng.integers(0, 2, size=(5,)), jnp.bool_),
            jnp.asarray(rng.integers(0, 2**32 - 1, size=(3,), dtype=np.uint64), jnp.uint32),
            jnp.asarray(7, jnp.int32),
            jnp.zeros((0, 3), jnp.float32),
        ]
        on_devices = jax.device_get(_jitted(None)(leaves))
        on_host = [_checksum_np(np.asarray(leaf)) for leaf in leaves]
    for leaf, a, b in zip(leaves, on_devices, on_host, strict=True):
        assert np.array_equal(np.asarray(a), b), (leaf.dtype, a, b)


# the abandoned writes' "Event loop is closed" must not surface as an unraisable-exception traceback either
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """The write of checkpoint 6 fails with ENOSPC inside orbax's background save (simulated at orbax's file
    writer); checkpoint 3 stays intact and the rerun continues from it exactly."""
    from orbax.checkpoint._src.path import async_path

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
    straight = losses(run_dir)  # steps 1..6 ran in one go before the write of checkpoint 6 failed
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3, 4, 5, 6]
    monkeypatch.setattr(async_path, "write_text", real_write_text)

    resumed = run_cli(capsys, [str(spec_file)])
    assert resumed.code == 0, resumed.err
    assert f"resumed {run_dir} at step 3" in resumed.out
    assert losses(run_dir) == straight
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3, 4, 5, 6]


@pytest.fixture(scope="module")
def three_steps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory holding a 3-step toy run (read only: tests copy it)."""
    root = tmp_path_factory.mktemp("three-steps")
    spec = toy_spec(root / "run", trainer={"steps": 3}, schedule={"warmup_steps": 2, "decay_steps": 6})
    result = run_cli_in_fixture([str(write_spec(root / "spec.yaml", spec))])
    assert result.code == 0, result.err
    return root


@pytest.mark.parametrize("how", ["moved", "copied"])
def test_moved_run_directory_resumes_with_the_new_output_dir(
    tmp_path: Path, capsys, how: str, three_steps: Path
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    spec = toy_spec(old, trainer={"steps": 3}, schedule={"warmup_steps": 2, "decay_steps": 6})
    spec_file = write_spec(tmp_path / "spec.yaml", spec)
    shutil.copytree(three_steps / "run", old)  # the 3-step run of this spec, as if trained in old:
    for name in ("spec.yaml", "run.json"):  # its recorded output.dir names old
        text = (old / name).read_text()
        (old / name).write_text(text.replace(str(three_steps / "run"), str(old)))
    assert f"dir: {old}" in (old / "spec.yaml").read_text()
    (shutil.move if how == "moved" else shutil.copytree)(old, new)
    result = run_cli(capsys, [str(spec_file), "--set", f"output.dir={new}", "--set", "trainer.steps=6"])
    assert result.code == 0, result.err
    assert f"resumed {new} at step 3" in result.out
    assert [r["step"] for r in metrics(new)] == [1, 2, 3, 4, 5, 6]
    assert f"dir: {new}" in (new / "spec.yaml").read_text()


def test_missing_digest_is_corrupt_and_no_usable_checkpoint_needs_restart(
    tmp_path: Path, capsys, trained_elsewhere
) -> None:
    """A checkpoint without its digest is unreadable (never restored unverified); when no checkpoint is usable the
    run is refused on this and every later start until ``--restart``, which keeps the old metrics aside."""
    run_dir, spec_file = _copy_of(trained_elsewhere, tmp_path)
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


def test_quiet_hooks_drop_only_the_closed_event_loop(monkeypatch, capsys) -> None:
    """After ``install_quiet_filter`` an unraisable "Event loop is closed" prints nothing; any other unraisable
    exception or uncaught error still reaches the hook that was there before."""
    seen: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(f"unraisable {u.exc_value}"))
    monkeypatch.setattr(sys, "excepthook", lambda kind, exc, tb: seen.append(f"uncaught {exc}"))
    write_errors.install_quiet_filter()
    for message in ("Event loop is closed", "something else"):
        sys.unraisablehook(types.SimpleNamespace(exc_value=RuntimeError(message), object=None))
        sys.excepthook(RuntimeError, RuntimeError(message), None)
    assert seen == ["unraisable something else", "uncaught something else"]
    assert capsys.readouterr().err == ""
