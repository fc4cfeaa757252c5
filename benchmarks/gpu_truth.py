"""GPU truth: every CUDA claim of auxsearch, checked on one GPU by one command (about 4-6 minutes, <= 8).

What it checks (random tensors of the right shapes, no data set download; the two isolated
trials train on scikit-learn's bundled digits, resized):

1. Memory truth table. CIFAR ResNet-32 and ResNet-110 (3x32x32, 10 classes, batch 1024), every
   aux family (dgl, infopro, augment, momentum; depth 2, width 64, as benchmarks/memory.py),
   K in {1, 2, 4, 8} on balanced splits (K = 1: the E2E reference, one row per network), under
   fp32 and bf16: the CUDA peak of one full training step (``memory.measure(..., device="cuda")``:
   ``max_memory_allocated`` after ``reset_peak_memory_stats``) beside ``memory.simulate``, the
   error % per row (target |error| <= 5 %) and the bf16/fp32 ratio. Rows are freed between
   (``del``, ``gc``, ``torch.cuda.empty_cache()``); a row that fails is an error row.
2. Device fixed overhead: device memory in use (nvidia-smi, before any CUDA call; then
   ``torch.cuda.mem_get_info``) after the CUDA context and after one step, beside
   ``max_memory_allocated`` and ``memory_reserved``: the context, the libraries' own memory and
   the allocator's caching, i.e. what a ``memory.budget: 12GB`` (allocator bytes) needs on the
   card. With it, InfoPro's Table 3 rows (ResNet-110, batch 1024, InfoPro's balanced splits
   [16], [11, 22], [8, 16, 28], infopro aux depth 1 width 32): simulated, CUDA allocated,
   reserved + fixed overhead, and the published Titan Xp figure.
3. CUDA out of memory -> infeasible: a trial that cannot fit (ResNet-110 on 256x256 digits,
   batch 1024), run through ``isolation.fit_in_subprocess`` as the study's objective runs an
   isolated trial, must end as ``TrialOutOfMemory`` with the memory reached > 0; once with
   ``train.device: cuda`` and once with the default ``auto``.
4. Subprocess isolation frees the GPU: after each isolated trial returns (the two above and
   one that trains), the device memory in use (``mem_get_info``) is back to the parent's
   baseline within 64 MiB.
5. Step time: ``engine.train_step`` against a hand-written PyTorch loop doing the same K-module
   local training with the same modules (as benchmarks/overhead.py), with warm-up and CUDA
   synchronisation; the ratio (target <= 1.05).

It writes section ``gpu-truth`` of docs/results.md (or ``--output PATH``) naming the device,
torch / CUDA / cuDNN versions and the command; ``--json PATH`` also writes every figure.

Run:
    python benchmarks/gpu_truth.py                  # needs a CUDA GPU; about 4-6 minutes
    python benchmarks/gpu_truth.py --cpu-dry-run    # same code paths, tiny shapes, CPU, ~30 s;
                                                    # prints only (or --output PATH)

``--time-limit S`` (default 420): the table stops starting rows after S seconds from the start
(the rows not reached are reported as skipped), so the run stays within 8 minutes.
``--cpu-dry-run``: resnet8 / resnet20 at 3x16x16, batch 8, K in {1, 2}, dgl and infopro (InfoPro rows:
resnet8, K in {1, 2, 3, 4});
"measured" is the CPU live-bytes counter (``memory.measure`` on cpu); the CUDA-only checks
report "skipped (no CUDA)" (check 4 still runs one isolated trial on the CPU).
Exit status: 0 when every check that ran was met, 1 when one was missed or failed, 2 when
there is no GPU and no ``--cpu-dry-run``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from _common import INFOPRO_TABLE3, RESULTS, markdown_table, provenance, write_section  # noqa: E402
from overhead import hand_written_step  # noqa: E402  # the same hand loop as the CPU overhead benchmark

from auxsearch.backbones import create_units  # noqa: E402
from auxsearch.config import PUBLISHED_DESIGNS, TrainConfig  # noqa: E402
from auxsearch.design.space import balanced_splits  # noqa: E402
from auxsearch.design.split_tables import CIFAR_RESNETS  # noqa: E402
from auxsearch.model.engine import build, make_optimizer, trace_shapes, train_step  # noqa: E402
from auxsearch.train import memory  # noqa: E402
from auxsearch.train.isolation import TrialOutOfMemory, fit_in_subprocess  # noqa: E402

SECTION = "gpu-truth"
MIB = 2**20
ERROR_TARGET = 5.0  # |simulated - measured| / measured, %
FREE_TOLERANCE = 64 * MIB  # device memory in use after an isolated trial, over the parent's baseline
FREE_WAIT_S = 10.0
STEP_TARGET = 1.05
PRECISIONS = ("fp32", "bf16")
FAMILIES = ("dgl", "infopro", "augment", "momentum")
# InfoPro's balanced-memory split points of ResNet-110 in our unit indices (InfoPro_balanced_memory
# ['resnet110']['cifar10'][K]; K = 4 is [[1, 6], [1, 14], [2, 8]], see docs/use-a-design.md).
INFOPRO_SPLITS = {2: [16], 3: [11, 22], 4: [8, 16, 28]}
NO_CUDA = "skipped (no CUDA)"


# ---------------------------------------------------------------- what is run


@dataclass
class Plan:
    """Every shape and size of one run: the GPU run or the CPU dry run."""

    device: str
    networks: dict[str, int]  # backbone -> num_units
    input_shape: list[int]
    batch: int
    families: tuple[str, ...]
    ks: tuple[int, ...]
    depth: int
    width: int
    unit: tuple[str, float]  # label, bytes per label
    infopro_network: str
    infopro_splits: dict[int, list[int]]
    infopro_aux: dict
    infopro_published: dict[int, float | None]  # K -> GB (K = 1: E2E)
    trial_design: dict  # an isolated trial that trains
    trial_data: dict
    trial_train: TrainConfig
    oom_design: dict | None  # an isolated trial that cannot fit
    oom_data: dict | None
    timing: list[tuple[str, dict, int]] = field(default_factory=list)  # label, design (dgl), batch
    blocks: int = 5
    steps: int = 10

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


def num_units(network: str) -> int:
    """Units of a CIFAR ResNet: the stem and 3 stages of n blocks."""
    return 1 + 3 * CIFAR_RESNETS[network]


def cifar(network: str, units: int, input_shape: list[int], splits: list[int], aux: dict) -> dict:
    return {"backbone": network, "input_shape": list(input_shape), "num_classes": 10, "num_units": units,
            "splits": list(splits), "aux": [dict(aux)] * len(splits)}


def aux_entry(family: str, depth: int, width: int) -> dict:
    """As benchmarks/memory.py: the family's defaults at this depth and width (momentum: DGL's head)."""
    entry = {"family": family, "depth": depth, "width": width}
    return {**entry, "head": "dgl"} if family == "momentum" else entry


def unit_costs(network: str, input_shape: list[int]) -> list[float]:
    """Activation cost of each unit (the product of its output shape), as benchmarks/memory.py."""
    _, outs = trace_shapes(create_units(network, input_shape[0], None), input_shape)
    return [float(math.prod(o)) for o in outs]


def gpu_plan() -> Plan:
    published = {1: INFOPRO_TABLE3[0][1], 2: INFOPRO_TABLE3[1][1], 3: INFOPRO_TABLE3[2][1], 4: INFOPRO_TABLE3[3][1]}
    r110_k4 = cifar("resnet110", 55, [3, 32, 32], [9, 17, 30], aux_entry("dgl", 2, 64))
    r20_k4 = cifar("resnet20", 10, [3, 32, 32], [3, 5, 7], aux_entry("dgl", 1, 32))  # benchmarks/overhead.py
    return Plan(
        device="cuda", networks={"resnet32": 16, "resnet110": 55}, input_shape=[3, 32, 32], batch=1024,
        families=FAMILIES, ks=(1, 2, 4, 8), depth=2, width=64, unit=("GB", 1e9),
        infopro_network="resnet110", infopro_splits=INFOPRO_SPLITS, infopro_aux=PUBLISHED_DESIGNS["infopro_k2"][1],
        infopro_published=published,
        trial_design=cifar("resnet32", 16, [1, 32, 32], [5], aux_entry("dgl", 1, 32)),
        trial_data={"name": "digits", "image_size": 32},
        trial_train=TrainConfig(epochs=1, batch_size=256, device="cuda", bn_recalibration_batches=0),
        oom_design=cifar("resnet110", 55, [1, 256, 256], [17], aux_entry("dgl", 1, 32)),
        oom_data={"name": "digits", "image_size": 256},
        timing=[("resnet20 K=4 DGL, batch 128 (benchmarks/overhead.py's design)", r20_k4, 128),
                ("resnet110 K=4 DGL balanced [9, 17, 30], batch 1024", r110_k4, 1024)],
        blocks=5, steps=10)


def dry_plan() -> Plan:
    shape = [3, 16, 16]
    return Plan(
        device="cpu", networks={"resnet8": 4, "resnet20": 10}, input_shape=shape, batch=8,
        families=("dgl", "infopro"), ks=(1, 2), depth=1, width=16, unit=("MB", 1e6),
        infopro_network="resnet8",
        infopro_splits={k: balanced_splits(unit_costs("resnet8", shape), k) for k in (2, 3, 4)},
        infopro_aux={"family": "infopro", "depth": 1, "width": 16}, infopro_published={},
        trial_design=cifar("resnet8", 4, [1, 16, 16], [2], aux_entry("dgl", 1, 16)),
        trial_data={"name": "digits", "image_size": 16},
        trial_train=TrainConfig(epochs=1, batch_size=256, device="cpu", threads=1, bn_recalibration_batches=0),
        oom_design=None, oom_data=None,
        timing=[("resnet8 K=2 DGL, batch 8, 16x16", cifar("resnet8", 4, shape, [2], aux_entry("dgl", 1, 16)), 8)],
        blocks=2, steps=2)


def table_designs(plan: Plan) -> list[dict]:
    """One row per (network, family, K); K = 1 is one E2E row per network. Balanced splits."""
    rows = []
    for net, n in plan.networks.items():
        costs = unit_costs(net, plan.input_shape)
        for k in plan.ks:
            for fam in (("E2E",) if k == 1 else plan.families):
                splits = [] if k == 1 else balanced_splits(costs, k)
                aux = {} if k == 1 else aux_entry(fam, plan.depth, plan.width)
                rows.append({"network": net, "family": fam, "k": k,
                             "design": cifar(net, n, plan.input_shape, splits, aux)})
    return sorted(rows, key=lambda r: (list(plan.networks).index(r["network"]), r["k"], r["family"]))


# ---------------------------------------------------------------- measuring


def device_used(cuda: bool) -> int | None:
    """Device memory in use (all processes): total - free from ``torch.cuda.mem_get_info``."""
    if not cuda:
        return None
    free, total = torch.cuda.mem_get_info()
    return int(total - free)


def smi_used() -> int | None:
    """Device memory in use as nvidia-smi reports it (no CUDA context needed); None without nvidia-smi.

    The first GPU nvidia-smi lists that CUDA_VISIBLE_DEVICES leaves visible (this script uses device 0).
    """
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    used = {}
    for line in out.strip().splitlines():
        idx, mib = (s.strip() for s in line.split(","))
        used[idx] = int(float(mib)) * MIB
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return used.get(visible if visible in used else min(used, key=int, default=""), None)


def release(cuda: bool) -> None:
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


class Cells:
    """Simulated and measured peak of (design, precision), each computed once; failures kept."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.sim: dict[str, dict] = {}
        self.meas: dict[str, dict] = {}

    @staticmethod
    def key(design: dict, precision: str) -> str:
        return json.dumps([design, precision], sort_keys=True)

    def simulate(self, design: dict, precision: str) -> dict:
        k = self.key(design, precision)
        if k not in self.sim:
            start = time.perf_counter()
            try:
                self.sim[k] = {"simulated": memory.simulate(design, self.plan.batch,
                                                            train=TrainConfig(precision=precision))}
            except Exception as exc:  # a failing design is a result to report
                self.sim[k] = {"error": f"simulate: {short(exc)}"}
            self.sim[k]["simulate_s"] = time.perf_counter() - start
        return self.sim[k]

    def measure(self, design: dict, precision: str) -> dict:
        k = self.key(design, precision)
        if k not in self.meas:
            cuda = self.plan.cuda
            release(cuda)
            start = time.perf_counter()
            out: dict[str, Any] = {}
            try:
                if cuda:
                    out["resident_before"] = int(torch.cuda.memory_allocated())
                out["measured"] = memory.measure(design, self.plan.batch, train=TrainConfig(precision=precision),
                                                 device=self.plan.device)
                if cuda:  # cuda_peak reset the peaks, so these are the step's (model built before it)
                    out["reserved_peak"] = int(torch.cuda.max_memory_reserved())
                    out["reserved_now"] = int(torch.cuda.memory_reserved())
                    out["used_after"] = device_used(True)
            except Exception as exc:
                out["error"] = f"measure: {short(exc)}"
            out["measure_s"] = time.perf_counter() - start
            release(cuda)
            self.meas[k] = out
        return self.meas[k]

    def both(self, design: dict, precision: str) -> dict:
        out = {**self.simulate(design, precision), **self.measure(design, precision)}
        errors = [v for k, v in (*self.sim[self.key(design, precision)].items(),
                                 *self.meas[self.key(design, precision)].items()) if k == "error"]
        if errors:
            out["error"] = "; ".join(errors)
        if "simulated" in out and "measured" in out:
            out["error_pct"] = 100.0 * (out["simulated"] - out["measured"]) / out["measured"]
        return out


