"""Global-local wiring and the feature bank it reads: gradient isolation, shared heads, EMA, adapters, memory."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import own_loss_grads, tiny_design

from auxsearch.aux import StepState
from auxsearch.aux.wiring import Adapter
from auxsearch.design.graph import design_hash, normalize, to_graph
from auxsearch.errors import ConfigError
from auxsearch.model.engine import build, end_to_end, local_step
from auxsearch.tasks import get_task
from auxsearch.train import memory


def _model(aux, splits=(1, 3), seed=0):
    torch.manual_seed(seed)
    return build(tiny_design(splits=list(splits), aux=aux))


def _stage0_grads(model, batch):
    local_step(model, *batch)
    return [p.grad.clone() for p in model.stages[0].parameters()]


WIRED = {
    "global-copy": {"family": "dgl", "end": "global_copy"},
    "global-local": {"family": "dgl", "width": 8, "end": "global_copy", "global_weight": 0.5},
    "global": {"family": "dgl", "end": "global"},  # through: adapter, the default
    "global-copies": {"family": "dgl", "end": "global", "through": "ema"},
    "global-trainable": {"family": "dgl", "end": "global", "through": "trainable"},
    "global-ema": {"family": "momentum", "end": "global_ema"},
    "global-ema-copies": {"family": "momentum", "end": "global_ema", "through": "ema"},
    "global-local-momentum": {"family": "momentum", "width": 8, "end": "global", "global_weight": 0.3},
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
    alone.aux[0](h, x, y, StepState({}, alone.head)).backward()
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
    model = _model([{"family": "dgl", "end": "global_ema", "through": "ema", "through_momentum": 0.9}] * 2)
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


def test_a_global_local_loss_is_the_weighted_sum_of_its_global_and_local_parts(batch):
    """GLCAN's collaboration: loss = w * global + (1 - w) * local head, both parts built and trained."""
    model = _model([{"family": "momentum", "width": 8, "end": "global_copy", "global_weight": 0.25}] * 2)
    aux = model.aux[0]
    assert aux.end is not None and aux.global_end.head_copy is not None and aux.global_weight == 0.25
    x, y = batch
    torch.manual_seed(3)
    h = model.stages[0]((x - model.mean) / model.std)
    state = StepState({}, model.head)
    both = aux(h, x, y, state)
    g = aux.global_end(h, aux.transform(h), x, y, state)
    local = aux.end.loss(aux.transform(h), x, y)
    torch.testing.assert_close(both, 0.25 * g + 0.75 * local)
    assert not torch.allclose(g, local)
    both.backward()
    for name, p in aux.named_parameters():  # the local head, the head copy, LB and s all learn
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(n.startswith("end.") for n, _ in aux.named_parameters())


def test_global_copy_is_a_trainable_copy_and_leaves_the_real_head_to_the_final_loss(batch):
    """global_copy: one trainable copy of the real head per module, started equal; the real head's gradient
    is the local design's (final loss only), the copy's its own module's."""
    local = _model([{"family": "dgl", "width": 8}] * 2)
    copy_ = _model([{"family": "dgl", "end": "global_copy"}] * 2)
    head_copy = copy_.aux[0].global_end.head_copy
    assert torch.equal(head_copy.fc.weight, copy_.head.fc.weight) and head_copy.fc.weight is not copy_.head.fc.weight
    for m in (local, copy_):
        local_step(m, *batch)
    assert torch.equal(local.head.fc.weight.grad, copy_.head.fc.weight.grad)
    assert head_copy.fc.weight.grad is not None and head_copy.fc.weight.grad.abs().sum() > 0
    assert copy_.aux[0].global_end.head_copy is not copy_.aux[1].global_end.head_copy


