"""GPU truth: every CUDA claim of auxsearch, checked on one GPU by one command (about 6 minutes, at most 8).

Each check is a *cell*; a cell that fails is a row that says which and why, and the others still run.
``python benchmarks/gpu_truth.py --dry-run`` lists the cells (any machine, seconds);
``--cpu-dry-run`` runs the same code at tiny shapes on the CPU (the CUDA-only cells are skipped).

Cells (``CELLS`` below, in the order they run):

* ``memory``: the memory table's designs (CIFAR ResNet-32 and -110, every aux family, K in 1, 2, 4, 8,
  balanced splits, batch 1024) under fp32, bf16 and fp16: the peak *as a trial records it* (``fit`` on a
  CIFAR-shaped tensor data set held on the GPU, the same path as ``auxsearch run``: one device copy of the
  data, workspaces warmed up, the baseline before each step subtracted) beside ``memory.simulate``.
  Target: |simulated - measured| <= 5 % for every row.
* ``infopro``: InfoPro's Table 3 designs (ResNet-110, batch 1024, InfoPro's balanced splits) against the
  paper, with what the card holds beyond the allocator (context, caching) from ``mem_get_info``.
* ``oom``: an isolated trial that cannot fit ends as out of memory with the peak it reached, and the
  objective's verdict is "the design's" (it reached the memory it may use).
* ``isolated-loader``: an isolated trial of a data set read by a DataLoader with worker processes trains.
* ``workers``: ``auxsearch run --workers 2`` on this one GPU: each worker gets half of it, no trial is
  infeasible for lack of the other's memory, and the confirmation's retrainings run on the workers.
* ``step-time``: ``train_step`` against a hand-written loop of the same modules (target <= 1.05).
* ``pipeline``: device batches (cut, augmented, converted on the GPU) against the training step they feed.
* ``bf16``: bf16 is native here, or refused with a message (compute capability < 8.0).

Writes section ``gpu-truth`` of docs/results.md (``--output PATH`` elsewhere) naming the device and
versions; ``--json PATH`` writes every figure. Exit status 0 when every cell that ran met its target, 1
otherwise, 2 without a GPU (and no dry-run flag).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SECTION = "gpu-truth"
MIB = 2**20
ERROR_TARGET = 5.0  # |simulated - measured| / measured, %
STEP_TARGET = 1.05
INFOPRO_SPLITS = {2: [16], 3: [11, 22], 4: [8, 16, 28]}  # InfoPro_balanced_memory['resnet110']['cifar10'][K]
INFOPRO_PUBLISHED = {1: 9.40, 2: 5.38, 3: 4.22, 4: 3.52}  # InfoPro (Wang et al. ICLR'21) Table 3, Titan Xp, GB


@dataclass(frozen=True)
class Cell:
    name: str
    claim: str
    run: Callable[[Ctx], dict]
    cuda_only: bool = False
    minutes: float = 0.5  # expected on one GPU


@dataclass
class Ctx:
    """What every cell runs with: the device, the sizes (GPU or tiny), the deadline."""

    cuda: bool
    deadline: float

    @property
    def device(self) -> str:
        return "cuda" if self.cuda else "cpu"

    @property
    def batch(self) -> int:
        return 1024 if self.cuda else 8

    @property
    def networks(self) -> dict[str, int]:
        return {"resnet32": 16, "resnet110": 55} if self.cuda else {"resnet8": 4}

    @property
    def shape(self) -> list[int]:
        return [3, 32, 32] if self.cuda else [3, 16, 16]

    @property
    def families(self) -> tuple[str, ...]:
        return ("dgl", "infopro", "augment", "momentum") if self.cuda else ("dgl", "infopro")

    @property
    def ks(self) -> tuple[int, ...]:
        return (1, 2, 4, 8) if self.cuda else (1, 2)

    @property
    def precisions(self) -> tuple[str, ...]:
        return ("fp32", "bf16", "fp16") if self.cuda else ("fp32", "bf16")


CELLS: list[Cell] = []


def cell(name: str, claim: str, *, cuda_only: bool = False, minutes: float = 0.5):
    def add(fn: Callable[[Ctx], dict]) -> Callable[[Ctx], dict]:
        CELLS.append(Cell(name, claim, fn, cuda_only, minutes))
        return fn

    return add


# ----------------------------------------------------------------- helpers


def release(cuda: bool) -> None:
    import torch

    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def design_of(network: str, units: int, shape: list[int], splits: list[int], aux: dict) -> dict:
    return {"backbone": network, "input_shape": list(shape), "num_classes": 10, "num_units": units,
            "splits": list(splits), "aux": [dict(aux)] * len(splits)}


def aux_entry(family: str, depth: int = 2, width: int = 64) -> dict:
    entry = {"family": family, "depth": depth, "width": width}
    return {**entry, "head": "dgl"} if family == "momentum" else entry


def cifar_like(shape: list[int], n_train: int):
    """Random CIFAR-shaped uint8 images held as tensors (what CIFAR loads to): train, validation and test."""
    import torch

    from auxsearch.tasks.data import ImageData
    from auxsearch.tasks.tensor_data import TensorImages

    g = torch.Generator().manual_seed(0)

    def split(n: int, augment: bool) -> TensorImages:
        return TensorImages(torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g),
                            torch.randint(0, 10, (n,), generator=g), augment)

    return ImageData(train=split(n_train, True), val=split(64, False), test=split(64, False), in_chans=shape[0],
                     num_classes=10, image_size=shape[1], mean=(0.5,) * shape[0], std=(0.25,) * shape[0])


def trial_peak(design: dict, precision: str, batch: int, device: str) -> int:
    """The peak a search trial records for ``design``: ``fit`` over two steps on tensor data on the device."""
    from auxsearch.config import TrainConfig
    from auxsearch.train.loop import fit

    cfg = TrainConfig(epochs=1, batch_size=batch, precision=precision, device=device, bn_recalibration_batches=0,
                      eval_batch_size=64, lr=0.01)
    return fit(design, train=cfg, data=cifar_like(design["input_shape"], 2 * batch)).peak_memory_bytes


def simulated_peak(design: dict, precision: str, batch: int) -> int:
    from auxsearch.config import TrainConfig
    from auxsearch.train import memory

    return memory.simulate(design, batch, train=TrainConfig(precision=precision, batch_size=batch))


def short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def smi_used() -> int | None:
    """Device memory in use as nvidia-smi reports it for the first visible GPU; None when it cannot tell
    (no nvidia-smi, "[N/A]" on a MIG slice or a passive GPU, an unexpected line)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_smi(out, os.environ.get("CUDA_VISIBLE_DEVICES", ""))


