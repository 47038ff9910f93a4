"""``titans-eval``: evaluate trained runs on held-out text, S-NIAH, multi-key / multi-value NIAH, BABILong-style
and MQAR.

Usage::

    titans-eval RUN_DIR [RUN_DIR ...] [--task lm|niah|mqar|niah_multikey|niah_multivalue|babilong ...]
                [--contexts 256,512,1024] [--examples 40] [--seed 0] [-o results.json] [--plot accuracy.png]
                [--session NAME]

Each run is loaded from its latest checkpoint; every task is measured at every context length. The results are
printed as a table and written to ``--output`` (default ``RUN_DIR/eval.json`` for one run; required for several)
as JSON (see :mod:`titans_train.evaluate.report`); ``--plot`` also writes a PNG of accuracy versus context length
per run. ``--session NAME`` starts every sequence from that memory session of each run (see
:mod:`titans_train.sessions`) instead of a fresh memory. All options are checked against all runs before any
evaluation; the output is written only when everything succeeded (atomically). Exit status: 0 success, 2 a user
error (``error: …``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from titans_core import TitansUserError
from titans_core.cli import make_app, make_console, run_user_command

from titans_train.compile_cache import enable_persistent_cache
from titans_train.evaluate.report import FORMAT, merge_json, plot_results, print_table
from titans_train.evaluate.run import TASKS, EvalOptions, clear_text_cache, evaluate, plan_run

app = make_app(
    "titans-eval",
    "Evaluate trained Titans runs: held-out LM loss, NIAH, BABILong-style and MQAR accuracy versus context length.",
)


def parse_contexts(text: str | None) -> tuple[int, ...] | None:
    """``"256,512"`` → (256, 512); a clear error for anything that is not a list of positive integers."""
    if text is None:
        return None
    try:
        values = tuple(int(x) for x in text.replace(",", " ").split())
    except ValueError:
        raise TitansUserError(f"--contexts: not a list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise TitansUserError(f"--contexts: give positive integers, e.g. 256,512 (got {text!r})")
    return tuple(sorted(set(values)))


def labels_for(run_dirs: Sequence[Path], variants: Sequence[str]) -> list[str]:
    """The variant name of each run; with the directory name (or path) when several runs share a variant."""
    pairs = list(zip(run_dirs, variants, strict=True))
    labels = [v if variants.count(v) == 1 else f"{v} ({d.name})" for d, v in pairs]
    return [label if labels.count(label) == 1 else f"{v} ({d})" for label, (d, v) in zip(labels, pairs, strict=True)]


def check_writable(path: Path | None, flag: str) -> None:
    """A clear error, before any work, when ``path`` cannot be written (a directory, an unwritable folder).

    A missing run directory is left to the run checks, which name it."""
    if path is None:
        return
    if path.is_dir():
        raise TitansUserError(f"{flag} {path}: is a directory, expected a file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder.exists() and not os.access(folder, os.W_OK):
        raise TitansUserError(f"{flag} {path}: cannot write in {folder}")


@app.command()
@run_user_command
def main_command(
    run_dirs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR...", help="Run directories of titans-train.")],
    task: Annotated[
        list[str] | None,
        typer.Option(
            "--task",
            "-t",
            help="lm, niah, mqar, niah_multikey, niah_multivalue or babilong (repeatable; default: the run's own task, "
            "else lm).",
        ),
    ] = None,
    contexts: Annotated[
        str | None,
        typer.Option(help="Context lengths in tokens, e.g. 256,512,1024 (default: the run's seq_len)."),
    ] = None,
    examples: Annotated[int, typer.Option(min=1, help="Task examples per context length (all but lm).")] = 40,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the generated examples.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per forward pass.")] = 8,
    lm_tokens: Annotated[
        int, typer.Option(min=1, help="Held-out tokens per LM context length (at least one window).")
    ] = 32_768,
    text: Annotated[
        list[str] | None, typer.Option(help="Held-out LM text file(s) (default: the run's validation split).")
    ] = None,
    kv_pairs: Annotated[
        int | None, typer.Option(min=1, help="MQAR key-value pairs (default: the run's, else 8).")
    ] = None,
    mqar_vocab: Annotated[int | None, typer.Option(min=4, help="MQAR vocabulary (default: the run's).")] = None,
    value_kind: Annotated[str | None, typer.Option(help="Needle value of the NIAH tasks: number or uuid.")] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Result JSON (default: RUN_DIR/eval.json for one run)."),
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Also write a PNG: accuracy versus context length.")] = None,
    session: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Start every sequence from memory session NAME of each run (titans-train generate --session) "
            "instead of a fresh memory.",
        ),
    ] = None,
) -> None:
    """Evaluate RUN_DIR(s) and print a table; write the result JSON (and a PNG with --plot)."""
    unknown = [t for t in task or [] if t not in TASKS]
    if unknown:
        raise TitansUserError(f"--task: unknown task {unknown[0]!r} (choose from {', '.join(TASKS)})")
    if value_kind is not None and value_kind not in ("number", "uuid"):
        raise TitansUserError(f"--value-kind: must be number or uuid, got {value_kind!r}")
    if output is None:
        if len(run_dirs) > 1:
            raise TitansUserError("--output is required when evaluating several run directories")
        output = run_dirs[0] / "eval.json"
    options = EvalOptions(
        tasks=tuple(dict.fromkeys(task)) if task else None,
        contexts=parse_contexts(contexts),
        examples=examples,
        seed=seed,
        batch_size=batch_size,
        lm_tokens=lm_tokens,
        text=tuple(text or ()),
        num_kv_pairs=kv_pairs,
        mqar_vocab=mqar_vocab,
        value_kind=value_kind,
        session=session,
    )
    for path, flag in ((output, "--output"), (plot, "--plot")):
        check_writable(path, flag)
    console = make_console(piped_width=0, stderr=True)  # progress lines: the terminal's own width
    clear_text_cache()  # --text files are read once per command, and afresh by the next one
    plans = [plan_run(d, options) for d in run_dirs]  # every problem surfaces before any evaluation
    enable_persistent_cache()  # titans_train.compile_cache
    runs = [evaluate(p, options, progress=lambda m: console.print(m, style="dim")) for p in plans]
    for run, label in zip(runs, labels_for(run_dirs, [r["variant"] for r in runs]), strict=True):
        run["label"] = label
    document = {"format": FORMAT, "seed": seed, "examples": examples, "runs": runs}
    print_table(document, make_console(piped_width=120))
    try:
        kept = merge_json(output, document)  # concurrent evaluations of one run all survive
        console.print(f"wrote {output}" + (f" (with {kept} earlier results kept)" if kept else ""))
        if plot is not None:
            console.print(f"wrote {plot_results(document, plot)}")
    except OSError as exc:
        raise TitansUserError(f"cannot write the results: {exc}") from None


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point of ``titans-eval``."""
    app(args=list(sys.argv[1:] if argv is None else argv), prog_name="titans-eval")


if __name__ == "__main__":
    main()
