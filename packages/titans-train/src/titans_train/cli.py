"""``titans-train``: train from a spec, print its schema, plot a run, sample from a run.

Usage::

    titans-train SPEC.yaml [--set trainer.steps=100 ...] [--dry-run]   # = titans-train train SPEC.yaml ...
    titans-train SPEC.yaml --restart                                   # start over a run with no usable checkpoint
    titans-train SPEC.yaml --set output.dir=NEW --fork-from RUN/checkpoints/STEP   # a new run from a checkpoint
    titans-train schema                                                 # JSON schema of a spec (or --schema)
    titans-train plot RUN_DIR                                           # RUN_DIR/plots/{loss,eval,memory}.png
    titans-train generate RUN_DIR --prompt "def " [--max-new-tokens 200 --temperature 0.8 --top-k 40 ...]
    titans-train generate RUN_DIR --prompt "…" --session NAME [--reset-session]   # a memory kept between prompts
    titans-train sessions RUN_DIR [--delete NAME]                       # list (or delete) memory sessions

A first argument that is not a command name is taken as a spec file, so ``titans-train SPEC.yaml`` runs ``train``.
The whole spec (and the data) is validated before anything is written. Exit status: 0 success; 2 a user error —
a bad spec, bad data, an unusable run directory (a run none of whose checkpoints is usable included: never
restarted from step 0 without ``--restart``) — printed as ``error: …`` without a traceback; 3 the training
diverged (a non-finite loss or gradient norm, or a parameter above ``trainer.max_weight``; the last good
checkpoint is kept, and ``--fork-from`` continues from it in a new run directory with other hyper-parameters);
130 stopped by SIGINT/SIGTERM after saving a checkpoint of the step in progress (rerun the command to continue;
a second signal stops at once, keeping the last complete checkpoint).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from titans_core import TitansUserError, spec_json_schema
from titans_core.cli import make_app, make_console, print_user_error, run_user_command

from titans_train.compile_cache import enable_persistent_cache
from titans_train.errors import DivergedError, RunDirError
from titans_train.interrupt import Interrupted
from titans_train.spec import TrainSpec

COMMANDS = ("train", "schema", "plot", "generate", "sessions")

app = make_app(
    "titans-train",
    "Train Titans models from a spec file.\n\n"
    "titans-train SPEC.yaml [--set KEY.PATH=VALUE ...] [--dry-run] is short for "
    "`titans-train train SPEC.yaml ...`; `titans-train --schema` for `titans-train schema`.",
)


def _console() -> Console:
    return make_console(piped_width=160)


@app.command("train")
@run_user_command
def train_command(
    spec_file: Annotated[str, typer.Argument(metavar="SPEC.yaml", help="The training spec.")],
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", metavar="KEY.PATH=VALUE", help="Override a spec value (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the resolved spec, parameter count and mesh plan; then exit."),
    ] = False,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="Start the run directory over from step 0 when none of its checkpoints is usable "
            "(refused when one is; its metrics.jsonl is kept as metrics-before-restart-<time>.jsonl).",
        ),
    ] = False,
    fork_from: Annotated[
        str | None,
        typer.Option(
            "--fork-from",
            metavar="RUN_DIR/checkpoints/STEP",
            help="Start a new run (a new output.dir) from a checkpoint of another run, e.g. with another "
            "optimizer.lr; its metrics up to that step are copied.",
        ),
    ] = None,
) -> None:
    """Train the model of SPEC.yaml (resuming its run directory if it holds the same run)."""
    from titans_train.dry_run import print_dry_run
    from titans_train.plan import make_plan
    from titans_train.spec_check import load_train_spec
    from titans_train.trainer import train

    spec, locator = load_train_spec(spec_file, overrides or [])
    console = _console()
    if dry_run:
        from pathlib import Path

        from titans_train.rundir import inspect_run_dir

        plan = make_plan(spec, locator)
        inspect_run_dir(Path(spec.output.dir), spec)  # a run directory holding another run is refused here too
        print_dry_run(plan, console)
        return
    enable_persistent_cache()  # titans_train.compile_cache: a rerun loads its compiled programs
    try:
        result = train(spec, locator, restart=restart, fork_from=fork_from, console=console)
    except DivergedError as exc:
        print_user_error(exc)
        raise SystemExit(DivergedError.exit_code) from None
    except Interrupted as exc:
        print_user_error(exc, prefix="interrupted")
        raise SystemExit(Interrupted.exit_code) from None
    except KeyboardInterrupt as exc:  # before training started, or a second SIGINT/SIGTERM: stop at once
        again = f"{exc.args[0]} again: " if exc.args else ""
        message = f"{again}stopped at once; the last complete checkpoint (if any) is kept, rerun to continue"
        print_user_error(Exception(message), prefix="interrupted")
        raise SystemExit(Interrupted.exit_code) from None
    import jax

    if jax.process_index() == 0:
        console.print(f"done: step {result.final_step}, run directory {result.run_dir}", highlight=False)


@app.command("schema")
@run_user_command
def schema_command() -> None:
    """Print the JSON schema of a training spec."""
    sys.stdout.write(json.dumps(spec_json_schema(TrainSpec), indent=2) + "\n")


@app.command("plot")
@run_user_command
def plot_command(run_dir: Annotated[str, typer.Argument(metavar="RUN_DIR", help="A run directory.")]) -> None:
    """Write PNG loss, evaluation and memory-diagnostics curves to RUN_DIR/plots/."""
    from pathlib import Path

    from titans_train.plot import plot_run

    try:
        written = plot_run(Path(run_dir))
    except OSError as exc:  # a read-only run directory, a full disk, …
        where = exc.filename or Path(run_dir) / "plots"
        raise RunDirError(f"cannot write the plots: {where}: {exc.strerror or exc}") from None
    for path in written:
        _console().print(f"wrote {path}", highlight=False)


@app.command("generate")
@run_user_command
def generate_command(
    run_dir: Annotated[str, typer.Argument(metavar="RUN_DIR", help="A run directory.")],
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="Prompt text (byte-level runs).")] = None,
    prompt_ids: Annotated[
        str | None, typer.Option("--prompt-ids", help="Prompt as token ids, e.g. '17 4 99' (any run).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", min=1, help="Tokens to generate.")] = 200,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature (0: greedy).")] = 0.8,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Sample from the k likeliest.")] = 40,
    top_p: Annotated[float | None, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus mass.")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    session: Annotated[
        str | None,
        typer.Option(
            "--session",
            metavar="NAME",
            help="Continue memory session NAME (RUN_DIR/sessions/NAME.npz; made if missing): the memory keeps "
            "what it learned from earlier prompts and answers, across processes.",
        ),
    ] = None,
    reset_session: Annotated[
        bool, typer.Option("--reset-session", help="Start --session NAME over from a fresh memory.")
    ] = False,
) -> None:
    """Generate a continuation of a prompt from the latest checkpoint of RUN_DIR (cached decoding)."""
    from pathlib import Path

    from titans_train import sampling as gen
    from titans_train import sessions

    if prompt is not None and prompt_ids is not None:
        raise TitansUserError("--prompt and --prompt-ids: give one of them, not both")
    if top_p is not None and not 0 < top_p <= 1:
        raise TitansUserError(f"--top-p: must be > 0 and ≤ 1, got {top_p:g}")
    if reset_session and session is None:
        raise TitansUserError("--reset-session: name the session with --session NAME")
    if session is not None:
        sessions.session_path(Path(run_dir), session)  # a bad name is refused before the model loads
    enable_persistent_cache()
    model, spec, step, byte_level = gen.load_run_model(Path(run_dir))
    ids = None
    if prompt_ids is not None:
        try:
            ids = [int(x) for x in prompt_ids.replace(",", " ").split()]
        except ValueError:
            raise typer.BadParameter(f"not a list of integers: {prompt_ids!r}", param_hint="--prompt-ids") from None
    tokens = gen.encode_prompt(prompt, ids, byte_level=byte_level, vocab_size=spec.vocab_size)
    if top_k is not None:
        top_k = min(top_k, spec.vocab_size)
    options: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed
    )
    if session is None:
        out = gen.generate_ids(model, tokens, **options)
    else:
        out, info = gen.continue_session(Path(run_dir), session, model, step, tokens, reset=reset_session, **options)
    if ids is None:  # prompt and continuation decoded together (a character may span both)
        text = gen.decode([*tokens, *out], byte_level=True)
    else:
        text = gen.decode(tokens, byte_level=False) + " " + gen.decode(out, byte_level=byte_level)
    sys.stdout.write(text + "\n")
    if session is None:
        sys.stderr.write(f"(step {step} of {run_dir})\n")
    else:
        sys.stderr.write(
            f"(step {step} of {run_dir}; session {session!r}: {info.tokens} tokens read in {info.prompts} prompts)\n"
        )


@app.command("sessions")
@run_user_command
def sessions_command(
    run_dir: Annotated[str, typer.Argument(metavar="RUN_DIR", help="A run directory.")],
    delete: Annotated[
        list[str] | None, typer.Option("--delete", metavar="NAME", help="Delete session NAME (repeatable).")
    ] = None,
) -> None:
    """List the memory sessions of RUN_DIR (see generate --session), or delete some."""
    import datetime
    from pathlib import Path

    from titans_train import sessions

    if not (Path(run_dir) / "spec.yaml").exists():
        raise TitansUserError(f"{run_dir} is not a titans-train run directory (no spec.yaml)")
    for name in delete or []:
        if not sessions.delete_session(Path(run_dir), name):
            raise TitansUserError(f"--delete {name}: {run_dir} has no session {name!r}")
        sys.stdout.write(f"deleted session {name!r}\n")
    if delete:
        return
    found = sessions.list_sessions(Path(run_dir))
    if not found:
        sys.stdout.write(f"no sessions in {run_dir}\n")
    for item in found:
        if isinstance(item, tuple):
            sys.stdout.write(f"{item[0]}  unreadable: {item[1]}\n")
            continue
        when = datetime.datetime.fromtimestamp(item.updated).strftime("%Y-%m-%d %H:%M:%S")
        sys.stdout.write(
            f"{item.name}  step {item.step}  {item.tokens} tokens  {item.prompts} prompts  updated {when}\n"
        )


def route(argv: Sequence[str]) -> list[str]:
    """``SPEC.yaml ...`` → ``train SPEC.yaml ...``; ``--schema`` → ``schema``; command names pass through."""
    args = list(argv)
    if not args:
        return args
    if args[0] == "--schema":
        return ["schema", *args[1:]]
    if args[0] in COMMANDS or args[0] in ("--help", "-h"):
        return args
    return ["train", *args]


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point of ``titans-train``."""
    app(args=route(sys.argv[1:] if argv is None else argv), prog_name="titans-train")


if __name__ == "__main__":
    main()
