"""Datasets: the registry, image and tabular loaders, splits, and the encoding shared with serving.

Owns everything between a dataset's name or file and the split arrays the model trains on.
"""

from __future__ import annotations

from tuning.data.dataset import CLASSIFICATION, TASKS, Dataset, Task
from tuning.data.registry import DATASETS, DatasetInfo, load_dataset, task_of
from tuning.data.tabular import FILE_SUFFIXES

__all__ = [
    "CLASSIFICATION",
    "DATASETS",
    "FILE_SUFFIXES",
    "TASKS",
    "Dataset",
    "DatasetInfo",
    "Task",
    "load_dataset",
    "task_of",
]
