"""Where does S-NIAH recall fail? Probe trained runs with pairs of prompts that differ only in the needle's value.

For each pair (a, b) — the same haystack, key and question, another number in the needle — the probe measures,
per memory layer of each run:

- ``imprint``: ‖M_a − M_b‖ / ‖M_a‖ right after the needle (prefill up to the needle's end): how strongly the
  needle was written into the long-term memory M (paper Eq 13–14);
- ``survival``: the same difference at the end of the prompt divided by ``imprint``'s: the fraction of the
  needle's trace that is still in M after the haystack that follows it (forgetting α and overwriting);
- ``answer_tv``: the total-variation distance between the next-byte distributions at the last prompt position
  (where the first digit is predicted): how much the model's answer depends on the needle at all;
- ``p_first``: the probability given to the right first digit.

``--at-init`` adds the same measurements on each run's architecture before training (step 0).

A memory that holds the needle (survival well above 0) while the answer ignores it (answer_tv ≈ 0) fails at
reading; a memory whose imprint or survival is near 0 fails at writing or keeping.

    uv run python benchmarks/niah_probe.py runs/experiments/niah/{lmm,mac,mag,mal} \
        --at-init --output benchmarks/results/experiments/niah_probe.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from titans_memory import MemoryState
from titans_train.plan import build_model
from titans_train.sampling import load_run_model
from titans_train.tasks.niah import encode_text, make_niah_example


def _memories(caches) -> list[MemoryState]:
    leaves = jax.tree.leaves(caches, is_leaf=lambda x: isinstance(x, MemoryState))
    return [c for c in leaves if isinstance(c, MemoryState)]


def _norm(tree) -> float:
    return float(jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree))))


def _diff(a, b) -> float:
    return _norm(jax.tree.map(lambda x, y: x - y, a, b))


def _pair(seed: int, context: int, value_kind: str):
    ex = make_niah_example(seed, context, value_kind)
    rng = np.random.default_rng(seed + 10_000)
    other = ex.answer
    while other == ex.answer or other[0] == ex.answer[0]:
        other = "".join(str(d) for d in rng.integers(0, 10, len(ex.answer)))
    prompt_b = ex.prompt.replace(ex.answer, other)
    needle_end = ex.needle_start + len(ex.needle)
    return ex, prompt_b, needle_end


def probe(run_dir: Path, n: int, context: int, at_init: bool = False) -> dict:
    model, spec, step, _ = load_run_model(run_dir)
    if at_init:  # the same architecture before any training: is a weak imprint built in or learned?
        model, step = build_model(spec), 0
    value_kind = getattr(spec.data.source, "value_kind", "number")
    prefill = jax.jit(lambda t: model.prefill(t))
    rows = []
    for i in range(n):
        ex, prompt_b, needle_end = _pair(i, context, value_kind)
        a, b = encode_text(ex.prompt)[None], encode_text(prompt_b)[None]
        _, ca = prefill(jnp.asarray(a[:, :needle_end]))
        _, cb = prefill(jnp.asarray(b[:, :needle_end]))
        la, ea = prefill(jnp.asarray(a))
        lb, eb = prefill(jnp.asarray(b))
        pa, pb = jax.nn.softmax(la[0, -1]), jax.nn.softmax(lb[0, -1])
        layers = []
        for ma, mb, ea_, eb_ in zip(_memories(ca), _memories(cb), _memories(ea), _memories(eb), strict=True):
            imprint = _diff(ma.rule.memory, mb.rule.memory) / max(_norm(ma.rule.memory), 1e-12)
            end = _diff(ea_.rule.memory, eb_.rule.memory) / max(_norm(ea_.rule.memory), 1e-12)
            layers.append({"imprint": imprint, "survival": end / max(imprint, 1e-12)})
        rows.append(
            {
                "layers": layers,
                "answer_tv": float(0.5 * jnp.abs(pa - pb).sum()),
                "p_first": float(pa[ord(ex.answer[0])]),
                "haystack_after_needle": len(ex.prompt) - needle_end,
            }
        )
    num_layers = len(rows[0]["layers"])
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    return {
        "run_dir": str(run_dir),
        "variant": spec.model.name,
        "step": step,
        "context": context,
        "examples": n,
        "bytes_after_needle": mean([r["haystack_after_needle"] for r in rows]),
        "layers": [
            {k: mean([r["layers"][l][k] for r in rows]) for k in ("imprint", "survival")} for l in range(num_layers)
        ],
        "answer_tv": mean([r["answer_tv"] for r in rows]),
        "p_first": mean([r["p_first"] for r in rows]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+", type=Path)
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--context", type=int, default=320)
    ap.add_argument("--output", type=Path)
    ap.add_argument("--at-init", action="store_true", help="also probe each run's model as initialised (step 0)")
    args = ap.parse_args()
    results = [probe(r, args.examples, args.context) for r in args.run_dirs]
    if args.at_init:
        results += [probe(r, args.examples, args.context, at_init=True) for r in args.run_dirs]
    print("| run | step | layer | imprint ‖ΔM‖/‖M‖ | survival | answer TV | p(first digit) |")
    print("|---|---|---|---|---|---|---|")
    for res in results:
        for l, layer in enumerate(res["layers"]):
            head = f"| {res['variant']} | {res['step']} |" if l == 0 else "| | |"
            tail = f" {res['answer_tv']:.3f} | {res['p_first']:.3f} |" if l == 0 else " | |"
            print(f"{head} {l} | {layer['imprint']:.4f} | {layer['survival']:.3f} |{tail}")
    if args.output:
        args.output.write_text(json.dumps({"format": "niah-probe/1", "runs": results}, indent=2) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
