"""A plugin package outside the workspace — a memory model with nested parameters, an objective, an update rule,
an attention and a variant (a recipe of existing mixers) — installs into a fresh virtual environment, is listed by
``titans-plugins list``, passes the generic conformance check (``titans_attention.testing``: exact causality, prefill
+ decode = full pass) and trains through ``titans-train``. Offline: the plugin is installed with ``uv pip install
--offline --no-deps`` (its build backend comes from uv's cache) and the new environment sees the workspace's
packages through a ``.pth`` file."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from xla_env import subprocess_xla_flags

PYPROJECT = """
[project]
name = "titans-demo-plugin"
version = "0.3.0"
requires-python = ">=3.11"
dependencies = ["titans-core", "titans-memory", "titans-attention"]

[project.entry-points.titans]
demo = "titans_demo_plugin"

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["src/titans_demo_plugin"]
"""

MODULE = '''
"""A demo plugin: a memory model with nested parameters, a log-cosh objective and momentum-free descent."""
import jax
import jax.numpy as jnp
from pydantic import Field
from titans_attention import VariantConfig
from titans_attention.attention import SlidingWindowAttention
from titans_attention.recipes import Recipe, recipe_variant
from titans_core import ComponentConfig, hookimpl, init_rule_state


class TanhConfig(ComponentConfig):
    hidden: int = Field(16, ge=1, description="hidden width")


class TanhMemory:
    channel_axis_ok = False

    def __init__(self, config):
        self.config = config

    def init(self, key, dim):
        k1, k2 = jax.random.split(key)
        h = self.config.hidden
        return {"in": {"w": jax.random.normal(k1, (dim, h)) / dim**0.5},
                "out": [0.1 * jax.random.normal(k2, (h, dim)) / h**0.5]}

    def apply(self, params, x):
        return x + jnp.tanh(x @ params["in"]["w"].astype(x.dtype)) @ params["out"][0].astype(x.dtype)


class LogCoshConfig(ComponentConfig):
    scale: float = Field(1.0, gt=0, description="scale")


class LogCosh:
    def __init__(self, config):
        self.s = config.scale

    def loss(self, pred, v):
        return jnp.sum(self.s**2 * jnp.log(jnp.cosh((pred - v) / self.s)), axis=-1)

    def cotangent(self, pred, v):
        return self.s * jnp.tanh((pred - v) / self.s)


class PlainGDConfig(ComponentConfig):
    """No options."""


class PlainGD:
    chunk_size = 1

    def __init__(self, config):
        pass

    def init_state(self, params0):
        return init_rule_state(params0)

    def __call__(self, model, state, q, k, v, gates, *, aligned=False, objective=None):
        def step(st, inp):
            q, k, v, theta, alpha = inp
            y = model.apply(st.memory, q[None])[0]
            g = jax.grad(lambda p: jnp.sum(objective.loss(model.apply(p, k[None]), v[None])))(st.memory)
            m = jax.tree.map(lambda m, g: (1 - alpha[0]) * m - theta * g, st.memory, g)
            return st._replace(start=m, memory=m), y

        state, y = jax.lax.scan(step, state, (q, k, v, gates.theta_T, gates.alpha_TxC))
        return y, state


class WindowConfig(ComponentConfig):
    window: int = Field(4, ge=1, description="tokens seen, itself included")


def demo_window(config, *, d_model, num_heads, num_persistent, rope_base, rngs):
    return SlidingWindowAttention(d_model, num_heads, config.window, num_persistent, rngs=rngs, rope_base=rope_base)


def attention_then_memory(parts):
    return [parts.attention_mixer(), parts.memory(warm=False)]


@hookimpl
def register_components(register):
    register("attention", "demo_window", WindowConfig, demo_window)
    register("variant", "demo_parallel", VariantConfig, recipe_variant(Recipe(attention_then_memory)))
    register("memory_model", "demo_tanh", TanhConfig, TanhMemory)
    register("objective", "demo_logcosh", LogCoshConfig, LogCosh)
    register("update_rule", "demo_gd", PlainGDConfig, PlainGD)
'''

SPEC = """
model:
  name: demo_parallel
  attention: {name: demo_window, window: 4}
  d_model: 16
  num_layers: 1
  num_heads: 2
  num_persistent: 0
  memory:
    num_heads: 2
    model: {name: demo_tanh, hidden: 8}
    objective: {name: demo_logcosh, scale: 0.5}
    rule: {name: demo_gd}