def test_the_head_copies_and_local_heads_of_global_local_ends_are_counted_in_the_peak():
    """Measured = simulated with a trainable head copy and a local head beside it, and each costs bytes."""
    base = {"task": {"name": "superres", "args": {"scale": 2}},
            "backbone": {"name": "edsr", "args": {"blocks": 7, "width": 16}},
            "input_shape": [3, 24, 24], "num_classes": 1, "num_units": 8, "splits": [1, 7]}
    peaks = {}
    for name, aux in (("global", {"family": "dgl", "end": "global"}),
                      ("copy", {"family": "dgl", "end": "global_copy"}),
                      ("global-local", {"family": "dgl", "width": 16, "end": "global_copy", "global_weight": 0.5})):
        d = dict(base, aux=[aux] * 2)
        peaks[name] = memory.measure(d, 8)
        assert memory.simulate(d, 8) == peaks[name], name
    assert peaks["global"] < peaks["copy"] < peaks["global-local"]


def test_wiring_is_drawn_as_graph_edges_and_old_hashes_hold():
    d = tiny_design(splits=[1, 3], aux=[{"family": "dgl", "width": 8},
                                        {"family": "dgl", "end": "global", "width": 8, "global_weight": 0.5}])
    g = to_graph(d)
    kinds = {(u, v): e["kind"] for u, v, e in g.edges(data=True)}
    assert kinds[("head", "aux:1")] == "global" and "bank" not in kinds.values()
    assert g.edges["head", "aux:1"]["through"] == "adapter"  # the default
    assert g.edges["head", "aux:1"]["weight"] == 0.5
    plain = tiny_design(splits=[1, 3], aux=[{"family": "dgl", "width": 8}] * 2)
    written = tiny_design(splits=[1, 3], aux=[{"family": "dgl", "width": 8, "end": "local"}] * 2)
    assert design_hash(plain) == design_hash(written) != design_hash(d)
    alone = tiny_design(splits=[1, 3], aux=[{"family": "dgl", "end": "global"}] * 2)
    weighted = tiny_design(splits=[1, 3], aux=[{"family": "dgl", "end": "global", "global_weight": 1.0}] * 2)
    assert design_hash(alone) == design_hash(weighted)  # w = 1 is the global end of before


@pytest.mark.parametrize("key", ["bank", "bank_fusion"])
def test_the_removed_cross_scale_bank_is_refused_with_what_replaced_it(key):
    """Designs and search spaces saved before the change name ``bank``: the error says why it went, where to look."""
    from auxsearch.design.space import parse_space

    value = {"bank": 2, "bank_fusion": "add"}[key]
    with pytest.raises(ConfigError) as err:
        normalize(tiny_design(splits=[2], aux=[{"family": "dgl", key: value}]))
    assert err.value.key == f"aux.0.{key}" and "removed" in err.value.message and "concepts.md" in err.value.message
    with pytest.raises(ConfigError) as err:
        parse_space({"families": ["dgl"], key: [value]})
    assert err.value.key == f"search_space.{key}" and "removed" in err.value.message


@pytest.mark.parametrize("aux, key", [
    ({"family": "augment", "end": "global"}, "aux.0.end"),
    ({"family": "dgl", "through": "ema"}, "aux.0.through"),
    ({"family": "dgl", "global_weight": 0.5}, "aux.0.global_weight"),
    ({"family": "dgl", "end": "global", "global_weight": 0.0}, "aux.0.global_weight"),
    ({"family": "dgl", "end": "global", "global_weight": 1.5}, "aux.0.global_weight"),
    ({"family": "dgl", "end": "global_copy", "width": 8}, "aux.0.width"),
    ({"family": "dgl", "end": "global_copy", "through_momentum": 0.9}, "aux.0.through_momentum"),
    ({"family": "dgl", "end": "everywhere"}, "aux.0.end"),
    ({"family": "dgl", "end": "global", "through": "trainable", "through_momentum": 0.9}, "aux.0.through_momentum"),
    ({"family": "dgl", "end": "global", "width": 8}, "aux.0.width"),
    ({"family": "momentum", "end": "global_ema", "head": "dgl"}, "aux.0.head"),
    ({"family": "dgl", "through": "adapter"}, "aux.0.through"),
    ({"family": "dgl", "end": "global", "through_momentum": 0.9}, "aux.0.through_momentum"),
    ({"family": "dgl", "end": "global", "through": "adapter", "through_momentum": 0.9}, "aux.0.through_momentum"),
    ({"family": "dgl", "end": "global", "through": "copies"}, "aux.0.through"),
])
def test_wiring_options_that_do_not_apply_are_refused(aux, key):
    with pytest.raises(ConfigError) as err:
        normalize(tiny_design(splits=[2], aux=[aux]))
    assert err.value.key == key


