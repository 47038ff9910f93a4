"""The conformance checks a plugin author runs on a registered variant (built-in or their own)::

    from titans_attention.testing import check_variant

    def test_my_variant():
        check_variant("my_variant")                  # tiny dims, crossing windows/segments/chunks
        check_variant("my_variant", attention={"name": "global"})   # options override TINY

It builds the variant through the registry (so the contracts are checked) and asserts

- **causality, exactly**: d logits_t / d x_s = 0 for every s > t (x: the embedded inputs; needs
  ``from_embeddings``, which every ``TitansLM`` has), and d logits_t / d x_t ≠ 0 so the check can fail;
- **cached decoding**: ``titans_core.testing.check_variant`` — prefill + decode (at once and token by token)
  equals the full pass, and changing later tokens leaves earlier logits unchanged.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from titans_core.registry import get_registry
from titans_core.spec import make_config
from titans_core.testing import check_variant as check_decoding

TINY: dict[str, Any] = dict(
    vocab_size=32,
    d_model=16,
    num_layers=2,
    num_heads=2,
    window=4,
    segment=4,
    num_persistent=2,
    ffn_hidden=24,
    memory={
        "num_heads": 2,
        "rule": {"name": "momentum_scan", "chunk_size": 2},
        "model": {"name": "mlp", "depth": 2, "expansion": 2.0},
    },
)
"""Small enough to be fast, with windows, segments and chunks that 10–13 tokens cross."""


def build_tiny(name: str, *, seed: int = 0, **options: Any):
    """The registered variant ``name`` with :data:`TINY` options (``options`` override them)."""
    config = make_config("variant", name, **{**TINY, **options})
    return get_registry().build(config, rngs=nnx.Rngs(seed))


def check_gradient_causality(model: Any, *, d_model: int, T: int = 10, seed: int = 0) -> None:
    """Assert d logits_t / d x_s == 0 exactly for s > t and ≠ 0 for s = t (x = the embedded inputs)."""
    x = jax.random.normal(jax.random.key(seed), (1, T, d_model))

    def summed(m, x):  # Σ_v logits_t,v for every t
        return m.from_embeddings(x)[0].sum(-1)

    # The full Jacobian, in forward mode (one tangent per input coordinate): the same T × 1 × T × D matrix as
    # reverse mode, exactly zero in the same places, and about half the compile time (no transposed scans). A
    # model with a ``jax.custom_vjp`` inside has no forward mode: reverse mode gives that one its Jacobian.
    try:
        jac = nnx.jit(lambda m, x: jax.jacfwd(lambda x: summed(m, x))(x))(model, x)
    except TypeError as error:
        if "custom_vjp" not in str(error):
            raise
        jac = nnx.jit(lambda m, x: jax.jacrev(lambda x: summed(m, x))(x))(model, x)
    dep = np.max(np.abs(np.asarray(jac)[:, 0]), axis=-1)  # out t × in s (NumPy: no small programs to compile)
    future = dep[np.triu_indices(T, k=1)]
    assert np.all(future == 0.0), f"not causal: an output depends on a later input (max {future.max():.2e})"
    assert np.all(np.diag(dep) > 0), "an output does not depend on its own input: the check cannot fail"


def _full_pass_and_dependence(model: Any, tokens_BxT: Any) -> tuple[Any, Any]:
    """The logits ``model(tokens)`` and their dependence on the embedded inputs x, max |∂ logits_(b,t,·) /
    ∂ x_(c,s,·)| (B × T × B × T), in one program: the Jacobian in forward mode beside the value (``has_aux``), or in
    reverse mode for a model with a ``jax.custom_vjp`` inside (see :func:`check_gradient_causality`)."""

    def logits(x):
        y = model.from_embeddings(x)
        return y, y

    x = model.embed(tokens_BxT)
    try:
        jac, full = jax.jacfwd(logits, has_aux=True)(x)  # B × T × V × B × T × D
    except TypeError as error:
        if "custom_vjp" not in str(error):
            raise
        jac, full = jax.jacrev(logits, has_aux=True)(x)
    return full, jnp.max(jnp.abs(jac), axis=(2, 5))


def _assert_causal_dependence(dep_BxTxBxT: np.ndarray) -> None:
    """What :func:`check_gradient_causality` asserts, on the dependence matrix of a batch: for every row b, exactly
    zero for s > t and nonzero for s = t."""
    B, T = dep_BxTxBxT.shape[:2]
    for b in range(B):
        dep = dep_BxTxBxT[b, :, b]  # out t × in s
        future = dep[np.triu_indices(T, k=1)]
        assert np.all(future == 0.0), f"not causal: an output depends on a later input (max {future.max():.2e})"
        assert np.all(np.diag(dep) > 0), "an output does not depend on its own input: the check cannot fail"


class _Compiled:
    """A model's entry points under ``nnx.jit``: compiled once per shape (run eagerly, every ``lax.scan`` inside
    would be traced and compiled again on every call).

    With ``causality``, every full pass is :func:`_full_pass_and_dependence`, and the first call asserts exact
    causality with respect to the embedded inputs on its tokens (as :func:`check_gradient_causality` does): the
    Jacobian and the full pass of the decoding checks are one compiled program instead of two."""

    def __init__(self, model: Any, *, causality: bool = False):
        self.model = model
        self._unchecked = causality
        if causality:  # every full pass (the same program for every batch of this shape)
            self._call = nnx.jit(lambda m, t: _full_pass_and_dependence(m, t))
        else:
            self._call = nnx.jit(lambda m, t: (m(t), None))
        self._prefill = nnx.jit(lambda m, t: m.prefill(t))
        self._decode = nnx.jit(lambda m, t, c: m.decode(t, c))

    def __call__(self, tokens_BxT):
        full, dep = self._call(self.model, tokens_BxT)
        if self._unchecked:  # the first call: before the decoding checks use the full pass
            _assert_causal_dependence(np.asarray(dep))
            self._unchecked = False
        return full

    def init_cache(self, batch_size: int):
        return self.model.init_cache(batch_size)

    def prefill(self, tokens_BxT):
        return self._prefill(self.model, tokens_BxT)

    def decode(self, tokens_BxT, cache):
        return self._decode(self.model, tokens_BxT, cache)


def check_registered_variant(name: str, *, T: int = 13, split: int = 5, tol: float = 1e-4, **options: Any) -> None:
    """Build ``name`` tiny (:func:`build_tiny`) and run both checks (see the module docstring).

    For a model with ``embed`` and ``from_embeddings`` (every ``TitansLM``), the exact causality check runs on the
    decoding check's own tokens, in the program that gives its full pass (:class:`_Compiled`); otherwise it is
    :func:`check_gradient_causality`, where the model has ``from_embeddings``."""
    model = build_tiny(name, **options)
    config = {**TINY, **options}
    fused = hasattr(model, "from_embeddings") and hasattr(model, "embed")
    if hasattr(model, "from_embeddings") and not fused:
        check_gradient_causality(model, d_model=config["d_model"], T=min(T, 10))
    check_decoding(_Compiled(model, causality=fused), vocab_size=config["vocab_size"], T=T, split=split, tol=tol)


def check_variant(name: str, *, T: int = 13, split: int = 5, tol: float = 1e-4, **options: Any) -> None:
    """Everything the host relies on of the registered variant ``name`` (one call; see the module docstring): it
    builds through the registry (its components' contracts), is exactly causal and decodes as the full pass."""
    check_registered_variant(name, T=T, split=split, tol=tol, **options)