def short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"


# ---------------------------------------------------------------- 1. the memory truth table


def memory_table(plan: Plan, cells: Cells, deadline: float) -> list[dict]:
    rows = []
    designs = table_designs(plan)
    for i, row in enumerate(designs, 1):
        row = {**row, "splits": row["design"]["splits"]}
        if time.monotonic() > deadline:
            row["skipped"] = "time limit"
            print(f"  [{i}/{len(designs)}] {label(row)}: skipped (time limit)", flush=True)
            rows.append(row)
            continue
        for p in PRECISIONS:
            row[p] = cells.both(row["design"], p)
            print(f"  [{i}/{len(designs)}] {label(row)} {p}: {cell_line(plan, row[p])}", flush=True)
        f32, b16 = row["fp32"], row["bf16"]
        for what in ("measured", "simulated"):
            if what in f32 and what in b16:
                row[f"bf16_ratio_{what}"] = b16[what] / f32[what]
        rows.append(row)
    return rows


def label(row: dict) -> str:
    return f"{row['network']} {row['family']} K={row['k']} {row['splits']}"


def size(plan: Plan, v: float | None) -> str:
    return "" if v is None else f"{v / plan.unit[1]:.3f}"


def cell_line(plan: Plan, c: dict) -> str:
    if "error_pct" in c:
        return (f"simulated {size(plan, c['simulated'])} {plan.unit[0]}, measured {size(plan, c['measured'])} "
                f"{plan.unit[0]} ({c['error_pct']:+.1f}%), {c['simulate_s'] + c['measure_s']:.1f} s")
    return f"FAILED {c.get('error', '')}"