def test_bad_through_names_the_choices_and_through_momentum_says_when_it_applies():
    with pytest.raises(ConfigError) as err:
        normalize(tiny_design(splits=[2], aux=[{"family": "dgl", "end": "global", "through": "copies"}]))
    assert "adapter, ema, trainable" in err.value.message
    with pytest.raises(ConfigError) as err:
        normalize(tiny_design(splits=[2], aux=[{"family": "dgl", "end": "global", "through_momentum": 0.9}]))
    assert "EMA copies" in err.value.message  # an adapter has no EMA copy to move
    ok = normalize(tiny_design(splits=[2], aux=[{"family": "dgl", "end": "global_ema", "through_momentum": 0.9}]))
    assert ok["aux"][0]["through"] == "adapter" and ok["aux"][0]["through_momentum"] == 0.9  # the head's EMA copy


def test_written_through_keeps_its_hash_and_the_adapter_is_another_design():
    """Saved designs carry ``through`` written out: a copies design keeps its hash under the new default."""
    copies = tiny_design(splits=[1, 3], aux=[{"family": "dgl", "end": "global", "through": "ema"}] * 2)
    saved = normalize(copies)
    assert saved["aux"][0]["through"] == "ema" and design_hash(saved) == design_hash(copies)
    adapter = tiny_design(splits=[1, 3], aux=[{"family": "dgl", "end": "global"}] * 2)
    assert normalize(adapter)["aux"][0]["through"] == "adapter"
    assert design_hash(adapter) != design_hash(copies)


# ------------------------------------------------------------------ through: adapter on the dense tasks

# Small versions of the dense studies' designs (studies/*_scenes.yaml, studies/superres_photos.yaml).
DENSE = {
    "detection": dict(task={"name": "detection", "args": {"levels": 2, "fpn_channels": 32, "head_convs": 2}},
                      backbone={"name": "resnet14"}, input_shape=[3, 32, 32], num_classes=4, num_units=7,
                      splits=[2, 5]),
    "segmentation": dict(task={"name": "segmentation", "args": {"levels": 2, "decoder_channels": 32}},
                         backbone={"name": "resnet20"}, input_shape=[3, 32, 32], num_classes=5, num_units=10,
                         splits=[3, 7]),
    "superres": dict(task={"name": "superres", "args": {"scale": 2}},
                     backbone={"name": "edsr", "args": {"blocks": 8, "width": 32}}, input_shape=[3, 16, 16],
                     num_classes=1, num_units=9, splits=[3, 6]),
}
DENSE_TASKS = tuple(DENSE)
# Tiny ones for the gradient tests: resnet8 (taps 2 and 3: module 1 owns tap 2, module 0 none) and EDSR.
TINY = {
    "detection": dict(DENSE["detection"], backbone={"name": "resnet8"}, num_units=4, splits=[1, 3],
                      task={"name": "detection", "args": {"levels": 2, "fpn_channels": 16}}),
    "segmentation": dict(DENSE["segmentation"], backbone={"name": "resnet8"}, num_units=4, splits=[1, 3],
                         task={"name": "segmentation", "args": {"levels": 2, "decoder_channels": 16}}),
    "superres": dict(DENSE["superres"], backbone={"name": "edsr", "args": {"blocks": 3, "width": 16}},
                     input_shape=[3, 12, 12], num_units=4, splits=[1, 3]),
}


def _dense(task: str, aux: dict | list, table=TINY) -> dict:
    d = table[task]
    return dict(d, aux=aux if isinstance(aux, list) else [aux] * len(d["splits"]))


def _dense_model(task: str, aux, seed: int = 0):
    """The model and a batch; the same batch and the same backbone and real head whatever the aux nets."""
    d = _dense(task, aux)
    torch.manual_seed(seed + 1)
    batch = get_task(task).example_batch(normalize(d), 2)
    torch.manual_seed(seed)  # units and real head are built before the aux nets
    return build(d), batch


