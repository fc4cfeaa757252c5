"""Pick one design from a run and write it where it will be trained.

Every rule chooses on validation scores: the confirmed front's validation means when the
run was confirmed, else the search front's single-seed validation scores. Test scores
never decide what is exported.

Formats (``auxsearch export --format``):

* ``design``: a self-contained design file (``auxsearch train``, ``auxsearch.load_design``);
* ``infopro`` / ``auglocal``: the split points as the authors' repositories' table entry
  (``split_tables.py``), a Python literal and YAML, with the aux settings their training
  scripts take; what such a script cannot train is refused with a one-line reason;
* ``script``: one editable training script (``templates/train_script.py.tmpl``) on
  auxsearch's Python API, with the design embedded.
"""

from __future__ import annotations

import datetime as _dt
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from . import split_tables
from .errors import ConfigError
from .families import auglocal_settings, infopro_settings
from .graph import as_design, design_hash, load_design, save_design
from .pareto import TrialRecord, choice_front, knee, memory_of, val_mean
from .rundir import load_run, recipe_design

FORMATS = ("design", "infopro", "auglocal", "script")
OPTION = {"trial": "--trial", "max_memory": "--max-memory", "knee_point": "--knee", "best_score": "--best-score",
          "allow_dominated": "--allow-dominated"}  # the command-line option of each rule


def choose(records: list[TrialRecord], *, trial: int | None = None, max_memory: int | None = None,
           knee_point: bool = False, best_score: bool = False, allow_dominated: bool = False) -> TrialRecord:
    """The record a user asked for: a trial number, or a rule over the front (default: best validation score)."""
    front = choice_front(records)
    if not front:
        raise ConfigError("", "the run has no completed trial yet: nothing to export")
    if trial is not None:
        match = [r for r in records if r["number"] == trial]
        if not match:
            raise ConfigError("--trial", f"no trial {trial} in this run (trials 0..{len(records) - 1})")
        if match[0]["state"] != "COMPLETE" or match[0]["design"] is None:
            raise ConfigError("--trial", f"trial {trial} is {match[0]['state'].lower()}, not a completed design")
        on_front = {r["design_hash"] for r in front}
        if not allow_dominated and match[0]["design_hash"] not in on_front:
            numbers = ", ".join(str(r["number"]) for r in front)
            raise ConfigError("--trial", f"trial {trial} is not on the front (trials {numbers}); "
                              "add --allow-dominated to export it anyway")
        return match[0]
    if max_memory is not None:
        fits = [r for r in front if memory_of(r) <= max_memory]
        if not fits:
            least = min(memory_of(r) for r in front)
            raise ConfigError("--max-memory", f"no front design fits in {max_memory} B; the smallest needs {least} B")
        return max(fits, key=lambda r: (val_mean(r), -memory_of(r)))
    if knee_point:
        return knee(front)
    return max(front, key=lambda r: (val_mean(r), -memory_of(r)))


def pick(source: str | Path, **rule) -> tuple[TrialRecord | None, dict[str, Any], str]:
    """``(record, design with its recipe, where from)`` of a run folder, or of a design file as it is."""
    source = Path(source)
    if source.is_file():
        given = [OPTION.get(k, k) for k, v in rule.items() if v not in (None, False)]
        if given:
            raise ConfigError(given[0], f"{source} is a design file, not a run folder: there is no trial to choose")
        return None, as_design(load_design(source)), str(source)
    meta, records = load_run(source)
    rec = choose(records, **rule)
    return rec, recipe_design(rec, meta), f"trial {rec['number']} of run {meta['name']!r} ({source})"


