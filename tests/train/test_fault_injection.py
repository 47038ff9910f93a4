"""Fault injection: training stopped at random points several times in a row ends exactly like an
uninterrupted run — the same final parameters (compared through the final checkpoint's array digests), the
same losses, and metrics.jsonl with every step once.

Each stop comes a random moment (seeded) after a random step's progress line, so it lands inside a step, a
checkpoint save (async, in orbax's threads) or a metrics write. A stop is a SIGKILL or an impatient user's double
Ctrl-C / double SIGTERM (the second signal stops at once: exit status 130, one ``interrupted:`` line, no
traceback). Every process reads the suite's persistent compilation cache, which the uninterrupted run (in this
process, first) fills, so that no process compiles the training step again.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from train.conftest import losses, metrics, run_cli, script_env, start_cli, toy_spec, write_spec

pytestmark = pytest.mark.slow

STEPS, KILLS = 8, 3


def _spec(run_dir: Path) -> dict:
    return toy_spec(
        run_dir,
        trainer={"steps": STEPS, "batch_size": 8, "eval_every": 4, "eval_batches": 2, "log_every": 1},
        checkpoint={"every": 2, "keep": 2},
    )


STOPS = ("SIGKILL", "SIGINT twice", "SIGTERM twice")


def _kill_at_random(process: subprocess.Popen, rng: random.Random, how: str = "SIGKILL", timeout: float = 1800) -> bool:
    """Stop ``process`` (``how``: one of STOPS) at a random moment after a random step's progress line; whether it
    still ran. A double signal must end it with exit status 130, unless the run had finished."""
    target = rng.randint(1, STEPS - 1)
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            return False  # finished (or failed) before the chosen moment
        if line.startswith("step ") and int(line.split()[1].split("/")[0]) >= target:
            time.sleep(rng.uniform(0.0, 0.05))
            alive = process.poll() is None
            if how == "SIGKILL":
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=60)
                return alive
            sig = signal.SIGINT if how.startswith("SIGINT") else signal.SIGTERM
            os.kill(process.pid, sig)
            time.sleep(rng.uniform(0.0, 0.05))
            if process.poll() is None:
                os.kill(process.pid, sig)
            code = process.wait(timeout=120)
            rest = process.stdout.read()
            if code == 0:
                # Both signals landed while the main thread was inside a compiled call: Python runs its handler
                # once for signals of one kind that arrive together, so this was one stop request, and in the
                # last step that is a finished run, not a stop (exit 0).
                assert f"done: step {STEPS}" in rest, f"{how}: exit status 0 before the end:\n{rest}"
                return False
            assert not alive or code == 130, f"{how}: exit status {code}"
            return alive
    process.kill()
    raise AssertionError("no progress line in time")


def _final_digest(run_dir: Path) -> dict:
    return json.loads((run_dir / "checkpoints" / str(STEPS) / "digest" / "metadata").read_text())


def test_repeated_sigkills_end_like_an_uninterrupted_run(tmp_path: Path, capsys) -> None:
    straight = tmp_path / "straight"
    assert run_cli(capsys, [str(write_spec(tmp_path / "straight.yaml", _spec(straight)))]).code == 0

    run_dir = tmp_path / "killed"
    spec_file = write_spec(tmp_path / "killed.yaml", _spec(run_dir))
    # the suite's persistent compilation cache (root conftest.py), which the uninterrupted run above has just
    # filled with the programs every process below needs
    env = script_env()
    rng = random.Random(14)
    killed = 0
    for i, how in enumerate(STOPS[:KILLS]):
        process = start_cli(tmp_path, [str(spec_file)], env, f"run{i}.log")
        try:
            killed += _kill_at_random(process, rng, how)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        log = (tmp_path / f"run{i}.log").read_text()
        assert "Traceback" not in log, log  # a double signal is one line, never a traceback
    assert killed >= 1
    final = start_cli(tmp_path, [str(spec_file)], env, "final.log")
    out, _ = final.communicate(timeout=1800)
    assert final.returncode == 0, (tmp_path / "final.log").read_text()

    assert _final_digest(run_dir) == _final_digest(straight)  # the same parameters, optimizer state, RNG
    assert losses(run_dir) == losses(straight)
    assert [r["step"] for r in metrics(run_dir)] == list(range(1, STEPS + 1))  # none missing or duplicated
    assert [(r["step"], r["loss"]) for r in metrics(run_dir, "eval")] == [
        (r["step"], r["loss"]) for r in metrics(straight, "eval")
    ]
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # no line cut short
