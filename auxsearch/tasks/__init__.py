"""Tasks: the data, the real head, the light local head and the metric of what a design learns.

``TASKS`` maps the name a design or study file gives (``task: detection``) to the task.
Each task module imports torch models and its data module; the names themselves are
plain data in :data:`auxsearch.families.TASK_NAMES` so a design validates without them.
"""

from __future__ import annotations

from ..errors import ConfigError, known
from .base import FinalHead, OutputShift, Task, level_taps
from .classification import Classification, ClassifierHead
from .classification_data import DATASETS, ImageData, load_image_data
from .detection import Detection
from .segmentation import Segmentation
from .superres import SuperResolution

TASKS: dict[str, Task] = {t.name: t for t in (Classification(), Detection(), SuperResolution(), Segmentation())}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError("task", f"unknown task {name!r}; known: {known(TASKS)}")
    return TASKS[name]


__all__ = ["DATASETS", "TASKS", "ClassifierHead", "FinalHead", "ImageData", "OutputShift", "Task",
           "get_task", "level_taps", "load_image_data"]
