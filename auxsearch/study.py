"""The search: a study file in, a run folder with a confirmed Pareto front out.

:func:`prepare` loads and checks a study file once; :func:`run` is what ``auxsearch run``
does: open (or resume) the study in its storage, run trials until ``n_trials`` have
finished (:func:`optimize`, or several worker processes), confirm the front with fresh
seeds (:mod:`auxsearch.confirm`) and write the outputs. A trial's own life is in
:mod:`auxsearch.objective`, samplers in :mod:`auxsearch.samplers`, storage URLs in
:mod:`auxsearch.storage`. The end-to-end reference (K = 1) is always the first trial.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
import yaml

from .backbones import create_units
from .config import PUBLISHED_DESIGNS, StudyConfig, from_mapping, parse_bytes
from .engine import trace_shapes
from .errors import ConfigError
from .graph import as_design, canonical_backbone, canonical_task, load_design, normalize
from .objective import COMPLETE, PRUNED, RUNNING, Objective, feasible
from .pareto import TrialRecord, pareto_front
from .samplers import ehvi_applies, make_sampler
from .space import (
    SearchSpace,
    balanced_splits,
    check_space,
    check_space_task,
    load_space,
    suggest_design,
)
from .storage import journal_url, open_storage
from .tasks import ImageData, get_task
from .training import resolve_data_cfg

# Optuna flags its multivariate TPE, metric names and heartbeats as experimental; we rely on them on purpose.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module=r"auxsearch\.")

METRIC_NAMES = {"memory": "peak_memory_bytes", "seconds": "seconds", "params": "parameters"}
DIRECTIONS = {"score": "maximize", "memory": "minimize", "seconds": "minimize", "params": "minimize"}


@dataclass
class Run:
    """A study file, loaded and checked, ready to search."""

    cfg: StudyConfig
    path: Path
    out_dir: Path
    space: SearchSpace
    base: dict  # backbone, input_shape, num_classes, num_units of every design
    unit_costs: list[float]  # activation elements per unit (balanced splits)
    data: ImageData
    budget: int | None

    @property
    def metric(self) -> str:
        """The task's score: accuracy, map, psnr or miou."""
        return get_task(self.base["task"]["name"]).metric

    def metric_names(self) -> list[str]:
        return [self.metric if o == "score" else METRIC_NAMES[o] for o in self.cfg.objectives]

    @property
    def storage_url(self) -> str:
        return self.cfg.storage or journal_url(self.out_dir / "study.journal")


def load_study_config(path: str | Path) -> StudyConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"study file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError("", f"{path}: line {mark.line + 1 if mark else '?'}: invalid YAML "
                          f"({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError("", f"{path}: a study file must be a mapping of keys, got {type(raw).__name__}")
    return from_mapping(StudyConfig, raw, "")


def prepare(path: str | Path, *, storage: str | None = None) -> Run:
    """Load a study file and check everything that can be checked without training."""
    path = Path(path).resolve()
    cfg = load_study_config(path)
    if storage:
        cfg = dataclasses.replace(cfg, storage=storage)
    base_dir = path.parent
    task = canonical_task(cfg.task)
    get_task(task["name"]).check_args(task["args"])
    if not get_task(task["name"]).simulatable and (cfg.memory.mode == "simulated" or cfg.memory.budget is not None):
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
        from .space import grid

        grid(space, base)  # refuses spaces that are not finite
    budget = parse_bytes("memory.budget", cfg.memory.budget) if cfg.memory.budget is not None else None
    out_dir = Path(cfg.output) if cfg.output else Path("runs") / cfg.name
    out_dir = out_dir if out_dir.is_absolute() else (base_dir / out_dir if cfg.output else Path.cwd() / out_dir)
    run = Run(cfg, path, out_dir.resolve(), space, base, [float(math.prod(o)) for o in outs], data, budget)
    enqueued_designs(run)  # checks names and files
    if cfg.sampler.name == "ehvi" and (why := ehvi_applies(run)):
        raise ConfigError("sampler.name", why)
    return run