def memory_rows_md(plan: Plan, rows: list[dict]) -> str:
    u = plan.unit[0]
    header = ["network", "family", "K", "splits"]
    for p in PRECISIONS:
        header += [f"{p} simulated ({u})", f"{p} measured ({u})", f"{p} error %"]
    header += ["bf16/fp32 measured", "bf16/fp32 simulated"]
    body, notes = [], []
    for r in rows:
        line = [r["network"], r["family"], r["k"], r["splits"]]
        if "skipped" in r:
            body.append(line + [f"skipped ({r['skipped']})"] + [""] * (len(header) - 5))
            continue
        for p in PRECISIONS:
            c = r[p]
            if "error" in c:
                notes.append(f"- {label(r)} {p} failed: `{c['error'].replace('|', '/')}`")
            line += [size(plan, c.get("simulated")) or "failed", size(plan, c.get("measured")) or "failed",
                     f"{c['error_pct']:+.1f}" if "error_pct" in c else "error"]
        line += [f"{r[k]:.3f}" if k in r else "" for k in ("bf16_ratio_measured", "bf16_ratio_simulated")]
        body.append(line)
    return "\n".join([markdown_table(header, body), *([""] + notes if notes else [])])


def memory_verdict(plan: Plan, rows: list[dict]) -> dict:
    errs = [(abs(r[p]["error_pct"]), f"{label(r)} {p}") for r in rows if "skipped" not in r for p in PRECISIONS
            if "error_pct" in r[p]]
    failed = [f"{label(r)} {p}" for r in rows if "skipped" not in r for p in PRECISIONS if "error_pct" not in r[p]]
    skipped = [label(r) for r in rows if "skipped" in r]
    over = [f"{name} ({e:.1f}%)" for e, name in errs if e > ERROR_TARGET]
    worst = max(errs, default=(float("nan"), "none"))
    where = "CUDA max_memory_allocated" if plan.cuda else "CPU live-bytes counter (dry run)"
    ok = bool(errs) and not over and not failed
    resident = [r[p].get("resident_before", 0) for r in rows if "skipped" not in r for p in PRECISIONS]
    held = (f"; allocated before a step (cuBLAS workspaces ...; inside the measured peak): max "
            f"{max(resident, default=0) / MIB:.1f} MiB" if plan.cuda else "")
    detail = (f"simulated within {ERROR_TARGET:.0f}% of the {where} on {len(errs)} cells: max |error| "
              f"{worst[0]:.1f}% ({worst[1]}); over: {', '.join(over) or 'none'}; failed: {', '.join(failed) or 'none'}"
              + (f"; not run (time limit): {len(skipped)} rows" if skipped else "") + held)
    return {"check": "1. memory truth table", "status": "MET" if ok else "MISSED", "detail": detail}


