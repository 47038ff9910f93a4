"""Memory sessions (``titans_train.sessions``): a model's memory kept on disk between prompts and processes.

- ``generate_with_cache``: two calls through the returned cache equal one call whose prompt is everything so far,
  and the cache it returns continues exactly like the cache of one pass over the whole stream;
- ``titans-train generate --session``: a prompt in this process and the next in a new process give what one
  prompt of both gives; ``sessions`` lists and deletes; a session of another checkpoint step, a damaged file or a
  bad name is one ``error:`` line;
- ``titans-eval --session``: scores with every sequence continuing the session's memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from titans_attention.decoding import generate, generate_with_cache
from titans_train import sessions
from train.conftest import LINEAR_MEMORY as TRAIN_MEMORY
from train.conftest import run_cli, script_env, start_cli, toy_spec, write_spec
from train.test_eval_cli import run_eval
from variants_utils import tiny


def _rel(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))


#: a linear (depth-1) memory: a Titans memory state to carry (weights and momentum, updated per chunk), at a fraction
#: of the MLP memory's compile time
LINEAR_MEMORY = {
    "num_heads": 2,
    "rule": {"name": "momentum_scan", "chunk_size": 2},
    "model": {"name": "mlp", "depth": 1},
}


def test_generate_with_cache_continues_the_stream_exactly() -> None:
    model = tiny("mag", layers=1, memory=LINEAR_MEMORY)
    a = jnp.array([[3, 1, 4, 1, 5]], jnp.int32)
    b = jnp.array([[9, 2, 6]], jnp.int32)
    g1, cache = generate_with_cache(model, a, 4, temperature=0.0)
    g2, cache = generate_with_cache(model, b, 3, cache, temperature=0.0)
    history = jnp.concatenate([a, g1, b], axis=1)
    assert g2.tolist() == generate(model, history, 3, temperature=0.0).tolist()
    # the returned cache has read the generated tokens too: its next logits are one pass's over the whole stream
    probe = jnp.array([[7, 0]], jnp.int32)

    @nnx.jit  # both passes in one compiled program (eagerly, every op of the model compiles on its own)
    def both(model, cache, stream):
        return model.decode(probe, cache)[0], model(stream)[:, -2:]

    after, whole = both(model, cache, jnp.concatenate([history, g2, probe], axis=1))
    assert _rel(whole, after) < 1e-4
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_with_cache(model, a, 0)


def test_broadcast_cache_repeats_each_row_along_its_batch_axis() -> None:
    model = tiny("mac", layers=1, memory=LINEAR_MEMORY)
    _, cache = generate_with_cache(model, jnp.array([[1, 2, 3]], jnp.int32), 2, temperature=0.0)
    wide = sessions.broadcast_cache(model, cache, 3)
    want = jax.eval_shape(lambda: model.init_cache(3))
    assert [x.shape for x in jax.tree.leaves(wide)] == [x.shape for x in jax.tree.leaves(want)]
    toks = jnp.array([[5, 6]], jnp.int32)

    @nnx.jit  # both decodes in one compiled program (eagerly, every op of the model compiles on its own)
    def decode_both(model, cache, wide):
        return model.decode(toks, cache)[0], model.decode(jnp.repeat(toks, 3, axis=0), wide)[0]

    one, three = decode_both(model, cache, wide)
    for row in three:  # each row continues the one session (float32: another batch size rounds differently)
        assert _rel(one[0], row) < 1e-5


def test_a_saved_session_round_trips_bf16_leaves(tmp_path: Path) -> None:
    cache = {"m": jnp.arange(6, dtype=jnp.bfloat16).reshape(1, 2, 3), "pos": jnp.array([5], jnp.int32)}

    class Model:  # the cache's structure comes from the model
        def init_cache(self, batch_size):
            return {"m": jnp.zeros((batch_size, 2, 3), jnp.bfloat16), "pos": jnp.zeros((batch_size,), jnp.int32)}

    info = sessions.save_session(tmp_path, "s1", cache, step=4, ids=np.arange(7), prompts=2)
    assert (info.tokens, info.prompts, info.step) == (7, 2, 4)
    loaded, again, ids = sessions.load_session(tmp_path, "s1", Model(), 4)
    assert loaded["m"].dtype == jnp.bfloat16 and np.array_equal(np.asarray(loaded["m"]), np.asarray(cache["m"]))
    assert ids.tolist() == list(range(7)) and again.tokens == 7
    assert sessions.load_session(tmp_path, "other", Model(), 4) is None
    with pytest.raises(sessions.SessionError, match="started from checkpoint step 4, but the run's latest"):
        sessions.load_session(tmp_path, "s1", Model(), 6)

    class Wider(Model):
        def init_cache(self, batch_size):
            return {"m": jnp.zeros((batch_size, 2, 4), jnp.bfloat16), "pos": jnp.zeros((batch_size,), jnp.int32)}

    with pytest.raises(sessions.SessionError, match=r"cache leaf \['m'\] is bfloat16\[1, 2, 3\], but this model's"):
        sessions.load_session(tmp_path, "s1", Wider(), 4)
    (tmp_path / "sessions" / "s1.npz").write_bytes(b"not a zip")
    with pytest.raises(sessions.SessionError, match="s1.npz is unreadable .*--reset-session"):
        sessions.load_session(tmp_path, "s1", Model(), 4)
    with pytest.raises(sessions.SessionError, match="letters, digits"):
        sessions.session_path(tmp_path, "../escape")


def _trained(tmp_path: Path, capsys) -> Path:
    run_dir = tmp_path / "run"
    model = {
        "name": "mag",
        "d_model": 16,
        "num_layers": 1,
        "num_heads": 2,
        "window": 8,
        "ffn_hidden": 24,
        "memory": TRAIN_MEMORY,  # a Titans memory state to carry, at a fraction of the MLP memory's compile time
    }
    spec = toy_spec(run_dir, model=model, trainer={"steps": 1, "batch_size": 8, "eval_every": None, "log_every": 1})
    spec["checkpoint"] = {"every": 1, "keep": 1}
    assert run_cli(capsys, [str(write_spec(tmp_path / "spec.yaml", spec))]).code == 0
    return run_dir


@pytest.mark.slow
def test_two_prompts_in_two_processes_equal_one_prompt_of_both(tmp_path: Path, capsys) -> None:
    from titans_train.sampling import load_run_model

    run_dir = _trained(tmp_path, capsys)
    greedy = ["--temperature", "0", "-n", "5"]
    first = run_cli(capsys, ["generate", str(run_dir), "--prompt", "def f(", "--session", "s", *greedy])
    assert first.code == 0 and "session 's': 11 tokens read in 1 prompts" in first.err, first.err
    # the second prompt in a new process
    process = start_cli(
        tmp_path, ["generate", str(run_dir), "--prompt", "x):", "--session", "s", *greedy], script_env(), "second.log"
    )
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, (tmp_path / "second.log").read_text()
    assert "19 tokens read in 2 prompts" in (tmp_path / "second.log").read_text()

    model, _, step, _ = load_run_model(run_dir)
    _, info, ids = sessions.load_session(run_dir, "s", model, step)
    prompt1, prompt2 = list(b"def f("), list(b"x):")
    g1, g2 = ids[6:11].tolist(), ids[14:].tolist()
    assert ids[:6].tolist() == prompt1 and ids[11:14].tolist() == prompt2 and len(g2) == 5
    both = jnp.asarray([prompt1 + g1 + prompt2], jnp.int32)
    assert generate(model, both, 5, temperature=0.0)[0].tolist() == g2  # one prompt of both
    assert out.endswith(bytes(g2).decode("utf-8", errors="replace") + "\n")

    listed = run_cli(capsys, ["sessions", str(run_dir)])
    assert listed.code == 0 and listed.out.startswith(f"s  step {step}  19 tokens  2 prompts  updated ")
    # titans-eval from the session: every held-out window continues the session's memory
    scored = run_eval(
        capsys, [run_dir, "--task", "lm", "--session", "s", "--lm-tokens", "64", "-o", tmp_path / "e.json"]
    )
    assert scored.code == 0, scored.err
    run = json.loads((tmp_path / "e.json").read_text())["runs"][0]
    assert run["session"] == {"name": "s", "tokens": 19} and "memory" not in run["results"][0]
    fresh = run_eval(capsys, [run_dir, "--task", "lm", "--lm-tokens", "64", "-o", tmp_path / "f.json"])
    assert fresh.code == 0
    other = json.loads((tmp_path / "f.json").read_text())["runs"][0]["results"][0]
    assert run["results"][0]["bits_per_byte"] != other["bits_per_byte"]  # the carried memory changes the predictions

    reset = run_cli(
        capsys, ["generate", str(run_dir), "--prompt", "def f(", "--session", "s", "--reset-session", *greedy]
    )
    assert reset.code == 0 and reset.out == first.out and "11 tokens read in 1 prompts" in reset.err
    assert run_cli(capsys, ["sessions", str(run_dir), "--delete", "s"]).out == "deleted session 's'\n"
    assert run_cli(capsys, ["sessions", str(run_dir)]).out == f"no sessions in {run_dir}\n"


def test_session_errors_are_one_line(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "spec.yaml").write_text("model: {name: toy}\n", encoding="utf-8")
    for args, message in [
        (["generate", str(run_dir), "--prompt", "a", "--reset-session"], "--reset-session: name the session"),
        (["generate", str(run_dir), "--prompt", "a", "--session", "a/b"], "--session 'a/b': use letters"),
        (["sessions", str(run_dir), "--delete", "nope"], f"--delete nope: {run_dir} has no session 'nope'"),
        (["sessions", str(tmp_path)], f"{tmp_path} is not a titans-train run directory"),
    ]:
        result = run_cli(capsys, args)
        assert result.code == 2 and result.err.startswith("error: ") and message in result.err, result.err
        assert "Traceback" not in result.err and result.err.count("\n") == 1
    (run_dir / "sessions").mkdir()
    (run_dir / "sessions" / "bad.npz").write_bytes(b"\0")
    listed = run_cli(capsys, ["sessions", str(run_dir)])
    assert listed.code == 0 and listed.out.startswith("bad  unreadable: session file ")
