"""A plugin component that breaks its kind's contract stops ``titans-train`` before it writes anything: one
``error:`` line naming the component, its plugin and what is missing (exit status 2, no traceback)."""

from __future__ import annotations

from pathlib import Path

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
