from __future__ import annotations

import os

import pytest
import torch

# Under pytest-xdist (`-n auto`, pyproject's addopts) each worker is one process per core: one
# torch thread each, and the same for the processes a test starts (CLI runs, workers), so the
# cores are not oversubscribed. Run alone (`-n 0`), a test gets two threads as before.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)


def tiny_design(**overrides):
    """A resnet8 design on 1x16x16 digits-shaped input: 4 units, fast everywhere."""
    d = {"backbone": {"name": "resnet8"}, "input_shape": [1, 16, 16], "num_classes": 10, "num_units": 4,
         "splits": [], "aux": []}
    d.update(overrides)
    return d


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(8, 1, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)
