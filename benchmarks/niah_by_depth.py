"""S-NIAH exact match by needle depth, from ``titans-eval`` results (``eval_niah.json`` in run directories).

    uv run python benchmarks/niah_by_depth.py runs/seeded/horizon_niah/lmm@heads1@forget1e-5-s0 --buckets 5

Depth is the needle's position as a fraction of the haystack (0 = first, 1 = just before the question), so at a
context of C bytes a needle of depth d has about (1 − d)·(C − 150) bytes of haystack after it and d·(C − 150)
before it. Splitting each context's score by depth separates the two ways a memory can fail at long contexts:
losing a needle written long ago (low depths fail) and a state that has run longer than in training (high depths
fail too, though their needle is as recent as in training).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def buckets(by_depth: dict[str, list[int]], n: int) -> list[tuple[int, int]]:
    """(correct, total) per group of ``n`` equal depth ranges, lowest depths first."""
    keys = sorted(by_depth, key=float)
    size = -(-len(keys) // n)
    groups = [keys[i : i + size] for i in range(0, len(keys), size)]
    return [(sum(by_depth[k][0] for k in g), sum(by_depth[k][1] for k in g)) for g in groups]


def table(paths: list[Path], n: int) -> str:
    edges = [f"{i / n:.1f}–{(i + 1) / n:.1f}" for i in range(n)]
    lines = ["| run | context | " + " | ".join(f"depth {e}" for e in edges) + " |", "|---|---|" + "---|" * n]
    for path in paths:
        doc = json.loads((path / "eval_niah.json").read_text())
        for result in doc["runs"][0]["results"]:
            cells = [f"{c}/{t}" for c, t in buckets(result["by_depth"], n)]
            lines.append(f"| `{path.name}` | {result['context']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run directories holding eval_niah.json")
    parser.add_argument("--buckets", type=int, default=5)
    parser.add_argument("-o", "--output", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    text = table(args.runs, args.buckets)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)


if __name__ == "__main__":
    main()
