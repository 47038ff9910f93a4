"""The plugin as a user meets it: registration, public imports only, NeuralMemory with each component, the README's
spec snippet, and training through titans-train."""

from __future__ import annotations

import ast
import importlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx
from titans_core import Registry, check_contract, make_config
from titans_memory import NeuralMemory, NeuralMemoryConfig
from titans_miras import MemoraRule, MonetaRule, YaadObjective

PLUGIN = Path(__file__).resolve().parents[1]
SRC = PLUGIN / "src" / "titans_miras"
COMPONENTS = {("objective", "yaad"), ("update_rule", "moneta"), ("update_rule", "memora")}
#: memory sections of the README (moneta's is also what test_trains_through_titans_train trains)
MEMORIES = {
    "yaad": {"objective": {"name": "yaad", "init_delta": 1.0}},
    "moneta": {"rule": {"name": "moneta", "chunk_size": 16}, "objective": {"name": "lp", "p": 3}},
    "memora": {"rule": {"name": "memora", "chunk_size": 16}},
}


def test_the_installed_entry_point_registers_the_components_and_they_pass_their_contracts():
    registry = Registry.from_entry_points()
    for kind, name in COMPONENTS:
        component = registry.build(make_config(kind, name))  # builds run check_contract
        assert registry.get(kind, name).dist == "titans-miras"
        check_contract(kind, component, who=name)


