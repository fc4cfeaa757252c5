"""What each ``auxsearch`` command does (the options are :mod:`auxsearch.cli`'s).

A command imports the layers it needs when it runs: ``show``, ``export`` and ``plot`` read a run
folder without torch; ``run`` and ``train`` pay for torch when they train.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from auxsearch.errors import AuxsearchError, ConfigError


def _check_args(args, **rules) -> None:
    """CLI numbers that must hold a rule, named by their option (``--epochs``), not a YAML key."""
    for name, low in rules.items():
        value = getattr(args, name, None)
        values = value if isinstance(value, list) else [value]
        if value is not None and any(v < low for v in values):
            raise AuxsearchError(f"--{name.replace('_', '-')}: must be >= {low}, got {value}")


def _quiet_optuna(verbose: bool = False) -> None:
    """Optuna's INFO lines ("A new study created ...") only with ``--verbose``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)


def _mib(n: int) -> str:
    from auxsearch.outputs.tables import mib

    return mib(n)


# ------------------------------------------------------------------ designs


def cmd_train(args) -> int:
    from auxsearch.config import TrainConfig, from_mapping, to_mapping
    from auxsearch.design.graph import as_design, load_design
    from auxsearch.train.loop import fit

    _check_args(args, epochs=1, batch_size=1, seed=0, lr=0)
    design = as_design(load_design(args.design))
    recipe = to_mapping(from_mapping(TrainConfig, design.get("train"), "train"))
    for name in ("epochs", "batch_size", "device", "seed", "precision", "lr"):
        if getattr(args, name) is not None:
            recipe[name] = getattr(args, name)
    data = dict(design.get("data") or {})
    if args.data_root is not None:
        data["root"] = str(args.data_root.resolve())
    folder = args.save if args.save is not None and args.save.suffix != ".pt" else None
    if args.resume and folder is None:
        raise AuxsearchError("--resume: give the checkpoint folder with --save DIR (a folder, not a .pt file)")
    if folder is not None and folder.exists() and not folder.is_dir():
        raise AuxsearchError(f"--save: {folder} is a file; give a folder for checkpoints or a .pt file for weights")
    if args.resume and not (folder / "last.pt").is_file():
        print(f"no checkpoint in {folder} yet: training from epoch 1", file=sys.stderr)
    result = fit(design, train=from_mapping(TrainConfig, recipe, "train"), data=data, base_dir=args.design.parent,
                 progress=not args.json or sys.stderr.isatty(), checkpoint_dir=folder, resume=args.resume,
                 final_test=True)
    if args.save:
        import torch

        weights = folder / "model.pt" if folder is not None else args.save
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(result.model.state_dict(), weights)
    out = result.as_dict()
    if args.json:
        print(json.dumps(out))
        return 0
    test = (out.get("test_scores") or {}).get(out["metric"])
    print(f"{args.design}: validation {out['metric']} {out['score']:.4f}, test {out['metric']} "
          f"{'-' if test is None else f'{test:.4f}'} (read once, after the last epoch), peak memory "
          f"{_mib(out['peak_memory_bytes'])} ({out['memory_mode']} on {out['device']}), {out['epochs']} epochs in "
          f"{out['seconds']:.1f} s, design {out['design_hash']}")
    return 0


def cmd_memory(args) -> int:
    from auxsearch.config import TrainConfig, from_mapping
    from auxsearch.design.graph import as_design, design_hash, load_design
    from auxsearch.design.tasks import task_spec
    from auxsearch.model.engine import end_to_end
    from auxsearch.train import memory

    _check_args(args, batch_size=1, input_size=1)
    if args.mode == "measured" and args.device.split(":")[0] not in ("cpu", "cuda"):
        raise AuxsearchError(f"--device: must be cpu or cuda (cuda:N), got {args.device!r}")
    design = as_design(load_design(args.design))
    cfg = from_mapping(TrainConfig, design.get("train"), "train")
    if args.precision is not None:
        cfg = dataclasses.replace(cfg, precision=args.precision)
    size = tuple(args.input_size) if args.input_size else None
    if args.mode == "simulated":
        peak = memory.simulate(design, args.batch_size, size, cfg)
        e2e = memory.simulate(end_to_end(design), args.batch_size, size, cfg)
    else:
        peak = memory.measure(design, args.batch_size, size, cfg, args.device)
        e2e = memory.measure(end_to_end(design), args.batch_size, size, cfg, args.device)
    simulatable = task_spec(design["task"]["name"]).simulatable
    out = {"design_hash": design_hash(design), "memory_mode": args.mode, "batch_size": args.batch_size,
           "precision": cfg.precision, "input_shape": [design["input_shape"][0], *(size or design["input_shape"][1:])],
           "peak_bytes": peak, "floor_bytes": memory.floor(design, args.batch_size, size, cfg) if simulatable else None,
           "e2e_peak_bytes": e2e, "ratio_to_e2e": peak / e2e}
    if args.json:
        print(json.dumps(out))
    else:
        floor = _mib(out["floor_bytes"]) if out["floor_bytes"] is not None else "n/a for this task"
        print(f"peak {_mib(peak)} ({args.mode}, {cfg.precision}), floor {floor}, end-to-end {_mib(e2e)}: "
              f"{out['ratio_to_e2e']:.2f}x of end-to-end at batch {args.batch_size}")
    return 0


