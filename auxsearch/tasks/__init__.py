"""Tasks: the data, the real head, the light local head and the metric of what a design learns.

``TASKS`` maps the name a design or study file gives (``task: detection``) to the task.
Each task module imports torch models and its data module; the names themselves are
plain data in :data:`auxsearch.families.TASK_NAMES` so a design validates without them.

The data module of task module ``<name>`` is ``<name>_data``; it declares ``DATASETS`` (data set
name -> :class:`DataSource`, whose ``path_keys`` say which ``data`` keys name files) and
``DEFAULT`` (the data set of a ``data`` block without ``name``). :func:`resolve_data_paths` and
:func:`data_path_keys` read those, so no list of path keys is kept anywhere else.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from ..errors import ConfigError, known
from . import data as _data
from .base import FinalHead, OutputShift, Task, level_taps
from .classification import Classification, ClassifierHead
from .classification_data import DATASETS, load_image_data
from .data import DataSource, ImageData
from .detection import Detection
from .segmentation import Segmentation
from .superres import SuperResolution

TASKS: dict[str, Task] = {t.name: t for t in (Classification(), Detection(), SuperResolution(), Segmentation())}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError("task", f"unknown task {name!r}; known: {known(TASKS)}")
    return TASKS[name]


def data_module(task_name: str) -> ModuleType:
    """The data module of a task (imported on first use: detection's pulls in pycocotools)."""
    return importlib.import_module(f"{type(get_task(task_name)).__module__}_data")


def data_path_keys(task_name: str, cfg: Mapping | None) -> tuple[str, ...]:
    """The keys of ``cfg`` (a ``data`` block of task ``task_name``) that name files or folders:
    those its data set declares (none for an unknown data set name, which the loader refuses)."""
    module = data_module(task_name)
    return _data.path_keys(module.DATASETS, cfg, module.DEFAULT)


def resolve_data_paths(task_name: str, cfg: Mapping | None, base_dir: Path | None) -> dict:
    """A copy of the ``data`` block ``cfg`` with exactly its data set's path keys, where they
    hold relative paths, made absolute against ``base_dir`` (``None``: left as they are);
    ``None`` or an empty block gives ``{}``."""
    module = data_module(task_name)
    return _data.resolve_paths(module.DATASETS, cfg, module.DEFAULT, base_dir)


__all__ = ["DATASETS", "TASKS", "ClassifierHead", "DataSource", "FinalHead", "ImageData",
           "OutputShift", "Task", "data_module", "data_path_keys", "get_task", "level_taps",
           "load_image_data", "resolve_data_paths"]
