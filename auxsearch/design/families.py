"""Every aux family, the wiring options all of them take, and the task table: declared once.

Torch-free. Each family is a :class:`~auxsearch.design.spec.FamilySpec`; each option an
:class:`~auxsearch.design.spec.Option` with its type, default, rule, help, search dimension and
the conditions under which it changes the network. From these:

* :func:`normalize_entry` validates a design's aux entry (``graph.normalize``);
* ``space.py`` derives the search dimensions, the suggestions and the grid;
* ``aux/__init__.py`` builds an aux net with the family's (lazily imported) builder;
* ``docgen.py`` writes the study reference.

A new family is one :func:`register_family` call and one module with its builder
(docs/concepts.md, "Add a family in one file").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from auxsearch.design.spec import (
    ANY_BOOL,
    EMA_RULE,
    FamilySpec,
    Option,
    Rule,
    When,
    at_least,
    one_of,
    within,
)
from auxsearch.design.tasks import TaskSpec, task_spec
from auxsearch.errors import ConfigError, known

# -------------------------------------------------------------------------------- conditions

def has_local_head(entry: Mapping[str, Any]) -> bool:
    """An aux net has a head of its own with a local end, and beside a global end weighted below 1."""
    return entry.get("end", "local") == "local" or entry.get("global_weight", 1.0) < 1.0


LOCAL = When(lambda e, t: has_local_head(e), "a local head (end: local, or global_weight < 1)",
             " (end {end!r} with global_weight 1 uses the real head only)")
GLOBAL = When(lambda e, t: e["end"] != "local", "a global end (end: global, global_ema or global_copy)")
NOT_DENSE = When(lambda e, t: not t.dense, "classification", " (a dense task's light head does not pool)")
DENSE = When(lambda e, t: t.dense, "a dense task", " (its light head has a width; AugLocal's classifier has none)")
CAN_END_GLOBALLY = When(lambda e, t: family(e["family"]).global_end, "a family that can end globally")

# -------------------------------------------------------------------------------- options

# Every family takes these (a family may declare its own version of one, same name).
COMMON = (
    Option("depth", int, 1, at_least(1), "aux depth: conv layers of the head (AugLocal: units sampled)",
           search={"low": 1, "high": 3}, applies=(LOCAL,)),
    Option("width", int, 64, at_least(1), "aux width: channels of the head", search=[16, 32, 64], applies=(LOCAL,)),
)

# How the aux net is wired to the rest of the network (every family that can end globally; docs/concepts.md,
# "The feature bank and global-local ends").
GLOBAL_WEIGHT_RULE = Rule(lambda v: 0 < v <= 1, "must satisfy 0 < w <= 1 (1: the global end alone)",
                          search_words="must be <= 1 and > 0")
WIRING = (
    Option("end", str, "local", one_of("local", "global", "global_ema", "global_copy"),
           "aux end: local head, the real head shared (global), its EMA copy (global_ema) or a trainable copy "
           "of it per module (global_copy)", search="local",
           asked=(CAN_END_GLOBALLY,), hashed_default=False, leading=True),
    Option("global_weight", float, 1.0, GLOBAL_WEIGHT_RULE,
           "global ends: loss = w * global + (1 - w) * local head (GLCAN's global-local collaboration; 1: the "
           "global end alone, no local head)", search=1.0, applies=(GLOBAL,), hashed_default=False, leading=True),
    Option("through", str, "adapter", one_of("adapter", "ema", "trainable"),
           "global ends: reach the head's later taps by light 1x1 projections (adapter) or by copies of the later "
           "units, EMA (ema) or trainable", search="adapter", applies=(GLOBAL,)),
    Option("bank_keep", int, 0, at_least(0, "sample slots (0: the bank lives for one step)"),
           "global ends through adapters: keep the backbone's head inputs of this many training samples across "
           "steps (the long-term feature bank), so the head levels after module k's first are the ones the sample "
           "made when it was last trained; memory: bank_keep x those levels' bytes per sample",
           applies=(When(lambda e, t: e["end"] != "local" and e["through"] == "adapter",
                         "a global end through adapters (end: global*, through: adapter)"),),
           hashed_default=False),
    Option("through_momentum", float, 0.995, EMA_RULE,
           "global ends: EMA momentum of the copied later units / head", search=0.995, memory_neutral=True,
           applies=(When(lambda e, t: e["end"] != "local" and (e["end"] == "global_ema" or e["through"] == "ema"),
                         "EMA copies (end: global_ema, or through: ema)"),)),
)

# Options of earlier versions, refused with what replaced them (a saved design or space names them).
REMOVED = {
    "bank": "the cross-scale feature bank (bank / bank_fusion) was removed: it did not beat its absence in any "
            "dense comparison (docs/results.md); the feature bank is now the detached head inputs a global end "
            "reads (docs/concepts.md, \"The feature bank and global-local ends\"): drop the key",
}
REMOVED["bank_fusion"] = REMOVED["bank"]


def refuse_removed(keys: Any, key: str) -> None:
    """A ConfigError naming what replaced the first removed option in ``keys``."""
    gone = sorted(set(keys) & set(REMOVED))
    if gone:
        raise ConfigError(f"{key}.{gone[0]}", REMOVED[gone[0]])


def _behind(head: FamilySpec) -> tuple[Option, ...]:
    """A head family's own options, as options of a family whose ``head`` picks it."""
    picked = When(lambda e, t: e["head"] == head.name, f"head: {head.name}", ", but head is {head!r}")
    return tuple(replace(o, applies=(LOCAL, picked, *(w for w in o.applies if w is not LOCAL))) for o in head.options)


