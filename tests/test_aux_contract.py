"""Every registered aux family honours the same contract (timm-style contract tests)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_design

from auxsearch.aux import AUX
from auxsearch.engine import build, local_step
from auxsearch.families import FAMILY_OPTIONS

OPTIONS = {"dgl": {}, "infopro": {}, "augment": {"depth": 2}, "momentum": {},
           "momentum+infopro": {"head": "infopro"}}


def test_registry_matches_the_option_schema():
    assert set(AUX) == set(FAMILY_OPTIONS)
    assert set(AUX) <= {k.split("+")[0] for k in OPTIONS}


def _model(name: str):
    family = name.split("+")[0]
    torch.manual_seed(0)
    return build(tiny_design(splits=[1, 3], aux=[{"family": family, "width": 8, **OPTIONS[name]}] * 2))


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_forward_backward_finite_and_gradients_stay_in_module(name, batch):
    x, y = batch
    model = _model(name)
    stage0 = model.stages[0]
    h = stage0(x).detach().requires_grad_(True)  # as module 0's output, seen from its aux
    loss = model.aux[0](h, x, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert h.grad is not None and torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0
    aux_params = list(model.aux[0].parameters())
    assert aux_params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in aux_params)
    outside = [p for m in (*model.stages, model.aux[1], model.head) for p in m.parameters()]
    assert all(p.grad is None for p in outside)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_full_local_step_gives_every_trainable_parameter_a_finite_gradient(name, batch):
    model = _model(name)
    logits, losses = local_step(model, *batch)
    assert logits.shape == (8, 10) and len(losses) == 3
    assert all(torch.isfinite(loss) for loss in losses)
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
