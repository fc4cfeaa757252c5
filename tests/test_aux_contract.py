"""Every registered aux family honours the same contract (timm-style contract tests).

The cases come from the family specs themselves: each family with its defaults, plus one
case per other choice of an option that picks a head family (``momentum`` + ``head:
infopro``). A family registered later is covered without an edit here.
"""

from __future__ import annotations

import optuna
import pytest
import torch
from conftest import tiny_design

from auxsearch.design.families import all_options, family, family_names, search_order, task_spec
from auxsearch.design.space import parse_space, suggest_design
from auxsearch.model import engine
from auxsearch.model.engine import build, local_step


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
