"""export --format design|infopro|auglocal|script, split tables in design files, show --format, train resume.

The published table entries below are facts copied from the authors' repositories; the unit
indices beside them are worked out by hand from their forward passes (a module ends on the
unit the table names; our unit 0 is the stem, block b of stage s is unit 1 + (s - 1) * n + b):

* InfoPro-Pytorch, blackfeather-wang/InfoPro-Pytorch, file
  ``Experiments on CIFAR-SVHN-STL10/networks/configs.py`` (dicts ``InfoPro`` and
  ``InfoPro_balanced_memory``): ``[stage, block]``, K - 1 entries, ``[0, 0]`` the stem
  (``networks/resnet.py``, ``InfoProResNet.forward`` tests stage 0 / layer 0 after the stem).
* The MAN / MAN++ form of the same table (quoted in issue 13): the network's end appended.
* AugLocal, ChenxiangMA/AugLocal, file ``networks/configs.py`` (dict ``network_config``):
  ``[stage, block, unit]``, K - 1 entries, ``[0, 0, 0]`` the stem (``networks/resnet.py``,
  ``LocalResNet.forward`` runs stages 0-3 and tests each layer after it runs).
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_study import write_study

from auxsearch.cli import main
from auxsearch.design.graph import design_hash, load_design, normalize
from auxsearch.design.split_tables import from_table, to_table
from auxsearch.errors import ConfigError
from auxsearch.outputs.export import render_script
from auxsearch.outputs.repo_tables import table_entry

# ---------------------------------------------------------------- published entries (facts)

# blackfeather-wang/InfoPro-Pytorch, "Experiments on CIFAR-SVHN-STL10/networks/configs.py"
INFOPRO = {
    "resnet32": {2: [[2, 1]], 3: [[1, 4], [2, 4]], 4: [[1, 2], [2, 1], [3, 0]],
                 8: [[1, 0], [1, 2], [1, 4], [2, 1], [2, 3], [3, 0], [3, 2]],
                 16: [[0, 0], [1, 0], [1, 1], [1, 2], [1, 3], [1, 4], [2, 0], [2, 1], [2, 2], [2, 3], [2, 4],
                      [3, 0], [3, 1], [3, 2], [3, 3]]},
    "resnet110": {2: [[2, 8]], 3: [[1, 17], [2, 17]], 4: [[1, 11], [2, 7], [3, 3]],
                  8: [[1, 4], [1, 11], [2, 0], [2, 7], [2, 14], [3, 3], [3, 10]],
                  16: [[1, 1], [1, 4], [1, 7], [1, 10], [1, 13], [1, 16], [2, 1], [2, 4], [2, 7], [2, 11], [2, 15],
                       [3, 1], [3, 5], [3, 9], [3, 13]]},
}
INFOPRO_BALANCED_MEMORY = {"resnet110": {"cifar10": {2: [[1, 14]], 3: [[1, 9], [2, 2]], 4: [[1, 6], [1, 14], [2, 8]]},
                                         "stl10": {2: [[1, 14]], 3: [[1, 8], [2, 1]], 4: [[1, 6], [1, 14], [2, 8]]}}}
# The MAN / MAN++ form (issue 13): InfoPro_balanced_memory['resnet110']['cifar10'][4] with the end appended.
MAN_BALANCED_K4 = [[1, 6], [1, 14], [2, 8], [3, 17]]
# ChenxiangMA/AugLocal, "networks/configs.py"
AUGLOCAL_RESNET32 = {
    "net_config": [[0, 0, 0], [1, 0, 1], [1, 1, 2], [1, 2, 3], [1, 3, 4], [1, 4, 5], [2, 0, 6], [2, 1, 7], [2, 2, 8],
                   [2, 3, 9], [2, 4, 10], [3, 0, 11], [3, 1, 12], [3, 2, 13], [3, 3, 14], [3, 4, 15]],
    2: [[0, 0, 0]], 3: [[0, 0, 0], [1, 0, 1]], 4: [[0, 0, 0], [1, 0, 1], [1, 1, 2]],
    8: [[0, 0, 0], [1, 0, 1], [1, 1, 2], [1, 2, 3], [1, 3, 4], [1, 4, 5], [2, 0, 6]],
    13: [[0, 0, 0], [1, 0, 1], [1, 1, 2], [1, 2, 3], [1, 3, 4], [1, 4, 5], [2, 0, 6], [2, 1, 7], [2, 2, 8], [2, 3, 9],
         [2, 4, 10], [3, 0, 11]],
}
# network_config['resnet110'][47]: 46 entries, [0, 0, 0] then every block up to stage 3 block 8 (written out in
# the file); the stage boundaries as the file gives them:
AUGLOCAL_RESNET110_K47_SPOTS = {0: [0, 0, 0], 1: [1, 0, 1], 18: [1, 17, 18], 19: [2, 0, 19], 36: [2, 17, 36],
                                37: [3, 0, 37], 45: [3, 8, 45]}

# (backbone, published entry, our split points worked out by hand)
INFOPRO_CASES = [
    ("resnet110", INFOPRO_BALANCED_MEMORY["resnet110"]["cifar10"][4], [8, 16, 28]),
    ("resnet110", INFOPRO_BALANCED_MEMORY["resnet110"]["cifar10"][3], [11, 22]),
    ("resnet110", INFOPRO_BALANCED_MEMORY["resnet110"]["cifar10"][2], [16]),
    ("resnet110", INFOPRO_BALANCED_MEMORY["resnet110"]["stl10"][3], [10, 21]),
    ("resnet110", INFOPRO["resnet110"][2], [28]),
    ("resnet110", INFOPRO["resnet110"][3], [19, 37]),
    ("resnet110", INFOPRO["resnet110"][4], [13, 27, 41]),
    ("resnet110", INFOPRO["resnet110"][8], [6, 13, 20, 27, 34, 41, 48]),
    ("resnet110", INFOPRO["resnet110"][16], [3, 6, 9, 12, 15, 18, 21, 24, 27, 31, 35, 39, 43, 47, 51]),
    ("resnet32", INFOPRO["resnet32"][2], [8]),
    ("resnet32", INFOPRO["resnet32"][3], [6, 11]),
    ("resnet32", INFOPRO["resnet32"][4], [4, 8, 12]),
    ("resnet32", INFOPRO["resnet32"][8], [2, 4, 6, 8, 10, 12, 14]),
    ("resnet32", INFOPRO["resnet32"][16], list(range(1, 16))),
]
AUGLOCAL_CASES = [
    ("resnet32", AUGLOCAL_RESNET32[2], [1]),
    ("resnet32", AUGLOCAL_RESNET32[4], [1, 2, 3]),
    ("resnet32", AUGLOCAL_RESNET32[8], [1, 2, 3, 4, 5, 6, 7]),
    ("resnet32", AUGLOCAL_RESNET32[13], list(range(1, 13))),
    ("resnet32", AUGLOCAL_RESNET32["net_config"][:15], list(range(1, 16))),  # --rule AugLocal, K = 16
]
UNITS = {"resnet32": 16, "resnet110": 55}


def cifar_design(arch: str, splits, family: str = "infopro", **aux) -> dict:
    """A CIFAR ResNet design with one ``family`` aux net per non-final module (``splits``: indices or a table)."""
    k = (len(splits) if isinstance(splits, list) else len(from_table(splits, arch, UNITS[arch]))) + 1
    return {"backbone": {"name": arch}, "input_shape": [3, 32, 32], "num_classes": 10, "num_units": UNITS[arch],
            "splits": splits, "aux": [{"family": family, **aux}] * (k - 1)}


# ---------------------------------------------------------------- tables, both directions

@pytest.mark.parametrize("arch, entry, splits", INFOPRO_CASES, ids=lambda v: str(v)[:24])
def test_infopro_tables_both_directions(arch, entry, splits):
    assert from_table({"infopro": entry}, arch, UNITS[arch]) == splits
    assert to_table(splits, arch, "infopro") == entry
    end = [3, (UNITS[arch] - 1) // 3 - 1]  # the MAN / MAN++ form reads the same
    assert from_table({"infopro": [*entry, end]}, arch, UNITS[arch]) == splits
    assert to_table(splits, arch, "infopro", with_end=True) == [*entry, end]


@pytest.mark.parametrize("arch, entry, splits", AUGLOCAL_CASES, ids=lambda v: str(v)[:24])
def test_auglocal_tables_both_directions(arch, entry, splits):
    assert from_table({"auglocal": entry}, arch, UNITS[arch]) == splits
    assert to_table(splits, arch, "auglocal") == entry


def test_auglocal_resnet110_layerwise_entry():
    splits = list(range(1, 47))  # K = 47: the first 46 units each a module
    table = to_table(splits, "resnet110", "auglocal")
    assert len(table) == 46 and all(table[i] == e for i, e in AUGLOCAL_RESNET110_K47_SPOTS.items())
    assert from_table({"auglocal": table}, "resnet110", 55) == splits
    full = to_table(list(range(1, 55)), "resnet110", "auglocal", with_end=True)  # AugLocal's 'net_config'
    assert full[-1] == [3, 17, 54] and from_table({"auglocal": full}, "resnet110", 55) == list(range(1, 55))


def test_the_issue_quote_is_the_published_entry_with_the_end():
    assert MAN_BALANCED_K4[:-1] == INFOPRO_BALANCED_MEMORY["resnet110"]["cifar10"][4]


def test_a_design_file_takes_published_tables_and_hashes_as_unit_indices():
    by_units = cifar_design("resnet110", [8, 16, 28])
    for table in ({"infopro": INFOPRO_BALANCED_MEMORY["resnet110"]["cifar10"][4]}, {"infopro": MAN_BALANCED_K4},
                  {"auglocal": [[1, 6, 7], [1, 14, 15], [2, 8, 27]]}):
        d = cifar_design("resnet110", table)
        assert normalize(d)["splits"] == [8, 16, 28]
        assert design_hash(d) == design_hash(by_units)
    d = cifar_design("resnet32", {"auglocal": AUGLOCAL_RESNET32[4]}, family="augment", depth=2)
    assert normalize(d)["splits"] == [1, 2, 3]


@pytest.mark.parametrize("splits, words", [
    ({"infopro": [[4, 0]]}, "splits.infopro.0: stage must be 0 (the stem) to 3 and block 0 to 17"),
    ({"infopro": [[1, 18]]}, "splits.infopro.0: stage must be 0"),
    ({"infopro": [[0, 3]]}, "splits.infopro.0: stage 0 is the stem"),
    ({"infopro": [[2, 1], [1, 3]]}, "splits.infopro.1: entries must go strictly forward"),
    ({"infopro": [[1, "6"]]}, "splits.infopro.0: must be [stage, block] (integers)"),
    ({"auglocal": [[1, 0, 2]]}, "splits.auglocal.0: [1, 0, 2] is inconsistent: stage 1 block 0 is unit 1"),
    ({"auglocal": [[1, 0]]}, "splits.auglocal.0: must be [stage, block, unit]"),
    ({"dgl": [[1, 0]]}, "splits: a table of split points is one of"),
])
def test_bad_tables_name_the_entry(splits, words):
    d = cifar_design("resnet110", [5])
    d["splits"] = splits
    with pytest.raises(ConfigError, match=None) as err:
        normalize(d)
    assert words in str(err.value), str(err.value)


def test_tables_need_a_cifar_resnet_of_that_size():
    d = {"backbone": {"name": "timm:resnet18"}, "input_shape": [3, 32, 32], "num_classes": 10, "num_units": 5,
         "splits": {"infopro": [[1, 0]]}, "aux": [{"family": "dgl"}]}
    with pytest.raises(ConfigError, match="splits.infopro: split tables describe CIFAR ResNets"):
        normalize(d)
    d = cifar_design("resnet32", {"infopro": [[1, 0]]})
    d["num_units"] = 17
    with pytest.raises(ConfigError, match="resnet32 has 16 units, but the design says num_units: 17"):
        normalize(d)


# ---------------------------------------------------------------- export --format infopro / auglocal

def test_infopro_export_of_a_resnet110_design_prints_the_published_entry(tmp_path, capsys):
    path = tmp_path / "infopro_star.yaml"  # the design file gives its splits as the published table
    d = cifar_design("resnet110", {"infopro": MAN_BALANCED_K4}, recon_first=5.0, task_first=0.5)
    path.write_text(yaml.safe_dump(d))
    assert main(["export", str(path), "--format", "infopro"]) == 0
    out = capsys.readouterr().out
    assert "InfoPro['resnet110'][4] = [[1, 6], [1, 14], [2, 8]]\n" in out
    assert f"# {MAN_BALANCED_K4}" in out  # the MAN / MAN++ form beside it
    assert "splits: {infopro: [[1, 6], [1, 14], [2, 8]]}" in out
    assert "--layers 110 --local_module_num 4" in out and "--ixx_1 5.0 --ixy_1 0.5" in out
    yaml_line = next(line for line in out.splitlines() if line.startswith("splits:"))  # and back again
    back = cifar_design("resnet110", yaml.safe_load(yaml_line)["splits"], recon_first=5.0, task_first=0.5)
    assert design_hash(back) == design_hash(load_design(path))
    entry = table_entry(d, "infopro")
    assert entry.table == INFOPRO_BALANCED_MEMORY["resnet110"]["cifar10"][4] and entry.table_with_end == MAN_BALANCED_K4


def test_auglocal_export_gives_the_rule_and_module_count(tmp_path, capsys):
    d = cifar_design("resnet32", [1, 2, 3], family="augment", depth=2, tau=0.5)
    entry = table_entry(d, "auglocal")
    assert entry.table == AUGLOCAL_RESNET32[4]
    assert entry.settings == {"--rule": "AugLocal", "--local_module_num": 6, "--aux_net_depth": 2, "--pyramid": None,
                              "--pyramid_coeff": 0.5}
    assert "network_config['resnet32'][4] = [[0, 0, 0], [1, 0, 1], [1, 1, 2]]" in entry.render()
    dgl = table_entry(cifar_design("resnet32", [4, 8, 12], family="dgl"), "auglocal")
    assert dgl.table == [[1, 2, 3], [2, 1, 7], [3, 0, 11]] and "--rule DGL --local_module_num 4" in dgl.command
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(d))
    out_file = tmp_path / "table.txt"
    assert main(["export", str(path), "--format", "auglocal", "-o", str(out_file)]) == 0
    assert out_file.read_text() == capsys.readouterr().out


@pytest.mark.parametrize("fmt, change, words", [
    ("auglocal", {"family": "momentum"}, "aux.0.family: AugLocal's scripts train families augment, infopro, dgl; "
                                         "family 'momentum' has no equivalent there"),
    ("infopro", {"family": "dgl"}, "aux.0.family: InfoPro-Pytorch's scripts train families infopro, momentum"),
    ("infopro", {"per_module": True}, "aux.1: InfoPro-Pytorch gives every module the same aux net"),
    ("infopro", {"depth": 3}, "aux.0.depth: InfoPro's aux classifiers have 1 or 2 conv layers"),
    ("infopro", {"family": "momentum", "end": "global"},
     "aux.0.end: global aux ends (and the feature bank they read) are auxsearch's wiring"),
    ("auglocal", {"family": "augment", "depth": 2}, "splits: AugLocal's --rule AugLocal trains layer-wise modules"),
    ("infopro", {"backbone": "python:mypkg.nets:units"}, "backbone: InfoPro-Pytorch trains CIFAR ResNets"),
    ("infopro", {"width": 32}, "backbone.args: InfoPro-Pytorch's ResNets have widths (16, 32, 64)"),
    ("auglocal", {"task": "segmentation"}, "task: AugLocal trains classification; task 'segmentation'"),
])
def test_what_a_repository_cannot_train_is_refused_in_one_line(tmp_path, capsys, fmt, change, words):
    d = cifar_design("resnet32", [4, 8, 12], family=change.get("family", "infopro"))
    for a in d["aux"]:
        a.update({k: v for k, v in change.items() if k in ("depth", "end")})
    if change.get("per_module"):
        d["aux"] = [{"family": "infopro"}, {"family": "infopro", "width": 16}, {"family": "infopro"}]
    if "backbone" in change:
        d["backbone"] = {"name": change["backbone"]}
    if "width" in change:
        d["backbone"]["args"] = {"width": change["width"]}
    if "task" in change:
        d.update(task=change["task"], aux=[{"family": "dgl"}] * 3)
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(d))
    assert main(["export", str(path), "--format", fmt]) == 2
    err = capsys.readouterr().err
    assert words in err, err
    assert len(err.strip().splitlines()) == 1


def test_end_to_end_and_the_stem_split_have_table_entries():
    e2e = table_entry(cifar_design("resnet32", []), "infopro")
    assert e2e.table == [] and e2e.family is None and "--local_module_num 1" in e2e.command
    stem = table_entry(cifar_design("resnet32", [1, 9]), "infopro")  # InfoPro's own K = 16 entry starts at the stem
    assert stem.table == [[0, 0], [2, 2]]


# ---------------------------------------------------------------- from a tiny study

SPACE = {"modules": 2, "splits": "balanced", "families": "dgl", "depth": 1, "width": 8, "momentum": 0.99,
         "learnable_scale": True, "head": "dgl", "pool": 4}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An E2E reference and one K = 2 DGL design, one epoch each, no confirmation."""
    tmp = tmp_path_factory.mktemp("export")
    path = write_study(tmp, search_space=SPACE, n_trials=2, enqueue=[], pruning={"enabled": False},
                       train={"epochs": 1, "batch_size": 32, "lr": 0.05, "seed": 0, "device": "cpu",
                              "bn_recalibration_batches": 2})
    assert main(["run", str(path), "--no-progress"]) == 0
    return tmp / "run"


