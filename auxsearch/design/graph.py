"""A design as a networkx block graph: plain data, validated, hashed, saved.

The compact form (what a design YAML file holds) is::

    version: 1
    backbone: {name: resnet20, args: {}}
    input_shape: [1, 16, 16]     # C, H, W of the images the design trains on
    num_classes: 10
    num_units: 10                # units of the backbone (checked when built)
    splits: [4, 7]               # a new module starts at each of these units
    aux:                         # one entry per non-final module, in order
      - {family: momentum, depth: 1, width: 32, momentum: 0.995}
      - {family: dgl, depth: 2, width: 64}
    data: {name: digits, image_size: 16}       # optional: the recipe
    train: {epochs: 10, batch_size: 128}       # optional: the recipe
    design_hash: 1f0c...                       # written on save

:func:`to_graph` turns it into a ``networkx.DiGraph`` whose nodes are
``input``, ``unit:i``, ``aux:k`` and ``head``; edges carry ``kind``:
``data`` (forward flow; ``detach=True`` where a module boundary cuts the
gradient), ``ema`` (an aux holds an EMA copy of that unit, ``momentum``
attribute) and ``global`` (the aux ends in the real head, its EMA copy or a trainable
copy of it, reading the detached head inputs of earlier modules: the feature bank). Every
node and edge attribute is a str/int/float/bool; the graph-level attributes hold the
backbone, the input and the recipe.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import networkx as nx
import yaml

from auxsearch.config import load_yaml
from auxsearch.design import families, split_tables
from auxsearch.design.tasks import canonical_task
from auxsearch.errors import ConfigError, known

VERSION = 1
TOP_KEYS = ("version", "task", "backbone", "input_shape", "num_classes", "num_units", "splits", "aux",
            "data", "train", "design_hash")
ARCH_KEYS = ("backbone", "input_shape", "num_classes", "num_units", "splits", "aux")
NODE_KINDS = ("input", "unit", "aux", "head")
EDGE_KINDS = ("data", "ema", "global")


def _check_int(key: str, v: Any, low: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ConfigError(key, f"must be an integer, got {v!r}")
    if v < low:
        raise ConfigError(key, f"must be >= {low}, got {v}")
    return v


def normalize_aux(entry: Mapping, key: str, task: str = "classification") -> dict[str, Any]:
    """Validate one aux entry and return it with every default filled in (``families.normalize_entry``).

    Options that cannot affect the network are refused when written and left out when not,
    as each option's family spec says (``Option.applies``): so one network has one hash.
    """
    return families.normalize_entry(entry, key, task)


def normalize(design: Mapping) -> dict[str, Any]:
    """Validate a compact design and return its canonical form (defaults filled)."""
    if not isinstance(design, Mapping):
        raise ConfigError("", f"a design must be a mapping, got {type(design).__name__}")
    unknown = set(design) - set(TOP_KEYS)
    if unknown:
        raise ConfigError(sorted(unknown)[0], f"unknown key; allowed: {known(TOP_KEYS)}")
    for k in ("backbone", "input_shape", "num_classes", "num_units"):
        if k not in design:
            raise ConfigError(k, "missing (required)")
    if design.get("version", VERSION) != VERSION:
        raise ConfigError("version", f"unsupported design version {design['version']!r}; this auxsearch reads {VERSION}")
    out: dict[str, Any] = {"version": VERSION, "task": canonical_task(design.get("task")),
                           "backbone": canonical_backbone(design["backbone"])}
    shape = design["input_shape"]
    if not (isinstance(shape, list | tuple) and len(shape) == 3):
        raise ConfigError("input_shape", f"must be [channels, height, width], got {shape!r}")
    out["input_shape"] = [_check_int(f"input_shape.{i}", v, 1) for i, v in enumerate(shape)]
    out["num_classes"] = _check_int("num_classes", design["num_classes"], 1)
    n = out["num_units"] = _check_int("num_units", design["num_units"], 1)
    splits = design.get("splits", [])
    if isinstance(splits, Mapping):  # a published table's form: {infopro: [...]} / {auglocal: [...]}
        splits = split_tables.from_table(splits, out["backbone"]["name"], n)
    out["splits"] = _splits(splits, n)
    aux = design.get("aux", [])
    if not isinstance(aux, list) or len(aux) != len(out["splits"]):
        raise ConfigError("aux", f"must list one aux net per non-final module: {len(out['splits'])} "
                          f"for {len(out['splits']) + 1} modules, got {aux!r}")
    out["aux"] = [normalize_aux(a, f"aux.{i}", out["task"]["name"]) for i, a in enumerate(aux)]
    keeps = [(i, a["bank_keep"]) for i, a in enumerate(out["aux"]) if a.get("bank_keep")]
    if len({n for _, n in keeps}) > 1:  # one long-term bank, shared by every global end that reads it
        (i, n), (j, m) = keeps[0], next(k for k in keeps if k[1] != keeps[0][1])
        raise ConfigError(f"aux.{j}.bank_keep", f"is {m}, but aux.{i}.bank_keep is {n}: the aux nets share one "
                          "long-term bank, so every aux net that keeps samples must give the same number of slots")
    for k in ("data", "train"):
        if k in design and design[k] is not None:
            if not isinstance(design[k], Mapping):
                raise ConfigError(k, f"must be a mapping, got {design[k]!r}")
            out[k] = dict(design[k])
    return out


def canonical_backbone(b: Any) -> dict[str, Any]:
    """``{name, args}``; ``{python: "module:function", args}`` is kept as name ``python:module:function``."""
    if isinstance(b, str):
        b = {"name": b}
    if isinstance(b, Mapping) and "python" in b and "name" not in b:
        if not isinstance(b["python"], str):
            raise ConfigError("backbone.python", f"must be 'package.module:function', got {b['python']!r}")
        b = {"name": f"python:{b['python']}", **{k: v for k, v in b.items() if k != "python"}}
    if not isinstance(b, Mapping) or not isinstance(b.get("name"), str):
        raise ConfigError("backbone", f"must be a name or {{name: ..., args: {{...}}}}, got {b!r}")
    if set(b) - {"name", "args"}:
        raise ConfigError(f"backbone.{sorted(set(b) - {'name', 'args'})[0]}", "unknown key; allowed: args, name, python")
    args = b.get("args") or {}
    if not isinstance(args, Mapping):
        raise ConfigError("backbone.args", f"must be a mapping, got {args!r}")
    return {"name": b["name"], "args": dict(args)}


def _splits(splits: Any, n: int) -> list[int]:
    if not isinstance(splits, list | tuple):
        raise ConfigError("splits", f"must be a list of unit indices (or a table: {{infopro: [...]}}, "
                          f"{{auglocal: [...]}}), got {splits!r}")
    prev = 0
    for i, s in enumerate(splits):
        _check_int(f"splits.{i}", s, 1)
        if s <= prev:
            raise ConfigError(f"splits.{i}", f"split points must be strictly increasing, got {list(splits)}")
        if s >= n:
            raise ConfigError(f"splits.{i}", f"must be < num_units ({n}) so every module has a unit, got {s}")
        prev = s
    return list(splits)


def bounds(design: Mapping) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` unit ranges of the K modules."""
    edges = [0, *design["splits"], design["num_units"]]
    return list(zip(edges[:-1], edges[1:], strict=True))