data: {source: {name: python_stdlib, max_bytes: 40000}, seq_len: 16, val_fraction: 0.1}
optimizer: {lr: 0.01}
schedule: {warmup_steps: 1}
trainer: {steps: 3, batch_size: 8, eval_every: null, log_every: 1}
checkpoint: {every: 3}
output: {dir: RUN_DIR}
sample: {max_new_tokens: 0}
"""

CONFORMANCE = """
from titans_attention.testing import check_registered_variant
check_registered_variant(
    "demo_parallel",
    num_layers=1,
    num_persistent=0,
    attention={"name": "demo_window", "window": 3},
    memory={"num_heads": 2, "model": {"name": "demo_tanh", "hidden": 8}, "objective": {"name": "demo_logcosh"},
            "rule": {"name": "demo_gd"}},
)
print("conformance: ok", flush=True)
"""

LISTED_END = "--- end of titans-plugins list --json ---"

#: ``titans-plugins list --json``, the conformance check, then ``titans-train ARGS`` in the same process (one
#: interpreter start instead of three; each is a fresh interpreter of the new environment, which is the point, not
#: the number of processes)
LIST_CONFORMANCE_THEN_TRAIN = (
    f"""
import sys
from titans_core.cli import main as plugins_main
argv, sys.argv = sys.argv, ["titans-plugins", "list", "--json"]
try:
    plugins_main()
except SystemExit as exc:
    if exc.code not in (0, None):
        raise
sys.argv = argv
print({LISTED_END!r}, flush=True)
"""
    + CONFORMANCE
    + """
from titans_train.cli import main
main(sys.argv[1:])
"""
)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_third_party_plugin_installs_lists_and_trains(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    plugin = tmp_path / "titans-demo-plugin"
    (plugin / "src" / "titans_demo_plugin").mkdir(parents=True)
    (plugin / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    (plugin / "src" / "titans_demo_plugin" / "__init__.py").write_text(MODULE, encoding="utf-8")
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--offline", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    # the workspace's packages (and their dependencies) become visible to the new environment
    site_dir = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    workspace_site = site.getsitepackages()[0]
    (Path(site_dir) / "workspace.pth").write_text(f"import site; site.addsitedir({workspace_site!r})\n")
    subprocess.run(
        [uv, "pip", "install", "--offline", "--no-deps", "--python", str(python), str(plugin)],
        check=True,
        capture_output=True,
        text=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TITANS_", "VIRTUAL_ENV"))}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=subprocess_xla_flags(1))
    run_dir = tmp_path / "run"
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(SPEC).replace("RUN_DIR", str(run_dir)), encoding="utf-8")
    trained = subprocess.run(
        [python, "-c", LIST_CONFORMANCE_THEN_TRAIN, "train", str(spec)], capture_output=True, text=True, env=env
    )
    listed, end, after = trained.stdout.partition(LISTED_END + "\n")
    assert end, trained.stdout[-2000:] + trained.stderr[-3000:]
    rows = {(row["kind"], row["name"]): row for row in json.loads(listed)["components"]}
    for kind, name in [
        ("memory_model", "demo_tanh"),
        ("objective", "demo_logcosh"),
        ("update_rule", "demo_gd"),
        ("attention", "demo_window"),
        ("variant", "demo_parallel"),
    ]:
        assert rows[(kind, name)]["dist"] == "titans-demo-plugin", rows[(kind, name)]
    assert after.startswith("conformance: ok\n"), trained.stdout[-2000:] + trained.stderr[-3000:]
    assert trained.returncode == 0, trained.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 3 and all(0 < loss < 10 for loss in losses)