def test_only_public_titans_api_is_imported():
    """Every ``titans_*`` import of the plugin's source is a name in that package's ``__all__`` or a public module
    (no ``_private`` module or name)."""
    checked = 0
    for path in sorted(SRC.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("titans_"):
                if node.module.split(".")[0] == "titans_miras":
                    continue
                assert not any(part.startswith("_") for part in node.module.split(".")), (path.name, node.module)
                module = importlib.import_module(node.module)
                public = getattr(module, "__all__", None)
                for alias in node.names:
                    assert not alias.name.startswith("_"), (path.name, alias.name)
                    if public is not None:
                        assert alias.name in public, f"{path.name}: {node.module}.{alias.name} is not in __all__"
                    checked += 1
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("titans_") and not alias.name.startswith("titans_miras"):
                        assert not any(p.startswith("_") for p in alias.name.split(".")), (path.name, alias.name)
    assert checked >= 5


def _memory(memory_section: dict) -> NeuralMemory:
    config = NeuralMemoryConfig.model_validate({"num_heads": 2, "model": {"name": "mlp", "depth": 1}, **memory_section})
    return NeuralMemory(config, d_model=16, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", [pytest.param("yaad", marks=pytest.mark.slow), "moneta", "memora"])
def test_neural_memory_runs_each_memory_causally_and_a_split_sequence_equals_the_whole(name):
    memory = _memory(MEMORIES[name])
    x = jax.random.normal(jax.random.key(1), (2, 21, 16))

    @nnx.jit
    def calls(m, x):  # one compiled program for the four calls (eager: op by op, slow)
        y1, state = m(x[:, :9])  # mid-chunk (b = 16 for moneta/memora, 16 for momentum_scan)
        return m(x)[0], y1, m(x[:, 9:], state)[0], m(x.at[:, 12:].add(1.0))[0]

    y, y1, y2, y_future = calls(memory, x)
    assert y.shape == x.shape and bool(jnp.all(jnp.isfinite(y)))
    np.testing.assert_allclose(np.concatenate([y1, y2], axis=1), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_future[:, :12], y[:, :12], rtol=1e-6, atol=1e-6)


def test_yaad_delta_is_a_learned_per_token_gate():
    memory = _memory(MEMORIES["yaad"])
    assert set(memory.gate_objective) == {"delta"}
    x = jax.random.normal(jax.random.key(2), (1, 5, 16))
    delta = memory._gates(x).objective_T["delta"]
    assert delta.shape == (1, 2, 5)
    np.testing.assert_allclose(delta, 1.0, rtol=0.3)  # a fresh model: δ ≈ init_delta, but not constant
    assert float(jnp.std(delta)) > 0

    def loss(module):  # the write reaches the outputs of later chunks only: score the state after x too
        y, state = module(x)
        return jnp.sum(y**2) + sum(jnp.sum(jnp.sin(w)) for w in jax.tree.leaves(state.rule.memory))

    grads = nnx.jit(nnx.grad(loss))(memory)  # compiled once (eager: op by op, slow)
    assert float(jnp.max(jnp.abs(grads.gate_objective["delta"].kernel[...]))) > 0
    assert isinstance(memory.objective, YaadObjective)
    for section, cls in ((MEMORIES["moneta"], MonetaRule), (MEMORIES["memora"], MemoraRule)):
        plain = _memory(section)
        assert isinstance(plain.update_rule, cls) and plain.gate_objective is None


def _readme_spec_blocks() -> list[dict]:
    text = (PLUGIN / "README.md").read_text(encoding="utf-8")
    blocks = text.split("```yaml\n")[1:]
    return [yaml.safe_load(block.split("```")[0]) for block in blocks]


def test_the_readme_spec_snippets_validate_as_training_specs():
    """Each ``yaml`` block of the README, put into the recall experiment's spec, is a valid training spec."""
    from titans_train.spec import TrainSpec

    base = yaml.safe_load((PLUGIN.parents[1] / "specs" / "experiments" / "mqar" / "lmm.yaml").read_text())
    blocks = _readme_spec_blocks()
    assert len(blocks) >= 3
    names = set()
    for block in blocks:
        model = {**base["model"], **block["model"]}
        spec = TrainSpec.model_validate({**base, "model": model})
        names.add(spec.model.memory.rule.name + "/" + spec.model.memory.objective.name)
    assert names == {"momentum_scan/yaad", "moneta/lp", "memora/l2"}


def _tiny_spec(tmp_path: Path, memory: dict, steps: int) -> dict:
    """A tiny LMM on MQAR; batch 8 divides the 8 devices that the root conftest.py simulates."""
    return {
        "model": {
            "name": "lmm",
            "vocab_size": 32,
            "d_model": 16,
            "num_layers": 1,
            "num_heads": 2,
            "window": 8,
            "memory": {"num_heads": 2, "max_lr": 0.5, "init_lr": 0.05, "model": {"name": "mlp", "depth": 1}, **memory},
        },
        "data": {
            "source": {"name": "mqar", "vocab_size": 32, "num_kv_pairs": 2, "num_train": 64, "num_val": 8},
            "seq_len": 16,
        },
        "optimizer": {"lr": 3e-3},
        "schedule": {"warmup_steps": 1},
        "trainer": {"steps": steps, "batch_size": 8, "eval_every": steps, "eval_batches": 1, "log_every": 1},
        "checkpoint": {"every": steps, "keep": 1},
        "output": {"dir": str(tmp_path / "run")},
        "sample": {"max_new_tokens": 0},
    }


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


# moneta trains in process here; memora and the yaad objective (with its learned δ gate) train together through the
# CLI in test_end_to_end_through_the_cli, with the same checks: each compiled training step costs ~15 s, so a
# separate in-process run of each would prove the same twice.
def test_trains_through_titans_train(tmp_path):
    from rich.console import Console
    from titans_train.spec_check import load_train_spec
    from titans_train.trainer import train

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_tiny_spec(tmp_path, MEMORIES["moneta"], steps=2)), encoding="utf-8")
    spec, locator = load_train_spec(path)
    result = train(spec, locator, console=Console(file=io.StringIO()))
    assert result.final_step == 2 and all(np.isfinite(result.losses))
    records = _records(tmp_path / "run")
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2]
    assert any(r["kind"] == "eval" for r in records)


@pytest.mark.slow
def test_end_to_end_through_the_cli(tmp_path):
    """``titans-train spec.yaml`` in a fresh process, the plugin found through its entry point: the memora rule with
    the yaad objective (its δ a learned gate) trains, with finite losses and an evaluation."""
    path = tmp_path / "spec.yaml"
    memory = {"rule": {"name": "memora", "chunk_size": 4}, "objective": {"name": "yaad", "init_delta": 0.5}}
    path.write_text(yaml.safe_dump(_tiny_spec(tmp_path, memory, steps=3)), encoding="utf-8")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "titans_train.cli", "train", str(path)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = _records(tmp_path / "run")
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in train)
    assert any(r["kind"] == "eval" for r in records)
