"""The ``auxsearch`` command line: its options, and the only place that catches AuxsearchError
(one line, exit 2) and anything unexpected (one line, exit 1; ``--debug`` shows the traceback).

Importing this module imports no torch, Optuna or plotly: each command imports what it needs
when it runs (:mod:`auxsearch.commands`), so ``auxsearch --help`` and ``--version`` answer at
once and the commands that only read a run folder start as fast as Optuna's own CLI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from auxsearch.config import PRECISIONS
from auxsearch.errors import AuxsearchError
from auxsearch.version import __version__

EXIT_FAILURE = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXPORT_FORMATS = ("design", "script", "infopro", "auglocal")
SHOW_FORMATS = ("table", "json", "csv", "markdown", "yaml")


def _cmd(name: str):
    """The command function ``commands.cmd_<name>``, imported when the command runs."""
    def run(args) -> int:
        from auxsearch import commands

        return getattr(commands, f"cmd_{name}")(args)

    return run


_FLAGS = {"json": "print one JSON object on stdout", "no-progress": "no progress bars",
          "verbose": "Optuna's own INFO lines too"}


def _flags(p, *names: str) -> None:
    """The on/off options several commands share, worded once."""
    for name in names:
        p.add_argument(f"--{name}", action="store_true", help=_FLAGS[name])


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one design file; report validation and test scores, peak memory, time")
    p.add_argument("design", type=Path, help="a design YAML file")
    p.add_argument("--epochs", type=int, help="override the design's train.epochs")
    p.add_argument("--batch-size", type=int, help="override the design's train.batch_size")
    p.add_argument("--lr", type=float, help="override the design's train.lr")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override train.device")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--precision", choices=PRECISIONS, help="override train.precision (fp32, bf16 or fp16 autocast)")
    p.add_argument("--data-root", type=Path, help="override the data set's root folder (data.root)")
    p.add_argument("--save", type=Path, help="a .pt file: write the trained weights (state_dict) there; a folder: "
                   "DIR/last.pt after every epoch (weights, optimizer, schedule, RNG) and DIR/model.pt at the end")
    p.add_argument("--resume", action="store_true", help="with --save DIR: go on from DIR/last.pt when it exists")
    _flags(p, "json")
    p.set_defaults(func=_cmd("train"))


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
    _flags(p, "json")
    p.set_defaults(func=_cmd("memory"))


def _add_draw(sub) -> None:
    p = sub.add_parser("draw", help="draw a design's block graph to an HTML file (PNG / SVG with kaleido)")
    p.add_argument("design", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="output file: .html, or .png / .svg "
                   "(needs the kaleido package)")
    p.set_defaults(func=_cmd("draw"))


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="search a study file to a Pareto front (resumes if run before)")
    p.add_argument("study", type=Path, help="a study YAML file, e.g. studies/quickstart.yaml")
    p.add_argument("--storage", help="Optuna storage URL (default: a journal file in the run folder)")
    p.add_argument("--n-trials", type=int, help="override the study's n_trials")
    p.add_argument("--timeout", type=float, help="override the study's timeout (seconds)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes sharing the study (one GPU each when several are visible); a worker that "
                        "dies is restarted (docs/distributed.md)")
    p.add_argument("--max-restarts", type=int, default=None,
                   help="with --workers N: a worker dying this many times in a row without finishing a trial "
                        "is restarted no more (default 5; delays 1, 2, 4 ... s, at most 60 s)")
    p.add_argument("--fresh", action="store_true", help="move an existing run folder aside and start over")
    _flags(p, "no-progress", "verbose")
    p.set_defaults(func=_cmd("run"))
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
    p.add_argument("--confirm", action="store_true",
                   help="run the study's waiting confirmation retrainings (run --workers N hands them out) and stop")
    _flags(p, "no-progress", "verbose")
    p.set_defaults(func=_cmd("worker"))


def _add_run_readers(sub) -> None:
    p = sub.add_parser("show", help="print the Pareto front of a run folder")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--format", choices=SHOW_FORMATS,
                   help="table (default); json / yaml: one object with front, knee, E2E reference, counts; csv / "
                        "markdown: the front and the E2E reference as rows, for a paper or a notebook")
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.set_defaults(func=_cmd("show"))
    p = sub.add_parser("confirm", help="retrain a run's front and E2E with more seeds (resumes; extends with --seeds)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--seeds", type=int, help="seeds per design in all (default: the study's confirm.seeds)")
    p.add_argument("--epochs", type=int, help="epochs per retraining (default: confirm.epochs or train.epochs)")
    p.add_argument("--trial", action="append", help="also confirm this trial (a number, or a reference's name; "
                   "repeatable)")
    _flags(p, "no-progress", "verbose")
    p.set_defaults(func=_cmd("confirm"))
    p = sub.add_parser("plot", help="(re)write report.html and the other outputs of a run folder")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=_cmd("plot"))
    p = sub.add_parser("repair", help="make a run's damaged journal readable again (keeps every readable record)")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=_cmd("repair"))
    p = sub.add_parser("export", help="write one design of a run as a design file, a training script or a "
                                      "repository's split table")
    p.add_argument("run_dir", type=Path, help="a run folder (or one design file, to convert it)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="design",
                   help="design: a design file (default); script: an editable training script; infopro / "
                        "auglocal: the split points as that repository's table entry, printed")
    p.add_argument("-o", "--output", type=Path,
                   help="file to write (needed for design and script; infopro / auglocal print, and write it too)")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--trial", help="this trial (a number, or a reference's name such as e2e)")
    pick.add_argument("--max-memory", help="the best-scoring front design within this peak (e.g. 2MiB)")
    pick.add_argument("--knee", action="store_true", help="the knee of the front (the one the report and show name)")
    pick.add_argument("--best-score", action="store_true", help="the best-scoring design (default)")
    p.add_argument("--allow-dominated", action="store_true", help="with --trial: accept a trial off the front")
    p.set_defaults(func=_cmd("export"))
    p = sub.add_parser("validate", help="check a study file and its search space; trains nothing")
    p.add_argument("study", type=Path)
    p.add_argument("--deep", action="store_true", help="open every data file (default: a sample)")
    p.set_defaults(func=_cmd("validate"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auxsearch", description="Search split points and auxiliary networks "
                                     "for supervised local learning, scored against peak training memory")
    parser.add_argument("--version", action="version", version=f"auxsearch {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_run, _add_run_readers, _add_train, _add_memory, _add_draw):
        add(sub)
    return parser


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
        if args.debug:
            raise
        print("auxsearch: interrupted; the run folder holds everything finished so far (the same command resumes)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # not a user's mistake: one line, the traceback only with --debug
        if args.debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"auxsearch: unexpected error: {type(exc).__name__}: {first} (run with --debug for the traceback; "
              "please report it)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