def _published(run: Run, i: int, name: str) -> dict:
    k, entry = PUBLISHED_DESIGNS[name]
    k = min(k, run.base["num_units"])
    if get_task(run.base["task"]["name"]).dense and entry["family"] == "infopro":
        raise ConfigError(f"enqueue.{i}", f"{name} uses InfoPro, which is classification-only")
    return dict(run.base, splits=balanced_splits(run.unit_costs, k), aux=[dict(entry)] * (k - 1))


def _design_file(run: Run, i: int, item: str) -> dict:
    p = Path(item) if Path(item).is_absolute() else run.path.parent / item
    if not p.is_file():
        raise ConfigError(f"enqueue.{i}", f"neither a published design ({', '.join(PUBLISHED_DESIGNS)}) "
                          f"nor a design file: {item!r}")
    try:
        d = as_design(load_design(p))
    except ConfigError as exc:
        raise ConfigError(f"enqueue.{i}", f"{item}: {exc}") from None
    for k in ("task", "backbone", "input_shape", "num_classes", "num_units"):
        if d[k] != run.base[k]:
            raise ConfigError(f"enqueue.{i}", f"design {k} {d[k]!r} differs from the study's {run.base[k]!r}")
    return d


def enqueued_designs(run: Run) -> list[tuple[str, dict]]:
    """The study's ``enqueue`` list as (name, design) pairs: published names or design files."""
    out = []
    for i, item in enumerate(run.cfg.enqueue):
        d = _published(run, i, item) if item in PUBLISHED_DESIGNS else _design_file(run, i, item)
        out.append((item, {k: v for k, v in normalize(d).items() if k not in ("data", "train")}))
    return out


def open_study(run: Run, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """Create or resume the study in its storage (a journal file by default)."""
    url = run.storage_url
    directions = [DIRECTIONS[o] for o in run.cfg.objectives]
    try:
        study = optuna.create_study(storage=open_storage(url), study_name=run.cfg.name, directions=directions,
                                    sampler=sampler or make_sampler(run), load_if_exists=True)
    except ConfigError:
        raise
    except Exception as exc:  # a bad URL, an unreachable server, a missing driver
        raise ConfigError("storage", f"cannot open {url!r}: {exc}") from None
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError("objectives", f"the stored study {run.cfg.name!r} has other objectives; "
                          "use another name or output folder")
    with warnings.catch_warnings():  # experimental in Optuna; we rely on it on purpose
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(run.metric_names())
    if "auxsearch" not in study.user_attrs:
        study.set_user_attr("auxsearch", provenance(run))
    if not any(t.user_attrs.get("is_e2e") for t in study.get_trials(deepcopy=False)):
        study.enqueue_trial({}, user_attrs={"is_e2e": True, "enqueued": "e2e"})
        for name, design in enqueued_designs(run):
            study.enqueue_trial({}, user_attrs={"design": design, "enqueued": name})
    return study


def provenance(run: Run) -> dict:
    """Package versions, device and the study file's hash, stored with the study."""
    import hashlib
    import platform

    from . import __version__

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else (platform.processor() or "cpu")
    return {"auxsearch": __version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "python": platform.python_version(), "device": device, "study_file": str(run.path),
            "study_file_sha256": hashlib.sha256(run.path.read_bytes()).hexdigest()}


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(COMPLETE, PRUNED)))


