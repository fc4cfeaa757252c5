"""benchmarks/gpu_truth.py: the CPU dry run end to end, the no-GPU exit, and the GPU report's code paths.

The dry run runs the same code as the GPU run at tiny shapes (CPU live-bytes counter as the
"measured" peak); the GPU-only report sections are built here from fabricated figures, so a
formatting mistake in them shows up without a GPU.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_truth.py"
GiB = 2**30


@pytest.fixture(scope="module")
def gt():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        yield importlib.import_module("gpu_truth")
    finally:
        sys.path.remove(str(SCRIPT.parent))


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_truth")
    md, js = out / "section.md", out / "figures.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-dry-run", "--output", str(md), "--json", str(js)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    return proc, md, js


@pytest.mark.slow  # 29 s (a whole CPU dry run); its sections in CI: test_gpu_report_sections_from_fabricated_figures
def test_dry_run_table_rows_columns_and_numbers(dry_run):
    proc, md, js = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "docs/results.md" not in proc.stdout  # the dry run never writes the results page
    res = json.loads(js.read_text())
    rows = res["table"]
    expected = {(net, fam, k) for net in ("resnet8", "resnet20")
                for k, fam in ((1, "E2E"), (2, "dgl"), (2, "infopro"))}
    assert {(r["network"], r["family"], r["k"]) for r in rows} == expected
    for r in rows:
        for p in ("fp32", "bf16"):
            c = r[p]
            assert "error" not in c, c
            assert c["simulated"] > 0 and c["measured"] > 0
            assert math.isfinite(c["error_pct"])
            assert abs(c["simulated"] - c["measured"]) <= 0.05 * c["measured"], (r["network"], r["family"], p)
        assert 0 < r["bf16_ratio_measured"] <= 1.0 + 1e-9 and math.isfinite(r["bf16_ratio_simulated"])

    text = md.read_text()
    assert "<!-- begin:gpu-truth -->" in text and "<!-- end:gpu-truth -->" in text
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| network | family | K |"))
    cols = [c.strip() for c in lines[at].strip("|").split("|")]
    assert cols[4:10] == ["fp32 simulated (MB)", "fp32 measured (MB)", "fp32 error %",
                          "bf16 simulated (MB)", "bf16 measured (MB)", "bf16 error %"]
    end = next(i for i in range(at, len(lines)) if not lines[i].startswith("|"))
    table = lines[at + 2:end]
    assert len(table) == len(expected)
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(cols)
        assert all(math.isfinite(float(v)) for v in cells[4:])

    status = {v["check"].split(".")[0]: v["status"] for v in res["verdicts"]}
    assert status["1"] == "MET"
    assert status["2"] == status["3"] == status["4"] == "skipped (no CUDA)"  # 4: its CPU stand-in trial returned
    assert [t["outcome"] for t in res["isolation"]["trials"]] == ["returned"]
    assert len(res["infopro"]) == 4 and all(math.isfinite(r["error_pct"]) for r in res["infopro"])
    assert all(r["ours"] > 0 and r["theirs"] > 0 for r in res["timing"])


def test_without_cuda_and_without_the_flag_exits_with_a_message():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr and "--cpu-dry-run" in proc.stderr


def test_a_failing_design_is_an_error_row_not_a_crash(gt):
    plan = gt.dry_plan()
    bad = gt.cifar("resnet8", 5, plan.input_shape, [], {})  # resnet8 has 4 units
    cells = gt.Cells(plan)
    row = {"network": "resnet8", "family": "E2E", "k": 1, "splits": [], "design": bad,
           **{p: cells.both(bad, p) for p in gt.PRECISIONS}}
    assert "error" in row["fp32"] and "error_pct" not in row["fp32"]
    assert "failed" in gt.memory_rows_md(plan, [row])
    assert gt.memory_verdict(plan, [row])["status"] == "MISSED"


def test_gpu_report_sections_from_fabricated_figures(gt, monkeypatch):
    """Every GPU-only branch of the report (fixed overhead, InfoPro rows, OOM, freeing, timing)."""

    class Props:
        total_memory, major, minor = 80 * 10**9, 9, 0

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a: Props())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    plan = gt.gpu_plan()
    table = []
    for i, r in enumerate(gt.table_designs(plan)):
        r = {**r, "splits": r["design"]["splits"]}
        if i == 3:
            r["skipped"] = "time limit"
        else:
            r.update({p: {"simulated": s * GiB, "measured": 1.02 * s * GiB, "error_pct": -1.96, "simulate_s": 1.0,
                          "measure_s": 0.5} for p, s in (("fp32", 2.0), ("bf16", 1.5))})
            r["bf16_ratio_measured"] = r["bf16_ratio_simulated"] = 0.75
        table.append(r)
    table[5]["bf16"] = {"error": "measure: OutOfMemoryError: CUDA out of memory", "simulated": 1.0, "simulate_s": 1}
    fixed = {"status": "measured", "design": gt.cifar("resnet110", 55, [3, 32, 32], [], {}), "smi_before": 0,
             "context": 500 * 2**20, "used_context": 600 * 2**20, "used_after_step": 10 * GiB,
             "max_allocated": 8 * GiB, "max_reserved": 9 * GiB, "reserved_after_step": 9 * GiB,
             "caching": GiB, "libraries": 400 * 2**20, "outside_allocator": GiB}
    infopro = [{"name": n, "k": k, "splits": s, "simulated": g * 1e9, "measured": g * 1e9, "reserved_peak": g * 1e9,
                "card": (g + 1) * 1e9, "published": p, "error_pct": 0.0, "simulate_s": 1, "measure_s": 1}
               for n, k, s, g, p in (("E2E", 1, [], 8.71, 9.40), ("InfoPro* K=2", 2, [16], 4.60, 5.38))]
    mem = {"baseline": GiB, "right_after": GiB + 2**20, "after_wait": GiB, "wait_s": 0.0, "freed": True}
    iso = {"trials": [
        {"what": "cannot fit (cuda)", "kind": "oom", "device": "cuda", "outcome": "TrialOutOfMemory",
         "reached": 70 * 10**9, "message": "OutOfMemoryError: CUDA out of memory", "seconds": 9.0, "memory": mem},
        {"what": "cannot fit (auto)", "kind": "oom", "device": "auto", "outcome": "TrialOutOfMemory",
         "reached": None, "message": "OutOfMemoryError: CUDA out of memory", "seconds": 9.0, "memory": mem},
        {"what": "trains", "kind": "fits", "device": "cuda", "outcome": "returned", "peak": 10**8, "seconds": 5.0,
         "memory": {**mem, "after_wait": 2 * GiB, "freed": False}}]}
    timing = [{"name": "a", "ours": 0.010, "theirs": 0.0099, "ratio": 1.01}, {"name": "b", "error": "boom"}]
    verdicts = [gt.memory_verdict(plan, table), gt.fixed_verdict(fixed), *gt.isolation_verdicts(plan, iso),
                gt.timing_verdict(plan, timing)]
    res = {"table": table, "fixed": fixed, "infopro": infopro, "isolation": iso, "timing": timing,
           "verdicts": verdicts, "seconds": 300.0}
    text = gt.report(plan, res)

    assert "Fake GPU" in text and "## GPU truth\n" in text
    status = [(v["check"], v["status"]) for v in verdicts]
    assert status[0] == ("1. memory truth table", "MISSED")  # a failed cell
    assert status[1] == ("2. device fixed overhead", "measured") and "context 500 MiB" in verdicts[1]["detail"]
    assert ("3. CUDA OOM -> TrialOutOfMemory, reached > 0 (train.device cuda)", "PASS") in status
    assert ("3. CUDA OOM -> TrialOutOfMemory, reached > 0 (train.device auto)", "FAIL") in status
    assert [s for c, s in status if c.startswith("4.")] == ["PASS", "PASS", "FAIL"]
    assert status[-1] == ("5. step time vs hand-written loop", "MISSED")
    assert "skipped (time limit)" in text and "| InfoPro* K=2 | [16] | 4.600 |" in text
    assert "+0.780" in text  # published 5.38 - simulated 4.60
    assert "memory.budget: 12GB" in text and "12 GB x 1.125" in text
    assert "CUDA out of memory" in text
