"""Feature bank and global-local wiring: gradient isolation, shared heads, EMA, memory."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_design

from auxsearch import memory
from auxsearch.engine import build, local_step
from auxsearch.errors import ConfigError
from auxsearch.graph import design_hash, normalize, to_graph


def _model(aux, splits=(1, 3), seed=0):
    torch.manual_seed(seed)
    return build(tiny_design(splits=list(splits), aux=aux))


def _stage0_grads(model, batch):
    local_step(model, *batch)
    return [p.grad.clone() for p in model.stages[0].parameters()]


WIRED = {
    "bank-add": {"family": "dgl", "width": 8, "bank": 2},
    "bank-concat": {"family": "dgl", "width": 8, "bank": 2, "bank_fusion": "concat"},
    "global": {"family": "dgl", "end": "global"},
    "global-trainable": {"family": "dgl", "end": "global", "through": "trainable"},
    "global-ema": {"family": "momentum", "end": "global_ema"},
}


@pytest.mark.parametrize("name", sorted(WIRED))
def test_module_0_gets_gradients_from_its_own_loss_only(name, batch):
    """Scrambling every later module leaves module 0's gradients bit-identical.

    A ``global`` end calls the real head inside module 0's own loss, so the head is
    shared on purpose and left alone here; everything else after module 0 is scrambled.
    """
    aux = [WIRED[name]] * 2
    a, b = _model(aux), _model(aux)
    later = [b.stages[1], b.stages[2], b.aux[1]] + ([] if WIRED[name].get("end") == "global" else [b.head])
    with torch.no_grad():
        for m in later:
            for p in m.parameters():
                p.add_(torch.randn_like(p))
    for ga, gb in zip(_stage0_grads(a, batch), _stage0_grads(b, batch), strict=True):
        assert torch.equal(ga, gb)


@pytest.mark.parametrize("name", sorted(WIRED))
def test_module_0_gradient_equals_its_own_loss_gradient(name, batch):
    """The whole local step gives module 0 exactly the gradient of module 0's loss alone."""
    model = _model([WIRED[name]] * 2)
    alone = _model([WIRED[name]] * 2)
    x, y = batch
    h = alone.stages[0]((x - alone.mean) / alone.std)
    from auxsearch.aux import StepState

    alone.aux[0](h, x, y, StepState([], {}, alone.head)).backward()
    for ga, gb in zip(_stage0_grads(model, batch), [p.grad for p in alone.stages[0].parameters()], strict=True):
        assert torch.equal(ga, gb)


@pytest.mark.parametrize("name", sorted(WIRED))
def test_every_trainable_parameter_gets_a_finite_gradient(name, batch):
    model = _model([WIRED[name]] * 2)
    _, losses = local_step(model, *batch)
    assert all(torch.isfinite(v) for v in losses)
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_global_end_shares_the_real_head_and_global_ema_does_not(batch):
    """The real head's gradient: final loss only (local, global_ema) or final + every global aux."""
    local = _model([{"family": "momentum", "width": 8}] * 2)
    shared = _model([{"family": "momentum", "end": "global"}] * 2)
    ema = _model([{"family": "momentum", "end": "global_ema"}] * 2)
    for m in (local, shared, ema):
        local_step(m, *batch)
    # Same seed, same build order: backbone and head start identical in the three models.
    assert torch.equal(local.head.fc.weight.grad, ema.head.fc.weight.grad)
    assert not torch.allclose(local.head.fc.weight.grad, shared.head.fc.weight.grad)
    # Shared on purpose: the aux nets own no head parameters; the EMA copy holds buffers only.
    assert not any("fc" in n for n, _ in shared.aux.named_parameters())
    assert list(ema.aux[0].global_end.head_ema.parameters()) == []


def test_global_ema_copies_follow_the_real_units_and_head(batch):
    model = _model([{"family": "dgl", "end": "global_ema", "through_momentum": 0.9}] * 2)
    end = model.aux[0].global_end
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    before = end.head_ema.fc.weight.clone()
    twin_before = dict(end.through[0].named_buffers())["conv1.weight"].clone()
    model.aux[0].after_step(model)
    assert torch.allclose(end.head_ema.fc.weight, 0.9 * before + 0.1 * model.head.fc.weight)
    real = model.unit(end.resume_at).conv1.weight
    assert torch.allclose(dict(end.through[0].named_buffers())["conv1.weight"], 0.9 * twin_before + 0.1 * real)