@pytest.mark.parametrize("task", DENSE_TASKS)
def test_adapter_global_end_costs_at_most_1_15x_the_local_end_and_well_under_e2e(task):
    """Issue 16's target: measured = simulated (where the task simulates), global / local <= 1.15, << E2E.

    The local end is the lightest head the dense spaces offer (depth 1, width 16), so the ratio is the
    strictest one. Global ends with dgl aux nets: ``momentum`` on super-resolution costs more (docs/concepts.md).
    """
    local = _dense(task, {"family": "dgl", "depth": 1, "width": 16}, DENSE)
    ends = {end: _dense(task, {"family": "dgl", "end": end}, DENSE) for end in ("global", "global_ema")}
    peaks = {end: memory.measure(d, 8) for end, d in ends.items()}
    base, e2e = memory.measure(local, 8), memory.measure(end_to_end(local), 8)
    if get_task(task).simulatable:  # detection's loss has data-dependent shapes: measured only
        assert memory.simulate(local, 8) == base
        for end, d in ends.items():
            assert memory.simulate(d, 8) == peaks[end], end
    for end, peak in peaks.items():
        assert peak <= 1.15 * base, (end, peak / base)
        # 0.85: peaks count the optimizer state since two steps are measured; at batch 8 it is a large share of
        # every design's peak (weights-sized), which pulls EDSR's ratio from 0.76 to 0.82
        assert peak <= 0.85 * e2e, (end, peak / e2e)
    copies = memory.measure(_dense(task, {"family": "dgl", "end": "global", "through": "ema"}, DENSE), 8)
    assert peaks["global"] < copies  # the copies of the later units cost about E2E's peak (docs/concepts.md)


ISOLATED = [*((t, {"family": f, "end": "global"}) for t in DENSE_TASKS for f in ("dgl", "momentum")),
            *((t, {"family": "dgl", "width": 16, "end": "global_copy", "global_weight": 0.5}) for t in DENSE_TASKS),
            ("segmentation", {"family": "momentum", "width": 16, "end": "global_ema", "global_weight": 0.5})]


@pytest.mark.parametrize("task, aux", ISOLATED, ids=[f"{t}-{a['family']}-{a['end']}-{a.get('global_weight', 1)}"
                                                    for t, a in ISOLATED])
def test_adapter_modules_get_gradients_from_their_own_loss_only(task, aux):
    """Every module's gradient after a whole local step is its own loss's gradient, bit for bit."""
    model, (x, y) = _dense_model(task, aux)
    alone = copy.deepcopy(model)
    local_step(model, x, y)
    for k in range(len(model.aux)):
        mine = [p.grad for p in (*model.stages[k].parameters(), *model.aux[k].parameters())]
        for ga, gb in zip(mine, own_loss_grads(alone, k, x, y), strict=True):
            assert torch.equal(ga, gb), k
    # Scrambling everything after module 0 (the shared real head aside) leaves its gradients alone.
    scrambled = copy.deepcopy(alone)
    later = [scrambled.stages[1], scrambled.stages[2], scrambled.aux[1]]
    with torch.no_grad():
        for m in later + ([scrambled.head] if aux["end"] == "global_ema" else []):
            for p in m.parameters():
                p.mul_(-3.0).add_(0.5)
    fresh = copy.deepcopy(alone)
    local_step(fresh, x, y)
    local_step(scrambled, x, y)
    for ga, gb in zip(fresh.stages[0].parameters(), scrambled.stages[0].parameters(), strict=True):
        assert torch.equal(ga.grad, gb.grad)


def test_adapters_project_to_the_taps_after_module_ks_own_layers():
    """resnet8 taps units 2 and 3; module 0 (unit 0) projects to both, module 1 (units 1-2) to 3 only."""
    model, _ = _dense_model("segmentation", {"family": "dgl", "end": "global"})
    assert model.taps == [2, 3]
    assert sorted(model.aux[0].global_end.adapters) == ["2", "3"]
    assert sorted(model.aux[1].global_end.adapters) == ["3"]
    assert len(model.aux[0].global_end.through) == 0  # no copy of a later unit
    # momentum: its LB/EMA block computes unit 1 (module 0) / unit 3 (module 1) itself.
    man, _ = _dense_model("segmentation", {"family": "momentum", "end": "global"})
    assert sorted(man.aux[0].global_end.adapters) == ["2", "3"]
    assert sorted(man.aux[1].global_end.adapters) == []


