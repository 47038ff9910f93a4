"""Where the test suite spends its time: per-file and slowest-test tables from one timed run.

    uv run python benchmarks/suite_times.py                     # runs `uv run pytest` once (the README's command)
    uv run python benchmarks/suite_times.py --junit FILE.xml    # tables from a run you already have

Writes benchmarks/results/suite_times.json and .md: the wall time of the run, the number of tests, the summed
test time per file (both workers together, so the sum is about twice the wall time on 2 cores) and the slowest
tests. What makes the slow ones slow is mostly XLA compilation: each distinct model, shape or jitted function
compiles once per worker process (seconds each on a CPU), so a file's cost is roughly its number of distinct
programs. The notes below say why each of the slowest files needs them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent

WHY = {  # the slowest files: what they compile, and why the test needs it
    "tests/variants/test_variants.py": "per variant: causality (a Jacobian), decoding = full pass (2 layers), training",
    "tests/memory/test_objectives.py": "each objective through NeuralMemory and the rules, with gradients",
    "tests/memory/test_fused.py": "the Pallas kernel in interpret mode (depth 1 and 2, forward and backward)",
    "tests/memory/test_token_read.py": "read: token against the sequential reference (float64, hypothesis shapes)",
    "tests/variants/test_recipes.py": "the variant conformance check for every registered variant",
    "tests/train/test_sessions.py": "a trained MAG run: generation with a session in two processes, eval from it",
    "tests/memory/test_standalone.py": "builds two wheels, installs them in a fresh venv, runs two examples",
    "tests/memory/test_module.py": "NeuralMemory against the rules: pieces, split calls, gradients",
    "tests/memory/test_token_read_module.py": "prefill and decode = full pass for each variant with read: token",
    "plugins/titans-miras/tests/test_plugin.py": "a rule trained in-process, and through the CLI (memora + yaad)",
    "tests/memory/test_state_api.py": "per-row state and resets, store mask, read-only call, dtypes, state errors",
    "tests/train/test_carry_memory.py": "carried windows = the concatenated sequence per variant; training runs",
    "tests/memory/test_rules.py": "momentum_scan = sequential, property tests over chunk sizes and depths",
    "plugins/titans-atlas/tests/test_omega.py": "the omega rule's outer gradients against its reference",
    "tests/variants/test_generate.py": "a generation program (prefill + decode scan) per variant and sampling option",
    "tests/train/test_train_flow.py": "whole training runs through the CLI (train, eval, checkpoint programs)",
    "tests/train/test_plugin_template.py": "builds a plugin package from the template and runs its tests",
    "tests/docs/test_plugins_doc.py": "the plugin guide's code: check_variant, check_update_rule and the rule checks",
    "tests/train/test_evaluate.py": "memorised S-NIAH and MQAR runs scored by titans-eval; greedy continuations",
    "tests/train/test_memory_diagnostics.py": "a training run that records, plots and evaluates memory diagnostics",
    "tests/train/test_experiment_specs.py": "every experiment spec validated; a smoke run of benchmarks/experiments.py",
    "tests/train/test_checkpoint_safety.py": "corrupt, missing and half-written checkpoints: training runs per case",
    "tests/variants/test_mac_write.py": "each MAC write option: causality and decoding = full pass",
    "tests/variants/test_diagnostics.py": "memory diagnostics captured per variant; the forward pass unchanged outside",
}


def run_suite(junit: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["uv", "run", "pytest", "-q", f"--junitxml={junit}"], cwd=ROOT, check=False)
    return time.perf_counter() - t0


def tables(junit: Path, wall_s: float | None) -> dict:
    cases = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", "")
        cases.append((name, float(case.get("time", 0.0))))
    per_file: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for name, t in cases:
        f = name.split("::")[0]
        per_file[f] += t
        counts[f] += 1
    files = sorted(per_file, key=per_file.__getitem__, reverse=True)
    return {
        "wall_s": wall_s,
        "tests": len(cases),
        "summed_test_s": sum(t for _, t in cases),
        "cpu_count": os.cpu_count(),
        "files": [{"file": f, "tests": counts[f], "seconds": per_file[f], "why": WHY.get(f, "")} for f in files],
        "slowest": [{"test": n, "seconds": t} for n, t in sorted(cases, key=lambda c: -c[1])[:25]],
    }


def markdown(r: dict) -> str:
    wall = f"{r['wall_s'] / 60:.1f} min wall" if r["wall_s"] else "wall time not measured"
    lines = [
        f"# Test suite times ({r['tests']} tests, {wall}, {r['cpu_count']} cores; "
        f"summed test time {r['summed_test_s'] / 60:.1f} min)",
        "",
        "| file | tests | seconds (summed) | why |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{f['file']}` | {f['tests']} | {f['seconds']:.0f} | {f['why']} |" for f in r["files"][:20]]
    lines += ["", "| slowest tests | seconds |", "|---|---|"]
    lines += [f"| `{s['test']}` | {s['seconds']:.1f} |" for s in r["slowest"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--junit", type=Path, help="tables from this JUnit XML instead of a new run")
    p.add_argument("--wall-s", type=float, help="the wall time of the run behind --junit")
    p.add_argument("--out", type=Path, default=HERE / "results" / "suite_times")
    a = p.parse_args()
    junit, wall = a.junit, a.wall_s
    if junit is None:
        junit = HERE / "out" / "suite.xml"
        junit.parent.mkdir(parents=True, exist_ok=True)
        wall = run_suite(junit)
    r = tables(junit, wall)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(r, indent=2))
    a.out.with_suffix(".md").write_text(markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
