"""A run directory is never shared or silently corrupted, and faults end in one clear line.

The lock of a run directory, stopping on SIGINT/SIGTERM, unwritable directories (read-only file systems are
simulated: the tests run as root, which ignores permissions), prompts of non-UTF-8 bytes.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from train.conftest import losses, metrics, run_cli, run_cli_in_fixture, toy_spec, write_spec
from train.test_bad_input import _assert_one_error

#: Holds the lock of the run directory argv[1] until killed.
LOCK_HOLDER = (
    "import sys, time\n"
    "from titans_train.lock import RunLock\n"
    "lock = RunLock(sys.argv[1]).acquire()\n"
    "print('LOCKED', flush=True)\n"
    "time.sleep(600)\n"
)


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "LOCKED"
    return holder


def test_second_process_on_a_run_dir_is_refused_with_the_holders_pid(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    holder = _hold_lock(run_dir)
    try:
        result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", toy_spec(run_dir)))])
        _assert_one_error(result, f"output.dir {run_dir} is in use by process {holder.pid}")
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_exclusive_within_a_process_too(tmp_path: Path) -> None:
    from titans_train.errors import RunDirError
    from titans_train.lock import RunLock

    with RunLock(tmp_path / "run"):
        with pytest.raises(RunDirError, match=f"in use by process {os.getpid()}"):
            RunLock(tmp_path / "run").acquire()
    assert not (tmp_path / "run").exists()  # the lock made the directory; nothing else used it


def test_file_system_without_locks_runs_with_a_warning(tmp_path: Path, monkeypatch) -> None:
    import fcntl

    from titans_train.lock import RunLock

    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with RunLock(tmp_path / "run") as lock:
        assert "nothing stops a second run here" in (lock.stale_note() or "")
    assert not (tmp_path / "run").exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    dead = _hold_lock(run_dir)
    dead.kill()  # SIGKILL: its lock file stays behind, its flock is gone
    dead.wait()
    assert (run_dir / ".lock").read_text().split()[0] == str(dead.pid)
    result = run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", toy_spec(run_dir)))])
    assert result.code == 0, result.err
    assert f"warning: took over the stale lock {run_dir / '.lock'} of process {dead.pid}" in result.err
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3, 4, 5, 6]
    assert not (run_dir / ".lock").exists()  # released when the run ends


def _read_only_under(monkeypatch, root: Path) -> None:
    """Make creating files and directories below ``root`` fail as on a read-only file system."""
    real_open, real_mkdir = os.open, os.mkdir

    def check(path) -> None:
        if str(os.fspath(path)).startswith(str(root)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def ro_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            check(path)
        return real_open(path, flags, *args, **kwargs)

    def ro_mkdir(path, *args, **kwargs):
        check(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "mkdir", ro_mkdir)


@pytest.mark.parametrize("exists", [False, True], ids=["new-dir", "existing-dir"])
def test_read_only_output_dir_is_one_line_naming_the_path(tmp_path: Path, capsys, monkeypatch, exists: bool) -> None:
    run_dir = tmp_path / "ro" / "run"
    if exists:
        run_dir.mkdir(parents=True)
    spec_file = write_spec(tmp_path / "spec.yaml", toy_spec(run_dir))
    _read_only_under(monkeypatch, tmp_path / "ro")
    result = run_cli(capsys, [str(spec_file)])
    _assert_one_error(result, f"output.dir {run_dir}: cannot write there")
    assert "Read-only file system" in result.err


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of a finished default toy run (6 steps, evals and checkpoints at 3 and 6): read only, tests
    copy it or compare with its losses."""
    root = tmp_path_factory.mktemp("default-run")
    result = run_cli_in_fixture([str(write_spec(root / "spec.yaml", toy_spec(root / "run")))])
    assert result.code == 0, result.err
    return root / "run"


