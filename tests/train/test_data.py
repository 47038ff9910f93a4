"""Data sources and the grain pipeline: determinism, splits, windows, process rows, iterator state."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import pytest
from titans_core import get_registry, make_config
from titans_train.data import BatchLayout, Corpus, TrainBatches, eval_batches, split_corpus
from titans_train.data.pipeline import Windows
from titans_train.data.sources import stdlib_files
from titans_train.errors import DataError


def _load(name: str, **options):
    return get_registry().build(make_config("data_source", name, **options)).load()


def test_sources_are_registered() -> None:
    assert {"text", "jsonl", "tokens", "python_stdlib"} <= set(get_registry().names("data_source"))


def test_text_source_files_dirs_globs(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("bbb")
    (tmp_path / "d" / "sub" / "a.txt").write_text("aaa")
    (tmp_path / "d" / "skip.md").write_text("mmm")
    (tmp_path / "c.txt").write_text("ccé")
    corpus = _load("text", paths=[str(tmp_path / "d"), str(tmp_path / "*.txt")], suffixes=[".txt"], separator="|")
    assert bytes(corpus.tokens) == "ccé|bbb|aaa".encode()  # sorted by resolved path, de-duplicated
    assert corpus.byte_level and corpus.tokens.dtype == np.uint8


def test_invalid_utf8_replace_and_skip(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"ab\xffcd")
    (tmp_path / "good.txt").write_text("ok")
    replaced = _load("text", paths=[str(tmp_path / "bad.txt")], on_invalid_utf8="replace")
    assert bytes(replaced.tokens).decode() == "ab\ufffdcd"
    skipped = _load("text", paths=[str(tmp_path)], on_invalid_utf8="skip")
    assert bytes(skipped.tokens) == b"ok"


def test_jsonl_source(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n{"text": "two", "x": 1}\n')
    corpus = _load("jsonl", paths=[str(tmp_path / "a.jsonl")])
    assert bytes(corpus.tokens) == b"one\ntwo"


def test_tokens_source_bin_npy_and_nanogpt_dir(tmp_path: Path) -> None:
    ids = np.arange(100, dtype=np.uint32) * 1000
    (tmp_path / "t.bin").write_bytes(ids.tobytes())
    np.testing.assert_array_equal(_load("tokens", path=str(tmp_path / "t.bin"), dtype="uint32").tokens, ids)
    np.save(tmp_path / "t.npy", ids.astype(np.int64))
    np.testing.assert_array_equal(_load("tokens", path=str(tmp_path / "t.npy")).tokens, ids)
    (tmp_path / "ng").mkdir()
    (tmp_path / "ng" / "train.bin").write_bytes(np.arange(50, dtype=np.uint16).tobytes())
    (tmp_path / "ng" / "val.bin").write_bytes(np.arange(20, dtype=np.uint16).tobytes())
    corpus = _load("tokens", path=str(tmp_path / "ng"))
    assert corpus.tokens.size == 50 and corpus.val_tokens is not None and corpus.val_tokens.size == 20
    assert not corpus.byte_level
    splits = split_corpus(corpus, seq_len=8, val_fraction=0.5, vocab_size=256)
    assert splits.train.size == 50 and splits.val.size == 20  # the source's own split wins


def test_python_stdlib_is_sorted_capped_and_has_no_third_party_code() -> None:
    root, files = stdlib_files()
    assert root == Path(sysconfig.get_paths()["stdlib"])
    relative = [f.relative_to(root).as_posix() for f in files]
    assert relative == sorted(relative) and "os.py" in relative
    assert not any("site-packages" in r or r.startswith("test/") for r in relative)
    a = _load("python_stdlib", max_bytes=30_000)
    b = _load("python_stdlib", max_bytes=30_000)
    assert a.tokens.size == 30_000 and np.array_equal(a.tokens, b.tokens)
    assert bytes(a.tokens[:30]) == files[0].read_bytes()[:30]


def test_validation_split_is_the_tail() -> None:
    corpus = Corpus(np.arange(1000, dtype=np.uint16) % 250, False, "numbers")
    splits = split_corpus(corpus, seq_len=10, val_fraction=0.1, vocab_size=256)
    assert splits.train.size == 900 and splits.val.size == 100
    np.testing.assert_array_equal(splits.val, corpus.tokens[900:])
    with pytest.raises(DataError, match="outside the model's vocabulary"):
        split_corpus(corpus, seq_len=10, val_fraction=0.1, vocab_size=100)


def test_windows_share_one_token() -> None:
    windows = Windows(np.arange(21), 5)
    assert len(windows) == 4
    np.testing.assert_array_equal(windows[0], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(windows[1], [5, 6, 7, 8, 9, 10])
    assert windows[3][-1] == 20


def _stream(layout: BatchLayout, n: int, seed: int = 0, tokens: np.ndarray | None = None) -> list[np.ndarray]:
    tokens = np.arange(2000, dtype=np.int32) if tokens is None else tokens
    batches = TrainBatches(tokens, 8, layout, seed=seed, shuffle=True)
    return [next(batches) for _ in range(n)]


def test_shuffling_is_deterministic_and_seeded() -> None:
    layout = BatchLayout(6, 1, 0, 6)
    first, again, other = _stream(layout, 5), _stream(layout, 5), _stream(layout, 5, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    starts = np.concatenate([b[0, :, 0] for b in first])
    assert len(set(starts.tolist())) == len(starts)  # no window twice within an epoch
    assert first[0].shape == (1, 6, 9) and first[0].dtype == np.int32


def test_epochs_are_reshuffled() -> None:
    layout = BatchLayout(4, 1, 0, 4)
    tokens = np.arange(33, dtype=np.int32)  # 4 windows: one batch per epoch
    epochs = [tuple(b[0, :, 0]) for b in _stream(layout, 4, tokens=tokens)]
    assert all(sorted(e) == [0, 8, 16, 24] for e in epochs) and len(set(epochs)) > 1


def test_process_rows_reassemble_the_global_batch() -> None:
    whole = _stream(BatchLayout(8, 2, 0, 4), 3)
    halves = [_stream(BatchLayout(8, 2, lo, lo + 2), 3) for lo in (0, 2)]
    for step in range(3):
        np.testing.assert_array_equal(np.concatenate([h[step] for h in halves], axis=1), whole[step])


def test_iterator_state_resumes_exactly() -> None:
    layout = BatchLayout(4, 1, 0, 4)
    batches = TrainBatches(np.arange(500, dtype=np.int32), 8, layout, seed=3, shuffle=True)
    for _ in range(3):
        next(batches)
    state = batches.get_state()
    expected = [next(batches) for _ in range(4)]
    fresh = TrainBatches(np.arange(500, dtype=np.int32), 8, layout, seed=3, shuffle=True)
    fresh.set_state(state)
    assert state == {"next_index": 3}
    assert all(np.array_equal(a, next(fresh)) for a in expected)


def test_eval_batches_are_fixed_and_wrap() -> None:
    layout = BatchLayout(4, 1, 0, 4)
    batches = eval_batches(np.arange(30, dtype=np.int32), 5, layout, max_batches=3)
    assert len(batches) == 1  # 5 windows: one batch, indices wrap
    np.testing.assert_array_equal(batches[0][0, :, 0], [0, 5, 10, 15])
    assert len(eval_batches(np.arange(300, dtype=np.int32), 5, layout, max_batches=3)) == 3
