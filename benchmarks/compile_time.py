"""Compile time before and after, side by side in one run: what a user waits for before the first useful step.

    uv run python benchmarks/compile_time.py

Two measurements, each a pair run back to back in this process or its children (so both halves see the same load):

1. **The persistent compilation cache of the CLIs** (``titans_train/compile_cache.py``): the quickstart spec for
   ``--steps`` steps into two fresh run directories that share one empty cache directory. The first run compiles
   (what every run paid before the cache was on by default); the second loads the compiled programs. Reported:
   wall seconds of each process and the seconds before its first step.
2. **Sampling options traced instead of static** (``titans_attention/decoding.py``): the quickstart's model
   generates with four sampling settings (greedy; temperature 1; top_k 1; temperature 0.7, top_k 3, top_p 0.9).
   "static" rebuilds the former jit with the options as static arguments (one program per setting); "traced" is
   ``generate`` as it is. Reported: programs compiled (XLA backend compiles, from ``jax.monitoring``) and seconds.

Writes benchmarks/results/compile_time.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
SETTINGS = [(0.0, None, None), (1.0, None, None), (1.0, 1, None), (0.7, 3, 0.9)]


def cli_cache(steps: int) -> dict:
    """Cold then warm persistent cache: wall seconds and seconds before the first step of each run."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="titans-compile-") as tmp:
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache")}  # an empty cache, shared by both runs
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        for name in ("cold", "warm"):
            run_dir = Path(tmp) / name
            cmd = [sys.executable, "-m", "titans_train.cli", "specs/quickstart.yaml", "--set", f"output.dir={run_dir}"]
            cmd += ["--set", f"trainer.steps={steps}", "--set", "sample.max_new_tokens=0"]
            cmd += ["--set", f"trainer.eval_every={steps}", "--set", f"checkpoint.every={steps}"]
            t0 = time.time()
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            wall = time.time() - t0
            if done.returncode != 0:
                sys.exit(f"the {name} run failed:\n{done.stderr}")
            records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            first = next(r for r in records if r["kind"] == "train")
            out[name] = {"wall_s": round(wall, 1), "first_step_after_s": round(first["time"] - t0, 1)}
    out["first_step_ratio_cold_over_warm"] = round(
        out["cold"]["first_step_after_s"] / out["warm"]["first_step_after_s"], 2
    )
    return out


def generation_programs(new_tokens: int) -> dict:
    """Programs compiled and seconds for the four sampling settings, static options against traced ones."""
    import jax
    import jax.numpy as jnp
    import yaml
    from flax import nnx
    from titans_attention import decoding
    from titans_core import get_registry
    from titans_core.spec import make_config

    spec = yaml.safe_load((ROOT / "specs" / "quickstart.yaml").read_text())["model"]
    name = spec.pop("name")
    model = get_registry().build(make_config("variant", name, **spec), rngs=nnx.Rngs(0))
    prompt = jnp.arange(16, dtype=jnp.int32)[None] % model.config.vocab_size
    compiles: list[float] = []

    def listen(event: str, secs: float, **_: object) -> None:
        if event.endswith("backend_compile_duration"):
            compiles.append(secs)

    static = nnx.jit(
        decoding._generate, static_argnames=("max_new_tokens", "temperature", "top_k", "top_p", "keep_cache")
    )

    def run_static(t, k, p):
        return static(
            model,
            prompt,
            jax.random.key(0),
            None,
            max_new_tokens=new_tokens,
            temperature=t,
            top_k=k,
            top_p=p,
            keep_cache=False,
        )[0]

    def run_traced(t, k, p):
        return decoding.generate(model, prompt, new_tokens, temperature=t, top_k=k, top_p=p)

    jax.block_until_ready(jax.random.key(0))  # the small eager programs both paths share, compiled beforehand
    jax.monitoring.register_event_duration_secs_listener(listen)
    out = {}
    try:
        for label, fn in (("static", run_static), ("traced", run_traced)):
            compiles.clear()
            t0 = time.time()
            for setting in SETTINGS:
                jax.block_until_ready(fn(*setting))
            out[label] = {
                "programs": len(compiles),
                "compile_s": round(sum(compiles), 1),
                "wall_s": round(time.time() - t0, 1),
            }
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4, help="training steps of each quickstart run")
    p.add_argument("--new-tokens", type=int, default=32)
    a = p.parse_args()
    result = {
        "command": "uv run python benchmarks/compile_time.py",
        "cli_persistent_cache": cli_cache(a.steps),
        "generation_sampling_options": generation_programs(a.new_tokens),
        "settings": [list(s) for s in SETTINGS],
        "cpu_count": os.cpu_count(),
        "load_average_after": list(os.getloadavg()),
    }
    out = HERE / "results" / "compile_time.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
