"""Fixtures of the titans-train tests: the toy variant, tiny specs, and running the CLI in-process or as a process.

Most tests run ``titans_train.cli.main([...])`` in this process (8 simulated CPU devices, see the root
``conftest.py``). Tests that need a real process (SIGKILL, two-process jax.distributed) run :data:`SCRIPT`, which
registers the toy variant and calls the CLI.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from train.toy import toy_registered
from xla_env import subprocess_xla_flags

TESTS_DIR = Path(__file__).resolve().parents[1]

#: A process that registers the toy variant and runs the titans-train CLI with its arguments. With
#: TOY_PAUSE_AFTER_SAVE=N it prints "SAVED N" once checkpoint N is on disk and then sleeps (to be killed).
SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from train.toy import register_toy
    register_toy()
    pause = os.environ.get("TOY_PAUSE_AFTER_SAVE")
    if pause:
        from titans_train.checkpoint import Checkpoints
        original = Checkpoints.save
        def save(self, step, state, data_state):
            original(self, step, state, data_state)
            if step == int(pause):
                self.wait()
                print("SAVED", step, flush=True)
                time.sleep(600)
        Checkpoints.save = save
    from titans_train.cli import main
    main(sys.argv[1:])
    """
)


@pytest.fixture(autouse=True)
def _toy_registered() -> Iterator[None]:
    with toy_registered():  # a copy of the registry plus the toy; the original is restored after the test
        yield


#: ``model.memory`` of the train tests' small memory variants: a linear (depth-1) memory, a Titans memory state
#: (weights and momentum, updated per chunk of 4) whose training step compiles in a fraction of the MLP memory's time
LINEAR_MEMORY: dict[str, Any] = {
    "num_heads": 2,
    "rule": {"name": "momentum_scan", "chunk_size": 4},
    "model": {"name": "mlp", "depth": 1},
}


def toy_spec(run_dir: Path, corpus: Path | None = None, **sections: Any) -> dict[str, Any]:
    """A tiny training spec (toy model, a few steps); ``sections`` replace/extend top-level sections."""
    source = {"name": "text", "paths": [str(corpus)]} if corpus else {"name": "python_stdlib", "max_bytes": 60_000}
    spec: dict[str, Any] = {
        "model": {"name": "toy"},
        "data": {"source": source, "seq_len": 16, "val_fraction": 0.1},
        "optimizer": {"lr": 1e-2},
        "schedule": {"warmup_steps": 2},
        "trainer": {"steps": 6, "batch_size": 8, "eval_every": 3, "eval_batches": 2, "log_every": 1},
        "checkpoint": {"every": 3, "keep": 3},
        "output": {"dir": str(run_dir)},
        "sample": {"max_new_tokens": 0},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def write_spec(path: Path, spec: dict[str, Any] | str) -> Path:
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], args: Sequence[str]) -> CliResult:
    """Run ``titans-train ARGS`` in this process; its exit status and captured output."""
    from titans_train.cli import main

    capsys.readouterr()
    code = _exit_status(main, args)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def _exit_status(main: Any, args: Sequence[str]) -> int:
    """``main(args)``'s exit status, as the process would have it (SystemExit(None) is 0, a message is 1)."""
    try:
        main(list(args))
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def run_cli_in_fixture(args: Sequence[str]) -> CliResult:
    """``titans-train ARGS`` in this process from a module-scoped fixture (which runs before the autouse toy
    fixture and has no capsys): its exit status and output."""
    from titans_train.cli import main

    out, err = io.StringIO(), io.StringIO()
    with toy_registered(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _exit_status(main, args)
    return CliResult(code, out.getvalue(), err.getvalue())


def metrics(run_dir: Path, kind: str = "train") -> list[dict[str, Any]]:
    """The ``kind`` records of RUN_DIR/metrics.jsonl."""
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in metrics(run_dir)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script_env(devices: int = 8, **extra: str) -> dict[str, str]:
    """Environment of a CLI subprocess: ``devices`` simulated CPU devices, the tests directory importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TITANS_")}
    env["XLA_FLAGS"] = subprocess_xla_flags(devices)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def start_cli(tmp_path: Path, args: Sequence[str], env: dict[str, str], log_name: str) -> subprocess.Popen:
    """Start ``titans-train ARGS`` as a process (stdout piped, stderr to a log file)."""
    script = tmp_path / "toy_cli.py"
    script.write_text(SCRIPT, encoding="utf-8")
    stderr = open(tmp_path / log_name, "w", encoding="utf-8")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        text=True,
        cwd=tmp_path,
    )


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A deterministic 24 kB UTF-8 text file."""
    words = ["def", "class", "return", "import", "self", "value", "for", "in", "if", "else", "ünïcode", "→"]
    lines = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(8)) for i in range(600)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def chdir_tmp(tmp_path: Path) -> Iterator[Path]:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)