# ---------------------------------------------------------------- 2. fixed overhead + InfoPro Table 3


def fixed_overhead(plan: Plan, cells: Cells, smi_before: int | None) -> dict:
    """Context, libraries and allocator caching around one ResNet-110 E2E step (fp32), in bytes."""
    e2e = cifar(plan.infopro_network, num_units(plan.infopro_network), plan.input_shape, [], {})
    if not plan.cuda:
        cell = cells.both(e2e, "fp32")  # the CPU stand-in still runs the E2E step the overhead is taken around
        return {"status": NO_CUDA, "cpu_measured": cell.get("measured"), "design": e2e}
    torch.cuda.init()
    ctx_used = device_used(True)
    smi_ctx = smi_used()
    cell = cells.both(e2e, "fp32")
    # Cells.measure released the cache after the step; used_after / reserved_now are as the step left them.
    out = {"design": e2e, "smi_before": smi_before, "smi_context": smi_ctx, "used_context": ctx_used,
           "used_after_step": cell.get("used_after"), "max_allocated": cell.get("measured"),
           "max_reserved": cell.get("reserved_peak"), "reserved_after_step": cell.get("reserved_now"),
           "simulated": cell.get("simulated"), "error": cell.get("error")}
    if "error" in cell and "measured" not in cell:
        return {**out, "status": "FAILED"}
    out["context"] = smi_ctx - smi_before if smi_before is not None and smi_ctx is not None else None
    # outside the allocator: context, cuDNN / cuBLAS handles and loaded kernels (what nvidia-smi adds)
    out["outside_allocator"] = out["used_after_step"] - out["reserved_after_step"]
    out["libraries"] = out["used_after_step"] - out["reserved_after_step"] - ctx_used
    out["caching"] = out["max_reserved"] - out["max_allocated"]
    out["status"] = "measured"
    return out