def cmd_draw(args) -> int:
    from auxsearch.design.graph import load_design
    from auxsearch.outputs.drawing import design_figure

    suffix = args.output.suffix.lower()
    if suffix not in (".html", ".htm", ".png", ".svg"):
        raise AuxsearchError(f"-o/--output: draw writes .html, .png or .svg, not {suffix or 'a file without suffix'!r}")
    fig = design_figure(load_design(args.design), title=str(args.design.name))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".html", ".htm"):
        fig.write_html(args.output, include_plotlyjs=True)
    else:
        try:
            fig.write_image(args.output)
        except (ImportError, ValueError, RuntimeError) as exc:  # no kaleido, or kaleido without a browser
            raise AuxsearchError(f"-o/--output: writing {suffix} needs plotly's image export (pip install "
                                 f"kaleido): {str(exc).splitlines()[0]}; or write .html") from None
    print(f"wrote {args.output}")
    return 0


# ------------------------------------------------------------------ searching


def _worker_argv(p, storage: str):
    """How ``run --workers N`` starts worker ``spec.index``: this command line's own ``worker`` command."""
    def argv(spec) -> list[str]:
        cmd = [sys.executable, "-m", "auxsearch", "worker", str(p.path), "--storage", storage,
               "--worker-index", str(spec.index), "--threads", str(spec.threads), "--n-trials", str(spec.n_trials),
               "--no-progress", *(["--confirm"] if spec.phase == "confirm" else [])]
        if spec.timeout is not None:
            cmd += ["--timeout", f"{max(spec.timeout, 0.0):.1f}"]
        if spec.seed_index != spec.index:
            cmd += ["--seed-index", str(spec.seed_index)]
        return cmd

    return argv


def run_study(p, *, workers: int = 1, progress: bool = True, max_restarts: int | None = None):
    """``auxsearch run`` after the checks: search, confirm, write the run folder; returns (records, paths).

    Interrupted or stopped short, the run folder still shows everything finished so far.
    """
    from auxsearch.outputs.runfolder import write_outputs
    from auxsearch.search.driver import search
    from auxsearch.search.workers import StudyIncomplete
    from auxsearch.store.records import load_records, records

    def outputs_so_far() -> None:
        try:
            write_outputs(p.out_dir, meta, load_records(p.storage_url, p.cfg.name))
        except Exception:  # the storage or the disk that stopped the search may stop this too
            pass

    meta = _meta_for(p)
    try:
        studies = search(p, workers=workers, command=_worker_argv(p, p.storage_url), progress=progress,
                         max_restarts=max_restarts, gpus=_visible_gpus())
    except (KeyboardInterrupt, StudyIncomplete):
        outputs_so_far()
        raise
    recs = records(studies)
    return recs, write_outputs(p.out_dir, meta, recs)


def _meta_for(p) -> dict:
    from auxsearch.outputs.runfolder import read_meta, run_meta, write_meta

    meta = run_meta(p)
    if (p.out_dir / "run.yaml").is_file():
        meta["created"] = read_meta(p.out_dir).get("created", meta["created"])
    write_meta(p.out_dir, meta)
    return meta


def _visible_gpus() -> int:
    """GPUs a worker can be given: the inherited CUDA_VISIBLE_DEVICES list, else NVML's count (no CUDA call)."""
    from auxsearch.train.devices import gpu_count

    return gpu_count()