def parse_smi(out: str, visible: str) -> int | None:
    used = {}
    for line in out.strip().splitlines():
        parts = [s.strip() for s in line.split(",")]
        if len(parts) != 3:
            continue
        idx, uuid, mib = parts
        try:
            used[idx] = used[uuid] = int(float(mib)) * MIB
        except ValueError:  # "[N/A]", "[Not Supported]"
            continue
    first = visible.split(",")[0].strip()
    if first in used:
        return used[first]
    indices = sorted((k for k in used if k.isdigit()), key=int)
    return used[indices[0]] if indices and not first else None


# ----------------------------------------------------------------- the cells


def memory_rows(ctx: Ctx) -> list[dict]:
    from auxsearch.design.space import balanced_splits
    from auxsearch.model.engine import trace_shapes

    rows = []
    for net, units in ctx.networks.items():
        from auxsearch.backbones import create_units

        _, outs = trace_shapes(create_units(net, ctx.shape[0], None), ctx.shape)
        costs = [float(o[0] * o[1] * o[2]) for o in outs]
        for k in ctx.ks:
            for fam in ("E2E",) if k == 1 else ctx.families:
                splits = [] if k == 1 else balanced_splits(costs, k)
                rows.append({"network": net, "family": fam, "k": k,
                             "design": design_of(net, units, ctx.shape, splits, {} if k == 1 else aux_entry(fam))})
    return rows