def fixed_overhead_end(plan: Plan, fixed: dict) -> None:
    """The same figures at the end of the run (more kernels loaded, bf16 included)."""
    if plan.cuda and fixed.get("status") == "measured":
        release(True)
        fixed["outside_allocator_end"] = device_used(True) - int(torch.cuda.memory_reserved())
        fixed["smi_end"] = smi_used()


def fixed_verdict(fixed: dict) -> dict:
    if fixed["status"] != "measured":
        return {"check": "2. device fixed overhead", "status": fixed["status"],
                "detail": fixed.get("error") or "see section 2"}
    return {"check": "2. device fixed overhead", "status": "measured",
            "detail": f"outside the allocator {fixed['outside_allocator'] / MIB:,.0f} MiB after one step "
                      f"(context {'n/a' if fixed['context'] is None else format(fixed['context'] / MIB, ',.0f')} MiB), "
                      f"allocator caching {fixed['caching'] / MIB:,.0f} MiB"}


def fixed_md(plan: Plan, fixed: dict) -> str:
    if fixed["status"] != "measured":
        extra = (f" (the CPU stand-in measured the E2E step at {size(plan, fixed['cpu_measured'])} {plan.unit[0]})"
                 if fixed.get("cpu_measured") else "")
        return f"Device fixed overhead: {fixed['status']}{extra}{': ' + fixed['error'] if fixed.get('error') else ''}"

    def mib(v):
        return "n/a" if v is None else f"{v / MIB:,.0f} MiB ({v / 1e9:.3f} GB)"

    rows = [["in use before any CUDA call (nvidia-smi)", mib(fixed["smi_before"])],
            ["in use after creating the CUDA context (mem_get_info)", mib(fixed["used_context"])],
            ["CUDA context (nvidia-smi after - before)", mib(fixed["context"])],
            ["in use after one step (mem_get_info)", mib(fixed["used_after_step"])],
            ["`max_memory_allocated` over the step", mib(fixed["max_allocated"])],
            ["`max_memory_reserved` over the step", mib(fixed["max_reserved"])],
            ["`memory_reserved` after the step", mib(fixed["reserved_after_step"])],
            ["allocator caching (max reserved - max allocated)", mib(fixed["caching"])],
            ["libraries loaded by the step (cuDNN, cuBLAS, kernels)", mib(fixed["libraries"])],
            ["outside the allocator after the step (context + libraries)", mib(fixed["outside_allocator"])],
            ["outside the allocator at the end of the run", mib(fixed.get("outside_allocator_end"))]]
    ratio = fixed["max_reserved"] / fixed["max_allocated"]
    card = 12e9 * ratio + fixed["outside_allocator"]
    total = torch.cuda.get_device_properties(0).total_memory
    return "\n".join([
        f"Around one fp32 step of {fixed['design']['backbone']} E2E at batch {plan.batch} (mem_get_info counts "
        f"every process on the device; this card has {total / 1e9:.2f} GB):", "",
        markdown_table(["what", "bytes"], rows), "",
        f"So a `memory.budget: 12GB` (compared with the simulated peak: allocator bytes) needs about 12 GB x "
        f"{ratio:.3f} (reserved / allocated on this step) + {fixed['outside_allocator'] / 1e9:.2f} GB (outside "
        f"the allocator) = {card / 1e9:.2f} GB of the card's memory."])


def infopro_rows(plan: Plan, cells: Cells, fixed: dict) -> list[dict]:
    net, n = plan.infopro_network, num_units(plan.infopro_network)
    rows = []
    for k in (1, *sorted(plan.infopro_splits)):
        splits = plan.infopro_splits.get(k, [])
        design = cifar(net, n, plan.input_shape, splits, plan.infopro_aux if k > 1 else {})
        cell = cells.both(design, "fp32")
        row = {"name": "E2E" if k == 1 else f"InfoPro* K={k}", "k": k, "splits": splits, **cell,
               "published": plan.infopro_published.get(k)}
        if "reserved_peak" in cell and fixed.get("outside_allocator") is not None:
            row["card"] = cell["reserved_peak"] + fixed["outside_allocator"]
        print(f"  InfoPro row {row['name']} {splits}: {cell_line(plan, cell)}", flush=True)
        rows.append(row)
    return rows


def infopro_md(plan: Plan, rows: list[dict]) -> str:
    u, scale = plan.unit
    header = ["design", "splits", f"simulated ({u})", f"measured allocated ({u})", f"reserved peak ({u})",
              f"reserved + outside allocator ({u})", f"published Titan Xp ({u})", "published - simulated",
              "published - (reserved + outside)"]
    body = []
    for r in rows:
        pub = None if r["published"] is None else r["published"] * 1e9
        body.append([r["name"], r["splits"], size(plan, r.get("simulated")) or "failed",
                     size(plan, r.get("measured")) or ("failed" if plan.cuda else "n/a"),
                     size(plan, r.get("reserved_peak")) or "n/a", size(plan, r.get("card")) or "n/a",
                     size(plan, pub) or "n/a (dry run)",
                     f"{(pub - r['simulated']) / scale:+.3f}" if pub and "simulated" in r else "",
                     f"{(pub - r['card']) / scale:+.3f}" if pub and "card" in r else ""])
    return markdown_table(header, body)


