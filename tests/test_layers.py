"""The package's layers, checked: no import runs upward, no cycle, torch-free layers stay torch-free,
no module over 400 lines, and no private name of Optuna outside the one adapter module.

Every import counts: module level, function-local and under ``TYPE_CHECKING`` (docs/concepts.md,
"Layers"). The layers, lowest first; a module may import its own layer and the ones below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "auxsearch"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("auxsearch.errors", "auxsearch.version", "auxsearch.config", "auxsearch.pareto")),
    ("design", ("auxsearch.design",)),
    ("components", ("auxsearch.backbones", "auxsearch.aux", "auxsearch.tasks")),
    ("model", ("auxsearch.model",)),
    ("train", ("auxsearch.train",)),
    ("store", ("auxsearch.store",)),
    ("search", ("auxsearch.search",)),
    ("outputs", ("auxsearch.outputs",)),
    ("top", ("auxsearch.cli", "auxsearch.commands", "auxsearch.__main__", "auxsearch")),
]
TORCH_FREE = ("base", "design", "store")  # importable (and validated) without torch
INDEPENDENT = ("auxsearch.backbones", "auxsearch.aux", "auxsearch.tasks")  # one layer, never each other
HEAVY = ("torch", "torchvision", "timm", "torchmetrics")
ADAPTER = "auxsearch.store.optuna_adapter"
# private names of torch that auxsearch reads on purpose: storage identity, BatchNorm's base class, the fused
# multi-tensor lerp of the EMA update (torch's optimizers use the same _foreach family)
TORCH_PRIVATE = {"_BatchNorm", "_cdata", "_foreach_lerp_"}


def modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = modules()


def imports(name: str) -> set[str]:
    """Every module this one imports (resolved to the package's modules, or the top name of others)."""
    f = MODULES[name]
    is_pkg = f.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod, *(f"{mod}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES and t.startswith("auxsearch."):
                t = t.rpartition(".")[0]
            out.add(t if t in MODULES else t.split(".")[0])
    out.discard(name)
    return out


def layer_of(name: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if name == p or (p != "auxsearch" and name.startswith(p + ".")):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    assert best is not None, f"{name} belongs to no layer: add it to LAYERS (and to docs/concepts.md)"
    return best[0]


def test_every_module_has_a_layer_and_no_import_runs_upward():
    upward = []
    for name in sorted(MODULES):
        mine = layer_of(name)
        for dep in sorted(d for d in imports(name) if d in MODULES):
            face = dep == "auxsearch" and mine == len(LAYERS) - 1
            if layer_of(dep) > mine and not face:
                upward.append(f"{name} ({LAYERS[mine][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})")
    assert not upward, "\n".join(upward)


def test_components_do_not_import_each_other():
    crossing = [f"{m} imports {d}" for m in MODULES for d in imports(m) if d in MODULES
                for a in INDEPENDENT for b in INDEPENDENT
                if a != b and (m == a or m.startswith(a + ".")) and (d == b or d.startswith(b + "."))]
    assert not crossing, crossing


def test_no_import_cycle():
    graph = {m: {d for d in imports(m) if d in MODULES and d != "auxsearch"} for m in MODULES}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    assert not cycles, cycles


@pytest.mark.parametrize("layer", TORCH_FREE)
def test_torch_free_layers_import_no_torch(layer):
    i = [n for n, _ in LAYERS].index(layer)
    heavy = [f"{m} imports {d}" for m in MODULES if layer_of(m) == i for d in imports(m) if d in HEAVY]
    assert not heavy, heavy


def test_no_module_is_over_400_lines():
    long = {m: n for m, f in MODULES.items() if (n := len(f.read_text().splitlines())) > 400}
    assert not long, long


def _defined_names() -> set[str]:
    names: set[str] = set()
    for f in MODULES.values():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return names


def test_no_private_name_of_another_library_outside_the_optuna_adapter():
    """A ``x._name`` that auxsearch does not define itself, or an import from a private module of Optuna, is the
    next upgrade's crash; the adapter is the one place allowed to rely on Optuna's internals."""
    ours = _defined_names()
    found = []
    for name, f in MODULES.items():
        if name == ADAPTER:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value.id if isinstance(node.value, ast.Name) else None
                if owner not in ("self", "cls") and node.attr not in ours and node.attr not in TORCH_PRIVATE:
                    found.append(f"{name}:{node.lineno} {ast.unparse(node)}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optuna") and \
                    any(p.startswith("_") for p in node.module.split(".")):
                found.append(f"{name}:{node.lineno} from {node.module}")
    assert not found, "\n".join(found)


def test_the_checks_see_what_they_look_for(tmp_path, monkeypatch):
    """The walker finds function-local and TYPE_CHECKING imports (so the checks above cannot pass vacuously)."""
    f = tmp_path / "probe.py"
    f.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from auxsearch.search import loop\n"
                 "def g():\n    from auxsearch.outputs import rows\n    import torch\n")
    monkeypatch.setitem(MODULES, "auxsearch.design.probe", f)
    found = imports("auxsearch.design.probe")
    assert {"auxsearch.search.loop", "auxsearch.outputs.rows", "torch"} <= found
    assert layer_of("auxsearch.design.probe") < layer_of("auxsearch.search.loop")
