"""The one registry of tasks, torch-free: what validation, the search and the outputs know of a task.

A task's implementation (data, real head, light local head, metric computation) lives in
``auxsearch.tasks.<name>`` and is looked up by the same name (``auxsearch.tasks.get_task``);
everything a design file, a study or a table needs without building a network is here, so
``task: detection`` validates, hashes and chooses its sampler without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from auxsearch.errors import ConfigError, known


@dataclass(frozen=True)
class TaskSpec:
    """What validation and the search need to know of a task, without building it."""

    name: str  # the YAML name (``task: detection``)
    metric: str  # the validation score the search maximises (accuracy, map, psnr, miou)
    dense: bool  # aux nets end with the task's light head, not a family's own classifier
    simulatable: bool = True  # can a training step run on fake tensors (no data-dependent shapes)?
    args: Mapping[str, Any] = field(default_factory=dict)  # the real head's arguments, with defaults
    positive_args: tuple[str, ...] = ()  # those of ``args`` that must be integers >= 1


# The arguments of each task's real head, with their defaults (filled into every design so
# that ``task: detection`` and ``{name: detection, args: {levels: 2}}`` hash the same).
TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("classification", "accuracy", dense=False),
    TaskSpec("detection", "map", dense=True, simulatable=False,  # FCOS's target assignment: data-dependent shapes
             args={"levels": 2, "fpn_channels": 64, "head_convs": 2, "score_thresh": 0.05, "nms_thresh": 0.6,
                   "detections_per_img": 100},
             positive_args=("levels", "fpn_channels", "head_convs", "detections_per_img")),
    TaskSpec("superres", "psnr", dense=True, args={"scale": 2}),
    TaskSpec("segmentation", "miou", dense=True, args={"levels": 3, "decoder_channels": 64},
             positive_args=("levels", "decoder_channels")),
)}


def task_spec(name: str | TaskSpec) -> TaskSpec:
    """The spec of task ``name`` (a spec is returned as it is)."""
    if isinstance(name, TaskSpec):
        return name
    if name not in TASKS:
        raise ConfigError("task", f"unknown task {name!r}; known: {known(TASKS)}")
    return TASKS[name]


def canonical_task(t: Any) -> dict[str, Any]:
    """``{name, args}`` with every argument's default filled; a bare name is accepted, classification is
    the default. Unknown arguments and arguments that break their rule are refused."""
    if t is None:
        t = "classification"
    if isinstance(t, str):
        t = {"name": t}
    if not isinstance(t, Mapping) or not isinstance(t.get("name"), str) or t["name"] not in TASKS \
            or set(t) - {"name", "args"}:
        raise ConfigError("task", f"must be one of {known(TASKS)} or {{name: ..., args: {{...}}}}, got {t!r}")
    args = t.get("args") or {}
    if not isinstance(args, Mapping):
        raise ConfigError("task.args", f"must be a mapping, got {args!r}")
    spec = TASKS[t["name"]]
    unknown = sorted(set(args) - set(spec.args))
    if unknown:
        raise ConfigError(f"task.args.{unknown[0]}", f"unknown argument for task {t['name']!r}; "
                          f"allowed: {known(spec.args) or 'none'}")
    out = {**spec.args, **args}
    for k in spec.positive_args:
        if not isinstance(out[k], int) or isinstance(out[k], bool) or out[k] < 1:
            raise ConfigError(f"task.args.{k}", f"must be an integer >= 1, got {out[k]!r}")
    return {"name": t["name"], "args": out}