@pytest.mark.parametrize("fusion", ["add", "concat"])
def test_bank_fusion_starts_as_the_identity(fusion, batch):
    """Zero-initialised bank weights: at step 0 a bank changes no loss."""
    plain = _model([{"family": "dgl", "width": 8}] * 2)
    banked = _model([{"family": "dgl", "width": 8, "bank": 2, "bank_fusion": fusion}] * 2)
    banked.load_state_dict(plain.state_dict(), strict=False)
    _, l1 = local_step(plain, *batch)
    _, l2 = local_step(banked, *batch)
    assert torch.allclose(torch.stack(l1), torch.stack(l2), atol=1e-6)
    assert banked.aux[1].fusion is not None and banked.aux[0].fusion is None  # module 0 has nothing earlier


def test_bank_memory_is_counted_in_the_peak():
    """EDSR keeps one resolution: a bank entry held while its reader (the largest module) runs adds its bytes."""
    base = {"task": {"name": "superres", "args": {"scale": 2}},
            "backbone": {"name": "edsr", "args": {"blocks": 7, "width": 16}},
            "input_shape": [3, 24, 24], "num_classes": 1, "num_units": 8, "splits": [1, 7]}
    plain = dict(base, aux=[{"family": "dgl", "width": 16}] * 2)
    banked = dict(base, aux=[{"family": "dgl", "width": 16}, {"family": "dgl", "width": 16, "bank": 1}])
    entry = 8 * 16 * 24 * 24 * 4  # one module output at batch 8
    assert memory.measure(banked, 8) - memory.measure(plain, 8) >= entry
    assert memory.simulate(banked, 8) - memory.simulate(plain, 8) >= entry


def test_wiring_is_drawn_as_graph_edges_and_old_hashes_hold():
    d = tiny_design(splits=[1, 3], aux=[{"family": "dgl", "width": 8},
                                        {"family": "dgl", "bank": 1, "end": "global"}])
    g = to_graph(d)
    kinds = {(u, v): e["kind"] for u, v, e in g.edges(data=True)}
    assert kinds[("unit:0", "aux:1")] == "bank"
    assert kinds[("head", "aux:1")] == "global"
    plain = tiny_design(splits=[1, 3], aux=[{"family": "dgl", "width": 8}] * 2)
    written = tiny_design(splits=[1, 3], aux=[{"family": "dgl", "width": 8, "bank": 0, "end": "local"}] * 2)
    assert design_hash(plain) == design_hash(written) != design_hash(d)


@pytest.mark.parametrize("aux, key", [
    ({"family": "augment", "end": "global"}, "aux.0.end"),
    ({"family": "dgl", "through": "ema"}, "aux.0.through"),
    ({"family": "dgl", "bank_fusion": "add"}, "aux.0.bank_fusion"),
    ({"family": "dgl", "bank": -1}, "aux.0.bank"),
    ({"family": "dgl", "end": "everywhere"}, "aux.0.end"),
    ({"family": "dgl", "end": "global", "through": "trainable", "through_momentum": 0.9}, "aux.0.through_momentum"),
    ({"family": "dgl", "end": "global", "width": 8}, "aux.0.width"),
    ({"family": "momentum", "end": "global_ema", "head": "dgl"}, "aux.0.head"),
])
def test_wiring_options_that_do_not_apply_are_refused(aux, key):
    with pytest.raises(ConfigError) as err:
        normalize(tiny_design(splits=[2], aux=[aux]))
    assert err.value.key == key


def test_a_bank_larger_than_the_earlier_modules_is_the_same_design():
    """Module k can read k earlier outputs: bank 3 at K = 3 builds and hashes like bank 2 / 1 / 0."""
    wide = normalize(tiny_design(splits=[1, 3], aux=[{"family": "dgl", "bank": 3}] * 2))
    assert [a["bank"] for a in wide["aux"]] == [0, 1]
    assert "bank_fusion" not in wide["aux"][0]
    exact = tiny_design(splits=[1, 3], aux=[{"family": "dgl"}, {"family": "dgl", "bank": 1}])
    assert design_hash(wide) == design_hash(exact)