def test_adapter_starts_as_the_option_a_shortcut_and_pools_before_its_conv():
    torch.manual_seed(0)
    h = torch.rand(2, 16, 8, 8)
    down = Adapter((16, 8, 8), (32, 4, 4))
    want = F.pad(F.avg_pool2d(h, 2), (0, 0, 0, 0, 0, 16))  # pooled identity, extra channels zero
    assert torch.equal(down(h), want)
    same = Adapter((16, 8, 8), (16, 8, 8))
    assert torch.equal(same(h), h)  # one width, one size (EDSR): the identity
    up = Adapter((16, 4, 4), (8, 8, 8))
    with torch.no_grad():
        for p in (*down.parameters(), *up.parameters()):
            p.normal_()
    # A 1x1 conv commutes with the resize, so running it at the smaller size is the same map.
    torch.testing.assert_close(down(h), down.proj(F.adaptive_avg_pool2d(h, (4, 4))))
    torch.testing.assert_close(up(h[..., :4, :4]), F.interpolate(up.proj(h[..., :4, :4]), size=(8, 8)))
    torch.testing.assert_close(F.interpolate(up.proj(h[..., :4, :4]), size=(8, 8)),
                               up.proj(F.interpolate(h[..., :4, :4], size=(8, 8))))


@pytest.mark.parametrize("end", ["global", "global_ema"])
def test_the_adapter_path_leaves_the_real_heads_bn_statistics_alone(end):
    """The segmentation head has BatchNorm: after a step its statistics are the local-end design's."""
    stats = []
    for aux in ({"family": "dgl", "width": 16}, {"family": "dgl", "end": end}):
        model, (x, y) = _dense_model("segmentation", aux)
        local_step(model, x, y)
        bns = [m for m in model.head.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert bns
        stats.append([(b.running_mean.clone(), b.running_var.clone(), int(b.num_batches_tracked)) for b in bns])
    for (m0, v0, n0), (m1, v1, n1) in zip(*stats, strict=True):
        assert torch.equal(m0, m1) and torch.equal(v0, v1) and n0 == n1 == 1


@pytest.mark.parametrize("task", DENSE_TASKS)
def test_adapters_learn_and_only_global_sends_gradients_into_the_real_head(task):
    """Adapters get gradients; the real head's are the local design's under global_ema, not under global."""
    grads = {}
    for name, aux in (("local", {"family": "dgl", "width": 16}), ("global", {"family": "dgl", "end": "global"}),
                      ("global_ema", {"family": "dgl", "end": "global_ema"})):
        model, (x, y) = _dense_model(task, aux)
        local_step(model, x, y)
        grads[name] = [p.grad.clone() for p in model.head.parameters()]
        if name != "local":
            adapters = [p for a in model.aux for p in a.global_end.adapters.parameters()]
            assert adapters and all(p.grad is not None and torch.isfinite(p.grad).all() for p in adapters)
            assert any(p.grad.abs().sum() > 0 for p in adapters)
            assert not any(n.startswith("global_end.head") for n, _ in model.aux.named_parameters())
        if name == "global_ema":
            assert all(list(a.global_end.head_ema.parameters()) == [] for a in model.aux)  # buffers only
    assert all(torch.equal(a, b) for a, b in zip(grads["local"], grads["global_ema"], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(grads["local"], grads["global"], strict=True))


def test_the_design_drawing_says_how_a_global_end_reaches_the_head():
    from auxsearch.outputs.drawing import design_figure

    d = tiny_design(splits=[1, 2, 3], aux=[{"family": "dgl", "end": "global"},
                                           {"family": "momentum", "end": "global_ema", "through": "ema"},
                                           {"family": "dgl", "width": 8, "end": "global_copy", "global_weight": 0.5}])
    labels = {a.text for a in design_figure(d).layout.annotations if a.text}
    assert {"global via 1x1 adapters", "global_ema via ema copies of later units",
            "global_copy via 1x1 adapters, w 0.5 + local head"} <= labels
