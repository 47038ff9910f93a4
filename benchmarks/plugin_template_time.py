"""How long a plugin author waits for the generated package's tests: ``titans-plugins new`` then ``pytest`` in it.

    uv run python benchmarks/plugin_template_time.py

Generates the template package into a temporary folder and runs its tests three times, each in a new process as
an author would: without the template's ``tests/conftest.py`` (its compile settings: how the tests ran before it
was part of the template), then as generated with an empty
``.jax_cache/`` (a first run), then again (a rerun after editing, the cache warm). Writes
benchmarks/results/plugin_template_time.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def _pytest(package: Path, env: dict[str, str]) -> dict:
    t0 = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=package,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.time() - t0
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    if done.returncode != 0:
        sys.exit(f"the generated tests failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    passed = re.search(r"(\d+) passed", last)
    return {"wall_s": round(wall, 1), "passed": int(passed.group(1)) if passed else None, "summary": last}


def main() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    with tempfile.TemporaryDirectory(prefix="titans-template-") as tmp:
        package = Path(tmp) / "my-memory"
        made = subprocess.run(
            [sys.executable, "-m", "titans_core.cli", "new", "my-memory", "--dir", str(package)],
            capture_output=True,
            text=True,
        )
        if made.returncode != 0:
            sys.exit(made.stderr)
        env = {**base, "PYTHONPATH": str(package / "src")}
        conftest = package / "tests" / "conftest.py"
        kept = conftest.read_text(encoding="utf-8")
        conftest.unlink()  # the package as it was generated before the template had it
        without = _pytest(package, env)
        conftest.write_text(kept, encoding="utf-8")
        result = {
            "command": "uv run python benchmarks/plugin_template_time.py",
            "without_template_conftest": without,
            "as_generated_first_run": _pytest(package, env),
            "as_generated_rerun": _pytest(package, env),
            "cpu_count": os.cpu_count(),
            "load_average_after": list(os.getloadavg()),
        }
    out = HERE / "results" / "plugin_template_time.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
