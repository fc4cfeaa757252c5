"""Where training batches come from: device-resident tensors by default, a DataLoader otherwise."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_design
from torch.utils.data import DataLoader

from auxsearch.config import TrainConfig
from auxsearch.errors import ConfigError
from auxsearch.tasks import get_task
from auxsearch.tasks.tensor_data import DeviceBatches
from auxsearch.train.data import eval_batches, loader_workers, train_batches
from auxsearch.train.loop import fit

DIGITS = {"name": "digits", "image_size": 16}


def test_tensor_data_sets_are_batched_on_the_device_unless_told_otherwise():
    data = get_task("classification").load_data(DIGITS)
    cpu = torch.device("cpu")
    assert isinstance(train_batches(data, TrainConfig(batch_size=64), cpu), DeviceBatches)
    assert isinstance(eval_batches(data.val, data, TrainConfig(), cpu), DeviceBatches)
    plain = train_batches(data, TrainConfig(batch_size=64, data_on_device=False), cpu)
    assert isinstance(plain, DataLoader) and plain.num_workers == 0


def test_device_batches_train_digits_to_the_same_weights_as_the_data_loader():
    """Same order, same values: the switch changes nothing in an un-augmented run (pinned studies hold)."""
    design = tiny_design(splits=[2], aux=[{"family": "dgl", "width": 8}])
    train = {"epochs": 2, "batch_size": 64, "lr": 0.05, "device": "cpu", "bn_recalibration_batches": 2}
    a = fit(design, train=train, data=DIGITS)
    b = fit(design, train={**train, "data_on_device": False}, data=DIGITS)
    assert a.history == b.history
    for (n, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), n


def test_loader_workers_automatic_and_explicit():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert loader_workers(TrainConfig(), cpu) == 0  # the step needs the cores
    assert loader_workers(TrainConfig(loader_workers=3), cpu) == 3
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert loader_workers(TrainConfig(), cuda) == 3
        torch.set_num_threads(1)
        assert loader_workers(TrainConfig(), cuda) == 0
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ConfigError, match="train.loader_workers"):
        from auxsearch.config import from_mapping

        from_mapping(TrainConfig, {"loader_workers": -1}, "train")
