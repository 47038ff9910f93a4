"""titans_train.compile_cache: where the CLIs keep JAX's persistent compilation cache, and the opt-out."""

from __future__ import annotations

from pathlib import Path

from titans_train.compile_cache import cache_dir, enable_persistent_cache


def test_cache_dir_follows_xdg_then_home() -> None:
    assert cache_dir({"XDG_CACHE_HOME": "/x/cache", "HOME": "/h"}) == Path("/x/cache/titans/jax")
    assert cache_dir({"HOME": "/h"}) == Path("/h/.cache/titans/jax")


def test_opt_out_and_jax_own_setting_win() -> None:
    for off in ("0", "off", "False", " no "):
        assert cache_dir({"TITANS_COMPILE_CACHE": off, "HOME": "/h"}) is None
    assert cache_dir({"TITANS_COMPILE_CACHE": "1", "HOME": "/h"}) == Path("/h/.cache/titans/jax")
    assert cache_dir({"JAX_COMPILATION_CACHE_DIR": "/mine", "HOME": "/h"}) is None


def test_opted_out_changes_nothing(tmp_path: Path) -> None:
    import jax

    before = jax.config.jax_compilation_cache_dir
    assert enable_persistent_cache({"TITANS_COMPILE_CACHE": "0", "XDG_CACHE_HOME": str(tmp_path)}) is None
    assert jax.config.jax_compilation_cache_dir == before and not (tmp_path / "titans").exists()


def test_uncreatable_directory_leaves_the_cache_off(tmp_path: Path) -> None:
    import jax

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    before = jax.config.jax_compilation_cache_dir
    assert enable_persistent_cache({"XDG_CACHE_HOME": str(blocker)}) is None
    assert jax.config.jax_compilation_cache_dir == before
