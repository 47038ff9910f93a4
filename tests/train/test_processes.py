"""Tests that need real processes: resume after a SIGKILL, and a two-process ``jax.distributed`` run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from train.conftest import free_port, losses, run_cli, script_env, start_cli, toy_spec, write_spec

pytestmark = pytest.mark.slow


def _wait_for_line(process: subprocess.Popen, prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith(prefix):
            return line
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"no line starting with {prefix!r} (exit status {process.poll()})")


def test_resume_after_sigkill_gives_identical_losses(tmp_path: Path, capsys) -> None:
    steps = 6
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert run_cli(capsys, [str(write_spec(tmp_path / "straight.yaml", toy_spec(straight)))]).code == 0

    spec_file = write_spec(tmp_path / "killed.yaml", toy_spec(killed))
    process = start_cli(tmp_path, [str(spec_file)], script_env(TOY_PAUSE_AFTER_SAVE=str(steps // 2)), "killed.log")
    try:
        _wait_for_line(process, f"SAVED {steps // 2}", timeout=240)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
    assert len(losses(killed)) == steps // 2

    resumed = run_cli(capsys, [str(spec_file)])
    assert resumed.code == 0, resumed.err
    assert f"resumed {killed} at step {steps // 2}" in resumed.out
    assert losses(killed) == losses(straight)


def test_two_processes_give_the_single_process_losses(tmp_path: Path, capsys) -> None:
    mesh = {"data": 2, "fsdp": 2, "tensor": 2}
    single = tmp_path / "single"
    spec = toy_spec(single, mesh=mesh, trainer={"steps": 4}, checkpoint={"every": 2})
    assert run_cli(capsys, [str(write_spec(tmp_path / "single.yaml", spec))]).code == 0

    multi = tmp_path / "multi"
    spec_file = write_spec(
        tmp_path / "multi.yaml", toy_spec(multi, mesh=mesh, trainer={"steps": 4}, checkpoint={"every": 2})
    )
    port = free_port()
    processes = [
        start_cli(
            tmp_path,
            [str(spec_file)],
            script_env(
                devices=4,
                TITANS_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                TITANS_NUM_PROCESSES="2",
                TITANS_PROCESS_ID=str(pid),
            ),
            f"process{pid}.log",
        )
        for pid in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=300)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    logs = [(tmp_path / f"process{pid}.log").read_text() for pid in range(2)]
    assert [p.returncode for p in processes] == [0, 0], logs
    assert "step 4/4" in outputs[0] and "done:" in outputs[0]
    assert "loss" not in outputs[1] and "done:" not in outputs[1]  # only process 0 reports (gloo logs aside)
    np.testing.assert_allclose(losses(multi), losses(single), rtol=0, atol=1e-5)
    assert sorted(p.name for p in (multi / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
