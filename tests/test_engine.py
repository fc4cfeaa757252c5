from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_design

from auxsearch.aux.augment import pyramid_depth, sample_units
from auxsearch.errors import ConfigError
from auxsearch.model.engine import build, end_to_end, local_step
from auxsearch.train import memory

MAN = {"family": "momentum", "depth": 1, "width": 8, "momentum": 0.9}


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", ["dgl", "infopro", "augment", "momentum"])
def test_gradient_isolation_later_modules_do_not_reach_module_k(family, batch):
    """Module 0's gradients are the same whatever the modules after it hold, or whether they exist."""
    design = tiny_design(splits=[1, 3], aux=[{"family": family, "width": 8}] * 2)
    torch.manual_seed(0)
    a = build(design)
    b = copy.deepcopy(a)
    with torch.no_grad():  # scramble every later stage, aux net and the head of b
        for m in (b.stages[1], b.stages[2], b.aux[1], b.head):
            for p in m.parameters():
                p.mul_(-3.0).add_(0.5)
    local_step(a, *batch)
    local_step(b, *batch)
    # the same module 0 trained on its own, with nothing after it
    c = copy.deepcopy(a)
    c.zero_grad(set_to_none=True)
    x, y = batch
    h = c.stages[0]((x - c.mean) / c.std)
    c.aux[0](h, x, y).backward()
    for mod in ("stages.0", "aux.0"):
        ga = _grads(a.get_submodule(mod))
        assert ga
        for n, g in _grads(b.get_submodule(mod)).items():
            torch.testing.assert_close(g, ga[n], rtol=0, atol=0)
        for n, g in _grads(c.get_submodule(mod)).items():
            torch.testing.assert_close(g, ga[n], rtol=0, atol=0)
    # and the check can fail: end to end, module 0 *does* see the later modules
    e2e = build(end_to_end(design))
    e2e_b = copy.deepcopy(e2e)
    with torch.no_grad():
        for p in e2e_b.head.parameters():
            p.mul_(-3.0)
    local_step(e2e, *batch)
    local_step(e2e_b, *batch)
    assert not torch.equal(e2e.stages[0][0][0].weight.grad, e2e_b.stages[0][0][0].weight.grad)


def test_ema_update_is_m_old_plus_one_minus_m_new_and_leaves_bn_buffers(batch):
    torch.manual_seed(0)
    model = build(tiny_design(splits=[2], aux=[MAN]))
    aux, source = model.aux[0], model.unit(2)
    with torch.no_grad():  # make the EMA copy differ from the source unit
        for p in source.parameters():
            p.add_(torch.randn_like(p))
    old = {n: t.clone() for n, t in aux.ema.named_buffers()}
    new = {n: p.detach().clone() for n, p in source.named_parameters()}
    aux.after_backward(source)
    after = dict(aux.ema.named_buffers())
    for n in new:
        torch.testing.assert_close(after[n], 0.9 * old[n] + 0.1 * new[n], rtol=1e-6, atol=1e-6)
    stats = [n for n in old if n not in new]
    assert stats and any("running_mean" in n for n in stats)
    for n in stats:
        assert torch.equal(after[n], old[n])
    # inside a real step the update happens right after module 0's backward
    before = {n: t.clone() for n, t in aux.ema.named_buffers() if n in new}
    src_now = {n: p.detach().clone() for n, p in source.named_parameters()}
    local_step(model, *batch)
    for n, t in aux.ema.named_buffers():
        if n in new:
            torch.testing.assert_close(t, 0.9 * before[n] + 0.1 * src_now[n], rtol=1e-6, atol=1e-6)


def test_ema_copy_has_no_parameters_so_no_optimizer_touches_it():
    model = build(tiny_design(splits=[2], aux=[MAN]))
    assert list(model.aux[0].ema.parameters()) == []
    assert len(list(model.aux[0].ema.buffers())) > 0


def test_man_plus_plus_scale_gets_a_gradient_and_man_has_none(batch):
    plus = build(tiny_design(splits=[2], aux=[MAN]))
    assert plus.aux[0].scale.item() == 1.0
    # at initialisation LB and EMA are equal, so dL/ds = <dL/dy, LB(h) - EMA(h)> = 0: let them differ
    with torch.no_grad():
        for p in plus.aux[0].lb.parameters():
            p.mul_(1.5)
    local_step(plus, *batch)
    assert plus.aux[0].scale.grad is not None and plus.aux[0].scale.grad.abs() > 0
    man = build(tiny_design(splits=[2], aux=[dict(MAN, learnable_scale=False)]))
    assert man.aux[0].scale is None
    assert not any("scale" in n for n, _ in man.named_parameters())


def test_k1_local_step_is_plain_end_to_end_backprop(batch):
    torch.manual_seed(0)
    model = build(tiny_design())
    ref = copy.deepcopy(model)
    local_step(model, *batch)
    x, y = batch
    F.cross_entropy(ref(x), y).backward()
    for (n, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


def test_backbone_unit_count_must_match_the_design():
    with pytest.raises(ConfigError, match="num_units"):
        build(tiny_design(num_units=5))


def test_auglocal_depth_pyramid_and_uniform_sampling():
    assert [pyramid_depth(4, k, 6, 0.5) for k in range(5)] == [4, 4, 3, 3, 2]
    assert pyramid_depth(3, 0, 2, 0.5) == 3  # K = 2: no pyramid
    assert sample_units([5, 6, 7, 8, 9], 3) == [5, 7, 9]
    assert sample_units([5, 6], 4) == [5, 6]


def test_local_peak_is_below_end_to_end_on_the_same_batch():
    design = {"backbone": {"name": "resnet20"}, "input_shape": [3, 32, 32], "num_classes": 10,
              "num_units": 10, "splits": [3, 5, 7], "aux": [{"family": "dgl", "depth": 1, "width": 16}] * 3}
    local = memory.measure(design, 64)
    e2e = memory.measure(end_to_end(design), 64)
    assert local < 0.75 * e2e
    floor = memory.floor(design, 64)
    assert floor <= local <= 1.15 * floor


def test_cpu_measurement_and_simulation_agree_within_ten_percent():
    design = {"backbone": {"name": "resnet20"}, "input_shape": [3, 32, 32], "num_classes": 10,
              "num_units": 10, "splits": [4], "aux": [dict(MAN, width=16)]}
    measured = memory.measure(design, 32)
    simulated = memory.simulate(design, 32)
    assert abs(measured - simulated) <= 0.10 * measured


def test_simulated_peak_grows_with_batch_and_k_lowers_it():
    design = {"backbone": {"name": "resnet20"}, "input_shape": [3, 32, 32], "num_classes": 10, "num_units": 10,
              "splits": [3, 5, 7], "aux": [{"family": "dgl", "depth": 1, "width": 16}] * 3}
    small, big = memory.simulate(design, 64), memory.simulate(design, 256)
    assert big > 2 * small
    assert memory.simulate(end_to_end(design), 256) > big
