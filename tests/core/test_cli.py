"""The ``titans-plugins`` CLI and the shared user-error handling (``run_user_command``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from titans_core import PluginLoadWarning, SpecError, SpecProblem
from titans_core.cli import app, run_user_command
from typer.testing import CliRunner

HINT = "(If it comes from a plugin, is the plugin installed? Check `titans-plugins list`.)"


def run_cli(*args: str, plugins: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter with ``TITANS_PLUGINS=plugins`` (console script if ``script``)."""
    env = {**os.environ, "TITANS_PLUGINS": plugins, "JAX_PLATFORMS": "cpu"}
    command = (
        [str(Path(sys.executable).with_name("titans-plugins"))] if script else [sys.executable, "-m", "titans_core.cli"]
    )
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=120, check=False)


def table_rows(stdout: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in stdout.splitlines() if line.startswith("│")]


# ------------------------------------------------------------------------ real entry points, fresh processes
def test_list_shows_the_installed_example_plugin():
    result = run_cli("list", plugins="swiglu_memory")
    assert (result.returncode, result.stderr) == (0, "")
    assert table_rows(result.stdout) == [
        [
            "memory_model",
            "swiglu",
            "titans-swiglu-memory",
            "0.1.0",
            "titans_swiglu_memory.memory.SwiGLUMemoryConfig",
        ]
    ]


def test_list_json_through_the_console_script():
    result = run_cli("list", "--json", plugins="titans-swiglu-memory", script=True)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["load_errors"] == [] and payload["warnings"] == []
    assert payload["components"] == [
        {
            "kind": "memory_model",
            "name": "swiglu",
            "dist": "titans-swiglu-memory",
            "version": "0.1.0",
            "config": "titans_swiglu_memory.memory.SwiGLUMemoryConfig",
            "factory": "titans_swiglu_memory.memory.SwiGLUMemory",
            "description": "",
        }
    ]


def test_user_errors_print_one_clean_block_and_exit_2():
    result = run_cli("show", "memory_model", "swiglu", plugins="")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"error: unknown memory_model 'swiglu'; no memory_model is registered. {HINT}\n"
        "       note: TITANS_PLUGINS is set but empty, so no plugin was loaded\n"
    )


# -------------------------------------------------------------------------- fake entry points, in-process
@pytest.fixture
def entry_points(monkeypatch):
    """Replace the installed ``titans`` entry points by the given fakes (and clear TITANS_PLUGINS)."""
    import importlib.metadata

    monkeypatch.delenv("TITANS_PLUGINS", raising=False)

    def install(*eps):
        monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: list(eps) if group == "titans" else [])

    return install


def invoke(*args: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        return CliRunner().invoke(app, list(args))


def test_list_reports_failed_plugins_and_exits_1(entry_points, fake):
    good = fake.EntryPoint(
        "good", fake.registering(("memory_model", "mlp", fake.MLP, fake.build)), fake.Dist("good-pkg", "1.0")
    )
    entry_points(
        good,
        fake.EntryPoint("foo", ModuleNotFoundError("No module named 'bar'"), fake.Dist("foo-pkg", "0.3")),
    )
    result = invoke("list")
    assert result.exit_code == 1
    config = f"{fake.MLP.__module__}.FakeMLPConfig"
    assert table_rows(result.stdout) == [["memory_model", "mlp", "good-pkg", "1.0", config]]
    assert (
        result.stderr
        == "error: plugin 'foo' (dist foo-pkg) failed to load: ModuleNotFoundError: No module named 'bar'\n"
    )
    payload = json.loads(invoke("list", "--json").stdout)
    assert payload["load_errors"] == [
        {"entry_point": "foo", "dist": "foo-pkg", "cause": "ModuleNotFoundError: No module named 'bar'"}
    ]


def test_list_with_conflicting_plugins_is_a_user_error(entry_points, fake):
    entry_points(
        fake.EntryPoint("a", fake.registering(("memory_model", "mlp", fake.MLP, fake.build)), fake.Dist("pkg-a", "1")),
        fake.EntryPoint("b", fake.registering(("memory_model", "mlp", fake.MLP, fake.build)), fake.Dist("pkg-b", "2")),
    )
    result = invoke("list")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: memory_model 'mlp' is registered twice: by pkg-a 1 and by pkg-b 2 "
        "(uninstall one, or choose the plugins to load with TITANS_PLUGINS)\n"
    )


def test_list_without_components(monkeypatch):
    monkeypatch.setenv("TITANS_PLUGINS", "")
    result = invoke("list")
    assert (result.exit_code, result.stdout, result.stderr) == (
        0,
        "no components registered (TITANS_PLUGINS='')\n",
        "",
    )


def test_show_prints_options_with_defaults_constraints_and_descriptions(registry, fake):
    result = invoke("show", "memory_model", "mlp")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "memory_model 'mlp' from fake-memory 0.1.0",
        f"config class: {fake.MLP.__module__}.FakeMLPConfig",
        f"factory: {fake.MLP.__module__}.build_fake",
        "Options of the fake ``mlp`` memory model.",
    ]
    assert table_rows(result.stdout) == [
        ["depth", "int", "2", "≥ 1", "number of layers"],
        ["expansion", "float", "4.0", "> 0", "hidden width factor"],
        ["activation", "Literal['gelu', 'silu']", "'gelu'", "", "hidden activation"],
    ]
    nested = table_rows(invoke("show", "variant", "mac").stdout)
    assert nested[0] == ["memory", "memory_model component", '{"name": "mlp", "depth": 3}', "", ""]


def test_show_json_and_schema(registry):
    schema = json.loads(invoke("show", "memory_model", "mlp", "--json").stdout)
    assert schema["properties"]["depth"]["minimum"] == 1
    kind_schema = json.loads(invoke("schema", "memory_model").stdout)
    assert sorted(kind_schema["discriminator"]["mapping"]) == ["linear", "mlp"]
    result = invoke("schema", "memroy_model")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: unknown component kind 'memroy_model'; known kinds: ")


# ------------------------------------------------------------------------------------ run_user_command
def test_run_user_command_prints_error_block_and_exits_2(capsys):
    @run_user_command
    def command(steps: int) -> None:
        raise SpecError([SpecProblem("a", "required", "s.yaml", 3), SpecProblem("b", "bad", "s.yaml", 4)], ["hint"])

    with pytest.raises(SystemExit) as info:
        command(1)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == "error: s.yaml:3: a: required\n       s.yaml:4: b: bad\n       note: hint\n"
    assert command.__name__ == "command"  # typer reads the wrapped signature


def test_run_user_command_formats_plugin_warnings_and_lets_bugs_through(capsys):
    @run_user_command
    def warns() -> str:
        warnings.warn("plugin 'x' (dist y) failed to load: E: z", PluginLoadWarning, stacklevel=1)
        return "ok"

    assert warns() == "ok"
    assert capsys.readouterr().err == "warning: plugin 'x' (dist y) failed to load: E: z\n"

    @run_user_command
    def buggy() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        buggy()
