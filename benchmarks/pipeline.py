"""Is the data loader or the training step the bottleneck? Images per second of each, in one run.

For every kind of data set a study can train on, builds the training batches exactly as
``auxsearch.train.loop`` does (``train.data_on_device``, ``train.loader_workers``), and times
(a) one pass of the loader alone, batches moved to the device, and (b) training steps of a
ResNet-20 K=4 DGL design (``engine.train_step``) at the same image size and batch. The loader
must be faster than the step: ``loader / step`` > 1 in every row the defaults pick.

Data sets, written in their real on-disk formats into a temporary folder: digits (bundled with
scikit-learn), CIFAR-10 (the pickled batch files of the official archive, 5 000 random
images; pad-4 crop + flip), an ImageFolder of 64x64 JPEGs (random resized crop + flip, decoded
per image). Rows with the defaults and with the alternatives (a DataLoader instead of the
device-resident tensors, worker processes) make the cost of each choice visible.

Writes section ``pipeline`` of docs/results.md. Run: ``python benchmarks/pipeline.py``
(``--quick``: fewer images and steps, printed only). About 2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import markdown_table, provenance, write_section
from PIL import Image

from auxsearch.config import TrainConfig
from auxsearch.model import engine
from auxsearch.tasks import get_task
from auxsearch.train.data import loader_workers, train_batches


def write_cifar10(root: Path, n: int, seed: int = 0) -> None:
    """The official archive's layout: five pickled training batches, a test batch, batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        count = n // 5 if name != "test_batch" else max(10, n // 10)
        entry = {"batch_label": name, "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, count).tolist(), "filenames": [f"{i}.png" for i in range(count)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f, protocol=2)


def write_imagefolder(root: Path, n: int, size: int = 64, classes: int = 10, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", max(classes, n // 10))):
        for i in range(count):
            folder = root / split / f"c{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)


def loader_rate(data, cfg: TrainConfig, device: torch.device, passes: int) -> tuple[float, str]:
    loader = train_batches(data, cfg, device)
    kind = type(loader).__name__
    if kind == "DataLoader":
        kind += f" ({loader.num_workers} workers)"
    seen, start = 0, time.perf_counter()
    for _ in range(passes):
        for x, _y in loader:
            x = x.to(device, non_blocking=True)
            seen += x.shape[0]
    return seen / (time.perf_counter() - start), kind


def step_rate(chans: int, size: int, batch: int, steps: int, device: torch.device) -> float:
    design = {"backbone": {"name": "resnet20"}, "input_shape": [chans, size, size], "num_classes": 10,
              "num_units": 10, "splits": [3, 5, 7], "aux": [{"family": "dgl", "depth": 1, "width": 16}] * 3}
    torch.manual_seed(0)
    model = engine.build(design).to(device)
    opt, _ = engine.make_optimizer(model, TrainConfig(), 100)
    x, y = torch.rand(batch, chans, size, size, device=device), torch.randint(0, 10, (batch,), device=device)
    engine.train_step(model, opt, x, y)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        engine.train_step(model, opt, x, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def cases(tmp: Path, quick: bool) -> list[tuple[str, dict, dict]]:
    n_cifar, n_folder = (1000, 200) if quick else (5000, 1000)
    write_cifar10(tmp / "cifar", n_cifar)
    write_imagefolder(tmp / "folder", n_folder)
    cifar = {"name": "cifar10", "root": str(tmp / "cifar")}
    folder = {"name": "imagefolder", "root": str(tmp / "folder"), "image_size": 64}
    return [
        ("digits 16x16", {"name": "digits"}, {}),
        ("digits 16x16", {"name": "digits"}, {"data_on_device": False}),
        ("CIFAR-10 32x32, crop + flip", cifar, {}),
        ("CIFAR-10 32x32, crop + flip", cifar, {"data_on_device": False}),
        ("ImageFolder JPEG 64x64, resized crop + flip", folder, {}),
        ("ImageFolder JPEG 64x64, resized crop + flip", folder, {"loader_workers": 1}),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and steps; print only")
    args = parser.parse_args(argv)
    device = engine.resolve_device("auto")
    batch, steps = 128, (3 if args.quick else 10)
    rows, step_cache, default_ok = [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data_cfg, overrides in cases(Path(tmp), args.quick):
            cfg = TrainConfig(batch_size=batch, seed=0, **overrides)
            data = get_task("classification").load_data(data_cfg)
            loader, kind = loader_rate(data, cfg, device, passes=1 if args.quick else 2)
            shape = (data.in_chans, data.image_size)
            if shape not in step_cache:
                step_cache[shape] = step_rate(data.in_chans, data.image_size, batch, steps, device)
            step = step_cache[shape]
            default = not overrides
            if default:
                default_ok.append(loader > step)
            choice = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "defaults"
            if "loader_workers" not in overrides and kind.startswith("DataLoader"):
                choice += f" (auto workers: {loader_workers(cfg, device)})"
            print(f"  {name} [{choice}]: loader {loader:,.0f} img/s ({kind}), step {step:,.0f} img/s", flush=True)
            rows.append([name, choice, kind, f"{loader:,.0f}", f"{step:,.0f}", f"{loader / step:.1f}"])
    table = markdown_table(["data set", "train settings", "batches from", "loader img/s", "step img/s",
                            "loader / step"], rows)
    verdict = "MET" if all(default_ok) else "MISSED"
    body = "\n\n".join([
        "## Data pipeline: loader against training step", provenance(),
        f"Images per second of the training batches as `auxsearch.train.loop` builds them (one pass, moved to "
        f"`{device}`), beside training steps of a ResNet-20 K=4 DGL design (depth-1 width-16 aux nets, SGD) at the "
        f"same image size, batch {batch}. Data written in the real on-disk formats (CIFAR-10 pickled batches of "
        "random images, JPEG ImageFolder). Tensor data sets (digits, CIFAR) are batched and augmented on the device "
        "by default (`train.data_on_device`); file data sets use a DataLoader whose worker count is "
        "`train.loader_workers` (automatic: none on CPU, where the step needs the cores; cores per trial worker "
        "less one on CUDA). Command: `python benchmarks/pipeline.py`.",
        table,
        f"- with the defaults the step, not the loader, is the bottleneck in every row: {verdict}"])
    print("\n" + table + "\n")
    if not args.quick:
        print(f"wrote {write_section('pipeline', body + chr(10))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
