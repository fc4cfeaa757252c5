"""Precise BN (``engine.recalibrate_bn``, ``train.bn_recalibration_batches``): early scores that mean something.

After one epoch a local design's BatchNorm running statistics lag behind its weights and it
scores near chance in eval mode; recomputing them on a few training batches before each
evaluation fixes that without touching a weight or the training run.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import tiny_design
from torch import nn
from torch.utils.data import Dataset, Subset

from auxsearch.config import TrainConfig, from_mapping
from auxsearch.design.graph import as_design, load_design, normalize
from auxsearch.errors import ConfigError
from auxsearch.model.engine import build, inference_batchnorms, local_step, recalibrate_bn
from auxsearch.tasks import get_task
from auxsearch.train.data import load_data
from auxsearch.train.loop import fit

ROOT = Path(__file__).resolve().parents[1]
MAN = {"family": "momentum", "depth": 1, "width": 8, "momentum": 0.9}
BN = nn.modules.batchnorm._BatchNorm


def _images(n: int, seed: int, shape=(1, 16, 16), batch: int = 8):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(batch, *shape, generator=g), torch.randint(0, 10, (batch,), generator=g)) for _ in range(n)]


def _trained_tiny(steps: int = 3):
    """A K = 3 momentum design whose weights and running statistics have moved a little."""
    torch.manual_seed(0)
    model = build(tiny_design(splits=[1, 3], aux=[MAN, MAN]))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for x, y in _images(steps, seed=1):
        opt.zero_grad()
        local_step(model, x, y)
        opt.step()
    return model


def test_recalibration_changes_no_weight_and_restores_momentum_modes_and_rng():
    model = _trained_tiny()
    bns = inference_batchnorms(model)
    aux_bns = [m for m in model.aux.modules() if isinstance(m, BN)]
    assert bns and aux_bns and not {id(m) for m in bns} & {id(m) for m in aux_bns}  # aux nets are left out
    bns[0].momentum = 0.3  # a non-default momentum must come back too
    model.aux[0].eval()  # and a mixed train/eval state
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    momenta = {id(m): m.momentum for m in model.modules() if isinstance(m, BN)}
    modes = {n: m.training for n, m in model.named_modules()}
    rng = torch.get_rng_state()

    def noisy():  # a loader whose augmentation draws from the global RNG
        for x, y in _images(4, seed=2):
            yield x + 0.01 * torch.rand_like(x), y

    assert recalibrate_bn(model, noisy(), "cpu") == 4
    for n, p in model.named_parameters():
        assert torch.equal(p, params[n]), n
    for m in model.modules():
        if isinstance(m, BN):
            assert m.momentum == momenta[id(m)]
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream is untouched
    stats = {f"{n}.running_{s}" for n, m in model.named_modules() if m in bns for s in ("mean", "var")}
    for n, b in model.named_buffers():
        if n in stats:
            assert not torch.equal(b, buffers[n]), n  # recomputed
        else:
            assert torch.equal(b, buffers[n]), n  # aux nets, EMA copies, counters, normalisation: as they were


def test_running_statistics_are_the_mean_over_the_batches_of_batch_mean_and_variance():
    model = _trained_tiny()
    batches = _images(5, seed=3)
    # The statistics each inference BN sees in train mode (batch statistics all along the path).
    ref = copy.deepcopy(model).train()
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    names = {id(m) for m in inference_batchnorms(ref)}

    def hook(name):
        def record(module, args):
            x = args[0].transpose(0, 1).flatten(1)  # channels x (batch * H * W)
            seen.setdefault(name, []).append((x.mean(1), x.var(1, unbiased=True)))
        return record

    for n, m in ref.named_modules():
        if id(m) in names:
            m.register_forward_pre_hook(hook(n))
    with torch.no_grad():
        for x, _ in batches:
            ref(x)
    recalibrate_bn(model, batches, "cpu")
    assert len(seen) == len(names) >= 6
    for n, m in model.named_modules():
        if n in seen:
            mean = torch.stack([s[0] for s in seen[n]]).mean(0)
            var = torch.stack([s[1] for s in seen[n]]).mean(0)
            torch.testing.assert_close(m.running_mean, mean, rtol=1e-4, atol=1e-5, msg=n)
            torch.testing.assert_close(m.running_var, var, rtol=1e-4, atol=1e-5, msg=n)


def test_no_batches_leave_every_statistic_as_it_was():
    model = _trained_tiny()
    before = {n: b.clone() for n, b in model.named_buffers()}
    assert recalibrate_bn(model, [], "cpu") == 0
    for n, b in model.named_buffers():
        assert torch.equal(b, before[n]), n


DENSE = {"detection": {"name": "detection", "args": {"levels": 2, "fpn_channels": 8}},
         "segmentation": {"name": "segmentation", "args": {"levels": 2, "decoder_channels": 8}}}


@pytest.mark.parametrize("task", sorted(DENSE))
def test_dense_tasks_targets_are_ignored_and_the_real_head_is_recalibrated(task):
    torch.manual_seed(0)
    d = tiny_design(task=DENSE[task], num_classes=4, splits=[2], aux=[{"family": "dgl", "width": 8}])
    model = build(d)
    x, y = get_task(task).example_batch(normalize(d), 4)
    assert isinstance(y, list) == (task == "detection")  # detection targets: a list of dicts
    bns = inference_batchnorms(model)
    head_bns = [m for m in model.head.modules() if isinstance(m, BN)]
    assert all(m in bns for m in head_bns)
    assert recalibrate_bn(model, [(x, y), x], "cpu") == 2  # a pair, then a bare image
    for m in bns:
        assert not torch.equal(m.running_var, torch.ones_like(m.running_var))


# ------------------------------------------------------------------ fit on digits

# The enqueued MAN K = 4 design on 8 x 8 digits (16 x 16 in the design file: same result, 4x the time).
# Measured with seed 0/1/2 after 1 epoch: 0.13/0.18/0.17 without precise BN, 0.85/0.83/0.85 with it.
DIGITS = {"name": "digits", "image_size": 8}
ONE_EPOCH = {"epochs": 1, "batch_size": 64, "lr": 0.05, "device": "cpu", "threads": 1}
THRESHOLD = 0.4
# fit's validation scores on the _Jitter run with the code before precise BN existed.
OLD_FIT_HISTORY = [0.28888888888888886, 0.674074074074074]
OLD_FIT_SCORES = {"accuracy": 0.674074074074074}


@pytest.fixture(autouse=True)
def _keep_threads():
    """The fits below run on one thread (``train.threads``: steady timing on a busy machine); put torch's back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    design = as_design(load_design(ROOT / "studies" / "designs" / "digits_man_k4.yaml"))
    design["input_shape"] = [1, 8, 8]
    return design, load_data(design, DIGITS, None)