# -------------------------------------------------------------------------------- families

DGL = FamilySpec(
    "dgl", "DGL's conv + MLP head on the module's output (dense tasks: the task's light head)",
    "auxsearch.aux.dgl:build", global_end=True, classifier="auxsearch.aux.dgl:classifier",
    options=(Option("pool", int, 8, at_least(1, "spatial size the input is pooled to"),
                    "dgl head: pool the input to at most pool x pool first", search=8, applies=(LOCAL, NOT_DENSE)),))
INFOPRO = FamilySpec(
    "infopro", "InfoPro: image-reconstruction decoder + classifier, weights interpolated over the modules",
    "auxsearch.aux.infopro:build", classification_only=True, classifier="auxsearch.aux.infopro:classifier",
    # Both weights go linearly over the non-final modules, ratio = k / (K - 2), as in InfoPro's code.
    options=(Option("recon_first", float, 5.0, at_least(0), "infopro: reconstruction weight of module 0"),
             Option("recon_last", float, 0.0, at_least(0), "infopro: reconstruction weight of module K-2"),
             Option("task_first", float, 0.5, at_least(0), "infopro: task weight of module 0"),
             Option("task_last", float, 1.0, at_least(0), "infopro: task weight of module K-2"),
             Option("decoder_width", int, 12, at_least(1), "infopro: channels of the decoder")))
AUGMENT = FamilySpec(
    "augment", "AugLocal: fresh copies of later units (a depth pyramid), then pooling + linear",
    "auxsearch.aux.augment:build",
    options=(replace(COMMON[1], asked=(DENSE,)),  # its classifier is linear: width only sizes a light head
             Option("tau", float, 0.5, within(0, 1), "augment family: AugLocal's depth-pyramid slope", search=0.5)))
HEADS = (DGL, INFOPRO)  # the families whose head the momentum family's block can end with
MOMENTUM = FamilySpec(
    "momentum", "MAN / MAN++: trainable + EMA copy of the next unit, then a dgl or infopro head",
    "auxsearch.aux.momentum:build", global_end=True, ema="momentum",
    options=(Option("momentum", float, 0.995, EMA_RULE, "momentum family: EMA momentum m of the copied unit",
                    search={"low": 0.9, "high": 0.999}, memory_neutral=True),
             Option("learnable_scale", bool, True, ANY_BOOL,
                    "momentum family: MAN++ learnable scale s (true) or MAN (false)", search=[True, False]),
             Option("head", str, "dgl", one_of(*(h.name for h in HEADS)),
                    "momentum family: the head behind the LB/EMA block", search=[h.name for h in HEADS],
                    applies=(LOCAL,), picks_family=True),
             *(o for h in HEADS for o in _behind(h))))

# -------------------------------------------------------------------------------- registry

_FAMILIES: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec, *, overwrite: bool = False) -> FamilySpec:
    """Add a family (``overwrite``: in place of one of the same name) and return it.

    Its options must not reuse a wiring option's name, and a searchable option sharing a
    name with another family's must be the same search dimension (type, default, rule, help).
    """
    if spec.name in _FAMILIES and not overwrite:
        raise ValueError(f"aux family {spec.name!r} is already registered")
    taken = {"family", *(o.name for o in WIRING)}
    mine = [o for o in spec.options if o.name not in {c.name for c in COMMON}]
    clash = sorted(taken & {o.name for o in mine})
    if clash:
        raise ValueError(f"family {spec.name!r}: option {clash[0]!r} is reserved")
    others = {o.name: o for f in _FAMILIES.values() if f.name != spec.name for o in entry_options(f)}
    for o in entry_options(spec):
        if o.search is not None and o.name in others and others[o.name].dimension() != o.dimension():
            raise ValueError(f"family {spec.name!r}: option {o.name!r} differs from the search dimension of "
                             "the same name another family declares; give it another name")
    _FAMILIES[spec.name] = spec
    return spec


def unregister_family(name: str) -> FamilySpec:
    return _FAMILIES.pop(name)


@contextlib.contextmanager
def registered(spec: FamilySpec) -> Iterator[FamilySpec]:
    """``with registered(spec):`` the family exists inside the block only (tests, experiments)."""
    before = _FAMILIES.get(spec.name)
    register_family(spec, overwrite=True)
    try:
        yield spec
    finally:
        if before is None:
            _FAMILIES.pop(spec.name, None)
        else:
            _FAMILIES[spec.name] = before


