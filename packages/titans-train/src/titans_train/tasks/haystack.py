"""Shared haystack code of the needle tasks (:mod:`.niah_multi`, :mod:`.babilong`): several pieces of text
inserted into RULER's noise haystack at chosen depths.

The haystack and the sentence-fitting rule are those of :mod:`titans_train.tasks.niah` (whole noise sentences,
each charged its joining space); :func:`insert_at_depths` generalises its single-needle insertion: each piece
goes to the sentence boundary closest to its depth (ties to the earlier boundary), and pieces that land on the
same boundary keep the order of their depths.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from titans_train.tasks.niah import HAYSTACK_SENTENCES, _num_sentences_fitting


def noise_sentences(budget: int) -> list[str]:
    """As many cycled noise sentences as fit in ``budget`` bytes (each sentence + one joining space)."""
    n = _num_sentences_fitting(budget)
    return [HAYSTACK_SENTENCES[i % len(HAYSTACK_SENTENCES)] for i in range(n)]


def insert_at_depths(sentences: Sequence[str], pieces: Sequence[tuple[float, str]]) -> tuple[str, list[int]]:
    """``" ".join`` of ``sentences`` with each ``(depth, text)`` of ``pieces`` inserted at the boundary closest to
    fraction ``depth`` of the haystack (in bytes). Returns the text and each piece's byte offset, in the order
    of ``pieces``."""
    offsets = np.concatenate([[0], np.cumsum([len(s) + 1 for s in sentences])])  # boundary k -> byte offset
    boundary = [int(np.argmin(np.abs(offsets - depth * offsets[-1]))) for depth, _ in pieces]
    order = sorted(range(len(pieces)), key=lambda i: (boundary[i], pieces[i][0], i))
    parts: list[str] = []
    starts = [0] * len(pieces)
    position, j = 0, 0
    for k in range(len(sentences) + 1):
        while j < len(order) and boundary[order[j]] == k:
            i = order[j]
            starts[i] = position
            parts.append(pieces[i][1])
            position += len(pieces[i][1]) + 1
            j += 1
        if k < len(sentences):
            parts.append(sentences[k])
            position += len(sentences[k]) + 1
    return " ".join(parts), starts
