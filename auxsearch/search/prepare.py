"""A study file, loaded and checked once: everything that can be known without training.

:func:`prepare` reads ``studies/*.yaml`` into a :class:`PreparedStudy` (the recipe, the search
space, the backbone's units and their activation costs, the data, the budget, the run folder);
:func:`enqueued_designs` turns the study's ``enqueue`` list into designs; :func:`sampler_name`
says which sampler ``auto`` becomes. The search itself is in :mod:`auxsearch.search.loop`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml

from auxsearch.backbones import create_units
from auxsearch.config import StudyConfig, from_mapping, load_yaml, parse_bytes
from auxsearch.design.graph import as_design, canonical_backbone, load_design, normalize
from auxsearch.design.recipes import RECIPES, published_design
from auxsearch.design.space import (
    SearchSpace,
    balanced_splits,
    check_space,
    check_space_task,
    grid,
    load_space,
    suggest_design,
)
from auxsearch.design.tasks import canonical_task, task_spec
from auxsearch.errors import ConfigError
from auxsearch.model.engine import trace_shapes
from auxsearch.store.storage import journal_url
from auxsearch.tasks import ImageData, get_task
from auxsearch.train.data import resolve_data_cfg

METRIC_NAMES = {"memory": "peak_memory_bytes", "seconds": "seconds", "params": "parameters"}
DIRECTIONS = {"score": "maximize", "memory": "minimize", "seconds": "minimize", "params": "minimize"}


@dataclass
class PreparedStudy:
    """A study file, loaded and checked, ready to search."""

    cfg: StudyConfig
    path: Path  # the study file
    out_dir: Path  # the run folder
    space: SearchSpace
    base: dict  # task, backbone, input_shape, num_classes, num_units of every design
    unit_costs: list[float]  # activation elements per unit (balanced and memory splits)
    data: ImageData
    budget: int | None  # memory.budget in bytes
    unit_shapes: list[tuple] = dataclasses.field(default_factory=list)  # output (C, H, W) of every unit

    @property
    def task(self) -> str:
        """The task's name."""
        return self.base["task"]["name"]

    @property
    def metric(self) -> str:
        """The task's score: accuracy, map, psnr or miou."""
        return task_spec(self.task).metric

    def metric_names(self) -> list[str]:
        return [self.metric if o == "score" else METRIC_NAMES[o] for o in self.cfg.objectives]

    def directions(self) -> list[str]:
        return [DIRECTIONS[o] for o in self.cfg.objectives]

    @property
    def storage_url(self) -> str:
        return self.cfg.storage or journal_url(self.out_dir / "study.journal")

    def data_cfg(self) -> dict:
        """The study's ``data`` block with its paths made absolute (what a trial process loads)."""
        return resolve_data_cfg(self.cfg.data, self.path.parent, self.task)