# ---------------------------------------------------------------- 3 + 4. isolated trials: OOM and freeing


def wait_back(baseline: int, cuda: bool) -> dict:
    """Device memory in use right after a trial returned, and once back within tolerance (or after the wait)."""
    if not cuda:
        return {}
    right_after = device_used(True)
    start, now = time.monotonic(), right_after
    while now - baseline > FREE_TOLERANCE and time.monotonic() - start < FREE_WAIT_S:
        time.sleep(0.25)
        now = device_used(True)
    return {"baseline": baseline, "right_after": right_after, "after_wait": now,
            "wait_s": time.monotonic() - start, "freed": now - baseline <= FREE_TOLERANCE}


def isolated(design: dict, train: TrainConfig, data: dict, cuda: bool) -> dict:
    """One trial through isolation.fit_in_subprocess, as the study's objective runs it; never raises."""
    release(cuda)
    baseline = device_used(cuda)
    start = time.perf_counter()
    out: dict[str, Any] = {"device": train.device}
    try:
        result, params = fit_in_subprocess(design, train, data, None)
        out.update(outcome="returned", score=result.score, peak=result.peak_memory_bytes, params=params)
    except TrialOutOfMemory as exc:
        out.update(outcome="TrialOutOfMemory", reached=exc.reached, message=str(exc)[:200])
    except Exception as exc:
        out.update(outcome=type(exc).__name__, message=short(exc))
    out["seconds"] = time.perf_counter() - start
    if cuda:
        out["memory"] = wait_back(baseline, cuda)
    return out


def isolation_checks(plan: Plan) -> dict:
    """Check 3 (OOM -> TrialOutOfMemory, reached > 0) and check 4 (the GPU freed after each trial)."""
    trials = []
    if plan.cuda and plan.oom_design is not None:
        for dev in ("cuda", "auto"):
            train = TrainConfig(epochs=1, batch_size=plan.batch, device=dev, bn_recalibration_batches=0,
                                eval_batch_size=64)
            t = {"what": f"cannot fit: {plan.oom_design['backbone']} at {plan.oom_design['input_shape']}, "
                         f"batch {plan.batch}, train.device {dev}", "kind": "oom",
                 **isolated(plan.oom_design, train, plan.oom_data, True)}
            print(f"  isolated OOM trial (device {dev}): {t['outcome']}, reached {t.get('reached')}, "
                  f"{t['seconds']:.1f} s", flush=True)
            trials.append(t)
    t = {"what": f"trains: {plan.trial_design['backbone']} K={len(plan.trial_design['splits']) + 1} on digits "
                 f"{plan.trial_data['image_size']}px, 1 epoch, train.device {plan.trial_train.device}",
         "kind": "fits", **isolated(plan.trial_design, plan.trial_train, plan.trial_data, plan.cuda)}
    print(f"  isolated trial that fits: {t['outcome']}, {t['seconds']:.1f} s "
          f"{t.get('message', '')}", flush=True)
    trials.append(t)
    return {"trials": trials}


def isolation_verdicts(plan: Plan, iso: dict) -> list[dict]:
    trials = iso["trials"]
    fits = [t for t in trials if t["kind"] == "fits"]
    if not plan.cuda:
        ran = fits[0]["outcome"] == "returned"
        return [{"check": "3. CUDA OOM -> TrialOutOfMemory", "status": NO_CUDA, "detail": "needs a GPU"},
                {"check": "4. isolation frees the GPU", "status": NO_CUDA if ran else "FAILED",
                 "detail": f"the CPU stand-in trial through fit_in_subprocess: {fits[0]['outcome']} in "
                           f"{fits[0]['seconds']:.1f} s {fits[0].get('message', '')}".rstrip()}]
    out = []
    for t in (t for t in trials if t["kind"] == "oom"):
        ok = t["outcome"] == "TrialOutOfMemory" and (t.get("reached") or 0) > 0
        reached = "None" if t.get("reached") is None else f"{t['reached'] / 1e9:.2f} GB"
        note = ("" if ok or t["outcome"] != "TrialOutOfMemory" else
                " (isolation._child asks peak_reached(str(train.device)); with 'auto' that is no CUDA name,"
                " so the child sends None and the objective falls back on the parent's own counter)")
        out.append({"check": f"3. CUDA OOM -> TrialOutOfMemory, reached > 0 (train.device {t['device']})",
                    "status": "PASS" if ok else "FAIL",
                    "detail": f"{t['outcome']}, reached {reached}, {t['seconds']:.1f} s; "
                              f"{t.get('message', '')[:140]}{note}"})
    for t in trials:
        m = t.get("memory", {})
        ok = bool(m.get("freed")) and (t["kind"] == "oom" or t["outcome"] == "returned")
        detail = (f"{t['what']}: {t['outcome']}; in use before {m.get('baseline', 0) / MIB:,.0f} MiB, right after "
                  f"{m.get('right_after', 0) / MIB:,.0f} MiB, after {m.get('wait_s', 0):.1f} s "
                  f"{m.get('after_wait', 0) / MIB:,.0f} MiB (tolerance {FREE_TOLERANCE / MIB:.0f} MiB)")
        out.append({"check": "4. isolation frees the GPU", "status": "PASS" if ok else "FAIL", "detail": detail})
    return out


