"""The built-in data sources (``data_source`` components, registered in :mod:`titans_train.plugin`).

- ``text``: UTF-8 files (files, directories searched recursively, globs), sorted, concatenated; byte tokens.
- ``jsonl``: one JSON object per line; the ``field`` string of each, as UTF-8 bytes.
- ``tokens``: pre-tokenised ids: a ``.bin`` (raw ``dtype``) or ``.npy`` file, or a nanoGPT directory with
  ``train.bin`` and optionally ``val.bin`` (then used as the validation split).
- ``python_stdlib``: the ``*.py`` source of the running Python's standard library (no downloads; quickstart).

Relative paths are resolved against the current directory.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sysconfig
from pathlib import Path
from typing import Literal

from pydantic import Field
from titans_core import ComponentConfig

from titans_train.data.corpus import (
    Corpus,
    InvalidUtf8,
    check_text,
    expand_paths,
    join_documents,
    read_bytes,
    read_token_file,
)
from titans_train.errors import DataError


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} bytes"


# ----------------------------------------------------------------------------------------------------- text
class TextSourceConfig(ComponentConfig):
    """UTF-8 text files, concatenated in sorted path order; byte-level tokens."""

    paths: list[str] = Field(min_length=1, description="files, directories (searched recursively) or globs")
    suffixes: list[str] = Field(
        default_factory=list, description="keep only these suffixes inside directories/globs, e.g. ['.txt']"
    )
    on_invalid_utf8: InvalidUtf8 = Field("error", description="non-UTF-8 or binary file: error, replace or skip")
    separator: str = Field("", description="text inserted between files")


class TextSource:
    """Factory of ``text``: see :class:`TextSourceConfig`."""

    def __init__(self, config: TextSourceConfig):
        self.config = config

    def load(self) -> Corpus:
        cfg = self.config
        files = expand_paths(cfg.paths, suffixes=tuple(cfg.suffixes))
        documents = []
        for path in files:
            text = check_text(path, read_bytes(path), cfg.on_invalid_utf8)
            if text is not None:
                documents.append(text)
        if not documents:
            raise DataError(f"data: no usable text file in {', '.join(cfg.paths)}")
        tokens = join_documents(documents, cfg.separator)
        description = f"text: {len(documents)} file(s), {_size(tokens.size)}"
        return Corpus(tokens, True, description, single_file=str(files[0]) if len(files) == 1 else None)


# ---------------------------------------------------------------------------------------------------- jsonl
class JsonlSourceConfig(ComponentConfig):
    """JSON-lines files: the string ``field`` of every object, joined by ``separator``; byte-level tokens."""

    paths: list[str] = Field(min_length=1, description="files, directories or globs of .jsonl files")
    field: str = Field("text", min_length=1, description="the key holding each document's text")
    separator: str = Field("\n", description="text inserted between documents")


class JsonlSource:
    """Factory of ``jsonl``: see :class:`JsonlSourceConfig`."""

    def __init__(self, config: JsonlSourceConfig):
        self.config = config

    def _documents(self, path: Path) -> list[bytes]:
        raw = check_text(path, read_bytes(path), "error")
        assert raw is not None
        documents = []
        for number, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"data: {path}:{number}: invalid JSON ({exc.msg})") from None
            value = record.get(self.config.field) if isinstance(record, dict) else None
            if not isinstance(value, str):
                raise DataError(f"data: {path}:{number}: no string field {self.config.field!r}")
            documents.append(value.encode("utf-8"))
        if not documents:
            raise DataError(f"data: {path}: no JSON records")
        return documents

    def load(self) -> Corpus:
        files = expand_paths(self.config.paths, suffixes=(".jsonl", ".json"))
        documents = [doc for path in files for doc in self._documents(path)]
        tokens = join_documents(documents, self.config.separator)
        description = f"jsonl: {len(documents)} document(s) in {len(files)} file(s), {_size(tokens.size)}"
        return Corpus(tokens, True, description, single_file=str(files[0]) if len(files) == 1 else None)


# --------------------------------------------------------------------------------------------------- tokens
class TokensSourceConfig(ComponentConfig):
    """Pre-tokenised ids (nanoGPT layout): a .bin/.npy file, or a directory with train.bin [+ val.bin]."""

    path: str = Field(min_length=1, description="a .bin or .npy file, or a directory holding train.bin/.npy")
    val_path: str | None = Field(None, description="a separate validation file (default: val.bin in the directory)")
    dtype: Literal["uint16", "uint32"] = Field("uint16", description="item type of .bin files")
    byte_level: bool = Field(False, description="the ids are UTF-8 bytes (bits per byte, text prompts)")


class TokensSource:
    """Factory of ``tokens``: see :class:`TokensSourceConfig`."""

    def __init__(self, config: TokensSourceConfig):
        self.config = config

    @staticmethod
    def _in_dir(directory: Path, stem: str) -> Path | None:
        for suffix in (".bin", ".npy"):
            if (directory / f"{stem}{suffix}").exists():
                return directory / f"{stem}{suffix}"
        return None

    def load(self) -> Corpus:
        cfg = self.config
        path = Path(cfg.path).expanduser()
        val_path = Path(cfg.val_path).expanduser() if cfg.val_path else None
        if path.is_dir():
            train = self._in_dir(path, "train")
            if train is None:
                raise DataError(f"data: {path}: the directory holds no train.bin or train.npy")
            val_path = val_path or self._in_dir(path, "val")
            path = train
        elif not path.exists():
            raise DataError(f"data: {path}: no such file or directory")
        tokens = read_token_file(path, cfg.dtype)
        val = read_token_file(val_path, cfg.dtype) if val_path is not None else None
        description = f"tokens: {path} ({tokens.size:,} ids" + (f", validation {val_path})" if val_path else ")")
        return Corpus(tokens, cfg.byte_level, description, val_tokens=val, single_file=str(path))


# -------------------------------------------------------------------------------------------- python_stdlib
class PythonStdlibConfig(ComponentConfig):
    """The *.py source of the running Python's standard library (sysconfig 'stdlib'), sorted by path."""

    max_bytes: int | None = Field(None, ge=1, description="cap on the bytes used (a prefix in path order)")
    include_tests: bool = Field(False, description="include the test suites (test/, tests/, idle_test/)")
    on_invalid_utf8: InvalidUtf8 = Field("skip", description="a file that is not UTF-8: error, replace or skip")


