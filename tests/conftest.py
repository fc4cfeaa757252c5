from __future__ import annotations

import pytest
import torch

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
