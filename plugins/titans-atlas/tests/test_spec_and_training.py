"""The README's spec snippet validates and builds; a tiny ``titans-train`` run with the Atlas rule and φ."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import jax.numpy as jnp
import pytest
import yaml
from flax import nnx
from titans_core import Registry, reset_registry
from titans_memory import NeuralMemory, NeuralMemoryConfig

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_memory_config() -> NeuralMemoryConfig:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    spec = yaml.safe_load(next(b for b in blocks if "atlas" in b))
    return NeuralMemoryConfig.model_validate({**spec["model"]["memory"], "num_heads": 2})


def test_the_readme_spec_snippet_validates():
    reset_registry(Registry.from_entry_points())
    try:
        config = _readme_memory_config()
        assert (config.rule.name, config.model.name, config.model.inner.name) == ("atlas", "poly", "mlp")
        assert (config.rule.context, config.rule.orthogonalize, config.model.degree) == (4, True, 3)
    finally:
        reset_registry()


@pytest.mark.slow
def test_the_readme_spec_snippet_runs():
    reset_registry(Registry.from_entry_points())
    try:
        config = _readme_memory_config()
        memory = NeuralMemory(config, d_model=8, rngs=nnx.Rngs(0))
        y, state = nnx.jit(lambda m, x: m(x))(memory, jnp.ones((1, 5, 8)))  # one compiled program (eager: op by op)
        assert y.shape == (1, 5, 8) and bool(jnp.all(jnp.isfinite(y)))
        assert state.rule.extra["k"].shape[-2] == config.rule.context - 1
    finally:
        reset_registry()


SPEC = """
model:
  name: lmm
  vocab_size: 16
  d_model: 16
  num_layers: 1
  num_heads: 2
  num_persistent: 0
  memory:
    num_heads: 2
    model: {name: poly, degree: 2, inner: {name: mlp, depth: 1}}
    rule: {name: atlas, context: 3, chunk_size: 4}
data:
  source: {name: mqar, num_kv_pairs: 2, vocab_size: 16, num_train: 64, num_val: 16}
  seq_len: 16
optimizer: {lr: 0.01}
schedule: {warmup_steps: 1}
trainer: {steps: 3, batch_size: 8, eval_every: 3, eval_batches: 1, log_every: 1}
checkpoint: {every: 3}
output: {dir: RUN_DIR}
sample: {max_new_tokens: 0}
"""


@pytest.mark.slow
def test_titans_train_runs_the_atlas_rule_with_the_polynomial_memory(tmp_path, capsys):
    """``titans-train train SPEC``, called in this process (its entry function: a subprocess would add seconds of
    interpreter start and imports, and the test is not about the process boundary), with the installed plugins'
    registry, as the command line loads it."""
    from titans_train.cli import main

    run_dir = tmp_path / "run"
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(SPEC).replace("RUN_DIR", str(run_dir)), encoding="utf-8")
    reset_registry(Registry.from_entry_points())
    try:
        main(["train", str(spec)])
    except SystemExit as exc:
        assert exc.code in (0, None), capsys.readouterr().err[-3000:]
    finally:
        reset_registry()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 3 and all(0 < loss < 10 for loss in losses)
    assert any(r["kind"] == "eval" and 0 <= r["accuracy"] <= 1 for r in records)
