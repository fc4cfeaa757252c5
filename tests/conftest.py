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


def own_loss_grads(model, k: int, x, y, index=None) -> list:
    """Module k's gradients (its units, then its aux net) from module k's loss alone.

    The earlier modules run without a graph; their taps reach module k detached (the feature bank), module
    k's own stay attached, as in a local step.
    """
    from auxsearch.aux import StepState

    model.zero_grad(set_to_none=True)
    h = (x - model.mean) / model.std
    taps = {}
    for j in range(k + 1):
        with torch.set_grad_enabled(j == k):
            h = h.detach()
            for i, unit in enumerate(model.stages[j], model.bounds[j][0]):
                h = unit(h)
                if i in model.taps:
                    taps[i] = h if j == k else h.detach()
    model.aux[k](h, x, y, StepState(taps, model.head, index, getattr(model, "bank", None))).backward()
    return [p.grad.clone() for p in (*model.stages[k].parameters(), *model.aux[k].parameters())]
