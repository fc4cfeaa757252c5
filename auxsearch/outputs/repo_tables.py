"""A design as the authors' repositories write it: their split-table entry and the flags of their scripts.

``auxsearch export --format infopro | auglocal`` (InfoPro-Pytorch and the MAN / MAN++ code that
reads its config; AugLocal). The split points come from :mod:`auxsearch.design.split_tables`;
the aux settings are mapped here from each family's options, so a renamed or new option of
:mod:`auxsearch.design.families` is mapped here too. What a repository's script cannot train
is refused with a one-line reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from auxsearch.design import split_tables
from auxsearch.design.graph import as_design
from auxsearch.errors import ConfigError

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
        if a.get("end", "local") != "local":
            raise ConfigError(f"aux.{i}.end", f"global aux ends (and the feature bank they read) are auxsearch's "
                              f"wiring; {repo} has neither")
    first = d["aux"][0]
    for i, a in enumerate(d["aux"][1:], 1):
        if a != first:
            raise ConfigError(f"aux.{i}", f"{repo} gives every module the same aux net; this design's aux.{i} "
                              f"differs from aux.0 (per-module aux nets have no table form)")
    if first["family"] not in TAKES[fmt]:
        raise ConfigError("aux.0.family", f"{repo}'s scripts train families {', '.join(TAKES[fmt])}; "
                          f"family {first['family']!r} has no equivalent there")
    return first


# How a family's options read as the flags of the authors' scripts. ``entry`` is a TableEntry.

# How a family's options read as the flags of the authors' scripts (InfoPro-Pytorch, AugLocal), for
# ``auxsearch export --format infopro | auglocal``: kept beside the options so a renamed or new option is
# mapped here too. ``entry`` is export's TableEntry (settings, notes, command, K, arch).

def _infopro_classifier(a: dict, entry: Any) -> dict[str, Any]:
    """InfoPro's classifier flags for our ``depth`` conv layers + FC 128 + FC classes head."""
    if a["depth"] not in (1, 2):
        raise ConfigError("aux.0.depth", f"InfoPro's aux classifiers have 1 or 2 conv layers (1c2f, 2c2f); "
                          f"depth {a['depth']} has no equivalent")
    entry.notes.append(f"aux width {a['width']}: InfoPro's classifier convs have 32 (stage 1) or 64 channels "
                       "times --aux_net_widen; no flag sets one width for every stage")
    return {"--aux_net_config": f"{a['depth']}c2f", "--local_loss_mode": "cross_entropy",
            "--aux_net_feature_dim": 128}


def _lambdas(a: dict) -> dict[str, Any]:
    return {"--ixx_1": a["recon_first"], "--ixy_1": a["task_first"],
            "--ixx_2": a["recon_last"], "--ixy_2": a["task_last"]}


def infopro_settings(entry: Any, a: dict, layers: int) -> None:
    head = a if a["family"] == "infopro" else {**a, "family": a.get("head")}
    if a["family"] == "momentum":
        entry.settings.update({"EMA momentum m": a["momentum"],
                               "learnable scale s": f"{a['learnable_scale']} "
                                                    f"({'MAN++' if a['learnable_scale'] else 'MAN'})",
                               "head behind the EMA block": a["head"]})
        entry.notes.append("MAN / MAN++ code reads InfoPro's table with the network's end appended "
                           "(the commented K-entry form above)")
        if head["family"] != "infopro":  # a DGL head: MAN's own aux classifier
            entry.settings.update({"aux depth": a["depth"], "aux width": a["width"], "dgl pool": a.get("pool")})
            return
    entry.settings.update(_infopro_classifier(head, entry))
    entry.settings.update(_lambdas(head))
    entry.settings["--aux_net_widen"] = round(head["decoder_width"] / 12, 4)  # the decoder's 12 x widen channels
    if a["family"] == "infopro":
        flags = " ".join(f"{k} {v}" for k, v in entry.settings.items())
        entry.command = (f"python train.py --dataset cifar10 --model resnet --layers {layers} "
                         f"--local_module_num {entry.K} {flags}")
        entry.notes.append(f"replace InfoPro[{entry.arch!r}][{entry.K}] in networks/configs.py by the entry above "
                           f"(or InfoPro_balanced_memory[{entry.arch!r}][dataset][{entry.K}] with --balanced_memory)")


def auglocal_settings(entry: Any, a: dict, d: dict, layers: int) -> None:
    base = f"python train.py --dataset cifar10 --model resnet --layers {layers}"
    if a["family"] == "augment":
        if d["splits"] != list(range(1, entry.K)):
            raise ConfigError("splits", f"AugLocal's --rule AugLocal trains layer-wise modules only "
                              f"(network_config[arch]['net_config'][:K-1], splits 1..{entry.K - 1}); this design "
                              f"splits at {d['splits']}")
        entry.settings.update({"--rule": "AugLocal", "--local_module_num": entry.K + a["depth"],
                               "--aux_net_depth": a["depth"]})
        if a["tau"] > 0:
            entry.settings.update({"--pyramid": None, "--pyramid_coeff": a["tau"]})
        entry.notes.append("--rule AugLocal runs K = local_module_num - aux_net_depth modules, so "
                           f"--local_module_num {entry.K + a['depth']} gives K = {entry.K}; it reads "
                           "network_config[arch]['net_config'][:K-1], which is the entry above")
    elif a["family"] == "infopro":
        entry.settings.update({"--rule": "InfoPro", "--local_module_num": entry.K, **_lambdas(a)})
        entry.notes.append("--rule InfoPro builds AugLocal's own InfoPro heads; aux depth / width are not flags there")
    else:
        entry.settings.update({"--rule": "DGL", "--local_module_num": entry.K})
        entry.notes.append("--rule DGL builds AugLocal's own DGL head; aux depth / width / pool are not flags there")
    if a["family"] != "augment":
        entry.notes.append(f"set network_config[{entry.arch!r}][{entry.K}] in networks/configs.py to the entry above")
    flags = " ".join(k if v is None else f"{k} {v}" for k, v in entry.settings.items())
    entry.command = f"{base} {flags}"
