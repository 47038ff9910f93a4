"""Evaluation of trained runs (``titans-eval``): held-out LM loss, S-NIAH and MQAR versus context length."""

from titans_train.evaluate.report import plot_results, results_table, write_json
from titans_train.evaluate.run import EvalOptions, evaluate, plan_run
from titans_train.evaluate.scorers import (
    Predictor,
    greedy_continuations,
    heldout_lm,
    mqar_eval,
    niah_eval,
    score_mqar_examples,
    score_niah_examples,
)

__all__ = [
    "EvalOptions",
    "Predictor",
    "evaluate",
    "greedy_continuations",
    "heldout_lm",
    "mqar_eval",
    "niah_eval",
    "plan_run",
    "plot_results",
    "results_table",
    "score_mqar_examples",
    "score_niah_examples",
    "write_json",
]
