"""Locally generated synthetic evaluation tasks (pure numpy, deterministic from a seed, nothing downloaded).

* :mod:`~titans_train.tasks.niah` -- single-needle needle-in-a-haystack (S-NIAH) following RULER
  (Hsieh et al., 2024), byte level (vocabulary 256).
* :mod:`~titans_train.tasks.mqar` -- multi-query associative recall following Zoology (Arora et al., 2023),
  any vocabulary size.
* :mod:`~titans_train.tasks.scoring` -- exact match, masked accuracy and chance levels.
"""

from titans_train.tasks.mqar import (
    mqar_accuracy,
    mqar_batch,
    mqar_gap_probabilities,
    mqar_query_positions,
    validate_mqar_config,
)
from titans_train.tasks.niah import (
    NIAH_DEPTHS,
    NiahExample,
    decode_tokens,
    encode_niah_example,
    encode_text,
    make_niah_example,
    niah_dataset,
    niah_min_context_length,
    niah_training_batch,
    niah_training_sequence,
    score_niah,
)
from titans_train.tasks.scoring import (
    IGNORE_INDEX,
    accuracy,
    accuracy_stderr,
    exact_match,
    leading_match,
    masked_accuracy,
    mqar_chance_level,
    niah_chance_level,
)

__all__ = [
    "IGNORE_INDEX",
    "NIAH_DEPTHS",
    "NiahExample",
    "accuracy",
    "accuracy_stderr",
    "decode_tokens",
    "encode_niah_example",
    "encode_text",
    "exact_match",
    "leading_match",
    "make_niah_example",
    "masked_accuracy",
    "mqar_accuracy",
    "mqar_batch",
    "mqar_chance_level",
    "mqar_gap_probabilities",
    "mqar_query_positions",
    "niah_chance_level",
    "niah_dataset",
    "niah_min_context_length",
    "niah_training_batch",
    "niah_training_sequence",
    "score_niah",
    "validate_mqar_config",
]
