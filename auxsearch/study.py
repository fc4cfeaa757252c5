"""The search: the one module that drives Optuna.

A study file is loaded and checked once (:func:`prepare`), then every trial
asks the search space for a design, skips designs it has already trained
(same canonical hash), rejects designs whose simulated peak breaks the
memory budget before any training (``trial.set_constraint``), trains the
rest with early stopping of dominated accuracy curves, and scores
(task score up, peak memory down). The end-to-end reference (K = 1) is
always the first trial.
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

from . import memory
from .backbones import create_units
from .config import StudyConfig, from_mapping, parse_bytes
from .engine import end_to_end, resolve_device, trace_shapes
from .errors import ConfigError
from .graph import (
    as_design,
    canonical_backbone,
    canonical_task,
    design_hash,
    load_design,
    normalize,
)
from .isolation import fit_in_subprocess, is_out_of_memory, peak_reached
from .space import (
    SearchSpace,
    balanced_splits,
    check_space,
    check_space_task,
    load_space,
    suggest_design,
)
from .tasks import ImageData, get_task
from .training import NonFiniteLoss, TrainResult, fit, resolve_data_cfg

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
        return self.cfg.storage or f"journal:{self.out_dir / 'study.journal'}"


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
    data = get_task(task["name"]).load_data(resolve_data_cfg(cfg.data, base_dir))
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
        _grid(space, base)  # refuses spaces that are not finite
    budget = parse_bytes("memory.budget", cfg.memory.budget) if cfg.memory.budget is not None else None
    out_dir = Path(cfg.output) if cfg.output else Path("runs") / cfg.name
    out_dir = out_dir if out_dir.is_absolute() else (base_dir / out_dir if cfg.output else Path.cwd() / out_dir)
    run = Run(cfg, path, out_dir.resolve(), space, base, [float(math.prod(o)) for o in outs], data, budget)
    _enqueued_designs(run)  # checks names and files
    return run


PUBLISHED = {  # name -> (K, aux entry); split points balanced by activation memory
    "infopro_k2": (2, {"family": "infopro", "depth": 1, "width": 32}),
    "infopro_k4": (4, {"family": "infopro", "depth": 1, "width": 32}),
    "man_k4": (4, {"family": "momentum", "depth": 1, "width": 32, "momentum": 0.995}),
}


def _enqueued_designs(run: Run) -> list[tuple[str, dict]]:
    out = []
    for i, item in enumerate(run.cfg.enqueue):
        if item in PUBLISHED:
            k, entry = PUBLISHED[item]
            k = min(k, run.base["num_units"])
            d = dict(run.base, splits=balanced_splits(run.unit_costs, k), aux=[dict(entry)] * (k - 1))
            if run.base["task"]["name"] != "classification" and entry["family"] == "infopro":
                raise ConfigError(f"enqueue.{i}", f"{item} uses InfoPro, which is classification-only")
        else:
            p = Path(item) if Path(item).is_absolute() else run.path.parent / item
            if not p.is_file():
                raise ConfigError(f"enqueue.{i}", f"neither a published design ({', '.join(PUBLISHED)}) "
                                  f"nor a design file: {item!r}")
            try:
                d = as_design(load_design(p))
            except ConfigError as exc:
                raise ConfigError(f"enqueue.{i}", f"{item}: {exc}") from None
            for k in ("task", "backbone", "input_shape", "num_classes", "num_units"):
                if d[k] != run.base[k]:
                    raise ConfigError(f"enqueue.{i}", f"design {k} {d[k]!r} differs from the study's {run.base[k]!r}")
        out.append((item, {k: v for k, v in normalize(d).items() if k not in ("data", "train")}))
    return out


def make_sampler(run: Run, worker_seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # TPE's `group` is flagged experimental; we need it for conditional spaces
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _sampler(run, worker_seed_offset)


def _sampler(run: Run, worker_seed_offset: int) -> optuna.samplers.BaseSampler:
    s = run.cfg.sampler
    seed = s.seed + worker_seed_offset
    if s.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          n_startup_trials=s.n_startup_trials, constant_liar=True)
    if s.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=s.population_size)
    if s.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=s.n_startup_trials)
    if s.name == "grid":
        return optuna.samplers.GridSampler(_grid(run.space, run.base), seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _grid(space: SearchSpace, base: dict) -> dict[str, list]:
    """Every parameter a grid can take; only finite spaces with balanced splits qualify."""
    if space.splits != "balanced":
        raise ConfigError("search_space.splits", "the grid sampler needs splits: balanced (free split "
                          "points have ranges that depend on K)")
    grid = {"K": space.dim("modules")}
    prefixes = [f"aux{m}." for m in range(max(space.dim("modules").values()) - 1)] if space.per_module else ["aux."]
    for p in prefixes:
        for name in ("families", "depth", "width", "tau", "momentum", "learnable_scale", "head", "pool",
                     "bank", "bank_fusion", "end", "through", "through_momentum"):
            grid[p + ("family" if name == "families" else name)] = space.dim(name)
    out = {}
    for name, dim in grid.items():
        if dim.low is not None and not (isinstance(dim.low, int) and isinstance(dim.high, int)):
            raise ConfigError(f"search_space.{name.split('.')[-1]}", "the grid sampler needs choices or "
                              "integer ranges, not a float range")
        if not dim.is_fixed():
            out[name] = list(range(dim.low, dim.high + 1)) if dim.low is not None else list(dim.choices)
    return out


def make_storage(url: str) -> Any:
    """``journal:PATH`` (a journal file, no server) or any SQLAlchemy URL (RDB with heartbeats)."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        Path(url[len("journal:"):]).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url[len("journal:"):]))
    if url.startswith("sqlite"):
        return url  # one process at a time (see distributed.refuse_sqlite)
    from .distributed import GRACE, HEARTBEAT_INTERVAL, MAX_RETRY

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=int(HEARTBEAT_INTERVAL), grace_period=int(GRACE),
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
    except Exception as exc:  # a bad URL, an unreachable server, a missing driver
        raise ConfigError("storage", f"cannot open {url!r}: {exc}") from None