def test_fit_default_is_on_and_the_setting_is_validated():
    assert TrainConfig().bn_recalibration_batches == 8
    with pytest.raises(ConfigError, match="bn_recalibration_batches"):
        from_mapping(TrainConfig, {"bn_recalibration_batches": -1}, "train")


def test_one_epoch_momentum_k4_scores_far_above_chance_with_precise_bn(digits):
    design, data = digits
    off = fit(design, train={**ONE_EPOCH, "bn_recalibration_batches": 0}, data=data)
    on = fit(design, train={**ONE_EPOCH, "bn_recalibration_batches": 8}, data=data)
    for (n, p), q in zip(off.model.named_parameters(), on.model.parameters(), strict=True):
        assert torch.equal(p, q), n  # the same training run, only the statistics differ
    assert on.score >= off.score + THRESHOLD, (off.score, on.score)
    assert on.score >= 0.6


class _Jitter(Dataset):
    """Digits with noise drawn from the *global* torch RNG, as torchvision's augmentations draw."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return (x + 0.05 * torch.rand_like(x)).clamp(0, 1), y


def _jitter_run(recal: int):
    design = tiny_design(input_shape=[1, 8, 8], splits=[1, 3], aux=[MAN, MAN])
    data = load_data(normalize(design), {"name": "digits", "image_size": 8}, None)
    data = dataclasses.replace(data, train=_Jitter(Subset(data.train, range(512))))  # 8 steps an epoch
    return fit(design, train={"epochs": 2, "batch_size": 64, "lr": 0.05, "device": "cpu", "threads": 1,
                              "bn_recalibration_batches": recal}, data=data)


def _untouched_state(model) -> dict[str, torch.Tensor]:
    inference = {id(m) for m in inference_batchnorms(model)}
    skip = {f"{n}.{s}" for n, m in model.named_modules() if id(m) in inference
            for s in ("running_mean", "running_var", "num_batches_tracked")}
    return {n: t for n, t in model.state_dict().items() if n not in skip}


def test_setting_zero_is_the_old_fit_and_recalibration_never_changes_training():
    off, on = _jitter_run(0), _jitter_run(8)
    # Two epochs: recalibrating after epoch 1 (drawing augmentations on a private RNG) leaves
    # epoch 2 unchanged, so every weight, EMA copy and aux statistic ends bit-identical.
    a, b = _untouched_state(off.model), _untouched_state(on.model)
    assert a.keys() == b.keys()
    for n in a:
        assert torch.equal(a[n], b[n]), n
    assert on.history != off.history
    # Setting 0 gives what fit gave before precise BN existed (recorded with that code).
    assert off.history == OLD_FIT_HISTORY
    assert off.scores == OLD_FIT_SCORES
