"""What every benchmark shares: the provenance block and writing its section of docs/results.md.

Each benchmark owns one section of docs/results.md, between
``<!-- begin:NAME -->`` and ``<!-- end:NAME -->``; running it replaces only
that section, so the benchmarks can be run one at a time.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results.md"
TITLE = "# Results\n\nEvery table below was measured by the script named in its section; rerun it to reproduce.\n"


def device() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    name = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def provenance() -> str:
    """Command, date, device and versions, as markdown bullet lines."""
    versions = ", ".join(f"{p} {_version(p)}" for p in ("torch", "torchvision", "timm", "optuna", "auxsearch"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return "\n".join([
        f"- command: `python {' '.join(shlex.quote(_shown(a)) for a in sys.argv)}`",
        f"- date (UTC): {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}",
        f"- device: {device()}",
        f"- versions: python {platform.python_version()}, {versions}",
        f"- 1-minute load average at the end: {load:.2f} (other processes on these cores inflate seconds)",
    ])


def _shown(arg: str) -> str:
    """A command-line argument as the docs show it: a path inside a checkout relative to that checkout's root.

    The docs must not name this machine's folders; a run folder in another clone (a fresh-clone run
    summarised from here) is shown as the same path in the reader's clone.
    """
    path = Path(arg)
    if not path.is_absolute() or not path.exists():
        return arg
    for top in [path, *path.parents]:
        if (top / ".git").exists() or top == ROOT:
            return os.path.relpath(path, top)
    return path.name


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def write_section(name: str, body: str) -> Path:
    """Replace section ``name`` of docs/results.md with ``body`` (appended if new)."""
    text = RESULTS.read_text() if RESULTS.is_file() else TITLE
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    return RESULTS


# InfoPro (Wang et al. ICLR'21) Table 3: ResNet-110, CIFAR-10, batch 1024, Titan Xp, GB.
INFOPRO_TABLE3 = [("E2E", 9.40), ("InfoPro* K=2", 5.38), ("InfoPro* K=3", 4.22), ("InfoPro* K=4", 3.52),
                  ("gradient checkpointing", 3.91)]


def even_splits(n: int, k: int) -> list[int]:
    """K - 1 split points evenly spaced over ``n`` unit indices (round half up: 55, K=4 -> [14, 28, 41])."""
    return [int(n * i / k + 0.5) for i in range(1, k)]


def markdown_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