def test_plot_of_a_read_only_run_is_one_line(tmp_path: Path, capsys, monkeypatch, default_run: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(default_run, run_dir)
    _read_only_under(monkeypatch, run_dir)
    result = run_cli(capsys, ["plot", str(run_dir)])
    _assert_one_error(result, f"cannot write the plots: {run_dir / 'plots'}: Read-only file system")


def test_generate_with_a_non_utf8_prompt_works_at_byte_level(tmp_path: Path, capsys, default_run: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(default_run, run_dir)
    prompt = b"\xff\xfedef ".decode("utf-8", errors="surrogateescape")  # how Python hands such argv over
    result = run_cli(capsys, ["generate", str(run_dir), "--prompt", prompt, "-n", "4", "--temperature", "0"])
    assert result.code == 0, result.err
    assert result.out.startswith("\ufffd\ufffddef ") and "Traceback" not in result.err


@pytest.mark.parametrize(
    ("signum", "times"),
    [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGINT, 2)],
    ids=["SIGINT", "SIGTERM", "SIGINT-twice-at-once"],
)
def test_signal_finishes_the_step_saves_and_exits_130(
    tmp_path: Path, capsys, monkeypatch, signum, times, default_run: Path
) -> None:
    """The signal arrives while step 4 is logged: step 4 completes, is checkpointed, and the rerun continues
    exactly (same losses, no duplicated or missing metrics). The same signal twice within milliseconds is one
    request: ``uv run`` forwards SIGINT to its child while a signal to the process group reaches the child too."""
    from titans_train.rundir import RunDir

    straight = default_run  # the same spec trained in one go

    run_dir = tmp_path / "run"
    spec_file = write_spec(tmp_path / "spec.yaml", toy_spec(run_dir))
    original_log = RunDir.log

    def log(self, record):
        original_log(self, record)
        if record["kind"] == "train" and record["step"] == 4:
            for _ in range(times):
                os.kill(os.getpid(), signum)

    monkeypatch.setattr(RunDir, "log", log)
    result = run_cli(capsys, [str(spec_file)])
    assert result.code == 130, result.err
    lines = [line for line in result.err.splitlines() if line.startswith("interrupted:")]
    assert lines == [
        f"interrupted: {signal.Signals(signum).name}: stopped after step 4; checkpoint saved in "
        f"{run_dir / 'checkpoints' / '4'}; run the same command to continue"
    ]
    assert (run_dir / "checkpoints" / "4").is_dir() and "Traceback" not in result.err
    assert signal.getsignal(signum) is not None  # handlers restored
    monkeypatch.setattr(RunDir, "log", original_log)

    resumed = run_cli(capsys, [str(spec_file)])
    assert resumed.code == 0, resumed.err
    assert f"resumed {run_dir} at step 4" in resumed.out
    assert losses(run_dir) == losses(straight)
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in metrics(run_dir, "eval")] == [3, 6]


def test_a_second_signal_stops_at_once_with_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    """SIGTERM then SIGINT while step 4 is logged: one ``interrupted:`` line, exit 130, no traceback; the last
    complete checkpoint (3) is intact and the rerun continues from it."""
    from titans_train.rundir import RunDir

    run_dir = tmp_path / "run"
    spec_file = write_spec(tmp_path / "spec.yaml", toy_spec(run_dir))
    original_log = RunDir.log
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def log(self, record):
        original_log(self, record)
        if record["kind"] == "train" and record["step"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(RunDir, "log", log)
    try:
        result = run_cli(capsys, [str(spec_file)])
    finally:
        for signum, handler in handlers.items():  # a third signal would end this process at once
            signal.signal(signum, handler)
    assert result.code == 130, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert lines == [
        "interrupted: SIGINT again: stopped at once; the last complete checkpoint (if any) is kept, rerun to continue"
    ], result.err
    monkeypatch.setattr(RunDir, "log", original_log)
    resumed = run_cli(capsys, [str(spec_file)])
    assert resumed.code == 0 and f"resumed {run_dir} at step 3" in resumed.out, resumed.err
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3, 4, 5, 6]