@cell("memory", "simulated peak vs the peak a trial records: memory-table designs x fp32, bf16, fp16", minutes=3.5)
def memory_cell(ctx: Ctx) -> dict:
    rows, worst = [], 0.0
    for row in memory_rows(ctx):
        for p in ctx.precisions:
            if time.monotonic() > ctx.deadline:
                rows.append({**row, "precision": p, "error": "skipped: time limit"})
                continue
            release(ctx.cuda)
            try:
                sim, meas = simulated_peak(row["design"], p, ctx.batch), trial_peak(row["design"], p, ctx.batch,
                                                                                    ctx.device)
                err = 100.0 * (sim - meas) / meas
                worst = max(worst, abs(err))
                rows.append({**row, "precision": p, "simulated": sim, "measured": meas, "error_pct": err})
            except Exception as exc:  # one failing row is a row
                rows.append({**row, "precision": p, "error": short(exc)})
            print(f"  memory {row['network']} {row['family']} K={row['k']} {p}: {rows[-1].get('error_pct', rows[-1].get('error'))}",
                  flush=True)
    failed = [r for r in rows if "error" in r]
    ok = not failed and worst <= ERROR_TARGET
    return {"status": "MET" if ok else "MISSED", "rows": rows,
            "detail": f"largest |error| {worst:.2f} % over {len(rows) - len(failed)} rows (target {ERROR_TARGET:g} %)"
                      + (f"; {len(failed)} rows failed or skipped" if failed else "")}


@cell("infopro", "InfoPro Table 3 designs (ResNet-110, batch 1024) against the paper", minutes=0.7)
def infopro_cell(ctx: Ctx) -> dict:
    import torch

    from auxsearch.design.recipes import infopro_entries

    net, units = ("resnet110", 55) if ctx.cuda else ("resnet8", 4)
    splits = INFOPRO_SPLITS if ctx.cuda else {2: [2]}
    aux = infopro_entries([0], [], 2, False)[0]
    rows = []
    for k in (1, *splits):
        d = design_of(net, units, ctx.shape, splits.get(k, []), {} if k == 1 else aux)
        release(ctx.cuda)
        sim = simulated_peak(d, "fp32", ctx.batch)
        meas = trial_peak(d, "fp32", ctx.batch, ctx.device)
        card = None
        if ctx.cuda:
            free, total = torch.cuda.mem_get_info()
            card = int(total - free)  # what nvidia-smi would show while the step's memory is cached
        rows.append({"k": k, "splits": splits.get(k, []), "simulated": sim, "measured": meas, "card": card,
                     "published_gb": INFOPRO_PUBLISHED.get(k) if ctx.cuda else None,
                     "error_pct": 100.0 * (sim - meas) / meas})
    worst = max(abs(r["error_pct"]) for r in rows)
    return {"status": "MET" if worst <= ERROR_TARGET else "MISSED", "rows": rows,
            "detail": f"simulated vs measured within {worst:.2f} %; the paper's figures are nvidia-smi's (context "
                      "and caching included), beside the card's use in the table"}


@cell("oom", "an isolated trial that cannot fit: out of memory, its own peak reached, infeasible", cuda_only=True)
def oom_cell(ctx: Ctx) -> dict:
    from auxsearch.config import TrainConfig
    from auxsearch.train.devices import oom_verdict
    from auxsearch.train.isolation import TrialOutOfMemory, fit_in_subprocess

    d = design_of("resnet110", 55, [1, 256, 256], [17], aux_entry("dgl", 1, 32))
    cfg = TrainConfig(epochs=1, batch_size=1024, device="cuda", bn_recalibration_batches=0, eval_batch_size=64)
    try:
        fit_in_subprocess(d, cfg, {"name": "digits", "image_size": 256}, None)
    except TrialOutOfMemory as exc:
        verdict = oom_verdict(exc.reached, exc.limit)
        ok = (exc.reached or 0) > 0 and verdict == "infeasible"
        return {"status": "PASS" if ok else "FAIL",
                "detail": f"reached {exc.reached}, limit {exc.limit}, verdict {verdict}"}
    return {"status": "FAIL", "detail": "the trial fitted: no out of memory to check"}


