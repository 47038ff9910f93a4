"""A plugin component that breaks its kind's contract stops ``titans-train`` before it writes anything: one
``error:`` line naming the component, its plugin and what is missing (exit status 2, no traceback)."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
from titans_core import ComponentConfig, get_registry, init_rule_state
from train.conftest import run_cli, toy_spec, write_spec


class NoOptions(ComponentConfig):
    """No options."""


class TupleStateRule:
    """Written to the protocol as it used to read: a tuple for the state, no aligned=/objective= keywords."""

    chunk_size = 4

    def __init__(self, config=None):
        pass

    def init_state(self, params0):
        return tuple(init_rule_state(params0))

    def __call__(self, model, state, q_TxD, k_TxD, v_TxD, gates):
        return q_TxD, state


def test_a_rule_that_breaks_its_contract_stops_training_before_any_file(tmp_path: Path, capsys) -> None:
    get_registry().register("update_rule", "tuple_state", NoOptions, TupleStateRule, dist="bad-rules", version="0.2")
    run_dir = tmp_path / "run"
    memory = {"num_heads": 2, "rule": {"name": "tuple_state"}}
    spec = toy_spec(run_dir, model={"name": "lmm", "d_model": 16, "num_layers": 1, "num_heads": 2, "memory": memory})
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", spec))])
    assert result.code == 2 and "Traceback" not in result.err, result
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: update_rule 'tuple_state' (plugin bad-rules 0.2) does not satisfy UpdateRule: "
        "__call__ must accept (model, state, q_TxD, k_TxD, v_TxD, gates, *, aligned=False, objective=None) "
        "(got an unexpected keyword argument 'aligned')"
    ], result.err
    assert not run_dir.exists()


class ChunkBugRule(TupleStateRule):
    """A chunked rule whose whole-chunk path (T ≥ chunk) unpacks three pieces into two: T = 3 never reaches it."""

    def init_state(self, params0):
        return init_rule_state(params0)

    def __call__(self, model, state, q_TxD, k_TxD, v_TxD, gates, *, aligned=False, objective=None):
        if q_TxD.shape[0] >= self.chunk_size:
            whole, tail = jnp.split(q_TxD, [self.chunk_size, 2 * self.chunk_size])
        return q_TxD, state


class MissingFieldMemory:
    def __init__(self, config):
        self.hidden = config.hidden  # not a field of its config


def _train(tmp_path: Path, capsys, memory: dict) -> tuple[list[str], Path, object]:
    run_dir = tmp_path / "run"
    spec = toy_spec(run_dir, model={"name": "lmm", "d_model": 16, "num_layers": 1, "num_heads": 2, "memory": memory})
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", spec))])
    assert result.code == 2 and "Traceback" not in result.err, result
    return [line for line in result.err.splitlines() if line.startswith("error:")], run_dir, result


def test_a_chunked_path_bug_and_a_factory_bug_stop_training_before_any_file(tmp_path: Path, capsys) -> None:
    registry = get_registry()
    registry.register("update_rule", "chunk_bug", NoOptions, ChunkBugRule, dist="bad-rules", version="0.3")
    registry.register("memory_model", "missing", NoOptions, MissingFieldMemory, dist="bad-models", version="0.4")
    (line,), run_dir, result = _train(tmp_path, capsys, {"num_heads": 2, "rule": {"name": "chunk_bug"}})
    assert line.startswith("error: update_rule 'chunk_bug' (plugin bad-rules 0.3) does not satisfy UpdateRule: ")
    assert "on a fresh sequence of 11 tokens (aligned=True) raised ValueError: too many values to unpack" in line
    assert not run_dir.exists()
    (line,), run_dir, result = _train(tmp_path, capsys, {"num_heads": 2, "model": {"name": "missing"}})
    assert line == (
        "error: memory_model 'missing' (plugin bad-models 0.4) failed to build: AttributeError: 'NoOptions' object "
        "has no attribute 'hidden' (set TITANS_TRACEBACK=1 for the traceback)"
    )
    assert not run_dir.exists()
