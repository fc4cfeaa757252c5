"""The ``auxsearch`` command line. The only place that catches AuxsearchError."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .config import PRECISIONS
from .errors import AuxsearchError

EXIT_USER_ERROR = 2
EXPORT_FORMATS = ("design", "script", "infopro", "auglocal")
SHOW_FORMATS = ("table", "json", "csv", "markdown")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one design file and report score, peak memory and time")
    p.add_argument("design", type=Path, help="a design YAML file")
    p.add_argument("--epochs", type=int, help="override the design's train.epochs")
    p.add_argument("--batch-size", type=int, help="override the design's train.batch_size")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override train.device")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--precision", choices=PRECISIONS, help="override train.precision (fp32, bf16 or fp16 autocast)")
    p.add_argument("--save", type=Path, help="a .pt file: write the trained weights (state_dict) there; a folder: "
                   "DIR/last.pt after every epoch (weights, optimizer, schedule, RNG) and DIR/model.pt at the end")
    p.add_argument("--resume", action="store_true", help="with --save DIR: go on from DIR/last.pt when it exists")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=cmd_train)


def _add_memory(sub) -> None:
    p = sub.add_parser("memory", help="peak training memory of a design (simulated by default)")
    p.add_argument("design", type=Path, help="a design YAML file")
    p.add_argument("--batch-size", type=int, required=True, help="batch size to size the step for")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="image size (default: the design's)")
    p.add_argument("--mode", choices=("simulated", "measured"), default="simulated",
                   help="simulated: fake tensors, nothing allocated; measured: a real step on --device")
    p.add_argument("--device", default="cpu", help="device for --mode measured (cpu or cuda)")
    p.add_argument("--precision", choices=PRECISIONS, help="override train.precision: size the step under bf16/fp16 "
                   "autocast")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=cmd_memory)


def _add_draw(sub) -> None:
    p = sub.add_parser("draw", help="draw a design's block graph to an HTML (or PNG/SVG with kaleido) file")
    p.add_argument("design", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="output .html file")
    p.set_defaults(func=cmd_draw)


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="search a study file to a Pareto front (resumes if run before)")
    p.add_argument("study", type=Path, help="a study YAML file, e.g. studies/quickstart.yaml")
    p.add_argument("--storage", help="Optuna storage URL (default: a journal file in the run folder)")
    p.add_argument("--n-trials", type=int, help="override the study's n_trials")
    p.add_argument("--timeout", type=float, help="override the study's timeout (seconds)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes sharing the study (one GPU each when several exist); a worker that "
                        "dies is restarted (docs/distributed.md)")
    p.add_argument("--max-restarts", type=int, default=None,
                   help="with --workers N: a worker dying this many times in a row without finishing a trial "
                        "is restarted no more (default 5; delays 1, 2, 4 ... s, at most 60 s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("worker", help="join a study's search from this process or machine")
    p.add_argument("study", type=Path, help="the same study file the other workers use")
    p.add_argument("--storage", help="the shared Optuna storage URL, e.g. postgresql://... (default: the study's)")
    p.add_argument("--worker-index", type=int, default=1,
                   help="distinct per worker: seeds its sampler (seed + 1000 x index) reproducibly")
    p.add_argument("--n-trials", type=int, help="override the study's n_trials")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--timeout", type=float, help="override the study's timeout (seconds, from this worker's start)")
    p.add_argument("--seed-index", type=int,
                   help="seed the sampler as worker K would (default: --worker-index); run gives a restarted "
                        "worker a fresh K so it does not draw its first designs again")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_worker)


def _add_run_readers(sub) -> None:
    p = sub.add_parser("show", help="print the Pareto front of a run folder")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--format", choices=SHOW_FORMATS,
                   help="table (default); json: one object with front, E2E reference, counts; csv / markdown: "
                        "the front and the E2E reference as rows, for a paper or a notebook")
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("confirm", help="retrain a run's front and E2E with more seeds (resumes; extends with --seeds)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--seeds", type=int, help="seeds per design in all (default: the study's confirm.seeds)")
    p.add_argument("--epochs", type=int, help="epochs per retraining (default: confirm.epochs or train.epochs)")
    p.add_argument("--trial", type=int, action="append", help="also confirm this trial (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_confirm)
    p = sub.add_parser("plot", help="(re)write report.html and the other outputs of a run folder")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=cmd_plot)
    p = sub.add_parser("export", help="write one design of a run as a design file, a training script or a "
                                      "repository's split table")
    p.add_argument("run_dir", type=Path, help="a run folder (or one design file, to convert it)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="design",
                   help="design: a design file (default); script: an editable training script; infopro / "
                        "auglocal: the split points as that repository's table entry, printed")
    p.add_argument("-o", "--output", type=Path,
                   help="file to write (needed for design and script; infopro / auglocal print, and write it too)")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--trial", type=int, help="this trial number")
    pick.add_argument("--max-memory", help="the best-scoring Pareto design within this peak (e.g. 2MiB)")
    pick.add_argument("--knee", action="store_true", help="the knee of the Pareto front")
    pick.add_argument("--best-score", action="store_true", help="the best-scoring design (default)")
    p.add_argument("--allow-dominated", action="store_true", help="with --trial: accept a trial off the front")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("validate", help="check a study file and its search space; trains nothing")
    p.add_argument("study", type=Path)
    p.set_defaults(func=cmd_validate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auxsearch", description=__doc__.splitlines()[0].split(".")[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_run, _add_run_readers, _add_train, _add_memory, _add_draw):
        add(sub)
    return parser


def _check_args(args, **rules) -> None:
    """CLI numbers that must hold a rule, named by their option (``--epochs``), not a YAML key."""
    for name, low in rules.items():
        value = getattr(args, name, None)
        values = value if isinstance(value, list) else [value]
        if value is not None and any(v < low for v in values):
            raise AuxsearchError(f"--{name.replace('_', '-')}: must be >= {low}, got {value}")


def cmd_train(args) -> int:
    from .config import TrainConfig, from_mapping, to_mapping
    from .graph import as_design, load_design
    from .training import fit

    _check_args(args, epochs=1, batch_size=1, seed=0)
    design = as_design(load_design(args.design))
    recipe = to_mapping(from_mapping(TrainConfig, design.get("train"), "train"))
    for name in ("epochs", "batch_size", "device", "seed", "precision"):
        if getattr(args, name) is not None:
            recipe[name] = getattr(args, name)
    folder = args.save if args.save is not None and args.save.suffix != ".pt" else None
    if args.resume and folder is None:
        raise AuxsearchError("--resume: give the checkpoint folder with --save DIR (a folder, not a .pt file)")
    if folder is not None and folder.exists() and not folder.is_dir():
        raise AuxsearchError(f"--save: {folder} is a file; give a folder for checkpoints or a .pt file for weights")
    if args.resume and not (folder / "last.pt").is_file():
        print(f"no checkpoint in {folder} yet: training from epoch 1", file=sys.stderr)
    result = fit(design, train=from_mapping(TrainConfig, recipe, "train"), base_dir=args.design.parent,
                 progress=not args.json or sys.stderr.isatty(), checkpoint_dir=folder, resume=args.resume)
    if args.save:
        import torch

        weights = folder / "model.pt" if folder is not None else args.save
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(result.model.state_dict(), weights)
    out = result.as_dict()
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.design}: {out['metric']} {out['score']:.4f}, peak memory {_mib(out['peak_memory_bytes'])} "
              f"({out['memory_mode']} on {out['device']}), {out['epochs']} epochs in {out['seconds']:.1f} s, "
              f"design {out['design_hash']}")
    return 0


def cmd_memory(args) -> int:
    from . import memory
    from .config import TrainConfig, from_mapping
    from .engine import end_to_end
    from .graph import as_design, design_hash, load_design

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
    out = {"design_hash": design_hash(design), "memory_mode": args.mode, "batch_size": args.batch_size,
           "precision": cfg.precision,
           "input_shape": [design["input_shape"][0], *(size or design["input_shape"][1:])],
           "peak_bytes": peak,
           "floor_bytes": memory.floor(design, args.batch_size, size, cfg) if _simulatable(design) else None,
           "e2e_peak_bytes": e2e, "ratio_to_e2e": peak / e2e}
    if args.json:
        print(json.dumps(out))
    else:
        floor = _mib(out["floor_bytes"]) if out["floor_bytes"] is not None else "n/a for this task"
        print(f"peak {_mib(peak)} ({args.mode}, {cfg.precision}), floor {floor}, end-to-end {_mib(e2e)}: "
              f"{out['ratio_to_e2e']:.2f}x of end-to-end at batch {args.batch_size}")
    return 0


def _simulatable(design: dict) -> bool:
    from .tasks import get_task

    return get_task(design["task"]["name"]).simulatable


def cmd_draw(args) -> int:
    from .drawing import design_figure
    from .graph import load_design

    fig = design_figure(load_design(args.design), title=str(args.design.name))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(args.output, include_plotlyjs=True)
    print(f"wrote {args.output}")
    return 0


def cmd_run(args) -> int:
    import dataclasses

    from . import distributed, study
    from .report import pareto_table

    _check_args(args, n_trials=1, timeout=0, workers=1, max_restarts=0)
    distributed.guard_journals()  # before the first append: opening a study writes too
    run = study.prepare(args.study, storage=args.storage)
    if args.n_trials is not None or args.timeout is not None:
        run.cfg = dataclasses.replace(run.cfg, n_trials=args.n_trials or run.cfg.n_trials,
                                      timeout=args.timeout if args.timeout is not None else run.cfg.timeout)
    done = study.finished(study.open_study(run))
    if done >= run.cfg.n_trials:
        print(f"study {run.cfg.name!r} already finished {done} trials (n_trials: {run.cfg.n_trials}); "
              "raise --n-trials to search further (confirmation still completes)", file=sys.stderr)
    try:
        _, records, paths = study.run(run, workers=args.workers, progress=not args.no_progress,
                                      max_restarts=args.max_restarts)
    except distributed.StudyIncomplete as exc:
        print(f"auxsearch: {exc}", file=sys.stderr)
        return distributed.EXIT_INCOMPLETE
    except Exception as exc:
        why = distributed.storage_failure(exc)
        if why is None:
            raise
        from .storage import load_study

        try:
            done = study.finished(load_study(run.storage_url, run.cfg.name))  # reads only
        except Exception:  # the storage is still unreadable
            done = None
        print(f"auxsearch: {distributed.StudyIncomplete(done, run.cfg.n_trials, why)}", file=sys.stderr)
        return distributed.EXIT_INCOMPLETE
    print(pareto_table(records, run.metric))
    print(f"\nrun folder: {run.out_dir}\nreport:     {paths['report']}\nexport:     auxsearch export "
          f"{run.out_dir} --knee -o best.yaml")
    return 0


def cmd_confirm(args) -> int:
    from . import confirm, rundir, study
    from .records import load_records
    from .report import pareto_table

    _check_args(args, seeds=1, epochs=1)
    meta = rundir.read_meta(args.run_dir)
    run = study.prepare(meta["study_file"], storage=meta["storage"])
    st = study.open_study(run)
    ran = confirm.confirm(run, st, seeds=args.seeds, epochs=args.epochs, extra=args.trial or (),
                          progress=not args.no_progress)
    records = load_records(meta["storage"], meta["name"])
    paths = rundir.write_outputs(Path(args.run_dir), meta, records)
    print(pareto_table(records, meta["metric"]))
    print(f"\n{ran} retrainings ran; report: {paths['report']}")
    return 0


def cmd_worker(args) -> int:
    from . import distributed, study
    from .samplers import make_sampler

    _check_args(args, n_trials=1, threads=0, worker_index=0, timeout=0, seed_index=0)
    distributed.guard_journals()  # before the first append: opening a study writes too
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    run = study.prepare(args.study, storage=args.storage)
    distributed.refuse_sqlite(run.storage_url, 2)
    # The grid sampler's seed shuffles the grid, and a grid id means a point of that shuffle: every worker
    # must share it (Optuna's advice), or two workers' ids name other points and designs are drawn twice.
    index = args.worker_index if args.seed_index is None else args.seed_index
    offset = 0 if run.cfg.sampler.name == "grid" else 1000 * index
    n = args.n_trials or run.cfg.n_trials
    timeout = args.timeout if args.timeout is not None else run.cfg.timeout
    try:
        st = study.open_study(run, sampler=make_sampler(run, offset))
        ran = study.optimize(run, st, n, timeout, progress=not args.no_progress, worker=args.worker_index,
                             seed=run.cfg.sampler.seed + offset)
        done = study.finished(st)
    except Exception as exc:  # a storage failure is worth a restart (exit 75); anything else is not ours
        why = distributed.storage_failure(exc)
        if why is None:
            raise
        print(f"auxsearch: worker {args.worker_index}: {why}", file=sys.stderr)
        return distributed.EXIT_STORAGE
    print(f"worker {args.worker_index}: ran {ran} trials; the study has {done} of {n}", file=sys.stderr)
    return 0


def cmd_show(args) -> int:
    from . import report, rundir

    fmt = args.format or ("json" if args.json else "table")
    if args.json and fmt != "json":
        raise AuxsearchError(f"--json is --format json; it cannot go with --format {fmt}")
    meta, records = rundir.load_run(args.run_dir)
    print(report.pareto_table(records, meta["metric"]) if fmt == "table" else rundir.render_front(records, meta, fmt))
    return 0


def cmd_plot(args) -> int:
    from . import rundir

    meta, records = rundir.load_run(args.run_dir)
    paths = rundir.write_outputs(Path(args.run_dir), meta, records)
    print(f"wrote {paths['report']}")
    return 0


def cmd_export(args) -> int:
    from .config import parse_bytes
    from .export import export, pick, table_entry

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
             f"{c['test']['std']:.4f} over {len(c['seeds'])} seeds" if c else f"val {rec['score']:.4f} (one seed)")
    print(f"wrote {path}: trial {rec['number']}, K = {rec['K']}, {score}, "
          f"peak {_mib(rec['peak_memory_bytes'])}; {how}")
    return 0


def cmd_validate(args) -> int:
    from . import study
    from .engine import build
    from .samplers import sampler_name

    run = study.prepare(args.study)
    designs = study.sample_designs(run, 5)
    for d in designs:
        build(d)
    dims = {k: v.values() for k, v in run.space.dims.items() if not v.is_fixed()}
    print(f"{args.study}: ok. backbone {run.base['backbone']['name']} ({run.base['num_units']} units), "
          f"task {run.base['task']['name']}, data {run.cfg.data.get('name', 'default')} ({len(run.data.train)} train / {len(run.data.test)} test), "
          f"sampler {sampler_name(run)}, {run.cfg.n_trials} trials, storage {run.storage_url}; "
          f"searched: {', '.join(f'{k} {v}' for k, v in dims.items())}; 5 sampled designs build.")
    return 0


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AuxsearchError as exc:
        if args.debug:
            raise
        print(f"auxsearch: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("auxsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