@cell("isolated-loader", "an isolated trial of a DataLoader data set with loader workers trains")
def isolated_loader_cell(ctx: Ctx) -> dict:
    from auxsearch.config import TrainConfig
    from auxsearch.train.isolation import fit_in_subprocess

    d = {"task": {"name": "segmentation", "args": {"levels": 2, "decoder_channels": 16}}, "backbone": "resnet8",
         "input_shape": [3, 48, 48], "num_classes": 5, "num_units": 4, "splits": [2],
         "aux": [{"family": "dgl", "depth": 1, "width": 16}]}
    cfg = TrainConfig(epochs=1, batch_size=32, device=ctx.device, loader_workers=2, optimizer="adamw", lr=0.003,
                      bn_recalibration_batches=1)
    result, _ = fit_in_subprocess(d, cfg, {"name": "scenes", "image_size": 48, "num_train": 128, "num_test": 32},
                                  None, timeout=300)
    return {"status": "PASS", "detail": f"trained in {result.seconds:.1f} s, mIoU {result.score:.3f}, "
                                        f"peak {result.peak_memory_bytes / MIB:.1f} MiB on {result.device}"}


@cell("workers", "run --workers 2 on one GPU: shared, no false infeasible, confirmation on the workers", minutes=1.5)
def workers_cell(ctx: Ctx) -> dict:
    import optuna

    from auxsearch.store.heartbeat import WORKER_KEY
    from auxsearch.store.records import load_records
    from auxsearch.store.storage import open_storage

    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "study.yaml"
        study.write_text(yaml.safe_dump({
            "name": "gpu-truth", "data": {"name": "digits", "image_size": 32}, "backbone": {"name": "resnet20"},
            "search_space": {"modules": {"low": 2, "high": 4}, "splits": "balanced", "families": ["dgl", "infopro"],
                             "depth": 1, "width": [16, 32]},
            "train": {"epochs": 2, "batch_size": 128, "lr": 0.05, "device": ctx.device}, "sampler": {"name": "tpe"},
            "n_trials": 6, "confirm": {"seeds": 2, "max_designs": 1}, "output": str(Path(tmp) / "run")}))
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]}
        done = subprocess.run([sys.executable, "-m", "auxsearch", "run", str(study), "--workers", "2", "--no-progress"],
                              capture_output=True, text=True, timeout=420, env=env, cwd=ROOT)
        if done.returncode != 0:
            return {"status": "FAIL", "detail": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
        url = f"journal:{Path(tmp) / 'run' / 'study.journal'}"
        recs = load_records(url, "gpu-truth")
        jobs = optuna.load_study(study_name="gpu-truth:confirm", storage=open_storage(url, writes=False)).trials
    infeasible = [r["trial"] for r in recs if r["state"] == "INFEASIBLE"]
    confirmed = [t for t in jobs if t.state.name == "COMPLETE"]
    on_workers = all(t.system_attrs.get(WORKER_KEY) for t in confirmed)
    shared = ("share" in done.stderr) if ctx.cuda else True
    ok = not infeasible and len(confirmed) == 4 and on_workers and shared
    return {"status": "PASS" if ok else "FAIL",
            "detail": f"{sum(r['state'] == 'COMPLETE' for r in recs)} complete, infeasible {infeasible or 'none'}; "
                      f"{len(confirmed)} of 4 retrainings complete on the workers; share announced: {shared}"}


@cell("step-time", "train_step against a hand-written loop of the same modules (target <= 1.05)")
def step_time_cell(ctx: Ctx) -> dict:
    import copy
    import statistics

    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from overhead import hand_written_step

    from auxsearch.config import TrainConfig
    from auxsearch.model.engine import build, make_optimizer, train_step

    d = design_of("resnet20", 10, ctx.shape, [3, 5, 7], aux_entry("dgl", 1, 32))
    batch = 128 if ctx.cuda else 8
    torch.manual_seed(0)
    ours = build(d).to(ctx.device)
    theirs = copy.deepcopy(ours)
    x = torch.rand(batch, *ctx.shape, device=ctx.device)
    y = torch.randint(0, 10, (batch,), device=ctx.device)
    opt_a, _ = make_optimizer(ours, TrainConfig(), 1000)
    opt_b, _ = make_optimizer(theirs, TrainConfig(), 1000)
    heads, xb = [a.end for a in theirs.aux], (x - theirs.mean) / theirs.std

    def timed(fn, steps: int = 10 if ctx.cuda else 2) -> float:
        if ctx.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        if ctx.cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps

    def a():
        train_step(ours, opt_a, x, y)

    def b():
        hand_written_step(theirs.stages, heads, theirs.head, opt_b, xb, y)

    for _ in range(3):
        a()
        b()
    ta, tb = zip(*((timed(a), timed(b)) for _ in range(5 if ctx.cuda else 2)), strict=True)
    ratio = statistics.median(ta) / statistics.median(tb)
    return {"status": ("MET" if ratio <= STEP_TARGET else "MISSED") if ctx.cuda else "ran on CPU",
            "detail": f"{statistics.median(ta) * 1e3:.2f} ms vs {statistics.median(tb) * 1e3:.2f} ms: ratio {ratio:.3f}"}


@cell("pipeline", "device batches (cut, augmented, converted on the GPU) against the step they feed")
def pipeline_cell(ctx: Ctx) -> dict:
    import torch

    from auxsearch.config import TrainConfig
    from auxsearch.model.engine import build, make_optimizer, train_step
    from auxsearch.train.data import train_batches

    batch = 512 if ctx.cuda else 16
    data = cifar_like(ctx.shape, 8 * batch)
    cfg = TrainConfig(batch_size=batch, device=ctx.device)
    device = torch.device(ctx.device)
    d = design_of("resnet20", 10, ctx.shape, [5], aux_entry("dgl", 1, 32))
    model = build(d).to(device)
    opt, _ = make_optimizer(model, cfg, 100)

    def sync() -> None:
        if ctx.cuda:
            torch.cuda.synchronize()

    loader = train_batches(data, cfg, device)
    batches = list(loader)  # warm-up: the device copy, the first gather
    sync()
    start = time.perf_counter()
    batches = list(loader)
    sync()
    load = (time.perf_counter() - start) / len(batches)
    train_step(model, opt, *batches[0])
    sync()
    start = time.perf_counter()
    for x, y in batches:
        train_step(model, opt, x, y)
    sync()
    step = (time.perf_counter() - start) / len(batches)
    return {"status": "PASS" if load < step else "MISSED",
            "detail": f"batch {batch}: {load * 1e3:.2f} ms to make a batch, {step * 1e3:.2f} ms per step "
                      f"({load / step:.2f} of a step)"}


@cell("bf16", "bf16 is native on this GPU, or a study asking for it is refused", cuda_only=True, minutes=0.1)
def bf16_cell(ctx: Ctx) -> dict:
    import torch

    from auxsearch.errors import ConfigError
    from auxsearch.train.devices import check_precision

    native = torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        check_precision("bf16", torch.device("cuda"))
        return {"status": "PASS" if native else "FAIL", "detail": f"native bf16: {native}; accepted"}
    except ConfigError as exc:
        return {"status": "PASS" if not native else "FAIL", "detail": f"native bf16: {native}; refused: {exc}"}


# ----------------------------------------------------------------- running and reporting


def run_cells(ctx: Ctx, cells: list[Cell]) -> list[dict]:
    """Every cell in order; one that raises is a FAILED row naming the error, and the next one runs."""
    out = []
    for c in cells:
        start = time.monotonic()
        if c.cuda_only and not ctx.cuda:
            res = {"status": "skipped (no CUDA)", "detail": "needs a GPU"}
        else:
            print(f"{c.name}: {c.claim}", flush=True)
            try:
                res = c.run(ctx)
            except Exception as exc:
                res = {"status": "FAILED", "detail": short(exc), "traceback": traceback.format_exc()[-2000:]}
            release(ctx.cuda)
        res.update(cell=c.name, claim=c.claim, seconds=round(time.monotonic() - start, 1))
        print(f"  -> {res['status']}: {res['detail']}", flush=True)
        out.append(res)
    return out


def versions(cuda: bool) -> str:
    import torch

    if not cuda:
        return f"- CPU dry run: torch {torch.__version__} (CUDA build {torch.version.cuda}), no CUDA device"
    p = torch.cuda.get_device_properties(0)
    return (f"- GPU: {torch.cuda.get_device_name(0)}, {p.total_memory / 2**30:.1f} GiB, compute capability "
            f"{p.major}.{p.minor}; torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
            f"{torch.backends.cudnn.version()}")


def memory_md(rows: list[dict]) -> str:
    lines = ["| network | family | K | precision | simulated (MiB) | measured (MiB) | error % |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['network']} | {r['family']} | {r['k']} | {r['precision']} | failed: "
                         f"{r['error'].replace('|', '/')} | | |")
        else:
            lines.append(f"| {r['network']} | {r['family']} | {r['k']} | {r['precision']} | "
                         f"{r['simulated'] / MIB:,.1f} | {r['measured'] / MIB:,.1f} | {r['error_pct']:+.2f} |")
    return "\n".join(lines)


def infopro_md(rows: list[dict]) -> str:
    lines = ["| K | splits | simulated (GB) | measured (GB) | card in use (GB) | published (GB) |", "|---|---|---|---|---|---|"]
    for r in rows:
        card = "-" if r["card"] is None else f"{r['card'] / 1e9:.2f}"
        pub = "-" if r["published_gb"] is None else f"{r['published_gb']:.2f}"
        lines.append(f"| {r['k']} | {r['splits']} | {r['simulated'] / 1e9:.3f} | {r['measured'] / 1e9:.3f} | {card} | {pub} |")
    return "\n".join(lines)


def report(results: list[dict], cuda: bool, seconds: float) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import provenance

    verdicts = "\n".join(f"| {r['cell']} | {r['claim']} | **{r['status']}** | {r['detail'].replace('|', '/')} | "
                         f"{r['seconds']:.0f} |" for r in results)
    parts = [f"### GPU truth{'' if cuda else ' (CPU dry run: no GPU claim is checked by these numbers)'}",
             provenance(), versions(cuda),
             "| cell | claim | status | detail | s |\n|---|---|---|---|---|\n" + verdicts]
    by = {r["cell"]: r for r in results}
    if "rows" in by.get("memory", {}):
        parts += ["Peak training memory, simulated against the peak a trial records (batch "
                  f"{1024 if cuda else 8}, balanced splits, aux depth 2 width 64):", memory_md(by["memory"]["rows"])]
    if "rows" in by.get("infopro", {}):
        parts += ["InfoPro Table 3 designs (InfoPro, Wang et al. ICLR'21, Table 3: Titan Xp, nvidia-smi, GB):",
                  infopro_md(by["infopro"]["rows"])]
    parts.append(f"Total {seconds:.0f} s.")
    return "\n\n".join(parts) + "\n"


def write_at(path: Path, body: str) -> Path:
    begin, end = f"<!-- begin:{SECTION} -->", f"<!-- end:{SECTION} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.is_file() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="list the cells and what each checks; run nothing")
    parser.add_argument("--cpu-dry-run", action="store_true", help="run the cells at tiny shapes on the CPU")
    parser.add_argument("--only", nargs="+", metavar="CELL", help="run these cells only")
    parser.add_argument("--output", type=Path, help="write the section here (default: docs/results.md on a GPU)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--time-limit", type=float, default=420.0, help="the memory cell starts no row after this")
    args = parser.parse_args(argv)
    cells = [c for c in CELLS if not args.only or c.name in args.only]
    if args.dry_run:
        for c in cells:
            print(f"{c.name:16} {'GPU only' if c.cuda_only else 'GPU or CPU':10} ~{c.minutes:.1f} min  {c.claim}")
        print(f"{len(cells)} cells, about {sum(c.minutes for c in cells):.0f} minutes on one GPU")
        return 0
    import torch

    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("gpu_truth.py checks CUDA claims and needs a CUDA GPU, but torch sees none "
              f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). --dry-run lists the cells; "
              "--cpu-dry-run runs them at tiny shapes on the CPU", file=sys.stderr)
        return 2
    if args.cpu_dry_run:
        torch.set_num_threads(1)
    start = time.monotonic()
    results = run_cells(Ctx(cuda=not args.cpu_dry_run, deadline=start + args.time_limit), cells)
    body = report(results, not args.cpu_dry_run, time.monotonic() - start)
    print("\n" + body, flush=True)
    out = args.output or (None if args.cpu_dry_run else ROOT / "docs" / "results.md")
    if out is not None:
        print(f"wrote section {SECTION} of {write_at(out, body)}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    bad = [r for r in results if r["status"] in ("MISSED", "FAIL", "FAILED")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