def test_changed_training_data_is_refused_on_resume(tmp_path: Path, capsys, corpus: Path) -> None:
    """The corpus shrank between two starts: the resume is one line (run.json's data facts), nothing written."""
    run_dir = tmp_path / "run"
    spec_file = write_spec(tmp_path / "spec.yaml", toy_spec(run_dir, corpus, trainer={"steps": 3}))
    assert run_cli(capsys, [str(spec_file)]).code == 0
    corpus.write_text(corpus.read_text(encoding="utf-8")[: corpus.stat().st_size // 2], encoding="utf-8")
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    result = run_cli(capsys, [str(spec_file), "--set", "trainer.steps=6"])
    _assert_one_error(result, "the training data changed since this run started (train_tokens: ")
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before


def test_a_run_saved_before_new_options_existed_still_resumes(tmp_path: Path) -> None:
    """Options added since a run was saved take their defaults when the saved spec is compared, except those whose
    default changed since (``PAST_DEFAULTS``): they take the value the run used."""
    import yaml
    from titans_core import dump_spec
    from titans_train.errors import RunDirError
    from titans_train.rundir import inspect_run_dir
    from titans_train.spec_check import load_train_spec

    spec = load_train_spec(Path(__file__).resolve().parents[2] / "specs" / "quickstart.yaml")[0]
    assert spec.model.memory.rule.read == "token"  # today's default
    saved = yaml.safe_load(dump_spec(spec))
    del saved["model"]["memory"]["objective"]  # not in the schema when the run was saved
    del saved["model"]["memory"]["rule"]["read"]  # nor this: such a run read with `chunk`
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
    with pytest.raises(RunDirError, match=r"model.memory.rule.read: 'chunk' → 'token'"):
        inspect_run_dir(tmp_path, spec)
    rule = spec.model.memory.rule.model_copy(update={"read": "chunk"})
    as_run = spec.model_copy(
        update={"model": spec.model.model_copy(update={"memory": spec.model.memory.model_copy(update={"rule": rule})})}
    )
    assert inspect_run_dir(tmp_path, as_run) is True
    wider = as_run.model.model_copy(update={"d_model": spec.model.d_model * 2})
    changed = as_run.model_copy(update={"model": wider})
    with pytest.raises(RunDirError, match="model.d_model"):
        inspect_run_dir(tmp_path, changed)


def test_upgrade_saved_spec_fills_only_what_is_missing() -> None:
    """A saved spec without ``rule.read`` gets the value its run used; one that has it, or has no memory, is kept."""
    from titans_train.rundir import upgrade_saved_spec
    from titans_train.sampling import _upgraded

    old = {"model": {"name": "mac", "memory": {"rule": {"name": "momentum_scan"}}}}
    assert upgrade_saved_spec(old)["model"]["memory"]["rule"]["read"] == "chunk"
    assert upgrade_saved_spec(old)["model"]["mac_write"] == "y"  # MAC wrote y before `mac_write` existed
    mag = {"model": {"name": "mag", "memory": {"rule": {"name": "momentum_scan", "read": "token"}}}}
    assert upgrade_saved_spec(mag) == mag  # mac_write is MAC's alone
    assert "read" not in old["model"]["memory"]["rule"]  # a copy, the input is untouched
    new = {"model": {"name": "mac", "mac_write": "x+y", "memory": {"rule": {"name": "momentum_scan", "read": "token"}}}}
    assert upgrade_saved_spec(new) == new
    assert upgrade_saved_spec({"model": {"name": "swa"}}) == {"model": {"name": "swa"}}
    assert upgrade_saved_spec(["not", "a", "spec"]) == ["not", "a", "spec"]
    text = "model:\n  memory:\n    rule: {name: momentum_scan}\n"
    assert "read: chunk" in _upgraded(text)
    assert _upgraded("model: {name: swa}\n") == "model: {name: swa}\n"  # unchanged text when nothing is missing
    assert _upgraded("model: [unclosed\n") == "model: [unclosed\n"  # parse_spec reports a broken file
