"""Every registered aux family honours the same contract (timm-style contract tests).

The cases come from the family specs themselves: each family with its defaults, plus one
case per other choice of an option that picks a head family (``momentum`` + ``head:
infopro``). A family registered later is covered without an edit here.
"""

from __future__ import annotations

import copy

import optuna
import pytest
import torch
from conftest import own_loss_grads, tiny_design

from auxsearch.design.families import (
    all_options,
    defaults,
    family,
    family_names,
    normalize_entry,
    search_order,
    task_spec,
)
from auxsearch.design.graph import normalize
from auxsearch.design.space import parse_space, suggest_design
from auxsearch.errors import ConfigError
from auxsearch.model import engine
from auxsearch.model.engine import build, local_step
from auxsearch.tasks import get_task
from auxsearch.train import memory


def _cases() -> dict[str, dict]:
    cases = {}
    for name in family_names():
        cases[name] = {}
        for opt in family(name).options:
            if opt.picks_family:
                cases.update({f"{name}+{opt.name}={v}": {opt.name: v} for v in opt.rule.choices if v != opt.default})
    return cases


CASES = _cases()


def _model(case: str):
    family_name = case.split("+")[0]
    torch.manual_seed(0)
    return build(tiny_design(splits=[1, 3], aux=[{"family": family_name, "width": 8, **CASES[case]}] * 2))


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_backward_finite_and_gradients_stay_in_module(case, batch):
    x, y = batch
    model = _model(case)
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


@pytest.mark.parametrize("case", sorted(CASES))
def test_full_local_step_gives_every_trainable_parameter_a_finite_gradient(case, batch):
    model = _model(case)
    logits, losses = local_step(model, *batch)
    assert logits.shape == (8, 10) and len(losses) == 3
    assert all(torch.isfinite(loss) for loss in losses)
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


