"""Training data: sources (``data_source`` components), the validation split, windows and grain pipelines."""

from titans_train.data.corpus import Corpus, DataSource
from titans_train.data.examples import ExampleSet, LabelledTask, TaskSplits
from titans_train.data.pipeline import (
    BatchLayout,
    Splits,
    TrainBatches,
    eval_batches,
    split_corpus,
    split_task,
)

__all__ = [
    "BatchLayout",
    "Corpus",
    "DataSource",
    "ExampleSet",
    "LabelledTask",
    "Splits",
    "TaskSplits",
    "TrainBatches",
    "eval_batches",
    "split_corpus",
    "split_task",
]