_EXCLUDED_DIRS = {"site-packages", "dist-packages", "__pycache__"}
_TEST_DIRS = {"test", "tests", "idle_test"}


def stdlib_files(include_tests: bool = False) -> tuple[Path, list[Path]]:
    """The stdlib directory and its ``*.py`` files (sorted by relative path; no third-party packages)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = _EXCLUDED_DIRS if include_tests else _EXCLUDED_DIRS | _TEST_DIRS
    files: list[Path] = []
    # os.walk, not rglob: an excluded directory is not entered at all (site-packages alone can hold tens of
    # thousands of files, seconds of walking for nothing); symlinked directories are not followed, as by rglob
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        files.extend(Path(folder, n) for n in names if fnmatch.fnmatchcase(n, "*.py"))
    return root, sorted(files, key=lambda p: p.relative_to(root).as_posix())


class PythonStdlibSource:
    """Factory of ``python_stdlib``: see :class:`PythonStdlibConfig`. Deterministic for a given Python."""

    def __init__(self, config: PythonStdlibConfig):
        self.config = config

    def load(self) -> Corpus:
        cfg = self.config
        root, files = stdlib_files(cfg.include_tests)
        documents, total = [], 0
        for path in files:
            if cfg.max_bytes is not None and total >= cfg.max_bytes:
                break
            try:
                data = path.read_bytes()
            except OSError:
                continue
            text = check_text(path, data, cfg.on_invalid_utf8) if data else None
            if text is not None:
                documents.append(text)
                total += len(text)
        if not documents:
            raise DataError(f"data: python_stdlib: no Python source files found under {root}")
        tokens = join_documents(documents, "")
        if cfg.max_bytes is not None:
            tokens = tokens[: cfg.max_bytes]
        description = f"python_stdlib: {len(documents)} files under {root}, {_size(tokens.size)}"
        return Corpus(tokens, True, description)


SOURCES = {
    "text": (TextSourceConfig, TextSource),
    "jsonl": (JsonlSourceConfig, JsonlSource),
    "tokens": (TokensSourceConfig, TokensSource),
    "python_stdlib": (PythonStdlibConfig, PythonStdlibSource),
}