class Reads(dict):
    """An aux entry that records which keys a builder asks for (``present``: those it holds)."""

    def __init__(self, entry: dict, asked: set, present: set) -> None:
        super().__init__(entry)
        self.asked, self.present = asked, present

    def _note(self, key):
        self.asked.add(key)
        if key in self:
            self.present.add(key)

    def __getitem__(self, key):
        self._note(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._note(key)
        return super().get(key, default)


def _variants(name: str, n: int = 24) -> list[dict]:
    """Seeded random designs of one family over every choice its options (and the wiring) offer."""
    raw = {"modules": 3, "splits": "balanced", "per_module": True, "families": [name], "width": 8}
    for opt in search_order(family(name)):
        if opt.search is not None and opt.rule.choices:
            raw[opt.name] = list(opt.rule.choices)
        elif opt.search is not None and opt.kind is bool:
            raw[opt.name] = [True, False]
    space = parse_space(raw)
    base = tiny_design()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(suggest_design(trial, space, base, [4.0, 3.0, 2.0, 1.0]))
        study.tell(trial, 0.0)
    return out


@pytest.mark.parametrize("name", family_names())
def test_the_builder_reads_exactly_the_options_the_spec_lists(name, monkeypatch):
    """Over varied designs: every option a valid entry holds is read, and nothing undeclared is asked for.

    An option the search does not ask for an entry (its ``asked`` conditions fail, e.g. augment's
    width on classification, kept at its default so saved hashes hold) may go unread.
    """
    options = {o.name: o for o in all_options(family(name))}
    task = task_spec("classification")
    asked: set = set()
    present: set = set()
    held: set = set()
    needed: set = set()
    real = engine.build_aux

    def spy(ctx, opts):
        held.update(opts)
        needed.update(k for k in opts if k == "family" or all(w.test(opts, task) for w in options[k].asked))
        return real(ctx, Reads(opts, asked, present))

    monkeypatch.setattr(engine, "build_aux", spy)
    for design in _variants(name):
        build(design)
    assert asked <= {"family", *options}, f"the builder asks for undeclared options {sorted(asked - set(options))}"
    assert needed <= present <= held, f"options held but never read: {sorted(needed - present)}"
    own = {o.name for o in family(name).options}
    assert own <= held, f"options the variants never produced: {sorted(own - held)}"


# ---------------------------------------------------------------- every combination a search space can produce

# Options whose value changes which layers exist, besides those with choices and the booleans: a global end
# weighted below 1 keeps a local head. Sizes (depth, width, momentum, tau, pool) take one small value each.
STRUCTURAL = {"global_weight": [1.0, 0.5]}
SMALL = {"width": 8, "depth": 1}
# Small versions of the tasks' designs: classification (digits-shaped), segmentation (two FPN levels: taps in two
# modules, so later global ends read the bank), super-resolution (EDSR: one resolution, a long skip from module 0).
TASK_DESIGNS = {
    "classification": dict(splits=[1, 3]),
    "segmentation": dict(task={"name": "segmentation", "args": {"levels": 2, "decoder_channels": 8}},
                         input_shape=[3, 32, 32], num_classes=5, splits=[1, 3]),
    "superres": dict(task={"name": "superres", "args": {"scale": 2}}, backbone={"name": "edsr",
                     "args": {"blocks": 3, "width": 8}}, input_shape=[3, 12, 12], num_classes=1, splits=[1, 3]),
}


def _values(opt) -> list:
    if opt.name in SMALL:
        return [SMALL[opt.name]]
    if opt.rule.choices:
        return list(opt.rule.choices)
    if opt.kind is bool:
        return [True, False]
    return STRUCTURAL.get(opt.name, [opt.default])


def combinations(task: str) -> list[dict]:
    """Every distinct normalised aux entry the search can ask for on ``task`` (each family, every choice of
    every option where it applies, in the search's order), the dense tasks' classification-only heads aside."""
    t = task_spec(task)
    out: dict[str, dict] = {}

    def walk(opts, i, entry, seen):
        if i == len(opts):
            try:
                norm = normalize_entry(entry, "aux.0", task)
            except ConfigError as err:  # a dense space refuses these up front (check_space_task)
                assert t.dense and "classification-only" in err.message, err
                return
            out[repr(sorted(norm.items()))] = norm
            return
        opt = opts[i]
        if opt.search is None or not opt.is_asked(seen, t):
            walk(opts, i + 1, entry, seen)
            return
        for v in _values(opt):
            walk(opts, i + 1, {**entry, opt.name: v}, {**seen, opt.name: v})

    for name in family_names():
        if t.dense and family(name).classification_only:
            continue
        walk(search_order(family(name)), 0, {"family": name}, defaults(family(name)))
    return list(out.values())


def _label(entry: dict) -> str:
    return "-".join(f"{v}" for k, v in entry.items() if k not in ("depth", "width", "pool", "momentum", "tau",
                                                                  "through_momentum", "decoder_width") and
                    not k.startswith(("recon_", "task_")))


def covering(entries: list[dict]) -> list[bool]:
    """Which entries CI runs: each one that brings a (family, option, value) no earlier kept entry had, so every
    value of every option of every family is exercised on every task; the whole product is marked slow."""
    seen: set = set()
    keep = []
    for e in entries:
        new = {(e["family"], k, v) for k, v in e.items()} - seen
        keep.append(bool(new))
        seen |= new
    return keep


COMBOS = [pytest.param(task, entry, id=f"{task}-{_label(entry)}", marks=() if kept else pytest.mark.slow)
          for task in TASK_DESIGNS
          for entry, kept in zip(combinations(task), covering(combinations(task)), strict=True)]


def _combo_design(task: str, entry: dict) -> dict:
    d = tiny_design(**TASK_DESIGNS[task])
    return dict(d, aux=[entry] * len(d["splits"]))


def test_the_combinations_cover_every_end_weight_and_head():
    """The enumeration itself: every end with and without a local head, every way through, both heads."""
    seen = {(e["family"], e["end"], e.get("global_weight"), e.get("through"), e.get("head"))
            for e in combinations("classification")}
    for end in ("global", "global_ema", "global_copy"):
        for through in ("adapter", "ema", "trainable"):
            assert ("momentum", end, 0.5, through, "infopro") in seen and ("dgl", end, 1.0, through, None) in seen
    assert ("momentum", "local", None, None, "infopro") in seen
    assert not any(e.get("head") == "infopro" for e in combinations("segmentation"))
    assert len(COMBOS) > 100
    fast = [p.values[1] for p in COMBOS if not p.marks and p.values[0] == "classification"]
    for end in ("local", "global", "global_ema", "global_copy"):  # CI's subset still walks every end
        assert any(e["family"] == "momentum" and e["end"] == end for e in fast)


@pytest.mark.parametrize("task, entry", COMBOS)
def test_every_combination_trains_and_each_module_gets_its_own_loss_gradient_only(task, entry):
    """A whole local step: every trainable parameter gets a finite gradient, and each module's units and aux
    net get exactly the gradient of that module's loss alone (nothing leaks across a module boundary, whatever
    the end, the way through, the weight or the head)."""
    d = _combo_design(task, entry)
    torch.manual_seed(1)
    x, y = get_task(normalize(d)["task"]["name"]).example_batch(normalize(d), 2)
    torch.manual_seed(0)
    model = build(d)
    alone = copy.deepcopy(model)
    _, losses = local_step(model, x, y)
    assert all(torch.isfinite(v) for v in losses)
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    for k in range(len(model.aux)):
        mine = [p.grad for p in (*model.stages[k].parameters(), *model.aux[k].parameters())]
        for ga, gb in zip(mine, own_loss_grads(alone, k, x, y), strict=True):
            assert torch.equal(ga, gb), k


@pytest.mark.parametrize("task, entry", COMBOS)
def test_every_combination_is_simulated_to_the_byte_and_its_peak_holds_its_state(task, entry):
    """Measured peak == simulated peak, and the peak holds at least every weight, gradient, optimizer state and
    buffer (EMA copies are buffers, head copies and local heads parameters): nothing an option adds is missed."""
    d = _combo_design(task, entry)
    peak = memory.measure(d, 4)
    assert memory.simulate(d, 4) == peak
    assert peak >= memory.state_bytes(build(d), opt_state_per_param=1)  # SGD with momentum: one buffer each
