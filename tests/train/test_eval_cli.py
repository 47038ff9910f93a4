"""``titans-eval`` end to end (in this process) on tiny toy runs: the result JSON and its defaults, the
table, the plot, several runs, and user errors (exit status 2, one ``error:`` line, no traceback, nothing
written)."""

from __future__ import annotations

import io
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console
from titans_train.evaluate.report import FORMAT
from titans_train.evaluate.scorers import Predictor, heldout_lm, mqar_eval
from titans_train.plan import load_splits
from titans_train.sampling import load_run_model
from titans_train.spec_check import load_train_spec
from titans_train.tasks.niah import niah_min_context_length
from titans_train.tasks.niah_multi import multi_min_context_length
from titans_train.trainer import train
from train.conftest import CliResult, toy_spec
from train.toy import toy_registered

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MQAR = {"name": "mqar", "vocab_size": 64, "num_kv_pairs": 4, "num_train": 64, "num_val": 16, "seed": 3}


@dataclass(frozen=True)
class Runs:
    a: Path  # toy on a text file, 2 steps
    b: Path  # the same variant, 4 steps
    mqar: Path  # toy with vocabulary 64 on MQAR (seq_len 32, 4 key-value pairs, vocabulary 64), 2 steps
    root: Path


def _train(spec: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    loaded, locator = load_train_spec(path)
    train(loaded, locator, console=Console(file=io.StringIO()))
    return Path(spec["output"]["dir"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("eval-runs")
    words = ["def", "class", "return", "import", "self", "value", "for", "in", "if", "else"]
    lines = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(8)) for i in range(600)]
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    short = {"trainer": {"steps": 2, "eval_every": 2}, "checkpoint": {"every": 2}}
    with toy_registered():
        a = _train(toy_spec(root / "a", corpus, **short), root / "a.yaml")
        b = _train(
            toy_spec(root / "b", corpus, trainer={"steps": 4, "eval_every": 4}, checkpoint={"every": 2}),
            root / "b.yaml",
        )
        mqar = _train(
            toy_spec(root / "mqar", model={"vocab_size": 64}, data={"source": MQAR, "seq_len": 32}, **short),
            root / "mqar.yaml",
        )
    return Runs(a, b, mqar, root)


def run_eval(capsys: pytest.CaptureFixture[str], args: Sequence[str]) -> CliResult:
    """Run ``titans-eval ARGS`` in this process; its exit status and captured output."""
    from titans_train.evaluate.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def _assert_one_error(result: CliResult, expected: str) -> None:
    assert result.code == 2, result
    assert "Traceback" not in result.err and "Traceback" not in result.out
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.err
    assert expected in errors[0], result.err


def _wrote(path: Path, err: str) -> bool:
    """Whether stderr says ``wrote PATH`` (rich wraps long lines)."""
    return f"wrote{path}" in "".join(err.split())


def _files(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


# ------------------------------------------------------------------------------------------- success
def test_default_output_is_run_dir_eval_json(runs: Runs, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "copy"
    shutil.copytree(runs.a, run_dir)
    result = run_eval(capsys, [run_dir, "--contexts", "16,8", "--lm-tokens", "64"])
    assert result.code == 0, result.err
    document = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    assert document["format"] == FORMAT == "titans-eval/1"
    assert (document["seed"], document["examples"]) == (0, 40)
    (run,) = document["runs"]
    facts = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert run["variant"] == run["label"] == "toy" and run["data"] == "text"
    assert run["step"] == 2 and run["param_count"] == facts["param_count"] > 0
    assert run["run_dir"] == str(run_dir)
    assert [(r["task"], r["context"]) for r in run["results"]] == [
        ("lm", 8),
        ("lm", 16),
    ]  # the run's own task
    for r in run["results"]:
        assert r["tokens"] == 64 and r["bits_per_byte"] == pytest.approx(r["loss"] / math.log(2))
        assert 0 < r["loss"] < math.log(256) + 1
    assert "lm @8" in result.out and "lm @16" in result.out, result.out
    assert _wrote(run_dir / "eval.json", result.err)

    # the held-out text defaults to the run's validation split
    model, spec, _, _ = load_run_model(run_dir)
    direct = heldout_lm(Predictor(model), load_splits(spec).val, 16, max_tokens=64, byte_level=True)
    assert run["results"][1]["loss"] == pytest.approx(direct["loss"], rel=1e-5)


def test_context_defaults_to_the_runs_seq_len(runs: Runs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.json"
    result = run_eval(capsys, [runs.a, "--lm-tokens", "32", "-o", out])
    assert result.code == 0, result.err
    (r,) = json.loads(out.read_text())["runs"][0]["results"]
    assert (r["task"], r["context"], r["tokens"]) == ("lm", 16, 32)
    assert not (runs.a / "eval.json").exists()  # -o replaces the default output


def test_mqar_run_is_scored_on_its_own_task_and_settings(runs: Runs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "mqar.json"
    result = run_eval(capsys, [runs.mqar, "--examples", "6", "--seed", "2", "-o", out])
    assert result.code == 0, result.err
    document = json.loads(out.read_text())
    assert (document["seed"], document["examples"]) == (2, 6)
    (r,) = document["runs"][0]["results"]
    assert (r["task"], r["context"], r["num_kv_pairs"], r["n"], r["queries"]) == ("mqar", 32, 4, 6, 24)
    assert r["chance"] == pytest.approx(1 / 4) and 0 <= r["accuracy"] <= 1
    model = load_run_model(runs.mqar)[0]
    direct = mqar_eval(Predictor(model), 32, n=6, seed=2, vocab_size=64, num_kv_pairs=4)
    assert r["accuracy"] == direct["accuracy"]

    result = run_eval(capsys, [runs.mqar, "--examples", "3", "--kv-pairs", "2", "--contexts", "16,24", "-o", out])
    assert result.code == 0, result.err
    results = json.loads(out.read_text())["runs"][0]["results"]
    got = [(r["context"], r["num_kv_pairs"], r["queries"], r["examples"], r["seed"]) for r in results]
    # the first evaluation's context-32 result is kept beside the new ones, each with its own settings
    assert got == [(32, 4, 24, 6, 2), (16, 2, 6, 3, 0), (24, 2, 6, 3, 0)]


def test_heldout_text_file_replaces_the_validation_split(runs: Runs, tmp_path: Path, capsys) -> None:
    text = tmp_path / "held.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 20, encoding="utf-8")
    out = tmp_path / "lm.json"
    result = run_eval(capsys, [runs.a, "--text", text, "--contexts", "32", "--lm-tokens", "256", "-o", out])
    assert result.code == 0, result.err
    (r,) = json.loads(out.read_text())["runs"][0]["results"]
    assert (r["task"], r["context"], r["tokens"]) == ("lm", 32, 256)
    model = load_run_model(runs.a)[0]
    tokens = np.frombuffer(text.read_bytes(), dtype=np.uint8).astype(np.int32)
    direct = heldout_lm(Predictor(model), tokens, 32, max_tokens=256, byte_level=True)
    assert r["loss"] == pytest.approx(direct["loss"], rel=1e-5)
    assert r["bits_per_byte"] == pytest.approx(r["loss"] / math.log(2))

    # a task run has no validation text, but takes a file whose bytes fit its vocabulary
    result = run_eval(capsys, [runs.mqar, "--task", "lm", "--text", text, "-o", out])
    _assert_one_error(result, "--text: byte ids exceed the model's vocabulary (64)")


def test_several_runs_labels_table_and_plot(runs: Runs, tmp_path: Path, capsys) -> None:
    out, png = tmp_path / "all.json", tmp_path / "plots" / "acc.png"
    args = [runs.a, runs.b, "--task", "lm", "--task", "mqar", "--task", "lm", "--contexts", "16,32"]
    args += ["--examples", "2", "--kv-pairs", "2", "--mqar-vocab", "32", "--lm-tokens", "32"]
    args += ["-o", out, "--plot", png]
    result = run_eval(capsys, args)
    assert result.code == 0, result.err
    document = json.loads(out.read_text())
    assert [r["label"] for r in document["runs"]] == ["toy (a)", "toy (b)"]
    assert [r["step"] for r in document["runs"]] == [2, 4]
    for run in document["runs"]:
        assert [(r["task"], r["context"]) for r in run["results"]] == [
            ("lm", 16),
            ("lm", 32),
            ("mqar", 16),
            ("mqar", 32),
        ]
    # the same text, another checkpoint: a different loss
    assert document["runs"][0]["results"][0]["loss"] != document["runs"][1]["results"][0]["loss"]
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000
    for label in ("toy (a)", "toy (b)", "lm @16", "mqar @32"):
        assert label in result.out
    assert _wrote(out, result.err) and _wrote(png, result.err)


# ------------------------------------------------------------------------------------------ user errors
NIAH_MIN = niah_min_context_length()

# (id, run: a | mqar | missing | empty | nocheckpoint, extra arguments, expected fragment of the error line)
USER_ERRORS = [
    ("unknown-task", "a", ["--task", "ppl"], "--task: unknown task 'ppl' (choose from lm, niah, mqar, niah_multikey"),
    ("contexts-not-int", "a", ["--contexts", "12,x"], "--contexts: not a list of integers: '12,x'"),
    ("contexts-zero", "a", ["--contexts", "0"], "--contexts: give positive integers"),
    (
        "niah-too-short",
        "a",
        ["--task", "niah", "--contexts", f"64,{NIAH_MIN - 1}"],
        f"--contexts: S-NIAH needs contexts of at least {NIAH_MIN} bytes, got 64",
    ),
    (
        "niah-vocab",
        "mqar",
        ["--task", "niah", "--contexts", "256"],
        "S-NIAH is byte level and needs vocab_size >= 256 (the model has 64)",
    ),
    (
        "multikey-too-short",
        "a",
        ["--task", "niah_multikey", "--contexts", "300"],
        f"--contexts: niah_multikey needs contexts of at least {multi_min_context_length('niah_multikey')} bytes",
    ),
    (
        "babilong-vocab",
        "mqar",
        ["--task", "babilong", "--contexts", "512"],
        "babilong is byte level and needs vocab_size >= 256 (the model has 64)",
    ),
    ("value-kind", "a", ["--task", "niah", "--value-kind", "guid"], "--value-kind: must be number or uuid"),
    (
        "mqar-vocab",
        "mqar",
        ["--mqar-vocab", "128"],
        "--mqar-vocab 128 is larger than the model's vocabulary (64)",
    ),
    (
        "mqar-short",
        "mqar",
        ["--contexts", "8"],
        "MQAR at context 8: seq_len=8 is too short for num_kv_pairs=4",
    ),
    ("lm-no-val", "mqar", ["--task", "lm"], "the run has no held-out text split"),
    ("lm-too-long", "a", ["--contexts", "100000"], "fewer than one window of 100,001"),
    (
        "mqar-context-memory",
        "mqar",
        ["--task", "mqar", "--contexts", "1000000000"],
        "--contexts 1,000,000,000: one sequence of 1,000,000,000 tokens needs at least",
    ),
    (
        "niah-context-memory",
        "a",
        ["--task", "niah", "--contexts", "256,1000000000"],
        "--contexts 1,000,000,000: one sequence of 1,000,000,000 tokens needs at least",
    ),
    ("text-device", "a", ["--task", "lm", "--text", "/dev/zero"], "data: /dev/zero: not a regular file"),
    ("missing-run", "missing", [], "is not a titans-train run directory (no spec.yaml)"),
    ("not-a-run", "empty", [], "is not a titans-train run directory (no spec.yaml)"),
    ("no-checkpoint", "nocheckpoint", [], "has no checkpoint yet"),
]


def _run_dir(runs: Runs, tmp_path: Path, which: str) -> Path:
    if which in ("a", "mqar"):
        return getattr(runs, which)
    run_dir = tmp_path / which
    if which == "empty":
        run_dir.mkdir()
        (run_dir / "notes.txt").write_text("not a run")
    elif which == "nocheckpoint":
        run_dir.mkdir()
        shutil.copy(runs.a / "spec.yaml", run_dir / "spec.yaml")
    return run_dir


@pytest.mark.parametrize(("which", "args", "expected"), [c[1:] for c in USER_ERRORS], ids=[c[0] for c in USER_ERRORS])
def test_user_error(runs: Runs, tmp_path: Path, capsys, which: str, args: list[str], expected: str) -> None:
    run_dir = _run_dir(runs, tmp_path, which)
    before = _files(runs.root), _files(tmp_path)
    result = run_eval(capsys, [run_dir, *args])  # default output: RUN_DIR/eval.json
    _assert_one_error(result, expected)
    assert not (run_dir / "eval.json").exists()
    out = tmp_path / "out" / "eval.json"
    result = run_eval(capsys, [run_dir, *args, "-o", out, "--plot", tmp_path / "out" / "plot.png"])
    _assert_one_error(result, expected)
    assert not out.parent.exists()
    assert (_files(runs.root), _files(tmp_path)) == before  # nothing written anywhere


def test_several_runs_need_an_output(runs: Runs, capsys) -> None:
    before = _files(runs.root)
    result = run_eval(capsys, [runs.a, runs.b])
    _assert_one_error(result, "--output is required when evaluating several run directories")
    assert _files(runs.root) == before


def test_a_failure_leaves_an_existing_output_untouched(runs: Runs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval.json"
    out.write_text('{"previous": true}\n', encoding="utf-8")
    stamp = out.stat().st_mtime_ns
    # every run is checked before any is evaluated: the bad second run fails the whole command
    for args, expected in (
        ([runs.a, tmp_path / "missing"], "is not a titans-train run directory"),
        ([runs.a, runs.mqar, "--task", "mqar", "--contexts", "8"], "MQAR at context 8"),
        ([runs.a, "--task", "niah", "--contexts", str(NIAH_MIN - 1)], "S-NIAH needs contexts"),
    ):
        result = run_eval(capsys, [*args, "-o", out])
        _assert_one_error(result, expected)
        assert out.read_text(encoding="utf-8") == '{"previous": true}\n' and out.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]


def test_unwritable_outputs_fail_before_any_evaluation(runs: Runs, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "a-directory"
    folder.mkdir()
    for args, expected in (
        (["-o", folder], f"--output {folder}: is a directory, expected a file name"),
        (["-o", tmp_path / "x.json", "--plot", folder], f"--plot {folder}: is a directory"),
    ):
        result = run_eval(capsys, [runs.a, *args])
        _assert_one_error(result, expected)
        assert "eval step" not in result.err and ": lm at context" not in result.err  # nothing was evaluated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory"]


def test_default_context_too_short_for_niah_names_the_spec(runs: Runs, capsys) -> None:
    result = run_eval(capsys, [runs.a, "--task", "niah"])
    _assert_one_error(result, "data.seq_len (the default context): S-NIAH needs contexts of at least")


def test_concurrent_result_writes_are_merged_under_a_lock(tmp_path: Path) -> None:
    """Evaluations of one run written at the same time all survive in its eval.json (a new result replaces only
    the earlier one of its task and context)."""
    import threading

    from titans_train.evaluate.report import FORMAT, merge_json

    path = tmp_path / "eval.json"

    def document(context: int, accuracy: float) -> dict:
        result = {"task": "niah", "context": context, "accuracy": accuracy}
        run = {"run_dir": "r", "step": 3, "results": [result]}
        return {"format": FORMAT, "seed": 0, "examples": 4, "runs": [run]}

    threads = [threading.Thread(target=merge_json, args=(path, document(c, 0.5))) for c in range(16, 32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert merge_json(path, document(16, 1.0)) == 15
    (run,) = json.loads(path.read_text())["runs"]
    assert sorted(r["context"] for r in run["results"]) == list(range(16, 32))
    assert [r["accuracy"] for r in run["results"] if r["context"] == 16] == [1.0]


def test_results_with_other_settings_merge_and_keep_their_own(tmp_path: Path) -> None:
    """An lm evaluation with the default --examples does not drop an mqar result made with --examples 4: each
    result keeps the seed and example count it was evaluated with."""
    from titans_train.evaluate.report import FORMAT, merge_json

    path = tmp_path / "eval.json"

    def document(task: str, examples: int, seed: int) -> dict:
        run = {"run_dir": "r", "step": 3, "results": [{"task": task, "context": 64, "accuracy": 0.5}]}
        return {"format": FORMAT, "seed": seed, "examples": examples, "runs": [run]}

    merge_json(path, document("mqar", 4, 0))
    assert merge_json(path, document("lm", 40, 1)) == 1
    saved = json.loads(path.read_text())
    assert (saved["examples"], saved["seed"]) == (40, 1)  # the latest evaluation's
    got = {r["task"]: (r["examples"], r["seed"]) for r in saved["runs"][0]["results"]}
    assert got == {"mqar": (4, 0), "lm": (40, 1)}
    path.write_text('{"format": "something-else/1", "runs": []}\n')  # not a result file of this format: replaced
    assert merge_json(path, document("lm", 40, 1)) == 0


def test_haystack_tasks_smoke_with_plot(runs: Runs, tmp_path: Path, capsys) -> None:
    out, png = tmp_path / "haystack.json", tmp_path / "haystack.png"
    tasks = ["--task", "niah_multikey", "--task", "niah_multivalue", "--task", "babilong"]
    result = run_eval(capsys, [runs.a, *tasks, "--contexts", "520,600", "--examples", "2", "-o", out, "--plot", png])
    assert result.code == 0, result.err
    (run,) = json.loads(out.read_text())["runs"]
    got = {(r["task"], r["context"]): r for r in run["results"]}
    assert set(got) == {(t, c) for t in ("niah_multikey", "niah_multivalue", "babilong") for c in (520, 600)}
    for r in got.values():
        assert r["n"] == 2 and 0.0 <= r["accuracy"] <= 1.0 and len(r["samples"]) == 2
        assert sum(total for _, total in r["by_depth"].values()) == 2
    assert got["niah_multikey", 520]["chance"] == 0.25 and got["babilong", 600]["chance"] == pytest.approx(1 / 6)
    assert got["niah_multivalue", 600]["num_needles"] == 4 and "all_accuracy" in got["niah_multivalue", 600]
    assert got["babilong", 520]["num_facts"] == 4
    assert "babilong @520" in result.out and png.read_bytes().startswith(b"\x89PNG")
