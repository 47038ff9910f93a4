"""titans-memory installs and works alone (with titans-core only) inside a plain Flax NNX model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_memory_installs_and_runs_without_attention_or_train(tmp_path):
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is needed for this test (the README's set-up installs it)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
    venv = tmp_path / "venv"
    run = lambda *cmd: subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)  # noqa: E731
    made = run(uv, "venv", "-q", "--python", sys.executable, str(venv))
    assert made.returncode == 0, made.stderr
    py = str(venv / "bin" / "python")
    inst = run(
        uv,
        "pip",
        "install",
        "-q",
        "--python",
        py,
        str(ROOT / "packages/titans-core"),
        str(ROOT / "packages/titans-memory"),
        "optax",
    )
    assert inst.returncode == 0, inst.stderr
    find = "import importlib.util as u; print(u.find_spec('titans_attention'), u.find_spec('titans_train'))"
    probe = run(py, "-c", find)
    assert probe.stdout.strip() == "None None", probe.stdout + probe.stderr
    ex = run(py, str(ROOT / "examples/memory_in_flax.py"))
    assert ex.returncode == 0, ex.stdout + ex.stderr
    assert "loss" in ex.stdout
