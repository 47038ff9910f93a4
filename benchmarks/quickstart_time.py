"""The README's first command, timed as a new user runs it: `titans-train specs/quickstart.yaml` with an empty
compilation cache (first compile included), into a fresh run directory.

    uv run python benchmarks/quickstart_time.py

Writes benchmarks/results/quickstart_time.json: wall seconds, the held-out bits per byte at each evaluation and
the unigram baseline it must beat (both from the run's metrics.jsonl), and the seconds before the first step
(import, data, compile). The virtual environment is assumed made (`uv run` makes it once, before this).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="titans-quickstart-") as tmp:
        run_dir = Path(tmp) / "run"
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache")}  # an empty compilation cache
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        cmd = [sys.executable, "-m", "titans_train.cli", "specs/quickstart.yaml", "--set", f"output.dir={run_dir}"]
        t0 = time.time()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.time() - t0
        if done.returncode != 0:
            sys.exit(f"the quickstart failed:\n{done.stderr}")
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    first = next(r for r in records if r["kind"] == "train")
    result = {
        "command": "uv run titans-train specs/quickstart.yaml (empty compilation cache, fresh run directory)",
        "wall_s": wall,
        "first_step_after_s": first["time"] - t0,
        "eval": [{"step": r["step"], "bpb": r["bpb"]} for r in evals],
        "unigram_bpb": evals[-1]["unigram_bpb"],
        "beats_unigram": evals[-1]["bpb"] < evals[-1]["unigram_bpb"],
        "cpu_count": os.cpu_count(),
        "load_average_after": list(os.getloadavg()),
    }
    out = HERE / "results" / "quickstart_time.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
