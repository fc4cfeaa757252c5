"""Peak training memory of CIFAR ResNet-32 / ResNet-110 at batch 1024: every K, aux family and split rule.

Simulates one SGD-momentum step (default TrainConfig) under fake tensors with
``auxsearch.train.memory.simulate``, sets it beside the analytic floor, the E2E
reference and InfoPro's published Table 3, and (on CUDA) the measured peak.
Writes section ``memory`` of docs/results.md, and section ``memory-precision``: ResNet-110 E2E
and K=4 (every family, balanced splits) at batch 1024 in fp32 and under bf16 / fp16 autocast.
Run: ``python benchmarks/memory.py`` (``--quick``: resnet32, K in {1, 4} only;
``--precision-only``: only the precision section).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from _common import INFOPRO_TABLE3, even_splits, markdown_table, provenance, write_section  # noqa: E402

from auxsearch.backbones import create_units  # noqa: E402
from auxsearch.config import TrainConfig  # noqa: E402
from auxsearch.design.space import balanced_splits  # noqa: E402
from auxsearch.model.engine import trace_shapes  # noqa: E402
from auxsearch.train import memory  # noqa: E402

GIB = 2**30
BATCH = 1024
NETWORKS = {"resnet32": 16, "resnet110": 55}
FAMILIES = ("dgl", "infopro", "augment", "momentum")
K4_TARGET, FLOOR_TARGET, CUDA_TARGET = 0.40, 1.15, 5.0
PUBLISHED = INFOPRO_TABLE3
CUDA = torch.cuda.is_available()


def unit_costs(network: str) -> list[float]:
    """Activation cost of each unit: the product of its output shape."""
    _, outs = trace_shapes(create_units(network, 3, None), [3, 32, 32])
    return [float(math.prod(o)) for o in outs]


def aux_entry(family: str) -> dict:
    entry = {"family": family, "depth": 2, "width": 64}
    return {**entry, "head": "dgl"} if family == "momentum" else entry


def cases(quick: bool) -> list[dict]:
    """One case per (network, family, K, split rule); K = 1 is one E2E row per network."""
    nets = ["resnet32"] if quick else list(NETWORKS)
    ks = (4,) if quick else (2, 4, 8, 16)
    out = []
    for net in nets:
        n, costs = NETWORKS[net], unit_costs(net)
        base = {"backbone": net, "input_shape": [3, 32, 32], "num_classes": 10, "num_units": n}
        out.append({"network": net, "family": "E2E", "k": 1, "rule": "-", "design": {**base, "splits": [], "aux": []}})
        for fam in FAMILIES:
            for k in ks:
                for rule, splits in (("even", even_splits(n, k)), ("balanced", balanced_splits(costs, k))):
                    design = {**base, "splits": splits, "aux": [aux_entry(fam)] * (k - 1)}
                    out.append({"network": net, "family": fam, "k": k, "rule": rule, "design": design})
    return out


def run_case(case: dict, cache: dict) -> dict:
    """Simulate (and on CUDA measure) one case; identical designs are simulated once."""
    d = case["design"]
    key = (d["backbone"], case["family"], tuple(d["splits"]))
    if key not in cache:
        try:
            start = time.perf_counter()
            res = {"peak": memory.simulate(d, BATCH)}
            res["seconds"] = time.perf_counter() - start
            res["floor"] = memory.floor(d, BATCH)
            if CUDA:
                res["measured"] = memory.measure(d, BATCH, device="cuda")
                torch.cuda.empty_cache()
        except Exception as exc:  # a failing design is a result to report, not a reason to stop
            res = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:110]}"}
        cache[key] = res
    row = {**case, **cache[key]}
    print(f"  {row['network']} {row['family']} K={row['k']} {row['rule']}: "
          + (f"{row['peak'] / GIB:.2f} GiB" if "peak" in row else row["error"]), flush=True)
    return row


def add_ratios(rows: list[dict]) -> None:
    e2e = {r["network"]: r.get("peak") for r in rows if r["k"] == 1}
    for r in rows:
        if "peak" in r:
            r["pf"] = r["peak"] / r["floor"]
            r["ratio"] = r["peak"] / e2e[r["network"]] if e2e.get(r["network"]) else float("nan")


def table_row(r: dict) -> list:
    head = [r["network"], r["family"], r["k"], r["rule"], r["design"]["splits"]]
    if "error" in r:
        return head + ["failed", "", "", "", ""] + (["", ""] if CUDA else [])
    row = head + [f"{r['peak'] / GIB:.2f}", f"{r['floor'] / GIB:.2f}", f"{r['pf']:.3f}", f"{r['ratio']:.3f}",
                  f"{r['seconds']:.1f}"]
    if CUDA:
        row += [f"{r['measured'] / GIB:.2f}", f"{100 * (r['peak'] - r['measured']) / r['measured']:+.1f}"]
    return row


def results_table(rows: list[dict]) -> str:
    header = ["network", "family", "K", "splits rule", "splits", "simulated peak (GiB)", "analytic floor (GiB)",
              "peak/floor", "ratio to E2E", "seconds to simulate"]
    header += ["measured CUDA (GiB)", "simulation error %"] if CUDA else []
    fails = [f"- {r['network']} {r['family']} K={r['k']} {r['rule']} failed: `{r['error'].replace('|', '/')}`"
             for r in rows if "error" in r]
    return "\n".join([markdown_table(header, [table_row(r) for r in rows]), "", *fails])


def published_table() -> str:
    rows = [[name, f"{gb:.2f}", f"{gb / PUBLISHED[0][1]:.3f}"] for name, gb in PUBLISHED]
    return markdown_table(["InfoPro Table 3, ResNet-110 (published)", "memory (GB)", "ratio to E2E"], rows)


def verdict(ok: bool | None) -> str:
    return "NOT MEASURED" if ok is None else ("MET" if ok else "MISSED")


def checks(rows: list[dict]) -> list[str]:
    ok_rows = [r for r in rows if "peak" in r]
    k4 = [r for r in ok_rows if r["network"] == "resnet110" and r["k"] == 4]
    hits = [f"{r['family']}/{r['rule']} {r['ratio']:.3f}" for r in k4 if r["ratio"] <= K4_TARGET]
    best = min(k4, key=lambda r: r["ratio"], default=None)
    a = (f"(a) a resnet110 K=4 design at most {K4_TARGET:.2f}x E2E: "
         + ("not run (--quick runs resnet32 only)" if best is None else
            f"best {best['family']}/{best['rule']} {best['ratio']:.3f}; achieved by: {', '.join(hits) or 'none'}")
         + f" -> {verdict(None if best is None else bool(hits))}")
    worst = max(ok_rows, key=lambda r: r["pf"])
    over = [f"{r['network']} {r['family']} K={r['k']} {r['rule']} {r['pf']:.3f}" for r in ok_rows
            if r["pf"] > FLOOR_TARGET]
    b = (f"(b) simulated peak within {FLOOR_TARGET}x of the analytic floor: max peak/floor {worst['pf']:.3f} "
         f"({worst['network']} {worst['family']} K={worst['k']} {worst['rule']}); rows over {FLOOR_TARGET}: "
         f"{', '.join(over) or 'none'} -> {verdict(not over)}")
    if CUDA:
        errs = [abs(r["peak"] - r["measured"]) / r["measured"] * 100 for r in ok_rows]
        c = (f"(c) simulation within {CUDA_TARGET:.0f}% of the CUDA measurement: max |error| {max(errs):.1f}% "
             f"-> {verdict(max(errs) <= CUDA_TARGET)}")
    else:
        c = f"(c) simulation within {CUDA_TARGET:.0f}% of the CUDA measurement: not measured here (no GPU)"
    failed = [r for r in rows if "error" in r]
    return [a, b, c] + ([f"- {len(failed)} simulations failed (see above)"] if failed else [])


def report(rows: list[dict], quick: bool) -> str:
    intro = (f"Peak bytes of one full training step (SGD momentum, default TrainConfig) at batch {BATCH}, input "
             "3x32x32, 10 classes, simulated with `auxsearch.train.memory.simulate` (FakeTensorMode + the live-storage counter LiveBytes"
             "); floor from `auxsearch.train.memory.floor` (weights + grads + optimizer state + batch + the "
             "largest stage's saved activations). Aux nets: depth 2, width 64, family defaults (momentum: dgl "
             "head). Split rules: `even` spaces the split points evenly over the unit indices; `balanced` is "
             "`auxsearch.design.space.balanced_splits` on each unit's output size. Where both rules give the same splits "
             "the design is simulated once. "
             + ("CUDA columns (measured `max_memory_allocated`, simulation error) are present because this ran on "
                "a GPU." if CUDA else "CUDA columns (measured peak and simulation error %) appear when the "
                "script is run on a GPU; this run had none.")
             + (" `--quick`: resnet32, K in {1, 4} only." if quick else ""))
    units = ("Units differ: InfoPro publishes GB measured on a Titan Xp, we report GiB of allocator bytes, and "
             "its aux nets and recipe are not ours; compare the ratios to E2E, not absolute numbers.")
    return "\n\n".join(["## Peak training memory (CIFAR ResNets, batch 1024)", provenance(), intro,
                        results_table(rows), published_table(), units, "Targets (computed):",
                        "\n".join(f"- {line}" if line[0] == "(" else line for line in checks(rows))]) + "\n"


PRECISION_TARGET = 0.75  # a bf16 peak at most this fraction of the fp32 one (ResNet-110 K=4, batch 1024)


def precision_section() -> str:
    """ResNet-110 E2E and K=4 (balanced splits) for every family: fp32, bf16 and fp16 simulated peaks."""
    n, costs = NETWORKS["resnet110"], unit_costs("resnet110")
    base = {"backbone": "resnet110", "input_shape": [3, 32, 32], "num_classes": 10, "num_units": n}
    designs = [("E2E", 1, {**base, "splits": [], "aux": []})]
    designs += [(fam, 4, {**base, "splits": balanced_splits(costs, 4), "aux": [aux_entry(fam)] * 3})
                for fam in FAMILIES]
    rows, ratios = [], []
    for fam, k, design in designs:
        peaks = {p: memory.simulate(design, BATCH, train=TrainConfig(precision=p)) for p in ("fp32", "bf16", "fp16")}
        ratios.append(peaks["bf16"] / peaks["fp32"])
        print(f"  resnet110 {fam} K={k}: " + ", ".join(f"{p} {v / GIB:.2f} GiB" for p, v in peaks.items()), flush=True)
        rows.append(["resnet110", fam, k, design["splits"], *(f"{peaks[p] / GIB:.2f}" for p in ("fp32", "bf16", "fp16")),
                     f"{peaks['bf16'] / peaks['fp32']:.3f}", f"{peaks['fp16'] / peaks['fp32']:.3f}"])
    table = markdown_table(["network", "family", "K", "splits", "fp32 (GiB)", "bf16 (GiB)", "fp16 (GiB)",
                            "bf16 / fp32", "fp16 / fp32"], rows)
    worst = max(ratios[1:])
    intro = ("Simulated peak of one training step at batch 1024 (SGD momentum) with `train.precision` fp32, bf16 "
             "and fp16: each module's forward and loss under `torch.autocast`, backward outside it; weights, "
             "gradients, optimizer state and EMA copies stay fp32, so the saving is the activations autograd keeps "
             "(plus autocast's cached half-width weight copies). The simulation runs the CPU autocast policy on fake "
             "tensors; `benchmarks/gpu_truth.py` checks it against CUDA. Command: "
             "`python benchmarks/memory.py --precision-only` (also part of the full run).")
    check = (f"- bf16 peak at most {PRECISION_TARGET}x the fp32 one for every K=4 design: worst {worst:.3f} -> "
             f"{verdict(worst <= PRECISION_TARGET)}")
    return "\n\n".join(["## Peak memory under mixed precision (ResNet-110, batch 1024)", provenance(), intro,
                         table, check]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="resnet32 with K in {1, 4} only")
    parser.add_argument("--precision-only", action="store_true", help="only the fp32 / bf16 / fp16 section")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if not args.quick:
        print(f"wrote {write_section('memory-precision', precision_section())}")
    if args.precision_only:
        return 0
    cache: dict = {}
    rows = [run_case(c, cache) for c in cases(args.quick)]
    add_ratios(rows)
    print("\n" + results_table(rows) + "\n\n" + published_table() + "\n\n" + "\n".join(checks(rows)), flush=True)
    print(f"\nwrote {write_section('memory', report(rows, args.quick))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
