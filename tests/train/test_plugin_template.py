"""``titans-plugins new`` writes a plugin package that works as generated; a bug planted in its chunked rule or in a
factory stops ``titans-train`` with one ``error:`` line naming the plugin, before anything is written; and the
package's own tests pass (slow: they compile every path of every component)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from titans_core import PLUGIN_API, get_registry
from titans_core.cli import app
from train.conftest import run_cli, toy_spec, write_spec
from typer.testing import CliRunner
from xla_env import subprocess_xla_flags

NAME = "tpl-memory"
MODULE = "tpl_memory"


def _generate(tmp_path: Path) -> Path:
    result = CliRunner().invoke(app, ["new", NAME, "--dir", str(tmp_path / NAME)])
    assert result.exit_code == 0, result.output
    assert f"wrote 6 files to {tmp_path / NAME}" in result.stdout
    return tmp_path / NAME


def _register(package: Path, monkeypatch) -> None:
    """Import the generated module (fresh) and register its components into the process-wide registry."""
    monkeypatch.syspath_prepend(str(package / "src"))
    for name in [m for m in sys.modules if m == MODULE or m.startswith(MODULE + ".")]:
        monkeypatch.delitem(sys.modules, name)
    module = importlib.import_module(MODULE)
    assert module.TITANS_PLUGIN_API == PLUGIN_API
    registry = get_registry()
    module.register_components(lambda *a, **kw: registry.register(*a, dist=NAME, version="0.1.0", **kw))


def _train(tmp_path: Path, capsys, memory: dict) -> tuple[list[str], Path]:
    run_dir = tmp_path / "run"
    model = {"name": f"{MODULE}_alternating", "d_model": 16, "num_layers": 2, "num_heads": 2, "memory": memory}
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", toy_spec(run_dir, model=model)))])
    assert result.code == 2 and "Traceback" not in result.err, result
    return [line for line in result.err.splitlines() if line.startswith("error:")], run_dir


def test_the_generated_plugin_refuses_a_second_write(tmp_path: Path) -> None:
    _generate(tmp_path)
    result = CliRunner().invoke(app, ["new", NAME, "--dir", str(tmp_path / NAME)])
    assert (
        result.exit_code == 2
        and result.stderr == f"error: {tmp_path / NAME} already exists: choose another name or --dir\n"
    )
    assert CliRunner().invoke(app, ["new", "Bad Name"]).exit_code == 2


def test_planted_bugs_are_one_line_before_anything_is_written(tmp_path: Path, capsys, monkeypatch) -> None:
    package = _generate(tmp_path)
    components = package / "src" / MODULE / "components.py"
    text = components.read_text(encoding="utf-8")
    # a chunked-path bug: the chunk body unpacks one input too few (reached only when a call spans a chunk)
    buggy = text.replace(
        "q, k, v, theta, alpha, per_token, real_b, last_b, closes_c = inp",
        "q, k, v, theta, alpha, per_token, real_b, last_b = inp",
    )
    # a factory bug: a config field that does not exist
    buggy = buggy.replace("self.weight = config.weight", "self.weight = config.weights")
    assert buggy.count("\n") == text.count("\n") and buggy != text
    components.write_text(buggy, encoding="utf-8")
    _register(package, monkeypatch)
    memory = {"num_heads": 2, "rule": {"name": f"{MODULE}_delta", "chunk_size": 4}}
    (line,), run_dir = _train(tmp_path, capsys, memory)
    assert line.startswith(f"error: update_rule '{MODULE}_delta' (plugin {NAME} 0.1.0) does not satisfy UpdateRule: ")
    assert "raised ValueError: too many values to unpack" in line
    assert not run_dir.exists()
    (line,), run_dir = _train(tmp_path, capsys, {"num_heads": 2, "objective": {"name": f"{MODULE}_l2"}})
    assert line == (
        f"error: objective '{MODULE}_l2' (plugin {NAME} 0.1.0) failed to build: AttributeError: 'ScaledL2Config' "
        "object has no attribute 'weights' (set TITANS_TRACEBACK=1 for the traceback)"
    )
    assert not run_dir.exists()


@pytest.mark.slow
def test_the_generated_package_tests_pass(tmp_path: Path) -> None:
    package = _generate(tmp_path)
    env = {
        **os.environ,
        "PYTHONPATH": str(package / "src"),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": subprocess_xla_flags(1),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", str(package / "tests")],
        cwd=package,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "4 passed" in result.stdout
