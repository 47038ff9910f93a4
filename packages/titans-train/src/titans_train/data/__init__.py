"""Training data: sources (``data_source`` components), the validation split, windows and grain pipelines."""

from titans_train.data.corpus import Corpus, DataSource
from titans_train.data.pipeline import BatchLayout, Splits, TrainBatches, eval_batches, split_corpus

__all__ = ["BatchLayout", "Corpus", "DataSource", "Splits", "TrainBatches", "eval_batches", "split_corpus"]
