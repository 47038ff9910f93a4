"""titans-memory installs from built wheels and works alone (with titans-core only) inside a plain Flax NNX model:
a fresh virtual environment gets the two wheels (no titans-attention, no titans-train), trains a hand-written model
with the memory (``examples/memory_in_flax.py``), streams in bf16 under jit with a per-row reset and a store mask,
saves the model and the memory state, and a new process reloads them and continues bit for bit
(``examples/memory_stream_state.py``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


SEPARATOR = "--- memory_stream_state.py save ---\n"
#: ``python examples/memory_in_flax.py`` then ``python examples/memory_stream_state.py save FOLDER``, run as
#: ``__main__`` one after the other in one interpreter (argv: EXAMPLES_DIR FOLDER)
BOTH_EXAMPLES = f"""
import runpy, sys
examples, folder = sys.argv[1:]
sys.argv = [examples + "/memory_in_flax.py"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:  # the script's exit status: 0 when its loss went down
    if exc.code not in (0, None):
        raise
print({SEPARATOR!r}, end="", flush=True)
sys.argv = [examples + "/memory_stream_state.py", "save", folder]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_memory_wheels_install_and_run_without_attention_or_train(tmp_path):
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is needed for this test (the README's set-up installs it)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
    run = lambda *cmd: subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)  # noqa: E731
    dist = tmp_path / "dist"
    for package in ("titans-core", "titans-memory"):  # the README's install lines
        built = run(uv, "build", "-q", "--wheel", "-o", str(dist), str(ROOT / "packages" / package))
        assert built.returncode == 0, built.stderr
    wheels = sorted(str(p) for p in dist.glob("*.whl"))
    assert [Path(w).name.split("-")[0] for w in wheels] == ["titans_core", "titans_memory"], wheels
    venv = tmp_path / "venv"
    made = run(uv, "venv", "-q", "--python", sys.executable, str(venv))
    assert made.returncode == 0, made.stderr
    py = str(venv / "bin" / "python")
    inst = run(uv, "pip", "install", "-q", "--python", py, *wheels, "optax")
    assert inst.returncode == 0, inst.stderr
    find = "import importlib.util as u; print(u.find_spec('titans_attention'), u.find_spec('titans_train'))"
    probe = run(py, "-c", find)
    assert probe.stdout.strip() == "None None", probe.stdout + probe.stderr
    # both examples as scripts (``__main__``) in one process of the new environment, which pays its imports once;
    # the process boundary that matters, save → resume, stays below
    ex = run(py, "-c", BOTH_EXAMPLES, str(ROOT / "examples"), str(tmp_path / "stream"))
    assert ex.returncode == 0, ex.stdout + ex.stderr
    flax_out, saved_out = ex.stdout.split(SEPARATOR)
    assert "loss" in flax_out
    assert "state leaves ['bfloat16', 'float32', 'int32']" in saved_out
    resumed = run(py, str(ROOT / "examples/memory_stream_state.py"), "resume", str(tmp_path / "stream"))  # new process
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "bit for bit" in resumed.stdout