def design_hash(design: Mapping) -> str:
    """Canonical hash of the network and its local wiring (not of the recipe)."""
    canon = as_design(design)
    arch = {k: canon[k] for k in ARCH_KEYS}
    # Defaults added after designs were first saved stay out of the hash (old hashes hold).
    if canon["task"] != {"name": "classification", "args": {}}:
        arch["task"] = canon["task"]
    return _digest(arch, families.hashed)


def memory_hash(design: Mapping) -> str:
    """Like :func:`design_hash`, without the options that cannot change peak memory (EMA momenta): designs
    that share it have the same peak, so a memory oracle computes it once."""
    canon = as_design(design)
    return _digest({k: canon[k] for k in (*ARCH_KEYS, "task")}, families.memory_relevant)


def _digest(arch: dict, entry: Callable[[Mapping[str, Any]], dict[str, Any]]) -> str:
    arch = {**arch, "aux": [entry(a) for a in arch["aux"]]}
    blob = json.dumps(arch, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def to_graph(design: Mapping) -> nx.DiGraph:
    """Build the block graph of a (compact) design."""
    d = normalize(design)
    g = nx.DiGraph(**{k: copy.deepcopy(d[k]) for k in ("version", "task", "backbone", "input_shape", "num_classes")})
    for k in ("data", "train"):
        if k in d:
            g.graph[k] = copy.deepcopy(d[k])
    g.add_node("input", kind="input")
    mods = bounds(d)
    prev = "input"
    for k, (start, end) in enumerate(mods):
        for i in range(start, end):
            g.add_node(f"unit:{i}", kind="unit", index=i, module=k)
            g.add_edge(prev, f"unit:{i}", kind="data", detach=(i == start and i > 0))
            prev = f"unit:{i}"
    g.add_node("head", kind="head", module=len(mods) - 1)
    g.add_edge(prev, "head", kind="data", detach=False)
    for k, entry in enumerate(d["aux"]):
        g.add_node(f"aux:{k}", kind="aux", module=k, **entry)
        g.add_edge(f"unit:{mods[k][1] - 1}", f"aux:{k}", kind="data", detach=False)
        ema = families.family(entry["family"]).ema  # the option holding its EMA momentum
        if ema is not None:
            g.add_edge(f"unit:{mods[k + 1][0]}", f"aux:{k}", kind="ema", momentum=entry[ema])
        if entry["end"] != "local":
            keep = {"keep": entry["bank_keep"]} if entry.get("bank_keep") else {}  # the long-term bank's slots
            g.add_edge("head", f"aux:{k}", kind="global", end=entry["end"], through=entry["through"],
                       weight=entry["global_weight"], **keep)
    return g


def from_graph(g: nx.DiGraph) -> dict[str, Any]:
    """The canonical compact design of a block graph (inverse of :func:`to_graph`)."""
    _check_graph(g)
    units = sorted((d["index"], d["module"]) for _, d in g.nodes(data=True) if d["kind"] == "unit")
    splits = [i for (i, m), (_, pm) in zip(units[1:], units[:-1], strict=True) if m != pm]
    auxes = sorted((d for _, d in g.nodes(data=True) if d["kind"] == "aux"), key=lambda d: d["module"])
    design = {"version": g.graph.get("version", VERSION), "task": copy.deepcopy(g.graph.get("task")),
              "backbone": copy.deepcopy(g.graph["backbone"]),
              "input_shape": list(g.graph["input_shape"]), "num_classes": g.graph["num_classes"],
              "num_units": len(units), "splits": splits,
              "aux": [{k: v for k, v in a.items() if k not in ("kind", "module")} for a in auxes]}
    for k in ("data", "train"):
        if k in g.graph:
            design[k] = copy.deepcopy(g.graph[k])
    return normalize(design)


def _check_graph(g: nx.DiGraph) -> None:
    for node, d in g.nodes(data=True):
        if d.get("kind") not in NODE_KINDS:
            raise ConfigError(f"nodes.{node}", f"unknown node kind {d.get('kind')!r}; known: {known(NODE_KINDS)}")
        for a, v in d.items():
            if not isinstance(v, str | int | float | bool):
                raise ConfigError(f"nodes.{node}.{a}", f"attributes must be plain str/int/float/bool, got {v!r}")
    for u, v, d in g.edges(data=True):
        if d.get("kind") not in EDGE_KINDS:
            raise ConfigError(f"edges.{u}->{v}", f"unknown edge kind {d.get('kind')!r}; known: {known(EDGE_KINDS)}")
    if not nx.is_directed_acyclic_graph(g):
        raise ConfigError("edges", "a design graph must be acyclic")


def graph_hash(g: nx.DiGraph) -> str:
    return design_hash(from_graph(g))


def as_design(obj: Any) -> dict[str, Any]:
    """Accept a compact design mapping or a block graph; return the canonical compact form."""
    return from_graph(obj) if isinstance(obj, nx.DiGraph) else normalize(obj)


def load_design(path: str | Path) -> nx.DiGraph:
    """Read a design YAML file into its block graph; a stored hash must match."""
    path = Path(path)
    try:
        raw = load_yaml(path.read_text())
    except FileNotFoundError:
        raise ConfigError("", f"design file not found: {path}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError("", f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, Mapping):
        raise ConfigError("", f"{path}: a design file must be a mapping of keys, got {type(raw).__name__}")
    g = to_graph(raw)
    stored = raw.get("design_hash") if isinstance(raw, Mapping) else None
    if stored is not None and stored != graph_hash(g):
        raise ConfigError("design_hash", f"{stored!r} does not match the design ({graph_hash(g)!r}): the file "
                          "was edited after it was saved; delete the design_hash line to accept the edit")
    return g


def dump_design(design: Any) -> str:
    """YAML text of a design (mapping or graph), with its hash."""
    d = as_design(design)
    d["design_hash"] = design_hash(d)
    header = "# auxsearch design: train it with `auxsearch train FILE`, load it with auxsearch.load_design\n"
    return header + yaml.safe_dump(d, sort_keys=False, default_flow_style=None)


def save_design(design: Any, path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ConfigError("--output", f"{path} is a folder; give a file name such as {path / 'design.yaml'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_design(design))
    return path