def family(name: Any, key: str = "aux.family") -> FamilySpec:
    if not isinstance(name, str) or name not in _FAMILIES:
        raise ConfigError(key, f"unknown aux family {name!r}; known: {known(_FAMILIES)}")
    return _FAMILIES[name]


def family_names() -> tuple[str, ...]:
    """The registered families, in registration order."""
    return tuple(_FAMILIES)


def global_families() -> frozenset[str]:
    return frozenset(n for n, f in _FAMILIES.items() if f.global_end)


# -------------------------------------------------------------------------------- entries


def entry_options(spec: FamilySpec) -> tuple[Option, ...]:
    """The common options (or the family's version of them), then the family's own."""
    own = {o.name: o for o in spec.options}
    common = tuple(own.pop(c.name, c) for c in COMMON)
    return (*common, *own.values())


def all_options(spec: FamilySpec) -> tuple[Option, ...]:
    """Every option an entry of ``spec`` may hold, in the order of a normalised entry."""
    return (*entry_options(spec), *WIRING)


def search_order(spec: FamilySpec) -> tuple[Option, ...]:
    """The order a search asks the options in: a condition's options before the options it guards."""
    return (*(o for o in WIRING if o.leading), *entry_options(spec), *(o for o in WIRING if not o.leading))


def searchable() -> dict[str, Option]:
    """One option per search dimension name, over every registered family and the wiring."""
    out: dict[str, Option] = {}
    for o in (*COMMON, *(o for f in _FAMILIES.values() for o in entry_options(f)), *WIRING):
        if o.search is not None:
            out.setdefault(o.name, o)
    return out


def defaults(spec: FamilySpec) -> dict[str, Any]:
    return {"family": spec.name, **{o.name: o.default for o in all_options(spec)}}


def normalize_entry(entry: Any, key: str, task: str | TaskSpec = "classification") -> dict[str, Any]:
    """Validate one aux entry and return it with every default filled in.

    Options that cannot affect the network are refused when written and left out when not
    (their :attr:`Option.applies`): so one network has one hash.
    """
    if not isinstance(entry, Mapping):
        raise ConfigError(key, f"must be a mapping with a 'family' key, got {entry!r}")
    spec = family(entry.get("family"), f"{key}.family")
    options = all_options(spec)
    names = ["family", *(o.name for o in options)]
    unknown = sorted(set(entry) - set(names))
    refuse_removed(unknown, key)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", f"unknown option for family {spec.name!r}; allowed: {known(names)}")
    out = {"family": spec.name, **{o.name: o.value(f"{key}.{o.name}", entry.get(o.name, o.default)) for o in options}}
    t = task_spec(task)
    _drop_unused(out, WIRING, entry, key, t)  # the wiring first: the rules below read it
    _check_family(spec, out, key, t)
    _drop_unused(out, entry_options(spec), entry, key, t)
    return out


def _drop_unused(out: dict, options: tuple[Option, ...], written: Mapping, key: str, task: TaskSpec) -> None:
    seen = dict(out)
    for o in options:
        why = o.blocked(seen, task) if o.name in out else None
        if why is not None:
            if o.name in written:
                raise ConfigError(f"{key}.{o.name}", f"only applies with {why.why(seen)}")
            del out[o.name]


def _check_family(spec: FamilySpec, out: dict, key: str, task: TaskSpec) -> None:
    if out["end"] != "local" and not spec.global_end:
        raise ConfigError(f"{key}.end", f"a global end continues through the later backbone units, which "
                          f"family {spec.name!r} replaces or does not use; families: {known(global_families())}")
    if task.dense and has_local_head(out):
        picks = [o.name for o in spec.options if o.picks_family and o.name in out]
        bad = "family" if spec.classification_only else next(
            (n for n in picks if family(out[n], f"{key}.{n}").classification_only), None)
        if bad is not None:
            raise ConfigError(f"{key}.{bad}", f"{bad} {out[bad]!r} is classification-only (a classifier's loss); "
                              f"task {task.name!r} takes {bad} {known(dense_choices(spec, bad))}")


def dense_choices(spec: FamilySpec, name: str) -> list[str]:
    """The values of ``family`` (or of an option picking a family) a dense task takes."""
    values = _FAMILIES if name == "family" else next(o for o in spec.options if o.name == name).rule.choices
    return [n for n in values if n in _FAMILIES and not _FAMILIES[n].classification_only]


def hashed(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A normalised entry without the defaults that stay out of the design hash."""
    skip = {o.name: o.default for o in all_options(family(entry["family"])) if not o.hashed_default}
    return {k: v for k, v in entry.items() if k not in skip or skip[k] != v}


def memory_relevant(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A normalised entry without the options whose value cannot change peak memory (``memory_neutral``)."""
    neutral = {o.name for o in all_options(family(entry["family"])) if o.memory_neutral}
    return {k: v for k, v in hashed(entry).items() if k not in neutral}


for _spec in (DGL, INFOPRO, AUGMENT, MOMENTUM):
    register_family(_spec)