def test_show_formats(tiny_run, capsys):
    capsys.readouterr()
    assert main(["show", str(tiny_run), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["role"].startswith("E2E reference") and rows[0]["K"] == "1" and rows[0]["ratio_to_e2e_memory"] == "1.0"
    assert all(float(r["val_score"]) > 0 and int(r["peak_memory_bytes"]) > 0 for r in rows)
    shown = {r["trial"] for r in rows}
    assert main(["show", str(tiny_run), "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert shown == {str(e["trial"]) for e in js["front"]} | {str(js["e2e_reference"]["trial"])}
    assert main(["show", str(tiny_run), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == js
    assert main(["show", str(tiny_run), "--format", "markdown"]) == 0
    md = capsys.readouterr().out.strip().splitlines()
    assert md[1].startswith("| ") and set(md[2]) <= set("|-") and len(md) == 3 + len(rows)
    assert all(line.count("|") == md[1].count("|") for line in md[1:])
    assert main(["show", str(tiny_run), "--format", "table"]) == 0
    assert "E2E reference" in capsys.readouterr().out
    assert main(["show", str(tiny_run), "--json", "--format", "csv"]) == 2
    assert "--json is --format json" in capsys.readouterr().err


def test_export_formats_from_a_run(tiny_run, tmp_path, capsys):
    local = ["--trial", "0", "--allow-dominated"]  # the first searched design (the E2E reference is e2e)
    capsys.readouterr()
    assert main(["export", str(tiny_run), *local, "--format", "infopro"]) == 2  # InfoPro-Pytorch has no DGL
    assert "family 'dgl' has no equivalent" in capsys.readouterr().err
    assert main(["export", str(tiny_run), *local, "--format", "auglocal"]) == 0
    out = capsys.readouterr().out
    assert "network_config['resnet20'][2] = [[" in out and "--rule DGL --local_module_num 2" in out
    assert "1-channel images" in out and "add 'resnet20'" in out  # the quickstart's digits, honestly noted
    table = yaml.safe_load(next(line for line in out.splitlines() if line.startswith("splits:")))["splits"]
    design_file = tmp_path / "d.yaml"
    assert main(["export", str(tiny_run), *local, "-o", str(design_file)]) == 0
    assert from_table(table, "resnet20", 10) == normalize(yaml.safe_load(design_file.read_text()))["splits"]
    capsys.readouterr()
    assert main(["export", str(tiny_run), "--format", "script"]) == 2
    assert "-o/--output: --format script writes a file" in capsys.readouterr().err
    assert main(["export", str(design_file), "--knee", "--format", "auglocal"]) == 2
    assert "--knee: " in capsys.readouterr().err


def _script(tiny_run, tmp_path) -> Path:
    script = tmp_path / "train_best.py"
    assert main(["export", str(tiny_run), "--trial", "0", "--allow-dominated", "--format", "script",
                 "-o", str(script)]) == 0
    return script


def _python(script: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env,
                          timeout=600, **kw)


def test_the_exported_script_trains_checkpoints_and_resumes_after_a_kill(tiny_run, tmp_path):
    script = _script(tiny_run, tmp_path)
    text = script.read_text()
    compile(text, str(script), "exec")
    assert "auxsearch.load_design" in text and "weights_only=True" in text and "splits: [" in text

    one = _python(script, "--epochs", "1", "--batch-size", "32")
    assert one.returncode == 0, one.stderr
    assert "epoch 1/1: train loss" in one.stdout and "val accuracy" in one.stdout and "test accuracy" in one.stdout

    ckpt = tmp_path / "ckpt"
    args = ["--epochs", "2", "--batch-size", "32", "--checkpoint-dir", str(ckpt), "--log-every", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    seen = []
    try:
        for line in proc.stdout:  # kill it as soon as epoch 2 has taken its first step
            seen.append(line)
            if line.startswith("epoch 2 step 1/"):
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    assert not any(line.startswith("epoch 2/2") for line in seen)
    state = torch.load(ckpt / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1

    resumed = _python(script, *args[:-2], "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "1 of 2 epochs done" in resumed.stdout
    assert "epoch 1/2" not in resumed.stdout and "epoch 2/2: train loss" in resumed.stdout
    assert "test accuracy" in resumed.stdout
    assert torch.load(ckpt / "last.pt", weights_only=True)["epoch"] == 2

    # the resumed run is the run that was never interrupted
    whole = _python(script, "--epochs", "2", "--batch-size", "32")
    assert whole.returncode == 0, whole.stderr

    def tail(out):
        return [line.split(" (")[0] for line in out.splitlines() if line.startswith(("epoch 2/2", "test"))]

    assert tail(resumed.stdout) == tail(whole.stdout)

    bad = _python(script, "--epochs", "3", "--batch-size", "32", "--checkpoint-dir", str(ckpt), "--resume")
    assert bad.returncode != 0 and "resume with the same --epochs" in bad.stderr


def test_the_script_template_embeds_an_editable_design():
    d = cifar_design("resnet32", [4, 8, 12], family="dgl")
    text = render_script(d, origin="a test", name="t.py")
    assert "python t.py --epochs 1" in text and "a test" in text and "$" not in text.split("DESIGN_YAML")[0]
    embedded = yaml.safe_load(text.split("DESIGN_YAML = r'''")[1].split("'''")[0])
    assert design_hash(embedded) == design_hash(d)


# ---------------------------------------------------------------- auxsearch train --save DIR / --resume

def test_train_saves_every_epoch_and_resumes_where_an_interrupted_run_stopped(tmp_path, capsys, monkeypatch):
    from auxsearch.model import engine

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "studies" / "designs" / "digits_dgl_k4.yaml").read_text())
    raw.pop("design_hash")
    raw.update(input_shape=[1, 8, 8], data={"name": "digits", "image_size": 8},
               train={"epochs": 2, "batch_size": 64, "lr": 0.05, "device": "cpu", "bn_recalibration_batches": 2})
    design = tmp_path / "d.yaml"
    design.write_text(yaml.safe_dump(raw))
    ckpt = tmp_path / "ckpt"

    real, calls = engine.train_step, []

    def interrupted(*a, **kw):  # Ctrl-C (or a preempted GPU job) three steps into epoch 2
        calls.append(1)
        if len(calls) == 16 + 3:  # 1078 training images / 64 = 16 steps per epoch
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(engine, "train_step", interrupted)
    assert main(["train", str(design), "--save", str(ckpt), "--json"]) == 130
    monkeypatch.setattr(engine, "train_step", real)
    state = torch.load(ckpt / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1 and not (ckpt / "model.pt").exists()
    capsys.readouterr()

    assert main(["train", str(design), "--save", str(ckpt), "--resume", "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["epochs"] == 2 and len(resumed["history"]) == 2 and resumed["history"][0] == state["history"][0]
    assert torch.load(ckpt / "model.pt", weights_only=True).keys() == state["model"].keys()
    assert main(["train", str(design), "--json"]) == 0  # the run that was never interrupted
    whole = json.loads(capsys.readouterr().out)
    assert resumed["history"] == whole["history"] and resumed["peak_memory_bytes"] == whole["peak_memory_bytes"]

    assert main(["train", str(design), "--save", str(ckpt), "--resume", "--epochs", "3"]) == 2
    assert "--resume: " in capsys.readouterr().err
    assert main(["train", str(design), "--resume", "--save", str(tmp_path / "w.pt")]) == 2
    assert "give the checkpoint folder with --save DIR" in capsys.readouterr().err


def test_show_csv_and_markdown_carry_the_confirmed_spreads(monkeypatch, capsys):
    from auxsearch.outputs import runfolder as rundir

    def rec(number, K, score, peak, val, test):
        splits = list(range(2, 2 + K - 1))
        return {"number": number, "trial": str(number), "state": "COMPLETE", "score": score, "peak_memory_bytes": peak,
                "measured_peak_bytes": peak, "seconds": 1.0, "design_hash": f"h{number}", "is_e2e": K == 1, "K": K,
                "params": {}, "scores": {"accuracy": score}, "over_budget": False, "history": [score],
                "design": {"splits": splits, "aux": [{"family": "dgl"}] * (K - 1)},
                "confirmed": {"seeds": [1, 2, 3], "peak_memory_bytes": peak,
                              "val": {"values": [], "mean": val[0], "std": val[1]},
                              "test": {"values": [test[0]] * 3, "mean": test[0], "std": test[1]},
                              "test_scores": {"accuracy": {"values": [], "mean": test[0], "std": test[1]}}}}

    records = [rec(0, 1, 0.95, 1000, (0.95, 0.01), (0.94, 0.01)), rec(3, 3, 0.90, 400, (0.91, 0.02), (0.90, 0.03))]
    monkeypatch.setattr(rundir, "load_run", lambda run_dir: ({"name": "s", "metric": "accuracy"}, records))
    assert main(["show", "anywhere", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["trial"] for r in rows] == ["0", "3"] and rows[0]["role"] == "E2E reference, on the front"
    assert rows[1]["splits"] == "2 3" and rows[1]["families"] == "dgl" and rows[1]["ratio_to_e2e_memory"] == "0.4"
    assert (rows[1]["seeds"], rows[1]["val_mean"], rows[1]["test_std"]) == ("3", "0.91", "0.03")
    assert main(["show", "anywhere", "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "confirmed front" in md and "| val accuracy | test accuracy | seeds |" in md
    assert "| front | 3 | 3 | 2 3 | dgl |" in md and "0.9100 ± 0.0200 | 0.9000 ± 0.0300 | 3 |" in md
