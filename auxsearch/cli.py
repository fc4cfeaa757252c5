"""The ``auxsearch`` command line. The only place that catches AuxsearchError."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import AuxsearchError

EXIT_USER_ERROR = 2


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one design file and report score, peak memory and time")
    p.add_argument("design", type=Path, help="a design YAML file")
    p.add_argument("--epochs", type=int, help="override the design's train.epochs")
    p.add_argument("--batch-size", type=int, help="override the design's train.batch_size")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override train.device")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--save", type=Path, help="write the trained weights (state_dict) to this .pt file")
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
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=cmd_memory)


def _add_draw(sub) -> None:
    p = sub.add_parser("draw", help="draw a design's block graph to an HTML (or PNG/SVG with kaleido) file")
    p.add_argument("design", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="output .html file")
    p.set_defaults(func=cmd_draw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auxsearch", description=__doc__.splitlines()[0].split(".")[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_memory, _add_draw):
        add(sub)
    return parser


def cmd_train(args) -> int:
    from .config import TrainConfig, from_mapping, to_mapping
    from .graph import as_design, load_design
    from .training import fit

    design = as_design(load_design(args.design))
    recipe = to_mapping(from_mapping(TrainConfig, design.get("train"), "train"))
    for name in ("epochs", "batch_size", "device", "seed"):
        if getattr(args, name) is not None:
            recipe[name] = getattr(args, name)
    result = fit(design, train=from_mapping(TrainConfig, recipe, "train"), base_dir=args.design.parent,
                 progress=not args.json or sys.stderr.isatty())
    if args.save:
        import torch

        args.save.parent.mkdir(parents=True, exist_ok=True)
        torch.save(result.model.state_dict(), args.save)
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

    design = as_design(load_design(args.design))
    cfg = from_mapping(TrainConfig, design.get("train"), "train")
    size = tuple(args.input_size) if args.input_size else None
    if args.mode == "simulated":
        peak = memory.simulate(design, args.batch_size, size, cfg)
        e2e = memory.simulate(end_to_end(design), args.batch_size, size, cfg)
    else:
        peak = memory.measure(design, args.batch_size, size, cfg, args.device)
        e2e = memory.measure(end_to_end(design), args.batch_size, size, cfg, args.device)
    out = {"design_hash": design_hash(design), "memory_mode": args.mode, "batch_size": args.batch_size,
           "input_shape": [design["input_shape"][0], *(size or design["input_shape"][1:])],
           "peak_bytes": peak, "floor_bytes": memory.floor(design, args.batch_size, size, cfg),
           "e2e_peak_bytes": e2e, "ratio_to_e2e": peak / e2e}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"peak {_mib(peak)} ({args.mode}), floor {_mib(out['floor_bytes'])}, end-to-end {_mib(e2e)}: "
              f"{out['ratio_to_e2e']:.2f}x of end-to-end at batch {args.batch_size}")
    return 0


def cmd_draw(args) -> int:
    from .drawing import design_figure
    from .graph import load_design

    fig = design_figure(load_design(args.design), title=str(args.design.name))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(args.output, include_plotlyjs=True)
    print(f"wrote {args.output}")
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