def optimize(run: Run, study: optuna.Study, n_trials: int, timeout: float | None,
             progress: bool = True, worker: int = 0, seed: int | None = None) -> int:
    """Run trials until ``n_trials`` have finished (COMPLETE or PRUNED); returns how many ran here.

    Safe with other workers on the same storage: stale trials of dead workers
    are failed and retried first, and a worker waits while the remaining
    trials are running elsewhere.
    """
    from tqdm.auto import tqdm

    from .distributed import HEARTBEAT_INTERVAL, reap_stale_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own progress bar says what matters
    objective = Objective(run, progress, n_trials, worker, seed)
    start, ran, fails = time.perf_counter(), 0, 0
    bar = tqdm(total=n_trials, initial=finished(study), desc="trials", unit="trial", disable=not progress,
               dynamic_ncols=True)
    while True:
        reap_stale_trials(study)
        done, running = finished(study), len(study.get_trials(deepcopy=False, states=(RUNNING,)))
        if done >= n_trials or (timeout is not None and time.perf_counter() - start > timeout):
            break
        if done + running >= n_trials:  # the rest is running elsewhere; wait, a dead worker's trial comes back
            time.sleep(min(HEARTBEAT_INTERVAL, 2.0))
            continue
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        ran += 1
        last = study.get_trials(deepcopy=False)[-1]
        failed = last.state == optuna.trial.TrialState.FAIL and "not needed" not in str(last.user_attrs.get("reason"))
        fails = fails + 1 if failed else 0
        bar.n = finished(study)
        bar.set_postfix(front=front_size(study), last=f"#{last.number} {last.state.name.lower()}")
        if fails >= 5:
            bar.close()
            raise ConfigError("", f"5 trials failed in a row; the last: {last.user_attrs.get('reason')}")
    bar.close()
    return ran


def front_size(study: optuna.Study) -> int:
    """Designs on the search front, counted the way every output counts them."""
    from .records import records

    return len(pareto_front(records(study)))


def run(prepared: Run, *, workers: int = 1, progress: bool = True,
        max_restarts: int | None = None) -> tuple[optuna.Study, list[TrialRecord], dict]:
    """``auxsearch run``: search to ``n_trials``, confirm the front, write the run folder.

    With ``workers`` > 1 the search runs in supervised worker processes
    (:func:`auxsearch.distributed.run_workers`; ``max_restarts`` per worker slot, default
    :data:`~auxsearch.distributed.MAX_RESTARTS`); when they give up short of ``n_trials``
    the run folder shows the trials so far, nothing is confirmed, and
    :class:`~auxsearch.distributed.StudyIncomplete` is raised.
    """
    from . import confirm, distributed, rundir
    from .records import open_confirm, records

    distributed.refuse_sqlite(prepared.storage_url, workers)
    distributed.guard_journals()  # a journal append cut by a full disk leaves no half line behind
    meta = rundir.run_meta(prepared)
    rundir.write_meta(prepared.out_dir, meta)
    st = open_study(prepared)

    def outputs() -> tuple[list[TrialRecord], dict]:
        recs = records(st, open_confirm(st._storage, prepared.cfg.name, create=False))
        return recs, rundir.write_outputs(prepared.out_dir, meta, recs)

    try:
        if finished(st) < prepared.cfg.n_trials:
            if workers > 1:
                distributed.run_workers(prepared, st, workers, progress,
                                        distributed.MAX_RESTARTS if max_restarts is None else max_restarts)
            else:
                optimize(prepared, st, prepared.cfg.n_trials, prepared.cfg.timeout, progress=progress,
                         seed=prepared.cfg.sampler.seed)
        confirm.confirm(prepared, st, progress=progress)
    except KeyboardInterrupt:
        outputs()
        raise
    except distributed.StudyIncomplete:
        try:
            outputs()  # the trials so far, unconfirmed
        except Exception:  # the storage or the disk that stopped the workers may stop this too
            pass
        raise
    recs, paths = outputs()
    return st, recs, paths


def sample_designs(run: Run, n: int = 5, seed: int = 0) -> list[dict]:
    """``n`` designs drawn at random from the space, without a stored study (for ``validate``)."""
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(normalize(suggest_design(trial, run.space, run.base, run.unit_costs)))
        study.tell(trial, [0.0, 0.0])
    return out


__all__ = ["Run", "enqueued_designs", "feasible", "finished", "load_study_config", "open_study", "optimize",
           "prepare", "provenance", "run", "sample_designs"]
