"""Tracing and compiling a training step: the chunk coefficients as span-product matrices against associative scans.

    uv run python benchmarks/span_products_compile.py [--reps 2] [--test-flags]

``momentum_scan``'s per-chunk coefficients (``chunk_coefficients``, ``token_coefficients``) used to be six
``jax.lax.associative_scan`` calls; they are now einsums of one span-product matrix per gate
(``titans_memory/rules/spans.py``). This script keeps the former code (below, "scans") and swaps it in and out of
the rule in one process, alternating, so both see the same load: per model, the seconds to trace, lower and
compile ``jax.value_and_grad`` of the training loss, and the equations of the traced loss. Models: the
quickstart (MAC, depth-2 memory, ``read: token``) and the S-NIAH MAC experiment (depth 1, ``read: chunk``), at
batch 4. ``--test-flags`` uses the test suite's XLA flags (root ``conftest.py``: no LLVM optimisation, the older
CPU fusion emitter); without it the CLIs' defaults.

Writes benchmarks/results/span_products_compile.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
TEST_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
MODELS = {
    "quickstart (MAC, read: token, depth 2)": ("specs/quickstart.yaml", []),
    "S-NIAH MAC (read: chunk, depth 1, T = 320)": ("specs/experiments/niah/mac.yaml", ["model.mac_write=x+y"]),
}


def scan_coefficients():
    """The former implementation (commit 1532a18), verbatim in its arithmetic."""
    import jax
    import jax.numpy as jnp

    def affine(earlier, later):
        (a1, b1), (a2, b2) = earlier, later
        return a2 * a1, a2 * b1 + b2

    def suffix(x):
        incl = jax.lax.associative_scan(jnp.multiply, x, reverse=True)
        return jnp.concatenate([incl[1:], jnp.ones_like(incl[:1])], axis=0)

    def recurrence(decay, drive):
        return jax.lax.associative_scan(affine, (jnp.broadcast_to(decay, drive.shape), drive))[1]

    def chunk(theta, eta, alpha, mask, spans=None):
        gamma = 1.0 - alpha
        eta_after, gamma_after = suffix(eta[:, None])[:, 0], suffix(gamma)
        eta_next = jnp.concatenate([eta[1:], jnp.zeros_like(eta[:1])])[:, None]
        drive = mask[:, None] * gamma_after
        _, G = jax.lax.associative_scan(affine, (jnp.broadcast_to(eta_next, drive.shape), drive), reverse=True)
        return theta * eta_after, theta[:, None] * G, jnp.prod(gamma, axis=0), jnp.prod(eta), eta[0] * G[0]

    def token(theta, eta, alpha, mask, spans=None):
        gamma = 1.0 - alpha
        keep = jax.lax.associative_scan(jnp.multiply, gamma)
        eta_upto = jax.lax.associative_scan(jnp.multiply, eta)
        A = recurrence(eta[:, None], jnp.diag(theta))
        ones = jnp.ones((gamma.shape[1],), gamma.dtype)
        m = recurrence(gamma[:, None, :], (mask[:, None] * A)[:, :, None] * ones)
        return keep, recurrence(gamma, (mask * eta_upto)[:, None] * ones), m

    return chunk, token


def count_eqns(jaxpr) -> int:
    import jax

    n = 0
    for eqn in jaxpr.eqns:
        n += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    n += count_eqns(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    n += count_eqns(sub)
    return n


def measure(spec_path: str, sets: list[str], reps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import yaml
    from flax import nnx
    from titans_memory.rules import momentum_scan
    from titans_train.plan import build_model, split_params
    from titans_train.spec import TrainSpec
    from titans_train.steps import make_loss

    raw = yaml.safe_load((ROOT / spec_path).read_text())
    for item in sets:
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    spec = TrainSpec.model_validate(raw)
    graphdef, params, rest = split_params(nnx.eval_shape(lambda: build_model(spec)))
    loss = make_loss(graphdef, jnp.float32)
    rows = jax.ShapeDtypeStruct((4, spec.data.seq_len + 1), jnp.int32)
    versions = {"spans": (momentum_scan.chunk_coefficients, momentum_scan.token_coefficients, momentum_scan.gate_spans)}
    versions["scans"] = (*scan_coefficients(), lambda eta, alpha: None)  # (the scans need no span matrices)
    runs: dict[str, list[dict]] = {name: [] for name in versions}
    try:
        for _ in range(reps):
            for name, (chunk, token, spans) in versions.items():
                momentum_scan.chunk_coefficients, momentum_scan.token_coefficients, momentum_scan.gate_spans = (
                    chunk,
                    token,
                    spans,
                )
                jax.clear_caches()
                step = jax.jit(jax.value_and_grad(lambda p, r, x: loss(p, r, x)))
                t0 = time.perf_counter()
                traced = step.trace(params, rest, rows)
                t1 = time.perf_counter()
                lowered = traced.lower()
                t2 = time.perf_counter()
                lowered.compile()
                t3 = time.perf_counter()
                eqns = count_eqns(jax.make_jaxpr(loss)(params, rest, rows).jaxpr)
                runs[name].append({"trace_s": t1 - t0, "lower_s": t2 - t1, "compile_s": t3 - t2, "loss_eqns": eqns})
    finally:
        momentum_scan.chunk_coefficients, momentum_scan.token_coefficients, momentum_scan.gate_spans = versions["spans"]
    out = {}
    for name, rows_ in runs.items():
        out[name] = {k: round(min(r[k] for r in rows_), 2) for k in rows_[0]}
        out[name]["total_s"] = round(out[name]["trace_s"] + out[name]["lower_s"] + out[name]["compile_s"], 2)
    out["total_ratio_scans_over_spans"] = round(out["scans"]["total_s"] / out["spans"]["total_s"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2, help="alternating repetitions; the minimum is reported")
    parser.add_argument("--test-flags", action="store_true", help="the test suite's XLA flags")
    args = parser.parse_args()
    if args.test_flags and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + TEST_FLAGS).strip()
    results = {"xla_flags": "test suite" if args.test_flags else "default", "reps": args.reps, "models": {}}
    for label, (spec_path, sets) in MODELS.items():
        results["models"][label] = measure(spec_path, sets, args.reps)
        row = results["models"][label]
        print(f"{label}:")
        for name in ("scans", "spans"):
            r = row[name]
            print(
                f"  {name}: trace {r['trace_s']:.1f} s, lower {r['lower_s']:.1f} s, compile {r['compile_s']:.1f} s "
                f"(total {r['total_s']:.1f} s), {r['loss_eqns']} equations"
            )
        print(f"  scans / spans: {row['total_ratio_scans_over_spans']}×")
    out = HERE / "results" / "span_products_compile.json"
    name = out.with_name(out.stem + ("_test_flags" if args.test_flags else "") + ".json")
    name.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {name.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
