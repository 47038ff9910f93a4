"""Generation cost: ms per generated token after contexts of 1K, 8K and 64K tokens, and prefill tokens/s, per variant.

    uv run python benchmarks/decode_latency.py
    uv run python benchmarks/decode_latency.py --contexts 1024 8192 --variants mac swa

The goal is a flat per-token cost (≤ 1.2× from 1K to 64K): every cache is of fixed size (a ring buffer of `window`
keys/values, the current MAC segment, the memory's weights, momentum and partial chunk). Prints a table and writes
JSON to benchmarks/out/decode_latency.json (and --results for a committed copy).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx
from titans_attention import VARIANTS, count_params
from titans_core import get_registry
from titans_core.spec import make_config


def build(variant: str, a) -> nnx.Module:
    cfg = make_config(
        "variant",
        variant,
        d_model=a.d_model,
        num_layers=a.layers,
        num_heads=4,
        window=a.window,
        segment=a.window,
        num_persistent=4,
        memory={"num_heads": 4, "rule": {"name": "momentum_scan", "chunk_size": 16}},
    )
    return get_registry().build(cfg, rngs=nnx.Rngs(0))


def bench(variant: str, a) -> list[dict]:
    model = build(variant, a)
    prefill = nnx.jit(lambda m, t: m.prefill(t))
    step = nnx.jit(lambda m, t, c: m.decode(t, c))
    rows = []
    for n in a.contexts:
        toks = jax.random.randint(jax.random.key(n), (1, n), 0, 256)
        jax.block_until_ready(prefill(model, toks))  # compile
        t0 = time.perf_counter()
        logits, cache = jax.block_until_ready(prefill(model, toks))
        prefill_s = time.perf_counter() - t0
        tok = jnp.argmax(logits[:, -1:], axis=-1).astype(jnp.int32)
        logits, cache = jax.block_until_ready(step(model, tok, cache))  # compile
        times = []
        for _ in range(a.tokens):
            tok = jnp.argmax(logits[:, -1:], axis=-1).astype(jnp.int32)
            t0 = time.perf_counter()
            logits, cache = jax.block_until_ready(step(model, tok, cache))
            times.append(time.perf_counter() - t0)
        times.sort()
        rows.append(
            {
                "variant": variant,
                "context": n,
                "ms_per_token": 1e3 * times[len(times) // 2],
                "prefill_tok_s": n / prefill_s,
                "params": count_params(model),
            }
        )
        print(f"{variant:<6}{n:>8}{rows[-1]['ms_per_token']:>12.2f}{rows[-1]['prefill_tok_s']:>14.0f}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contexts", type=int, nargs="+", default=[1024, 8192, 65536])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--window", type=int, default=256, help="SWA window and MAC segment")
    p.add_argument("--tokens", type=int, default=32, help="generated tokens timed per context (median reported)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "decode_latency.json")
    p.add_argument("--results", type=Path, default=None, help="also write the JSON here (e.g. benchmarks/results/)")
    a = p.parse_args()
    print(f"{'model':<6}{'context':>8}{'ms/token':>12}{'prefill tok/s':>14}")
    rows = [r for v in a.variants for r in bench(v, a)]
    flat = {
        v: max(r["ms_per_token"] for r in rows if r["variant"] == v)
        / min(r["ms_per_token"] for r in rows if r["variant"] == v)
        for v in a.variants
    }
    for v, ratio in flat.items():
        print(f"{v}: slowest / fastest per-token latency across contexts = {ratio:.2f}x")
    doc = {
        "meta": {
            "device": str(jax.devices()[0]),
            "jax": jax.__version__,
            "setting": {k: (str(x) if isinstance(x, Path) else x) for k, x in vars(a).items()},
        },
        "rows": rows,
        "flatness": flat,
    }
    for path in filter(None, [a.out, a.results]):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
