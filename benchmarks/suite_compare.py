"""Two suite-time runs side by side: which files changed between their commits, and how their time moved
against the files that did not change (absolute times on these machines drift by up to 40% between runs, so the
untouched files are the yardstick).

    uv run python benchmarks/suite_compare.py benchmarks/results/suite_times_27648d2.json \
        benchmarks/results/suite_times.json --commits 27648d2 441181d

Writes benchmarks/results/suite_compare.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def per_file(path: Path) -> dict[str, float]:
    return {row["file"]: row["seconds"] for row in json.loads(path.read_text())["files"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--commits", nargs=2, required=True, metavar=("BEFORE", "AFTER"))
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "suite_compare.md")
    args = ap.parse_args()
    diff = subprocess.run(["git", "diff", "--name-only", *args.commits], cwd=ROOT, capture_output=True, text=True)
    changed = set(diff.stdout.split())
    a, b = per_file(args.before), per_file(args.after)
    both = sorted(set(a) & set(b), key=lambda f: -a[f])
    groups = {
        "test files changed": [f for f in both if f in changed],
        "test files not changed": [f for f in both if f not in changed],
    }
    lines = [f"# Suite time per file: {args.commits[0]} → {args.commits[1]} (summed over both workers)", ""]
    lines += ["| group | files | before s | after s | after / before |", "|---|---|---|---|---|"]
    for name, files in groups.items():
        sa, sb = sum(a[f] for f in files), sum(b[f] for f in files)
        lines.append(f"| {name} | {len(files)} | {sa:.0f} | {sb:.0f} | {sb / sa:.2f} |")
    lines += ["", "| file | changed | before s | after s | after / before |", "|---|---|---|---|---|"]
    for f in both:
        lines.append(f"| `{f}` | {'yes' if f in changed else ''} | {a[f]:.0f} | {b[f]:.0f} | {b[f] / a[f]:.2f} |")
    args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[:6]))


if __name__ == "__main__":
    main()