def export(run_dir: str | Path, output: str | Path, fmt: str = "design", **rule) -> tuple[TrialRecord | None, Path]:
    """Write the chosen design to ``output`` in format ``fmt``; returns (record, path)."""
    rec, design, origin = pick(run_dir, **rule)
    if fmt == "design":
        return rec, save_design(design, output)
    if fmt == "script":
        return rec, write_script(design, output, origin=origin, record=rec)
    if fmt in split_tables.FORMATS:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table_entry(design, fmt).render())
        return rec, path
    raise ConfigError("--format", f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


# ------------------------------------------------------------------ the repositories' tables

REPOSITORY = {"infopro": "InfoPro-Pytorch (blackfeather-wang/InfoPro-Pytorch), the MAN / MAN++ code that reads "
                         "its config", "auglocal": "AugLocal (ChenxiangMA/AugLocal)"}
# The aux families each repository's training script trains, and how it names them.
TAKES = {"infopro": {"infopro": "InfoPro-Pytorch train.py", "momentum": "MAN / MAN++ (InfoPro's table, end appended)"},
         "auglocal": {"augment": "--rule AugLocal", "infopro": "--rule InfoPro", "dgl": "--rule DGL"}}


@dataclass
class TableEntry:
    """A design's split points as one repository's table entry, and the settings beside it."""

    fmt: str
    arch: str
    K: int
    table: list[list[int]]  # the repository's entry (K - 1 items)
    table_with_end: list[list[int]] | None  # InfoPro's MAN / MAN++ form (K items), else None
    family: str | None  # None for end-to-end (K = 1)
    settings: dict[str, Any] = field(default_factory=dict)  # flag -> value (None: a switch)
    command: str = ""
    notes: list[str] = field(default_factory=list)

    def python(self) -> str:
        if self.fmt == "infopro":
            return f"InfoPro[{self.arch!r}][{self.K}] = {self.table}"
        return f"network_config[{self.arch!r}][{self.K}] = {self.table}"

    def yaml(self) -> str:
        return "splits: " + yaml.safe_dump({self.fmt: self.table}, default_flow_style=True, width=10**6).strip()

    def render(self) -> str:
        lines = [f"# {REPOSITORY[self.fmt]}: {self.arch}, K = {self.K}"]
        if self.fmt == "infopro":
            lines.append("# [stage, block] of the unit each local module but the last ends on "
                         "(stage 1-3, block 0-based; [0, 0] is the stem)")
        else:
            lines.append("# [stage, block, unit] of the unit each local module but the last ends on "
                         "(stage 0 block 0 unit 0 is the stem)")
        lines += ["", "# Python (networks/configs.py):", self.python()]
        if self.table_with_end is not None:
            lines += ["# the same with the network's end last (MAN / MAN++ configs, K entries):",
                      f"# {self.table_with_end}"]
        lines += ["", "# YAML (an auxsearch design file's splits: reads it back):", self.yaml(), ""]
        if self.family is None:
            lines.append("# aux settings: none (K = 1 is end-to-end training)")
        else:
            lines.append(f"# aux settings (family {self.family}, the same for every module; "
                         f"{TAKES[self.fmt][self.family]}):")
            width = max(len(k) for k in self.settings) if self.settings else 0
            lines += [f"#   {k.ljust(width)}  {'(a switch)' if v is None else v}" for k, v in self.settings.items()]
        if self.command:
            lines += ["", "# command:", f"#   {self.command}"]
        if self.notes:
            lines += ["", "# notes:"] + [f"#   - {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def table_entry(design: Any, fmt: str) -> TableEntry:
    """The design as ``fmt``'s table entry; a design the repository's script cannot train is refused."""
    d = as_design(design)
    if fmt not in split_tables.FORMATS:
        raise ConfigError("--format", f"no split table for format {fmt!r}; tables: {', '.join(split_tables.FORMATS)}")
    repo = REPOSITORY[fmt].split(" (")[0]
    arch = d["backbone"]["name"]
    if arch not in split_tables.CIFAR_RESNETS:
        raise ConfigError("backbone", f"{repo} trains CIFAR ResNets ({', '.join(split_tables.CIFAR_RESNETS)}); "
                          f"backbone {arch!r} has no table entry")
    if d["task"]["name"] != "classification":
        raise ConfigError("task", f"{repo} trains classification; task {d['task']['name']!r} has no table entry")
    if set(d["backbone"]["args"]) - {"width"} or d["backbone"]["args"].get("width", 16) != 16:
        raise ConfigError("backbone.args", f"{repo}'s ResNets have widths (16, 32, 64); "
                          f"backbone args {d['backbone']['args']} cannot be given to it")
    K = len(d["splits"]) + 1
    n = split_tables.blocks_per_stage(arch)
    entry = TableEntry(fmt, arch, K, split_tables.to_table(d["splits"], arch, fmt),
                       split_tables.to_table(d["splits"], arch, fmt, with_end=True) if fmt == "infopro" else None,
                       None)
    layers = 6 * n + 2
    if arch not in ("resnet32", "resnet110"):
        entry.notes.append(f"the repository's configs and its `assert arch in ['resnet32', 'resnet110']` list "
                           f"ResNet-32/110 only: add {arch!r} to both to train {arch}")
    if d["input_shape"][0] != 3:
        entry.notes.append(f"the design reads {d['input_shape'][0]}-channel images; the repository's stem and "
                           "data sets are 3-channel (CIFAR, SVHN, STL-10)")
    if K == 1:
        entry.command = (f"python train.py --dataset cifar10 --model resnet --layers {layers} --local_module_num 1"
                         + (" --rule DGL" if fmt == "auglocal" else ""))
        return entry
    a = _one_aux(d, fmt, repo)
    entry.family = a["family"]
    if fmt == "infopro":
        infopro_settings(entry, a, layers)
    else:
        auglocal_settings(entry, a, d, layers)
    return entry


def _one_aux(d: dict, fmt: str, repo: str) -> dict:
    """The one aux entry every module shares; what the repository cannot build is refused."""
    for i, a in enumerate(d["aux"]):
        if a.get("end", "local") != "local" or a.get("bank", 0):
            raise ConfigError(f"aux.{i}.end" if a.get("end", "local") != "local" else f"aux.{i}.bank",
                              f"global aux ends and feature banks are auxsearch's wiring; {repo} has neither")
    first = d["aux"][0]
    for i, a in enumerate(d["aux"][1:], 1):
        if a != first:
            raise ConfigError(f"aux.{i}", f"{repo} gives every module the same aux net; this design's aux.{i} "
                              f"differs from aux.0 (per-module aux nets have no table form)")
    if first["family"] not in TAKES[fmt]:
        raise ConfigError("aux.0.family", f"{repo}'s scripts train families {', '.join(TAKES[fmt])}; "
                          f"family {first['family']!r} has no equivalent there")
    return first


# ------------------------------------------------------------------ the training script

TEMPLATE = "train_script.py.tmpl"


def render_script(design: Any, *, origin: str = "", record: TrialRecord | None = None,
                  name: str = "train_best.py") -> str:
    """The training script's text: the template with the design (and its recipe) embedded."""
    d = as_design(design)
    text = resources.files("auxsearch").joinpath("templates", TEMPLATE).read_text()
    body = yaml.safe_dump(d, sort_keys=False, default_flow_style=None, width=100).rstrip()
    if "'''" in body:  # cannot happen with plain YAML scalars, but the literal must stay closed
        raise ConfigError("", "the design's YAML contains ''' and cannot be embedded in a script")
    if record is not None:
        c = record.get("confirmed")
        score = (f"validation {c['val']['mean']:.4f} +- {c['val']['std']:.4f}, test {c['test']['mean']:.4f} +- "
                 f"{c['test']['std']:.4f} over {len(c['seeds'])} seeds" if c
                 else f"validation {record['score']:.4f} (one seed)")
    else:
        score = "not scored in a run"
    return string.Template(text).substitute(
        origin=origin or "a design file", design_hash=design_hash(d), K=len(d["splits"]) + 1, score=score,
        created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), script=name, design_yaml=body)


def write_script(design: Any, output: str | Path, **kw) -> Path:
    path = Path(output)
    if path.is_dir():
        raise ConfigError("--output", f"{path} is a folder; give a file name such as {path / 'train_best.py'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_script(design, name=path.name, **kw))
    return path