def trials_md(plan: Plan, iso: dict) -> str:
    rows = []
    for t in iso["trials"]:
        m = t.get("memory", {})

        def mib(key, m=m):
            return f"{m[key] / MIB:,.0f}" if key in m else "n/a"

        reached = t.get("reached", t.get("peak"))
        rows.append([t["what"], t["outcome"], "None" if reached is None else f"{reached / 1e9:.3f}",
                     f"{t['seconds']:.1f}", mib("baseline"), mib("right_after"), mib("after_wait"),
                     f"{m['wait_s']:.1f}" if "wait_s" in m else "n/a"])
    return markdown_table(["isolated trial", "outcome", "reached / measured peak (GB)", "seconds",
                           "in use before (MiB)", "right after (MiB)", "after wait (MiB)", "wait (s)"], rows)


# ---------------------------------------------------------------- 5. step time


def step_times(design: dict, batch: int, device: str, blocks: int, steps: int) -> dict:
    """Median seconds per step of train_step and of the hand-written loop, interleaved blocks, synchronised."""
    torch.manual_seed(0)
    ours = build(design).to(device)
    theirs = copy.deepcopy(ours)
    x = torch.rand(batch, *design["input_shape"], device=device)
    y = torch.randint(0, design["num_classes"], (batch,), device=device)
    opt_a, _ = make_optimizer(ours, TrainConfig(), 1000)
    opt_b, _ = make_optimizer(theirs, TrainConfig(), 1000)
    heads = [a.end for a in theirs.aux]
    xb = (x - theirs.mean) / theirs.std  # auxsearch normalises inside; the hand loop gets a normalised batch

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def ours_step() -> None:
        train_step(ours, opt_a, x, y)

    def theirs_step() -> None:
        hand_written_step(theirs.stages, heads, theirs.head, opt_b, xb, y)

    def timed(fn) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        return (time.perf_counter() - start) / steps

    for _ in range(3):  # warm-up: cuDNN algorithm choice, allocator, optimizer state
        ours_step()
        theirs_step()
    a, b = [], []
    for _ in range(blocks):
        a.append(timed(ours_step))
        b.append(timed(theirs_step))
    return {"ours": statistics.median(a), "theirs": statistics.median(b), "blocks": blocks, "steps": steps}


def timing_checks(plan: Plan) -> list[dict]:
    out = []
    for name, design, batch in plan.timing:
        release(plan.cuda)
        try:
            t = step_times(design, batch, plan.device, plan.blocks, plan.steps)
            t["ratio"] = t["ours"] / t["theirs"]
            print(f"  step time {name}: ours {t['ours'] * 1e3:.2f} ms, hand-written {t['theirs'] * 1e3:.2f} ms, "
                  f"ratio {t['ratio']:.3f}", flush=True)
        except Exception as exc:
            t = {"error": short(exc)}
            print(f"  step time {name}: FAILED {t['error']}", flush=True)
        out.append({"name": name, **t})
        release(plan.cuda)
    return out


def timing_md(plan: Plan, rows: list[dict]) -> str:
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["name"], "failed", "", "", r["error"].replace("|", "/")])
        else:
            body.append([r["name"], f"{r['ours'] * 1e3:.2f}", f"{r['theirs'] * 1e3:.2f}", f"{r['ratio']:.3f}",
                         ("MET" if r["ratio"] <= STEP_TARGET else "MISSED") if plan.cuda else "n/a (CPU)"])
    return markdown_table(["design", "auxsearch train_step (ms)", "hand-written loop (ms)", "ratio",
                           f"target <= {STEP_TARGET}"], body)


def timing_verdict(plan: Plan, rows: list[dict]) -> dict:
    ok = all("ratio" in r and r["ratio"] <= STEP_TARGET for r in rows)
    detail = "; ".join(f"{r['name']}: " + (f"{r['ratio']:.3f}" if "ratio" in r else f"failed {r['error']}")
                       for r in rows)
    if not plan.cuda:  # CPU seconds on a shared, loaded machine say nothing about the GPU claim
        return {"check": "5. step time vs hand-written loop", "status": "ran on CPU (not a GPU figure)",
                "detail": detail}
    return {"check": "5. step time vs hand-written loop", "status": "MET" if ok else "MISSED", "detail": detail}


# ---------------------------------------------------------------- report


def versions(plan: Plan) -> str:
    if not plan.cuda:
        return f"- dry run on the CPU: torch {torch.__version__} (CUDA build {torch.version.cuda}), no CUDA device"
    props = torch.cuda.get_device_properties(0)
    return (f"- GPU: {torch.cuda.get_device_name(0)}, {props.total_memory / 2**30:.1f} GiB, compute capability "
            f"{props.major}.{props.minor}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}")