def load_study_config(path: str | Path) -> StudyConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"study file not found: {path}")
    try:
        raw = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError("", f"{path}: line {mark.line + 1 if mark else '?'}: invalid YAML "
                          f"({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError("", f"{path}: a study file must be a mapping of keys, got {type(raw).__name__}")
    return from_mapping(StudyConfig, raw, "")


def prepare(path: str | Path, *, storage: str | None = None) -> PreparedStudy:
    """Load a study file and check everything that can be checked without training."""
    path = Path(path).resolve()
    return prepare_config(load_study_config(path), path, storage=storage)


def prepare_recorded(study: dict, run_dir: Path, storage: str) -> PreparedStudy:
    """The study a run folder recorded in run.yaml (its recipe, search space inlined, data paths absolute),
    prepared without its study file: a run folder that moved, or whose study file changed, still confirms."""
    raw = dict(study)
    raw["enqueue"] = [e for e in raw.get("enqueue", []) if e in RECIPES or Path(e).is_file()]
    cfg = from_mapping(StudyConfig, raw, "run.yaml: study")
    return prepare_config(cfg, Path(run_dir).resolve() / "run.yaml", storage=storage, out_dir=Path(run_dir).resolve())


def prepare_config(cfg: StudyConfig, path: Path, *, storage: str | None = None,
                   out_dir: Path | None = None) -> PreparedStudy:
    """Check a parsed study; ``path`` is where it came from (relative paths in it are relative to its folder)."""
    if storage:
        cfg = dataclasses.replace(cfg, storage=storage)
    base_dir = path.parent
    task = canonical_task(cfg.task)
    get_task(task["name"]).check_args(task["args"])
    if not task_spec(task["name"]).simulatable and (cfg.memory.mode == "simulated" or cfg.memory.budget is not None):
        raise ConfigError("memory", f"task {task['name']!r} cannot be simulated (data-dependent target "
                          "assignment): use mode: measured and no budget")
    data = get_task(task["name"]).load_data(resolve_data_cfg(cfg.data, base_dir, task["name"]))
    bb = canonical_backbone(cfg.backbone)
    units = create_units(bb["name"], data.in_chans, bb["args"])
    shape = [data.in_chans, data.image_size, data.image_size]
    base = normalize({"task": task, "backbone": bb, "input_shape": shape, "num_classes": data.num_classes,
                      "num_units": len(units)})
    _, outs = trace_shapes(units, shape)
    space = load_space(cfg.search_space, base_dir)
    check_space(space, len(units))
    check_space_task(space, task["name"])
    if cfg.sampler.name == "grid":
        grid(space, base)  # refuses spaces that are not finite
    budget = parse_bytes("memory.budget", cfg.memory.budget) if cfg.memory.budget is not None else None
    if out_dir is None:
        out_dir = Path(cfg.output) if cfg.output else Path("runs") / cfg.name
        out_dir = out_dir if out_dir.is_absolute() else (base_dir / out_dir if cfg.output else Path.cwd() / out_dir)
    prepared = PreparedStudy(cfg, path, out_dir.resolve(), space, base, [float(math.prod(o)) for o in outs],
                             data, budget, unit_shapes=[tuple(o) for o in outs])
    enqueued_designs(prepared)  # checks names and files
    if cfg.sampler.name == "ehvi" and (why := ehvi_applies(prepared)):
        raise ConfigError("sampler.name", why)
    return prepared


def _published(p: PreparedStudy, i: int, name: str) -> dict:
    return published_design(name, p.base, p.unit_shapes, p.unit_costs, dense=task_spec(p.task).dense,
                            balanced=balanced_splits, key=f"enqueue.{i}")


def _design_file(p: PreparedStudy, i: int, item: str) -> dict:
    path = Path(item) if Path(item).is_absolute() else p.path.parent / item
    if not path.is_file():
        raise ConfigError(f"enqueue.{i}", f"neither a published design ({', '.join(RECIPES)}) "
                          f"nor a design file: {item!r}")
    try:
        d = as_design(load_design(path))
    except ConfigError as exc:
        raise ConfigError(f"enqueue.{i}", f"{item}: {exc}") from None
    for k in ("task", "backbone", "input_shape", "num_classes", "num_units"):
        if d[k] != p.base[k]:
            raise ConfigError(f"enqueue.{i}", f"design {k} {d[k]!r} differs from the study's {p.base[k]!r}")
    return d


def enqueued_designs(p: PreparedStudy) -> list[tuple[str, dict]]:
    """The study's ``enqueue`` list as (name, design) pairs: published names or design files."""
    out = []
    for i, item in enumerate(p.cfg.enqueue):
        d = _published(p, i, item) if item in RECIPES else _design_file(p, i, item)
        out.append((item, {k: v for k, v in normalize(d).items() if k not in ("data", "train")}))
    return out


def ehvi_applies(p: PreparedStudy) -> str | None:
    """Why ``ehvi`` cannot serve this study (None: it can)."""
    if list(p.cfg.objectives) != ["score", "memory"]:
        return f"ehvi models the score against memory: objectives must be [score, memory], not {list(p.cfg.objectives)}"
    return None


def sampler_name(p: PreparedStudy) -> str:
    """The sampler a study gets: its ``sampler.name``, with ``auto`` read as ehvi where it applies, else tpe."""
    name = p.cfg.sampler.name
    if name == "auto":
        return "tpe" if ehvi_applies(p) else "ehvi"
    return name


def sample_designs(p: PreparedStudy, n: int = 5, seed: int = 0) -> list[dict]:
    """``n`` designs drawn at random from the space, without a stored study (for ``validate``)."""
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(normalize(suggest_design(trial, p.space, p.base, p.unit_costs)))
        study.tell(trial, [0.0, 0.0])
    return out
