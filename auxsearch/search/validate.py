"""``auxsearch validate``: what ``run`` would hit, found before anything trains.

Beyond reading the study file (:func:`~auxsearch.search.prepare.prepare`), it builds the
end-to-end design and designs drawn from the space and runs each one forward at the data's real
input size on fake tensors (nothing is allocated), opens a sample of the data files (all of them
with ``deep``), sizes the space's lightest designs against ``memory.budget`` and warns when none
fits, and warns when a split is too small to choose on. Problems are one-line errors or
warnings; nothing prints a traceback.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import torch

from auxsearch.design.space import balanced_splits
from auxsearch.design.tasks import task_spec
from auxsearch.errors import ConfigError
from auxsearch.model.engine import build, end_to_end
from auxsearch.search.prepare import PreparedStudy, prepare, sample_designs, sampler_name
from auxsearch.tasks.tensor_data import tensor_source

SAMPLE_ITEMS = 16  # data items opened per split without --deep
MIN_ITEMS, MIN_PER_CLASS = 50, 5  # a validation split smaller than this cannot tell designs apart


def validate(path: str | Path, deep: bool = False) -> list[str]:
    """Check a study file; returns the lines to print (a summary, then warnings)."""
    p = prepare(path)
    designs = sample_designs(p, 5)
    for d in [end_to_end(p.base), *designs]:
        _forward(d)
    warnings = [*_open_items(p, deep), *_split_sizes(p), *_budget(p)]
    dims = {k: v.values() for k, v in p.space.dims.items() if not v.is_fixed()}
    summary = (f"{path}: ok. backbone {p.base['backbone']['name']} ({p.base['num_units']} units), task {p.task}, "
               f"data {p.cfg.data.get('name', 'default')} ({len(p.data.train)} train / {len(p.data.val)} validation / "
               f"{len(p.data.test)} test), sampler {sampler_name(p)}, {p.cfg.n_trials} trials, storage "
               f"{p.storage_url}; searched: {', '.join(f'{k} {v}' for k, v in dims.items())}; the E2E design and "
               "5 sampled designs build and run forward at the data's input size.")
    return [summary, *(f"warning: {w}" for w in warnings)]


def _forward(design: dict) -> None:
    """Build ``design`` and run one inference forward on a fake batch of its input shape."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    model = build(design)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
            model.eval()(torch.rand(2, *design["input_shape"]))
    except (RuntimeError, ValueError) as exc:
        raise ConfigError("backbone", f"{design['backbone']['name']} cannot run on {design['input_shape']} inputs: "
                          f"{str(exc).splitlines()[0]}") from None


def _open_items(p: PreparedStudy, deep: bool) -> list[str]:
    """Read items of every split (a sample, or all with ``deep``); an unreadable one is an error."""
    rng = random.Random(0)
    for name, split in (("train", p.data.train), ("validation", p.data.val), ("test", p.data.test)):
        if tensor_source(split) is not None:
            continue  # held in memory: read when the data set loaded
        picks = range(len(split)) if deep else rng.sample(range(len(split)), min(SAMPLE_ITEMS, len(split)))
        for i in picks:
            try:
                split[i]
            except Exception as exc:  # a corrupt image, a missing file
                raise ConfigError("data", f"{name} item {i} cannot be read: {type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    return []


def _labels(split) -> list[int] | None:
    src = tensor_source(split)
    if src is None:
        return None
    data, index = src
    return data.labels[index].tolist()


def _split_sizes(p: PreparedStudy) -> list[str]:
    out = []
    for name, split in (("validation", p.data.val), ("test", p.data.test)):
        if len(split) < MIN_ITEMS:
            out.append(f"the {name} split has {len(split)} items (< {MIN_ITEMS}): one item moves the score by "
                       f"{1 / max(len(split), 1):.3f}, so designs can hardly be told apart")
        labels = _labels(split) if not task_spec(p.task).dense else None
        if labels is not None:
            fewest = min(Counter(labels).get(c, 0) for c in range(p.base["num_classes"]))
            if fewest < MIN_PER_CLASS:
                out.append(f"the {name} split has {fewest} item(s) of its rarest class (< {MIN_PER_CLASS} per class)")
    return out


def _budget(p: PreparedStudy) -> list[str]:
    """With ``memory.budget``: the lightest designs the space holds (most modules, thinnest aux of each family)."""
    if p.budget is None:
        return []
    from auxsearch.design.graph import normalize
    from auxsearch.train import memory

    k = max(p.space.dim("modules").values())
    splits = balanced_splits(p.unit_costs, k)
    least = None
    for fam in p.space.dim("families").values():
        aux = {"family": fam}
        for opt in ("depth", "width"):
            if opt in p.space.dims:
                aux[opt] = min(p.space.dim(opt).values())
        try:
            d = normalize({**p.base, "splits": splits, "aux": [aux] * (k - 1)})
        except ConfigError:  # an option this family does not take on this task
            d = normalize({**p.base, "splits": splits, "aux": [{"family": fam}] * (k - 1)})
        peak = memory.simulate_in_study(d, p.cfg)
        least = peak if least is None else min(least, peak)
    if least is not None and least > p.budget:
        return [f"memory.budget {p.budget / 2**20:.1f} MiB: the lightest designs of the space need "
                f"{least / 2**20:.1f} MiB, so every searched design would be rejected untrained (only the E2E "
                "reference trains)"]
    return []


__all__ = ["validate"]
