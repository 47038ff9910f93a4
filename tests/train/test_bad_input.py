"""Bad specs and bad data: each is one clear ``error:`` line, exit status 2, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from train.conftest import run_cli, toy_spec, write_spec


def _set(spec: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    node = spec
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return spec


_DELETE = object()

# (id, {dotted path: value} applied to the toy spec, extra CLI args, expected fragment of the error line)
BAD_SPECS = [
    ("steps-zero", {"trainer.steps": 0}, [], "trainer.steps: must be ≥ 1, got 0"),
    ("steps-string", {"trainer.steps": "many"}, [], "trainer.steps: expected an integer, got 'many'"),
    ("unknown-key", {"trainer.stpes": 3}, [], "trainer.stpes: unknown key 'stpes'; did you mean 'steps'?"),
    ("unknown-section", {"optimiser": {"lr": 1}}, [], "unknown key 'optimiser'"),
    ("model-missing", {"model": _DELETE}, [], "model: required"),
    ("model-unknown", {"model.name": "macc"}, [], "unknown variant 'macc'"),
    ("model-option", {"model.d_model": 0}, [], "model.d_model: must be ≥ 1, got 0"),
    ("seq-len", {"data.seq_len": -1}, [], "data.seq_len: must be ≥ 1, got -1"),
    ("val-fraction", {"data.val_fraction": 1.5}, [], "data.val_fraction: must be < 1, got 1.5"),
    ("source-unknown", {"data.source": {"name": "txt"}}, [], "unknown data_source 'txt'"),
    ("source-paths-missing", {"data.source": {"name": "text"}}, [], "data.source.paths: required"),
    (
        "source-paths-type",
        {"data.source": {"name": "text", "paths": 3}},
        [],
        "data.source.paths: expected a list",
    ),
    ("lr-negative", {"optimizer.lr": -0.1}, [], "optimizer.lr: must be > 0, got -0.1"),
    (
        "no-decay-regex",
        {"optimizer.no_decay": ["("]},
        [],
        "optimizer.no_decay[0]: invalid regular expression",
    ),
    ("dtype", {"precision.compute_dtype": "float16"}, [], "precision.compute_dtype: expected 'float32' or"),
    ("mesh-product", {"mesh.data": 3}, [], "mesh: data=3 × fsdp=1 × tensor=1 = 3 devices, but 8 are used"),
    ("mesh-two-auto", {"mesh.fsdp": -1}, [], "only one mesh axis can be -1"),
    (
        "mesh-auto-indivisible",
        {"mesh.tensor": 3},
        [],
        "mesh.tensor: fsdp=1 × tensor=3 = 3 does not divide the 8 devices",
    ),
    (
        "mesh-axis-divides-dim",
        {"model.d_model": 12, "mesh.data": 1, "mesh.fsdp": 8},
        [],
        "mesh.fsdp: 8 does not divide the 'embed' axis (size 12)",
    ),
    (
        "batch-vs-data",
        {"trainer.batch_size": 12},
        [],
        "trainer.batch_size: 12 is not divisible by the data-parallel size mesh.data × mesh.fsdp = 8",
    ),
    ("grad-accum-divides", {"trainer.grad_accum": 3}, [], "trainer.grad_accum: 3 does not divide"),
    ("micro-batch-vs-data", {"trainer.grad_accum": 2}, [], "(micro-batch 4 = batch_size / grad_accum)"),
    ("rules-axis", {"mesh.rules": {"embed": "model"}}, [], "mesh.rules.embed: expected 'fsdp' or 'tensor'"),
    (
        "rules-unused",
        {"mesh.rules": {"experts": "tensor"}},
        [],
        "no parameter has the logical axis 'experts'",
    ),
    ("num-devices", {"mesh.num_devices": 16}, [], "mesh.num_devices: 16 devices asked for, but only 8 exist"),
    (
        "process-id",
        {"distributed": {"num_processes": 2, "process_id": 2}},
        [],
        "distributed.process_id: must be <",
    ),
    ("coordinator", {"distributed": {"coordinator_address": "localhost"}}, [], "expected HOST:PORT"),
    (
        "coordinator-alone",
        {"distributed": {"coordinator_address": "localhost:1234"}},
        [],
        "distributed.num_processes: required with a coordinator",
    ),
    ("keep-zero", {"checkpoint.keep": 0}, [], "checkpoint.keep: must be ≥ 1, got 0"),
    ("top-k", {"sample.top_k": 1000}, [], "sample.top_k: must be ≤ model.vocab_size = 256"),
    (
        "override-value",
        {},
        ["--set", "trainer.steps=0"],
        "--set trainer.steps=0: trainer.steps: must be ≥ 1",
    ),
    ("override-syntax", {}, ["--set", "trainer.steps"], "expected KEY.PATH=VALUE"),
    (
        "override-section-check",  # a check across the section's fields names the override, not spec.yaml:1
        {"model": {"name": "mac", "d_model": 16, "num_heads": 2}},
        ["--set", "model.num_heads=3"],
        "--set model.num_heads=3: model: num_heads (3) must divide d_model (16)",
    ),
    (
        "override-elsewhere-in-section",  # the check is not about the override: the file line
        {"model": {"name": "mac", "d_model": 16, "num_heads": 3}},
        ["--set", "model.window=8"],
        "spec.yaml:1: model: num_heads (3) must divide d_model (16)",
    ),
    (
        "mac-segment-vs-chunk",
        {"model": {"name": "mac", "d_model": 16, "num_heads": 2, "segment": 24}},
        [],
        "model: segment (24) must be a multiple of memory.rule.chunk_size (16)",
    ),
    (
        "build-error",  # rejected only when the model is built: still one line, before anything is written
        {"model": {"name": "lmm", "d_model": 16, "num_heads": 2, "memory": {"num_heads": 2}}},
        ["--set", "model.memory.alpha_per_channel=true"],
        "--set model.memory.alpha_per_channel=true: model: cannot build the model: alpha_per_channel needs",
    ),
    ("override-mesh", {}, ["--set", "mesh.data=3"], "--set mesh.data=3: mesh: data=3"),
    ("steps-bool", {"trainer.steps": True}, [], "trainer.steps: expected an integer, got true"),
    ("option-bool", {"model.d_model": False}, [], "model.d_model: expected an integer, got false"),
    ("lr-inf", {"optimizer.lr": float("inf")}, [], "optimizer.lr: must be a finite number"),
    ("override-nan", {}, ["--set", "optimizer.b1=.nan"], "--set optimizer.b1=.nan: optimizer.b1: must be a finite"),
    ("fork-from", {}, ["--fork-from", "nowhere"], "--fork-from nowhere: not a checkpoint directory"),
]


@pytest.mark.parametrize(("changes", "args", "expected"), [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS])
def test_bad_spec(tmp_path: Path, capsys, changes, args, expected) -> None:
    run_dir = tmp_path / "run"
    spec = toy_spec(run_dir)
    for dotted, value in changes.items():
        _set(spec, dotted, value)
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", spec)), *args])
    _assert_one_error(result, expected)
    assert not run_dir.exists()


def _assert_one_error(result, expected: str) -> None:
    assert result.code == 2, result
    assert "Traceback" not in result.err
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.err
    assert expected in errors[0], result.err


def test_errors_name_the_spec_line(tmp_path: Path, capsys) -> None:
    text = "model:\n  name: toy\nmesh:\n  data: 3\ntrainer:\n  steps: 0\n"
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", text))])
    assert f"error: {tmp_path / 'spec.yaml'}:6: trainer.steps: must be ≥ 1, got 0" in result.err
    text = "model:\n  name: toy\nmesh:\n  data: 3\noutput:\n  dir: " + str(tmp_path / "run") + "\n"
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", text))])
    assert f"error: {tmp_path / 'spec.yaml'}:3: mesh: data=3" in result.err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("model: [1, 2\n", "invalid YAML"), ("model:\n  name: toy\nmodel:\n  name: toy\n", "duplicate key")],
    ids=["invalid-yaml", "duplicate-key"],
)
def test_bad_yaml(tmp_path: Path, capsys, text: str, expected: str) -> None:
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", text))])
    assert result.code == 2 and expected in result.err and "Traceback" not in result.err


def test_missing_spec_file(tmp_path: Path, capsys) -> None:
    result = run_cli(capsys, [str(tmp_path / "nope.yaml")])
    _assert_one_error(result, "spec file not found")


# ------------------------------------------------------------------------------------------------- bad data
def _bin(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def _bad_data_cases(tmp: Path) -> list[tuple[str, dict[str, Any], str]]:
    (tmp / "empty_dir").mkdir()
    (tmp / "nanogpt").mkdir()
    (tmp / "nanogpt" / "val.bin").write_bytes(b"\x00\x01" * 100)
    tokens = np.arange(1000, dtype=np.uint16) % 300
    return [
        (
            "missing",
            {"name": "text", "paths": [str(tmp / "missing.txt")]},
            f"{tmp / 'missing.txt'}: no such file or directory",
        ),
        (
            "empty",
            {"name": "text", "paths": [str(_bin(tmp / "empty.txt", b""))]},
            f"{tmp / 'empty.txt'}: empty file",
        ),
        (
            "binary",
            {"name": "text", "paths": [str(_bin(tmp / "junk.txt", b"hello\x00\x01\x02" * 50))]},
            f"{tmp / 'junk.txt'}: binary data, not text (NUL byte at offset 5)",
        ),
        (
            "invalid-utf8",
            {"name": "text", "paths": [str(_bin(tmp / "latin.txt", b"caf\xe9 " * 100))]},
            f"{tmp / 'latin.txt'}: not UTF-8 text (invalid byte 0xe9 at offset 3)",
        ),
        (
            "too-short",
            {"name": "text", "paths": [str(_bin(tmp / "short.txt", b"tiny corpus"))]},
            f"{tmp / 'short.txt'}: corpus too short: its training split has 9 tokens",
        ),
        (
            "wrong-dtype",
            {"name": "tokens", "path": str(_bin(tmp / "odd.bin", b"\x01" * 1001)), "dtype": "uint16"},
            f"{tmp / 'odd.bin'}: 1001 bytes is not a multiple of 2 (the size of uint16); wrong dtype?",
        ),
        ("glob-nothing", {"name": "text", "paths": [str(tmp / "*.md")]}, "no file matches"),
        ("empty-dir", {"name": "text", "paths": [str(tmp / "empty_dir")]}, "the directory holds no files"),
        (
            "jsonl-syntax",
            {"name": "jsonl", "paths": [str(_bin(tmp / "d.jsonl", b'{"text": "a"}\n{oops\n'))]},
            f"{tmp / 'd.jsonl'}:2: invalid JSON",
        ),
        (
            "jsonl-field",
            {"name": "jsonl", "paths": [str(_bin(tmp / "f.jsonl", b'{"body": "a"}\n'))]},
            f"{tmp / 'f.jsonl'}:1: no string field 'text'",
        ),
        (
            "token-range",
            {"name": "tokens", "path": str(_bin(tmp / "big.bin", tokens.tobytes()))},
            f"{tmp / 'big.bin'}: token id 299 is outside the model's vocabulary (model.vocab_size = 256)",
        ),
        (
            "token-negative",
            {"name": "tokens", "path": str(_npy(tmp / "neg.npy", np.array([3, 1, -5] * 300, np.int32)))},
            f"{tmp / 'neg.npy'}: token id -5 is outside the model's vocabulary (model.vocab_size = 256)",
        ),
        (
            "token-ignore-index",
            {"name": "tokens", "path": str(_npy(tmp / "ign.npy", np.array([3, -100] * 300, np.int64)))},
            f"{tmp / 'ign.npy'}: token id -100 is outside the model's vocabulary",
        ),
        (
            "token-range-uint32",
            {
                "name": "tokens",
                "path": str(_bin(tmp / "u32.bin", tokens.astype(np.uint32).tobytes())),
                "dtype": "uint32",
            },
            f"{tmp / 'u32.bin'}: token id 299 is outside the model's vocabulary",
        ),
        (
            "nanogpt-no-train",
            {"name": "tokens", "path": str(tmp / "nanogpt")},
            "holds no train.bin or train.npy",
        ),
    ]


_CASE_IDS = [
    "missing",
    "empty",
    "binary",
    "invalid-utf8",
    "too-short",
    "wrong-dtype",
    "glob-nothing",
    "empty-dir",
    "jsonl-syntax",
    "jsonl-field",
    "token-range",
    "token-negative",
    "token-ignore-index",
    "token-range-uint32",
    "nanogpt-no-train",
]


@pytest.mark.parametrize("case", _CASE_IDS)
def test_bad_data(tmp_path: Path, capsys, case: str) -> None:
    cases = {c[0]: c[1:] for c in _bad_data_cases(tmp_path)}
    source, expected = cases[case]
    run_dir = tmp_path / "run"
    spec = toy_spec(run_dir, data={"source": source, "seq_len": 16, "val_fraction": 0.1})
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", spec))])
    _assert_one_error(result, expected)
    assert not run_dir.exists()


def test_validation_split_too_short(tmp_path: Path, capsys, corpus: Path) -> None:
    run_dir = tmp_path / "run"
    spec = toy_spec(run_dir, corpus, data={"val_fraction": 0.0005})
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", spec))])
    _assert_one_error(
        result,
        f"{corpus}: corpus too short: its validation split has 13 tokens "
        "(with val_fraction 0.0005), but one window needs data.seq_len + 1 = 17",
    )
    assert not run_dir.exists()


def test_default_top_k_fits_a_small_vocabulary(tmp_path: Path) -> None:
    """The default sample.top_k (40) is clamped to a small vocabulary; an explicit larger one is an error."""
    from titans_core import SpecError
    from titans_train.spec_check import load_train_spec

    small = toy_spec(tmp_path / "run", model={"name": "toy", "vocab_size": 16})
    spec, _ = load_train_spec(write_spec(tmp_path / "default.yaml", small))
    assert spec.sample.top_k == 40 and spec.vocab_size == 16
    small["sample"] = {"top_k": 40}
    with pytest.raises(SpecError, match=r"sample\.top_k: must be ≤ model\.vocab_size = 16"):
        load_train_spec(write_spec(tmp_path / "explicit.yaml", small))


# ------------------------------------------------------------------------------------------- YAML bombs
_ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_ALIAS_BOMB + "model: {name: toy}\n", "values once aliases are expanded (an alias bomb?)"),
        ("model: {name: toy}\nx: '" + "y" * (1 << 20) + "'\n", "a spec is at most 1,048,576"),
        ("model: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ("".join(" " * i + "k:\n" for i in range(1000)), "nested too deeply"),
        (  # 600 KB, no alias: refused for its size (as written), not blamed on aliases
            "model: {name: toy}\nx: [" + ", ".join(str(i) for i in range(90_000)) + "]\n",
            "more than 20,000 values in 618,913 characters; a spec is far smaller",
        ),
        ("model: {name: toy}\nx:\n" + "".join(f"- {i}\n" for i in range(90_000)), "more than 20,000 values in"),
    ],
    ids=["alias-bomb", "size-bomb", "nesting-bomb", "indent-bomb", "flat-list", "block-list"],
)
def test_yaml_bombs_are_refused_within_a_second(tmp_path: Path, capsys, text: str, expected: str) -> None:
    import time

    spec_file = write_spec(tmp_path / "spec.yaml", text)
    start = time.monotonic()
    result = run_cli(capsys, [str(spec_file)])
    assert time.monotonic() - start < 1.0
    _assert_one_error(result, expected)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--top-p", "0"], "--top-p: must be > 0 and ≤ 1, got 0"),
        (["--prompt", "a", "--prompt-ids", "1 2"], "--prompt and --prompt-ids: give one of them, not both"),
    ],
    ids=["top-p-zero", "two-prompts"],
)
def test_bad_generate_options_are_one_line(tmp_path: Path, capsys, args, expected) -> None:
    _assert_one_error(run_cli(capsys, ["generate", str(tmp_path / "run"), *args]), expected)


def test_dry_run_checks_the_run_directory(tmp_path: Path, capsys) -> None:
    """--dry-run refuses, like a real start, a run directory that holds a run of another spec (and writes nothing)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_spec(run_dir / "spec.yaml", toy_spec(run_dir, optimizer={"lr": 0.5}))
    before = sorted(p.name for p in run_dir.iterdir())
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", toy_spec(run_dir))), "--dry-run"])
    _assert_one_error(result, "holds a run with a different spec (optimizer.lr: 0.5 → 0.01)")
    assert sorted(p.name for p in run_dir.iterdir()) == before
