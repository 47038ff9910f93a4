"""What a data source produces (:class:`Corpus`) and the file helpers the built-in sources share.

A ``data_source`` component is built as ``factory(config)`` and returns an object with ``load() -> Corpus``
(:class:`DataSource`). A corpus is one token stream (a 1-D integer array). A source that has its own
validation split (a nanoGPT ``val.bin``) sets ``val_tokens``; otherwise the pipeline holds out the tail of the
stream (``data.val_fraction``; see :mod:`titans_train.data.pipeline`). A synthetic task returns a
:class:`~titans_train.data.examples.LabelledTask` instead (see :mod:`titans_train.data.examples`).

Decisions on bad data (every one raises :class:`~titans_train.errors.DataError` naming the file):

- a path that does not exist, a glob or directory that matches no file, an empty file → error;
- text that is not UTF-8 → error with the file and the byte offset of the first invalid byte
  (``on_invalid_utf8: replace`` substitutes U+FFFD instead; ``skip`` drops the file — the stdlib source's
  default);
- text with a NUL byte is binary junk → error with the offset (``skip`` drops the file);
- a ``.bin`` whose size is not a multiple of the dtype's item size → error naming the dtype.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from titans_train.errors import DataError
from titans_train.resources import check_regular_file

InvalidUtf8 = Literal["error", "replace", "skip"]


@dataclass(frozen=True)
class Corpus:
    """A token stream. ``byte_level``: tokens are UTF-8 bytes (vocab 256; bits per byte; text prompts)."""

    tokens: np.ndarray
    byte_level: bool
    description: str
    val_tokens: np.ndarray | None = None
    #: The file the stream comes from when there is exactly one (named in "too short" errors).
    single_file: str | None = None


@runtime_checkable
class DataSource(Protocol):
    """What a ``data_source`` factory returns (a task returns a ``LabelledTask``; see ``data.examples``)."""

    def load(self) -> Corpus: ...


def expand_paths(patterns: list[str], *, suffixes: tuple[str, ...] = ()) -> list[Path]:
    """Files named by ``patterns`` (files, directories searched recursively, globs), sorted and de-duplicated.

    ``suffixes`` filters the files found inside directories and globs (not files named explicitly).
    """
    found: dict[str, Path] = {}
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = [Path(p) for p in sorted(glob.glob(os.path.expanduser(pattern), recursive=True))]
            files = [p for p in matches if p.is_file() and (not suffixes or p.suffix in suffixes)]
            if not files:
                raise DataError(f"data: no file matches {pattern!r}")
        else:
            path = Path(os.path.expanduser(pattern))
            if not path.exists():
                raise DataError(f"data: {pattern}: no such file or directory")
            if path.is_dir():
                files = sorted(p for p in path.rglob("*") if p.is_file() and (not suffixes or p.suffix in suffixes))
                if not files:
                    kinds = f" ({', '.join(suffixes)})" if suffixes else ""
                    raise DataError(f"data: {pattern}: the directory holds no files{kinds}")
            else:
                check_regular_file(path)  # /dev/zero, a FIFO: never read to the end
                files = [path]
        for file in files:
            found.setdefault(str(file.resolve()), file)
    return [found[key] for key in sorted(found)]


def read_bytes(path: Path) -> bytes:
    """The bytes of ``path``; DataError if unreadable or empty."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"data: {path}: cannot read: {exc.strerror or exc}") from None
    if not data:
        raise DataError(f"data: {path}: empty file")
    return data


def check_text(path: Path, data: bytes, on_invalid: InvalidUtf8) -> bytes | None:
    """``data`` if it is UTF-8 text; else per ``on_invalid``: raise, replace bad bytes (U+FFFD), or None."""
    nul = data.find(b"\x00")
    if nul >= 0:
        if on_invalid == "skip":
            return None
        raise DataError(f"data: {path}: binary data, not text (NUL byte at offset {nul})")
    try:
        data.decode("utf-8")
        return data
    except UnicodeDecodeError as exc:
        if on_invalid == "skip":
            return None
        if on_invalid == "replace":
            return data.decode("utf-8", errors="replace").encode("utf-8")
        raise DataError(
            f"data: {path}: not UTF-8 text (invalid byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "set on_invalid_utf8: replace to substitute U+FFFD"
        ) from None


def join_documents(documents: list[bytes], separator: str) -> np.ndarray:
    """The byte stream of ``documents`` joined by ``separator``, as uint8 tokens."""
    return np.frombuffer(separator.encode("utf-8").join(documents), dtype=np.uint8)


def read_token_file(path: Path, dtype: str) -> np.ndarray:
    """A pre-tokenised array: ``.npy`` (its own dtype, must be 1-D integer) or raw ``.bin`` of ``dtype``."""
    if not path.exists():
        raise DataError(f"data: {path}: no such file")
    check_regular_file(path)
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"data: {path}: empty file")
    if path.suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"data: {path}: not a readable .npy array ({exc})") from None
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise DataError(f"data: {path}: expected a 1-D integer array, got {array.dtype} of shape {array.shape}")
        if array.size == 0:
            raise DataError(f"data: {path}: empty array")
        return array
    itemsize = np.dtype(dtype).itemsize
    if size % itemsize:
        raise DataError(
            f"data: {path}: {size} bytes is not a multiple of {itemsize} (the size of {dtype}); wrong dtype?"
        )
    return np.memmap(path, dtype=dtype, mode="r")


def unigram_bits(train: np.ndarray, val: np.ndarray, vocab_size: int) -> float:
    """Bits per token of ``val`` under a unigram model of ``train`` (add-one smoothed counts over the vocabulary).

    The baseline a trained model must beat: it knows each token's frequency and nothing of its context. On a
    byte-level corpus this is bits per byte (the quickstart reports it beside the model's held-out bits per byte)."""
    counts = np.bincount(train.ravel(), minlength=vocab_size).astype(np.float64) + 1.0
    log2p = np.log2(counts / counts.sum())
    return float(-log2p[val.ravel()].mean())