def report(plan: Plan, res: dict) -> str:
    u = plan.unit[0]
    dry = "" if plan.cuda else (" **CPU dry run**: tiny shapes, the CPU live-bytes counter stands in for "
                                "`max_memory_allocated`; no GPU claim is checked by these numbers.")
    intro = (f"Every CUDA claim of auxsearch on one card, by `benchmarks/gpu_truth.py` (random tensors, no data "
             f"set download; the isolated trials train on scikit-learn's digits).{dry} Sizes in {u} "
             f"(10^{'9' if u == 'GB' else '6'} bytes). Error % = (simulated - measured) / measured.")
    parts = [f"## GPU truth{' (CPU dry run)' if not plan.cuda else ''}", provenance(), versions(plan), intro,
             "Verdicts:", "\n".join(f"- {v['check']}: **{v['status']}**: {v['detail']}" for v in res["verdicts"]),
             f"### 1. Peak of one training step: simulated vs measured (batch {plan.batch}, input "
             f"{'x'.join(map(str, plan.input_shape))}, balanced splits, aux depth {plan.depth} width {plan.width})",
             memory_rows_md(plan, res["table"]),
             "### 2. Device fixed overhead", fixed_md(plan, res["fixed"]),
             f"InfoPro Table 3 rows ({plan.infopro_network}, batch {plan.batch}, "
             f"{'InfoPro balanced splits' if plan.cuda else 'balanced splits'}, aux {plan.infopro_aux}; published "
             "figures: InfoPro, Wang et al. ICLR'21, Table 3, Titan Xp, GB). Reserved + outside the allocator is "
             "what nvidia-smi would show for the step:",
             infopro_md(plan, res["infopro"]),
             "### 3-4. Isolated trials: out of memory, and the GPU freed afterwards", trials_md(plan, res["isolation"]),
             "### 5. Step time", timing_md(plan, res["timing"]),
             f"Medians of {plan.blocks} interleaved blocks of {plan.steps} steps after 3 warm-up steps, "
             f"{'synchronised with torch.cuda.synchronize' if plan.cuda else 'on the CPU'}; fp32, the same modules "
             "in both loops.",
             f"Total {res['seconds']:.0f} s."]
    return "\n\n".join(parts) + "\n"


def write_at(path: Path, body: str) -> Path:
    """Replace section ``gpu-truth`` of ``path`` (docs/results.md: via _common.write_section)."""
    if path.resolve() == RESULTS.resolve():
        return write_section(SECTION, body)
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


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, TrainConfig):
        return obj.__dict__
    return obj


def run(plan: Plan, time_limit: float, smi_before: int | None) -> dict:
    start = time.monotonic()
    cells = Cells(plan)
    print("2. device fixed overhead", flush=True)
    fixed = fixed_overhead(plan, cells, smi_before)
    infopro = infopro_rows(plan, cells, fixed)
    print("3-4. isolated trials", flush=True)
    iso = isolation_checks(plan)
    print("5. step time", flush=True)
    timing = timing_checks(plan)
    print("1. memory truth table", flush=True)
    table = memory_table(plan, cells, start + time_limit)
    fixed_overhead_end(plan, fixed)
    verdicts = [memory_verdict(plan, table), fixed_verdict(fixed), *isolation_verdicts(plan, iso),
                timing_verdict(plan, timing)]
    return {"plan": plan.__dict__, "table": table, "fixed": fixed, "infopro": infopro, "isolation": iso,
            "timing": timing, "verdicts": verdicts, "seconds": time.monotonic() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="the same code paths at tiny shapes on the CPU; prints, writes docs/results.md never")
    parser.add_argument("--output", type=Path, default=None,
                        help="write the section to this file (default: docs/results.md on a GPU, nothing in a dry run)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure as JSON here")
    parser.add_argument("--time-limit", type=float, default=420.0,
                        help="seconds after which the table starts no more rows (default 420)")
    args = parser.parse_args(argv)
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("gpu_truth.py checks CUDA claims and needs a CUDA GPU, but torch sees none "
              f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). To run the same code paths at tiny "
              "shapes on the CPU: python benchmarks/gpu_truth.py --cpu-dry-run", file=sys.stderr)
        return 2
    smi_before = None if args.cpu_dry_run else smi_used()  # before anything creates a CUDA context
    if args.cpu_dry_run:
        torch.set_num_threads(1)
    plan = dry_plan() if args.cpu_dry_run else gpu_plan()
    res = run(plan, args.time_limit, smi_before)
    body = report(plan, res)
    print("\n" + body, flush=True)
    out = args.output if args.output is not None else (None if args.cpu_dry_run else RESULTS)
    if out is not None:
        print(f"wrote section {SECTION} of {write_at(out, body)}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(jsonable(res), indent=1, default=str))
        print(f"wrote {args.json}")
    bad = [v for v in res["verdicts"] if v["status"] in ("MISSED", "FAIL", "FAILED")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
