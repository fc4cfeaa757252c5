"""Tasks: the data, the real head, the light local head and the metric computation of what a design learns.

:func:`get_task` maps the name a design or study file gives (``task: detection``) to the task's
implementation, imported on first use (detection and segmentation pull in torchvision's
detection models, which a classification run never needs). What is known of a task without
building it (metric, dense, simulatable, head arguments) is its spec in
:data:`auxsearch.design.tasks.TASKS`, the one registry of tasks.

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

from auxsearch.design.tasks import TASKS as _SPECS
from auxsearch.errors import ConfigError, known
from auxsearch.tasks import data as _data
from auxsearch.tasks.base import FinalHead, OutputShift, Task, level_taps
from auxsearch.tasks.data import DataSource, ImageData

# task name -> "module:class" of its implementation (every name of the task registry has one; a test checks)
_IMPLEMENTATIONS = {"classification": "auxsearch.tasks.classification:Classification",
                    "detection": "auxsearch.tasks.detection:Detection",
                    "superres": "auxsearch.tasks.superres:SuperResolution",
                    "segmentation": "auxsearch.tasks.segmentation:Segmentation"}
_LOADED: dict[str, Task] = {}


def get_task(name: str) -> Task:
    """The implementation of task ``name`` (one instance per process)."""
    if name not in _LOADED:
        if name not in _SPECS or name not in _IMPLEMENTATIONS:
            raise ConfigError("task", f"unknown task {name!r}; known: {known(_SPECS)}")
        module, _, cls = _IMPLEMENTATIONS[name].partition(":")
        _LOADED[name] = getattr(importlib.import_module(module), cls)()
    return _LOADED[name]


def task_names() -> tuple[str, ...]:
    return tuple(_SPECS)


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


__all__ = ["DataSource", "FinalHead", "ImageData", "OutputShift", "Task", "data_module", "data_path_keys",
           "get_task", "level_taps", "resolve_data_paths", "task_names"]