def open_study(run: Run, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """Create or resume the study in its storage (a journal file by default)."""
    url = run.storage_url
    storage = make_storage(url)
    directions = [DIRECTIONS[o] for o in run.cfg.objectives]
    try:
        study = optuna.create_study(storage=storage, study_name=run.cfg.name, directions=directions,
                                    sampler=sampler or make_sampler(run), load_if_exists=True)
    except Exception as exc:  # a bad URL, an unreachable server, a missing driver
        raise ConfigError("storage", f"cannot open {url!r}: {exc}") from None
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError("objectives", f"the stored study {run.cfg.name!r} has other objectives; "
                          "use another name or output folder")
    study.set_metric_names(run.metric_names())
    if "auxsearch" not in study.user_attrs:
        study.set_user_attr("auxsearch", provenance(run))
    if not any(t.user_attrs.get("is_e2e") for t in study.get_trials(deepcopy=False)):
        study.enqueue_trial({}, user_attrs={"is_e2e": True, "enqueued": "e2e"})
        for name, design in _enqueued_designs(run):
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
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=done))


class SurplusTrial(RuntimeError):
    """Raised in a trial the study no longer needs (recorded as FAIL with this reason)."""


class Objective:
    """One trial: design -> (reuse | budget check | train) -> objective values."""

    def __init__(self, run: Run, progress: bool = False, n_trials: int | None = None, worker: int = 0,
                 seed: int | None = None) -> None:
        self.run, self.progress, self.n_trials, self.worker, self.seed = run, progress, n_trials, worker, seed

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        from .distributed import Heartbeat

        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("sampler_seed", self.seed)
        try:
            self._refuse_surplus(trial)
            with Heartbeat(trial):
                return self._evaluate(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("reason", f"{type(exc).__name__}: {exc}")
            trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
            raise

    def _refuse_surplus(self, trial: optuna.Trial) -> None:
        """With parallel workers two may start the last trial at once: the higher number yields."""
        if self.n_trials is None:
            return
        ahead = [t for t in trial.study.get_trials(deepcopy=False)
                 if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                 or (t.state == optuna.trial.TrialState.RUNNING and t.number < trial.number)]
        if len(ahead) >= self.n_trials:
            raise SurplusTrial(f"not needed: {len(ahead)} trials were finished or running when it started")

    def _design(self, trial: optuna.Trial) -> dict:
        if trial.user_attrs.get("is_e2e"):
            return end_to_end(self.run.base)
        if "design" in trial.user_attrs:
            return dict(trial.user_attrs["design"])
        return suggest_design(trial, self.run.space, self.run.base, self.run.unit_costs)

    def _evaluate(self, trial: optuna.Trial) -> tuple[float, ...]:
        run = self.run
        design = normalize(self._design(trial))
        h = design_hash(design)
        for key, value in (("design", design), ("design_hash", h), ("K", len(design["splits"]) + 1)):
            trial.set_user_attr(key, value)
        twin = _completed_twin(trial.study, h, trial.number)
        if twin is not None:
            return self._reuse(trial, twin)
        simulated = None
        if run.budget is not None or run.cfg.memory.mode == "simulated":
            simulated = self._simulate(design)
            trial.set_user_attr("simulated_peak_bytes", simulated)
        if run.budget is not None:
            trial.set_constraint("memory_budget", float(simulated - run.budget))
            if simulated > run.budget:
                trial.set_user_attr("reason", f"simulated peak {simulated} B exceeds the budget {run.budget} B")
                return self._values(0.0, simulated, 0.0, 0)
        try:
            result, n_params = self._train(design, trial, simulated)
        except NonFiniteLoss as exc:
            trial.set_user_attr("reason", f"non-finite loss: {exc}")
            raise optuna.TrialPruned(str(exc)) from None
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            return self._out_of_memory(trial, design, exc, simulated)
        peak = simulated if run.cfg.memory.mode == "simulated" else result.peak_memory_bytes
        for key, value in (("history", result.history), ("seconds", result.seconds), ("scores", result.scores),
                           ("peak_memory_bytes", peak), ("device", result.device)):
            trial.set_user_attr(key, value)
        if result.stopped_early:
            raise optuna.TrialPruned(trial.user_attrs.get("reason", "dominated"))
        return self._values(result.score, peak, result.seconds, n_params)

    def _reuse(self, trial: optuna.Trial, twin: optuna.trial.FrozenTrial) -> tuple[float, ...]:
        """An identical design was trained before: record its result instead of training again."""
        trial.set_user_attr("reused_from", twin.number)
        for key in ("history", "seconds", "scores", "peak_memory_bytes", "reason"):
            if key in twin.user_attrs:
                trial.set_user_attr(key, twin.user_attrs[key])
        for key, value in twin.constraints.items():
            trial.set_constraint(key, value)
        return tuple(twin.values)

    def _train(self, design: dict, trial: optuna.Trial, simulated: int | None) -> tuple[TrainResult, int]:
        run = self.run
        on_epoch = self._pruner(trial, simulated)
        device = resolve_device(run.cfg.train.device)
        isolate = run.cfg.isolation == "subprocess" or (run.cfg.isolation == "auto" and device.type == "cuda")
        trial.set_user_attr("isolated", isolate)
        if isolate:
            return fit_in_subprocess(design, run.cfg.train, resolve_data_cfg(run.cfg.data, run.path.parent),
                                     run.path.parent, on_epoch)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        result = fit(design, train=run.cfg.train, data=run.data, progress="nested" if self.progress else False,
                     on_epoch=on_epoch)
        return result, sum(p.numel() for p in result.model.parameters())  # type: ignore[attr-defined]

    def _out_of_memory(self, trial: optuna.Trial, design: dict, exc: Exception, simulated: int | None):
        """Out of memory is a property of the design, not a crash: record it as infeasible."""
        reached = getattr(exc, "reached", None) or peak_reached(str(resolve_device(self.run.cfg.train.device)))
        if reached is None:
            try:
                reached = simulated if simulated is not None else self._simulate(design)
            except Exception:  # the simulation may not fit either; the reason says what happened
                reached = 0
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        trial.set_user_attr("reason", f"out of memory at about {reached} B: {str(exc)[:300]}")
        trial.set_constraint("out_of_memory", 1.0)
        return self._values(0.0, reached, 0.0, 0)

    def _simulate(self, design: dict) -> int:
        m = self.run.cfg.memory
        size = tuple(m.input_size) if m.input_size else None
        return memory.simulate(design, m.batch_size or self.run.cfg.train.batch_size, size, self.run.cfg.train)

    def _values(self, score: float, peak: int, seconds: float, n_params: int) -> tuple[float, ...]:
        extra = {"seconds": seconds, "params": float(n_params)}
        return (score, float(peak), *(extra[o] for o in self.run.cfg.objectives[2:]))

    def _pruner(self, trial: optuna.Trial, simulated: int | None):
        p = self.run.cfg.pruning

        def on_epoch(result: TrainResult) -> bool:
            trial.set_user_attr("history", list(result.history))
            epoch = len(result.history)
            if not p.enabled or trial.user_attrs.get("is_e2e") or epoch <= p.warmup_epochs:
                return False
            mine = simulated if simulated is not None else result.peak_memory_bytes
            rivals = [t.number for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                      if _feasible(t) and t.values[1] <= mine * (1 + p.memory_tolerance)
                      and len(t.user_attrs.get("history", [])) >= epoch
                      and t.user_attrs["history"][epoch - 1] >= result.history[-1] + p.margin]
            if len(rivals) >= p.min_rivals:
                trial.set_user_attr("reason", f"epoch {epoch}: score {result.history[-1]:.4f} dominated by "
                                    f"trials {rivals[:5]} at no more memory")
                return True
            return False

        return on_epoch


def _feasible(t: optuna.trial.FrozenTrial) -> bool:
    return all(v <= 0 for v in t.constraints.values())


def _completed_twin(study: optuna.Study, h: str, number: int) -> optuna.trial.FrozenTrial | None:
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if t.user_attrs.get("design_hash") == h and t.number != number and "reused_from" not in t.user_attrs:
            return t
    return None


def records(study: optuna.Study) -> list[dict]:
    """Every trial as a plain record (what outputs and the report read)."""
    out = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        state = t.state.name
        if state == "COMPLETE" and not _feasible(t):
            state = "INFEASIBLE"
        out.append({"number": t.number, "state": state,
                    "score": t.values[0] if t.values and state == "COMPLETE" else None,
                    "peak_memory_bytes": int(t.values[1]) if t.values else ua.get("peak_memory_bytes"),
                    "seconds": ua.get("seconds"), "design_hash": ua.get("design_hash"), "params": dict(t.params),
                    "design": ua.get("design"), "is_e2e": bool(ua.get("is_e2e")), "K": ua.get("K"),
                    "reused_from": ua.get("reused_from"), "history": list(ua.get("history", [])),
                    "reason": ua.get("reason"), "enqueued": ua.get("enqueued"),
                    "scores": dict(ua.get("scores") or {})})
    return out


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
        done, running = finished(study), _count(study, optuna.trial.TrialState.RUNNING)
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
        bar.set_postfix(front=_front_size(study), last=f"#{last.number} {last.state.name.lower()}")
        if fails >= 5:
            bar.close()
            raise ConfigError("", f"5 trials failed in a row; the last: {last.user_attrs.get('reason')}")
    bar.close()
    return ran


def _count(study: optuna.Study, state: optuna.trial.TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=(state,)))


def _front_size(study: optuna.Study) -> int:
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return len([t for t in study.best_trials if _feasible(t)]) if done else 0


def load_records(storage_url: str, name: str) -> list[dict]:
    """Records of a stored study, for ``show`` / ``plot`` / ``export``."""
    if storage_url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = storage_url[len("journal:"):]
        if not Path(path).is_file():
            raise ConfigError("", f"no study journal at {path}")
        storage: Any = JournalStorage(JournalFileBackend(path))
    else:
        storage = storage_url
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ConfigError("", f"no study named {name!r} in {storage_url}") from None
    return records(study)


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