def cmd_run(args) -> int:
    from auxsearch.outputs.runfolder import check_resume
    from auxsearch.outputs.tables import pareto_table
    from auxsearch.search.prepare import prepare
    from auxsearch.search.studies import count_finished, open_search
    from auxsearch.search.workers import EXIT_INCOMPLETE, StudyIncomplete
    from auxsearch.store.failures import storage_failure
    from auxsearch.store.storage import open_run

    _check_args(args, n_trials=1, timeout=0, workers=1, max_restarts=0)
    _quiet_optuna(args.verbose)
    p = prepare(args.study, storage=args.storage)
    if args.n_trials is not None or args.timeout is not None:
        p.cfg = dataclasses.replace(p.cfg, n_trials=args.n_trials or p.cfg.n_trials,
                                    timeout=args.timeout if args.timeout is not None else p.cfg.timeout)
    check_resume(p, fresh=args.fresh)
    done = count_finished(open_search(p))
    if done >= p.cfg.n_trials:
        print(f"study {p.cfg.name!r} already finished {done} trials (n_trials: {p.cfg.n_trials}); "
              "raise --n-trials to search further (confirmation still completes)", file=sys.stderr)
    try:
        records, paths = run_study(p, workers=args.workers, progress=not args.no_progress,
                                   max_restarts=args.max_restarts)
    except StudyIncomplete as exc:
        print(f"auxsearch: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    except Exception as exc:
        why = storage_failure(exc)
        if why is None:
            raise
        try:
            done = count_finished(open_run(p.storage_url, p.cfg.name, writes=False))
        except Exception:  # the storage is still unreadable
            done = None
        print(f"auxsearch: {StudyIncomplete(done, p.cfg.n_trials, why)}", file=sys.stderr)
        return EXIT_INCOMPLETE
    print(pareto_table(records, p.metric))
    print(f"\nrun folder: {p.out_dir}\nreport:     {paths['report']}\nexport:     auxsearch export "
          f"{p.out_dir} --knee -o best.yaml")
    return 0


def cmd_worker(args) -> int:
    from auxsearch.search.confirm import run_jobs
    from auxsearch.search.loop import optimize
    from auxsearch.search.prepare import prepare
    from auxsearch.search.samplers import make_sampler
    from auxsearch.search.studies import count_finished, open_search
    from auxsearch.search.workers import EXIT_STORAGE
    from auxsearch.store.failures import storage_failure
    from auxsearch.store.storage import refuse_sqlite

    _check_args(args, n_trials=1, threads=0, worker_index=0, timeout=0, seed_index=0)
    _quiet_optuna(args.verbose)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    p = prepare(args.study, storage=args.storage)
    refuse_sqlite(p.storage_url, 2)
    # The grid sampler's seed shuffles the grid, and a grid id means a point of that shuffle: every worker
    # must share it (Optuna's advice), or two workers' ids name other points and designs are drawn twice.
    index = args.worker_index if args.seed_index is None else args.seed_index
    offset = 0 if p.cfg.sampler.name == "grid" else 1000 * index
    n = args.n_trials or p.cfg.n_trials
    timeout = args.timeout if args.timeout is not None else p.cfg.timeout
    try:
        studies = open_search(p, sampler=make_sampler(p, offset))
        if args.confirm:
            ran = run_jobs(p, studies, worker=args.worker_index, progress=not args.no_progress)
            print(f"worker {args.worker_index}: ran {ran} confirmation retrainings", file=sys.stderr)
            return 0
        ran = optimize(p, studies, n, timeout, progress=not args.no_progress, worker=args.worker_index,
                       seed=p.cfg.sampler.seed + offset)
        done = count_finished(studies)
    except Exception as exc:  # a storage failure is worth a restart (exit 75); anything else is not ours
        why = storage_failure(exc)
        if why is None:
            raise
        print(f"auxsearch: worker {args.worker_index}: {why}", file=sys.stderr)
        return EXIT_STORAGE
    print(f"worker {args.worker_index}: ran {ran} trials; the study has {done} of {n}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------ run folders


def cmd_confirm(args) -> int:
    from auxsearch.outputs.runfolder import load_run, read_meta, write_outputs
    from auxsearch.outputs.tables import pareto_table
    from auxsearch.search.confirm import confirm
    from auxsearch.search.prepare import prepare, prepare_recorded
    from auxsearch.search.studies import open_search

    _check_args(args, seeds=1, epochs=1)
    _quiet_optuna(args.verbose)
    meta = read_meta(args.run_dir)
    if "study" in meta:  # the recipe the run recorded: the study file may have moved or changed since
        p = prepare_recorded(meta["study"], Path(args.run_dir), meta["storage"])
    else:  # a run folder written before run.yaml recorded its study
        p = prepare(meta["study_file"], storage=meta["storage"])
        p.out_dir = Path(args.run_dir).resolve()
    ran = confirm(p, open_search(p), seeds=args.seeds, epochs=args.epochs, extra=args.trial or (),
                  progress=not args.no_progress)
    meta, records = load_run(args.run_dir)
    paths = write_outputs(Path(args.run_dir), meta, records)
    print(pareto_table(records, meta["metric"]))
    print(f"\n{ran} retrainings ran; report: {paths['report']}")
    return 0


def cmd_show(args) -> int:
    from auxsearch.outputs.runfolder import load_run
    from auxsearch.outputs.tables import pareto_table, render_front

    fmt = args.format or ("json" if args.json else "table")
    if args.json and fmt != "json":
        raise AuxsearchError(f"--json is --format json; it cannot go with --format {fmt}")
    meta, records = load_run(args.run_dir)
    print(pareto_table(records, meta["metric"]) if fmt == "table" else render_front(records, meta, fmt))
    return 0


def cmd_plot(args) -> int:
    from auxsearch.outputs.runfolder import load_run, write_outputs

    meta, records = load_run(args.run_dir)
    paths = write_outputs(Path(args.run_dir), meta, records)
    print(f"wrote {paths['report']}")
    return 0


def cmd_repair(args) -> int:
    from auxsearch.outputs.runfolder import read_meta
    from auxsearch.store import journal
    from auxsearch.store.records import load_records
    from auxsearch.store.storage import StorageURL

    meta = read_meta(args.run_dir)
    path = StorageURL(meta["storage"]).journal
    if path is None:
        raise ConfigError("", f"{args.run_dir} keeps its study in {meta['storage']}, not a journal file: a database "
                          "repairs itself")
    backup, kept, dropped = journal.repair(path)
    records = load_records(meta["storage"], meta["name"])  # Optuna reads the repaired journal from the start
    print(f"repaired {path}: kept {kept} records, dropped {dropped} unreadable line(s); the original is {backup}. "
          f"The run has {len(records)} trials; `auxsearch run` resumes it")
    return 0


def cmd_export(args) -> int:
    from auxsearch.config import parse_bytes
    from auxsearch.outputs.export import export, pick
    from auxsearch.outputs.repo_tables import table_entry

    budget = parse_bytes("--max-memory", args.max_memory) if args.max_memory else None
    rule = {"trial": args.trial, "max_memory": budget, "knee_point": args.knee, "best_score": args.best_score,
            "allow_dominated": args.allow_dominated}
    if args.format in ("infopro", "auglocal"):
        rec, design, _ = pick(args.run_dir, **rule)
        text = table_entry(design, args.format).render()
        print(text, end="")
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(text)
            print(f"# wrote {args.output}", file=sys.stderr)
        return 0
    if args.output is None:
        raise AuxsearchError(f"-o/--output: --format {args.format} writes a file; name it, e.g. "
                             + ("-o train_best.py" if args.format == "script" else "-o best.yaml"))
    rec, path = export(args.run_dir, args.output, args.format, **rule)
    how = f"run it with `python {path} --epochs 1`" if args.format == "script" else f"train it with `auxsearch train {path}`"
    if rec is None:
        print(f"wrote {path}; {how}")
        return 0
    c = rec.get("confirmed")
    score = (f"val {c['val']['mean']:.4f} +- {c['val']['std']:.4f}, test {c['test']['mean']:.4f} +- "
             f"{c['test']['std']:.4f} over {len(c['seeds'])} seeds" if c else f"val {rec['score']:.4f} (one seed, unconfirmed)")
    print(f"wrote {path}: trial {rec['trial']}, K = {rec['K']}, {score}, peak {_mib(rec['peak_memory_bytes'])}; {how}")
    return 0


def cmd_validate(args) -> int:
    from auxsearch.search.validate import validate

    _quiet_optuna()
    for line in validate(args.study, deep=args.deep):
        print(line)
    return 0
