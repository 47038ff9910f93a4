"""Test oracle for the short-term-memory attention: dense float64 NumPy attention over an explicit
T x (P + T [+ T]) boolean mask built with plain loops, independent of the blocked code under test."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


def swa_mask(T: int, window: int) -> np.ndarray:
    """m[i, j] = i − window < j ≤ i."""
    m = np.zeros((T, T), bool)
    for i in range(T):
        for j in range(T):
            m[i, j] = i - window < j <= i
    return m


def segment_mask(T: int, segment: int) -> np.ndarray:
    """m[i, j] = j ≤ i and i, j in the same segment [nS, (n+1)S)."""
    m = np.zeros((T, T), bool)
    for i in range(T):
        for j in range(T):
            m[i, j] = j <= i and i // segment == j // segment
    return m


def leaky_segment_prefix_mask(T: int, segment: int) -> np.ndarray:
    """The *wrong* MAC prefix mask of a public implementation: every token sees every h row of its segment."""
    m = np.zeros((T, T), bool)
    for i in range(T):
        for j in range(T):
            m[i, j] = i // segment == j // segment
    return m


def dense_attention(q, k, v, mask_TxK, pk=None, pv=None, hk=None, hv=None, prefix_mask_TxT=None):
    """softmax(q kᵀ/√Dh) v over [persistent ‖ tokens ‖ prefix rows] with the given masks, in float64."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    B, T, H, Dh = q.shape
    keys, vals, masks = [], [], []
    if pk is not None and pk.shape[0] > 0:
        P = pk.shape[0]
        keys.append(np.broadcast_to(np.asarray(pk, np.float64), (B, P, H, Dh)))
        vals.append(np.broadcast_to(np.asarray(pv, np.float64), (B, P, H, Dh)))
        masks.append(np.ones((T, P), bool))
    keys.append(k)
    vals.append(v)
    masks.append(mask_TxK)
    if hk is not None:
        keys.append(np.asarray(hk, np.float64))
        vals.append(np.asarray(hv, np.float64))
        masks.append(prefix_mask_TxT)
    K, V, M = np.concatenate(keys, 1), np.concatenate(vals, 1), np.concatenate(masks, 1)
    s = np.einsum("bthd,bshd->bhts", q, K) / np.sqrt(Dh)
    s = np.where(M[None, None], s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", p, V)


def assert_close(actual, expected, rtol: float = 1e-5) -> None:
    """Element-wise relative tolerance; absolute floor rtol · max|expected| for entries near zero."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(np.abs(expected).max(), 1e-30))


@pytest.fixture(scope="session")
def oracle():
    return SimpleNamespace(
        swa_mask=swa_mask,
        segment_mask=segment_mask,
        leaky_segment_prefix_mask=leaky_segment_prefix_mask,
        dense_attention=dense_attention,
        assert_close=assert_close,
    )
