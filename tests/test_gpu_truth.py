"""benchmarks/gpu_truth.py without a GPU: the cell list, a failed cell that does not stop the run, the
report's GPU sections from fabricated figures, nvidia-smi's odd lines, and (slow) the whole CPU dry run."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_truth.py"
CLAIMS = ("memory", "infopro", "oom", "isolated-loader", "workers", "step-time", "pipeline", "bf16")


@pytest.fixture(scope="module")
def gt():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        yield importlib.import_module("gpu_truth")
    finally:
        sys.path.remove(str(SCRIPT.parent))


def test_the_dry_run_lists_every_cell_quickly():
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 30
    names = [line.split()[0] for line in proc.stdout.splitlines()[:-1]]
    assert names == list(CLAIMS)
    assert "fp32, bf16, fp16" in proc.stdout and "a trial records" in proc.stdout
    minutes = float(proc.stdout.splitlines()[-1].split("about ")[1].split()[0])
    assert minutes <= 8  # one command, at most 8 minutes on one GPU


def test_without_cuda_and_without_a_dry_run_flag_exits_2():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr and "--dry-run" in proc.stderr


def test_a_cell_that_raises_is_a_failed_row_and_the_next_cell_runs(gt):
    def boom(ctx):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    ran = []
    cells = [gt.Cell("boom", "raises", boom), gt.Cell("after", "runs", lambda ctx: ran.append(1) or
                                                      {"status": "PASS", "detail": "ok"}),
             gt.Cell("gpu", "needs a GPU", boom, cuda_only=True)]
    results = gt.run_cells(gt.Ctx(cuda=False, deadline=time.monotonic() + 60), cells)
    assert [r["status"] for r in results] == ["FAILED", "PASS", "skipped (no CUDA)"] and ran == [1]
    assert "illegal memory access" in results[0]["detail"] and "Traceback" in results[0]["traceback"]
    text = gt.report(results, cuda=False, seconds=3.0)
    assert "| boom | raises | **FAILED** | RuntimeError: CUDA error" in text


def test_the_gpu_report_from_fabricated_figures(gt, monkeypatch):
    import torch

    class Props:
        total_memory, major, minor = 141 * 2**30, 9, 0

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a: Props())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake H200")
    mem = [{"network": "resnet110", "family": "dgl", "k": 4, "precision": p, "simulated": 3.5e9, "measured": 3.45e9,
            "error_pct": 1.45} for p in ("fp32", "bf16", "fp16")]
    mem.append({"network": "resnet110", "family": "momentum", "k": 8, "precision": "fp16", "error": "skipped: time limit"})
    results = [{"cell": "memory", "claim": "c", "status": "MISSED", "detail": "d", "seconds": 200.0, "rows": mem},
               {"cell": "infopro", "claim": "c", "status": "MET", "detail": "d", "seconds": 30.0,
                "rows": [{"k": 4, "splits": [8, 16, 28], "simulated": 3.4e9, "measured": 3.41e9, "card": 4.2e9,
                          "published_gb": 3.52, "error_pct": -0.3}]}]
    text = gt.report(results, cuda=True, seconds=300.0)
    assert "Fake H200, 141.0 GiB, compute capability 9.0" in text
    assert "| resnet110 | dgl | 4 | fp16 | 3,337.9 | 3,290.2 | +1.45 |" in text
    assert "failed: skipped: time limit" in text and "| 4 | [8, 16, 28] | 3.400 | 3.410 | 4.20 | 3.52 |" in text


@pytest.mark.parametrize("out, visible, expect", [
    ("0, GPU-aa, 1024\n1, GPU-bb, 2048\n", "", 1024),
    ("0, GPU-aa, 1024\n1, GPU-bb, 2048\n", "1", 2048),
    ("0, GPU-aa, 1024\n1, GPU-bb, 2048\n", "GPU-bb", 2048),
    ("0, GPU-aa, [N/A]\n", "", None),  # a MIG slice: nvidia-smi cannot say
    ("No devices were found\n", "", None),
])
def test_nvidia_smi_lines_that_say_nothing_give_none(gt, out, visible, expect):
    assert gt.parse_smi(out, visible) == (None if expect is None else expect * gt.MIB)


@pytest.mark.slow  # 2-3 min: every cell at tiny shapes on the CPU (a 2-worker study among them)
def test_the_cpu_dry_run_end_to_end(tmp_path):
    js = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-dry-run", "--output", str(tmp_path / "s.md"),
                           "--json", str(js)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    results = {r["cell"]: r for r in json.loads(js.read_text())}
    assert set(results) == set(CLAIMS), proc.stdout[-3000:]
    assert results["oom"]["status"] == results["bf16"]["status"] == "skipped (no CUDA)"
    assert all(results[c]["status"] in ("MET", "PASS", "ran on CPU") for c in
               ("memory", "infopro", "isolated-loader", "workers", "step-time")), proc.stdout[-3000:]
