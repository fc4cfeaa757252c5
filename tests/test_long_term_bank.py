"""The long-term feature bank (``bank_keep``): a sample's later head levels kept across steps.

resnet8 segmentation, splits [1, 3]: the real head taps units 2 and 3; module 0 (unit 0) reaches both
through adapters, so with ``bank_keep`` it reads unit 3's level per sample from the network's bank (its
first later level, unit 2, it always makes itself); module 1 (units 1-2) makes unit 2 itself and reaches
only unit 3: it reads nothing kept.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import own_loss_grads
from torch.utils.data import TensorDataset

from auxsearch.config import TrainConfig
from auxsearch.design.graph import design_hash, normalize
from auxsearch.errors import ConfigError
from auxsearch.model.engine import build, local_step
from auxsearch.tasks import ImageData, get_task
from auxsearch.train import memory
from auxsearch.train.data import train_batches
from auxsearch.train.loop import fit

pytestmark = pytest.mark.torchvision  # segmentation's head (torchvision's FPN)

SEG = dict(task={"name": "segmentation", "args": {"levels": 2, "decoder_channels": 16}},
           backbone={"name": "resnet8"}, input_shape=[3, 32, 32], num_classes=5, num_units=4, splits=[1, 3])
KEEP = 8


def _design(keep: int = KEEP, end: str = "global") -> dict:
    aux = {"family": "dgl", "end": end, **({"bank_keep": keep} if keep else {})}
    return dict(SEG, aux=[aux, aux])


def _model(keep: int = KEEP, end: str = "global"):
    d = _design(keep, end)
    torch.manual_seed(1)
    x, y = get_task("segmentation").example_batch(normalize(d), 2)
    torch.manual_seed(0)
    return build(d), x, y


def _adapter_grads(model):
    ends = model.aux[0].global_end
    return {i: ends.adapters[str(i)].proj.weight.grad.clone() for i in (2, 3)}


def test_module_0_reads_the_level_after_its_first_and_module_1_reads_nothing():
    model, _, _ = _model()
    first, second = (a.global_end for a in model.aux)
    assert first.kept == [3] and second.kept == []
    assert model.bank.levels == [3] and model.bank.slots == KEEP
    assert model.bank.level(3).shape == (KEEP, 64, 8, 8)  # unit 3's output at 32 x 32 input
    assert torch.equal(model.bank.ids, torch.full((KEEP,), -1))
    assert model.keeps_samples and not build(_design(0)).keeps_samples


def test_the_global_ends_share_one_bank_and_must_agree_on_its_slots():
    three = dict(SEG, splits=[1, 2, 3], aux=[{"family": "dgl", "end": "global", "bank_keep": 8}] * 3)
    torch.manual_seed(0)
    model = build(three)  # modules 0 and 1 end before unit 2: both read unit 3's level, kept once
    assert [a.global_end.kept for a in model.aux] == [[3], [3], []]
    assert [n for n, _ in model.named_buffers() if n.startswith("bank.")] == ["bank.level_3", "bank.ids"]
    assert {"bank.level_3", "bank.ids"} <= set(model.state_dict())  # a checkpoint keeps it
    bad = dict(three, aux=[*three["aux"][:2], {"family": "dgl", "end": "global", "bank_keep": 4}])
    with pytest.raises(ConfigError, match="aux.2.bank_keep: is 4, but aux.0.bank_keep is 8"):
        normalize(bad)


def test_a_step_keeps_the_backbones_levels_of_its_samples_in_their_slots():
    model, x, y = _model()
    index = torch.tensor([5, 14])  # slots 5 and 6 (14 mod 8)
    local_step(model, x, y, index=index)
    with torch.no_grad():  # the backbone's own unit-3 output on this batch (no optimizer step was taken)
        h = (x - model.mean) / model.std
        for i in range(4):
            h = model.unit(i)(h)
    assert model.bank.ids.tolist() == [-1, -1, -1, -1, -1, 5, 14, -1]
    torch.testing.assert_close(model.bank.level(3)[[5, 6]], h)


def test_a_sample_seen_before_reads_its_kept_level_and_a_new_one_the_adapter():
    model, x, y = _model()
    plain = copy.deepcopy(model)
    local_step(plain, x, y)  # no index: the bank is neither read nor written
    local_step(model, x, y, index=torch.tensor([0, 1]))  # an empty bank: the adapters stand in
    first = _adapter_grads(model)
    assert torch.equal(first[3], _adapter_grads(plain)[3]) and first[3].abs().sum() > 0
    model.zero_grad(set_to_none=True)
    local_step(model, x, y, index=torch.tensor([0, 1]))  # both seen: unit 3's level comes from the bank
    again = _adapter_grads(model)
    assert torch.count_nonzero(again[3]) == 0 and again[2].abs().sum() > 0
    model.zero_grad(set_to_none=True)
    local_step(model, x, y, index=torch.tensor([0, 9]))  # sample 9 is new (slot 1 holds sample 1)
    assert _adapter_grads(model)[3].abs().sum() > 0


def test_each_module_still_gets_the_gradient_of_its_own_loss_only():
    model, x, y = _model()
    index = torch.tensor([3, 4])
    local_step(model, x, y, index=index)  # fill the bank
    model.zero_grad(set_to_none=True)
    alone = copy.deepcopy(model)
    local_step(model, x, y, index=index)
    for k in range(len(model.aux)):
        mine = [p.grad for p in (*model.stages[k].parameters(), *model.aux[k].parameters())]
        for ga, gb in zip(mine, own_loss_grads(alone, k, x, y, index), strict=True):
            assert (ga is None and gb is None) or torch.equal(ga, gb), k


def test_the_slots_are_counted_in_the_peak_and_the_simulator_agrees():
    with_bank, without = _design(64), _design(0)
    assert design_hash(without) == design_hash(dict(SEG, aux=[{"family": "dgl", "end": "global"}] * 2))
    assert design_hash(with_bank) != design_hash(without)
    peaks = {keep: memory.measure(_design(keep), 4) for keep in (0, 64)}
    assert memory.simulate(with_bank, 4) == peaks[64]
    level = 64 * 8 * 8 * 4  # unit 3's level: 64 x 8 x 8 float32 per sample
    slots = 64 * (8 + level)  # its id (int64) and its level per slot
    assert peaks[64] - peaks[0] >= slots, (peaks, slots)
    assert peaks[64] - peaks[0] <= slots + 2 * 4 * level  # + at most two batch-sized reads of the bank


@pytest.mark.parametrize("aux, words", [
    ({"family": "dgl", "bank_keep": 4}, "only applies with a global end through adapters"),
    ({"family": "dgl", "end": "global", "through": "ema", "bank_keep": 4}, "through adapters"),
    ({"family": "dgl", "end": "global", "bank_keep": -1}, "must be >= 0"),
])
def test_bank_keep_where_it_cannot_apply_is_refused(aux, words):
    with pytest.raises(ConfigError, match=words):
        normalize(dict(SEG, aux=[aux, aux]))


def test_a_data_set_that_draws_its_items_anew_is_refused():
    xs = torch.rand(4, 3, 8, 8)
    data = ImageData(TensorDataset(xs, xs), TensorDataset(xs, xs), TensorDataset(xs, xs), 3, 1, 8,
                     (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ConfigError, match="fixed training items"):
        train_batches(data, TrainConfig(batch_size=2), torch.device("cpu"), with_index=True)
    batches = train_batches(ImageData(**{**data.__dict__, "fixed_items": True}), TrainConfig(batch_size=2),
                            torch.device("cpu"), with_index=True)
    index, (x, _) = next(iter(batches))
    assert index.dtype == torch.long and torch.equal(x, xs[index])


def test_training_on_the_scenes_fills_one_slot_per_sample():
    data = {"name": "scenes", "image_size": 32, "num_train": 16, "num_val": 4, "num_test": 4, "seed": 0}
    cfg = {"epochs": 2, "batch_size": 8, "lr": 0.01, "optimizer": "adamw", "device": "cpu"}
    r = fit(_design(16), train=cfg, data=data)
    assert sorted(r.model.bank.ids.tolist()) == list(range(16))
    assert r.peak_memory_bytes > 0 and 0 <= r.score <= 1


def test_the_graph_and_the_drawing_carry_the_bank():
    from auxsearch.design.graph import from_graph, to_graph
    from auxsearch.outputs.drawing import design_figure

    d = _design(32)
    g = to_graph(d)
    assert [e.get("keep") for _, _, e in g.edges(data=True) if e["kind"] == "global"] == [32, 32]
    assert design_hash(from_graph(g)) == design_hash(d)
    labels = {a.text for a in design_figure(d).layout.annotations if a.text}
    assert "global via 1x1 adapters, bank of 32 samples" in labels
