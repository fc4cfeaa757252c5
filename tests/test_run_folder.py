"""A run folder a user can come back to, and outputs that agree with each other.

Reruns with an edited study, a reference that failed, a torn or corrupt journal, one knee in every
output, numbers as people write them, a moved run folder, and commands that say what they mean.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import optuna
import pytest
import yaml

from auxsearch.cli import main
from auxsearch.store.storage import open_storage

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


def study_file(folder: Path, **overrides) -> Path:
    """A tiny study: digits at 8x8, resnet8 split in 2-3 modules, one epoch, a grid of 4 designs."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = {"name": "tiny", "data": {"name": "digits", "image_size": 8, "seed": 0}, "backbone": {"name": "resnet8"},
           "search_space": {"modules": {"low": 2, "high": 3}, "splits": "balanced", "families": ["dgl", "infopro"],
                            "depth": 1, "width": 8, "momentum": 0.99, "learnable_scale": False, "head": "dgl"},
           "train": {"epochs": 1, "batch_size": 128, "lr": 0.05, "seed": 0, "device": "cpu",
                     "bn_recalibration_batches": 1},
           "sampler": {"name": "grid", "seed": 0}, "pruning": {"enabled": False}, "n_trials": 3,
           "confirm": {"seeds": 2, "max_designs": 2}, "output": "run"}
    for key, value in overrides.items():  # a block's keys are merged into it, but a new backbone replaces it
        merge = isinstance(raw.get(key), dict) and isinstance(value, dict) and key != "backbone"
        raw[key] = {**raw[key], **value} if merge else value
    path = folder / "study.yaml"
    path.write_text("# a tiny study\n" + yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tiny")
    path = study_file(folder)
    assert main(["run", str(path), "--no-progress"]) == 0
    return path, folder / "run"


def copy_run(tiny, tmp_path: Path) -> tuple[Path, Path]:
    """The study file and its run folder, copied (the tests below damage them)."""
    path, run = tiny
    shutil.copy(path, tmp_path / "study.yaml")
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "study.yaml", tmp_path / "run"


# ----------------------------------------------------------------- 1. resume is safe


def test_a_rerun_with_another_recipe_stops_naming_the_keys(tiny, tmp_path, capsys):
    path, run = copy_run(tiny, tmp_path)
    study_file(tmp_path, train={"epochs": 2}, search_space={"width": 16})
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "search_space.width" in err and "train.epochs" in err and "--fresh" in err and "output" in err
    assert len(json.loads(_show_json(run, capsys))["front"]) >= 1  # the run itself is untouched


def test_a_rerun_with_a_larger_budget_or_new_comments_resumes(tiny, tmp_path, capsys):
    path, run = copy_run(tiny, tmp_path)
    study_file(tmp_path, n_trials=4, confirm={"seeds": 2, "max_designs": 3})
    path.write_text(path.read_text() + "# a comment added later\n")
    assert main(["run", str(path), "--no-progress"]) == 0
    counts = json.loads(_show_json(run, capsys))["counts"]
    assert counts == {"COMPLETE": 4}


def test_fresh_moves_the_old_run_aside_and_starts_over(tiny, tmp_path, capsys):
    path, run = copy_run(tiny, tmp_path)
    study_file(tmp_path, train={"epochs": 2}, n_trials=1, confirm={"seeds": 0})
    assert main(["run", str(path), "--no-progress", "--fresh"]) == 0
    assert "moved the old run folder to" in capsys.readouterr().err
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and (aside[0] / "study.journal").is_file()
    assert yaml.safe_load((run / "run.yaml").read_text())["train"]["epochs"] == 2


# ----------------------------------------------------------------- 2. the E2E reference is trained until it completes


def test_an_interrupted_reference_is_trained_again_by_the_next_run(tmp_path, capsys):
    from auxsearch.search.prepare import prepare
    from auxsearch.search.studies import open_search

    path = study_file(tmp_path, n_trials=1, confirm={"seeds": 0})
    studies = open_search(prepare(path))
    ref = studies.references()
    t = ref.ask()  # the E2E trial, interrupted (Ctrl-C, a corrupt file) before it completed
    ref.tell(t, state=optuna.trial.TrialState.FAIL)
    assert main(["run", str(path), "--no-progress"]) == 0
    doc = json.loads(_show_json(tmp_path / "run", capsys))
    assert doc["e2e_reference"]["trial"] == "e2e#2" and doc["e2e_missing"] is None


def test_show_says_plainly_when_there_is_no_reference_and_why(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))  # faulty_backbone: its E2E reference raises, split designs train
    backbone = {"python": "faulty_backbone:units", "args": {"mode": "error"}}
    path = study_file(tmp_path, backbone=backbone, search_space={"modules": 2, "families": ["dgl"]},
                      n_trials=1, confirm={"seeds": 0})
    assert main(["run", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["show", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "no E2E reference: the end-to-end reference did not complete (1 attempt(s), the last fail: " \
           "ValueError: the faulty unit raised on purpose); the next `auxsearch run` trains it again" in out


# ----------------------------------------------------------------- 3. the journal survives a torn write


def test_a_torn_last_record_is_reported_then_dropped_before_anything_is_appended(tiny, tmp_path, capsys):
    path, run = copy_run(tiny, tmp_path)
    journal = run / "study.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-200])  # a crash mid-write
    assert main(["show", str(run)]) == 0
    err = capsys.readouterr().err
    assert "the last record is incomplete" in err and len(err.strip().splitlines()) == 1
    assert main(["confirm", str(run), "--no-progress"]) == 0  # a writer: the torn tail is cut, then it appends
    assert "dropped a torn last record" in capsys.readouterr().err
    lines = journal.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    assert main(["show", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["front_kind"] == "confirmed"


def test_a_corrupt_record_in_the_middle_is_one_line_and_repair_keeps_the_rest(tiny, tmp_path, capsys):
    path, run = copy_run(tiny, tmp_path)
    journal = run / "study.journal"
    lines = journal.read_bytes().split(b"\n")
    lines.insert(5, b"garbage from a disk error")
    journal.write_bytes(b"\n".join(lines))
    assert main(["show", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line 6 is corrupt" in err and f"auxsearch repair {run}" in err
    assert main(["repair", str(run)]) == 0
    out = capsys.readouterr().out
    assert "dropped 1 unreadable line(s)" in out and list(run.glob("study.journal.*.bak"))
    assert main(["show", str(run), "--json"]) == 0


# ----------------------------------------------------------------- 4. one knee, one front, everywhere


def test_every_output_names_the_same_knee_and_front(tiny, tmp_path, capsys):
    _, run = tiny
    doc = json.loads(_show_json(run, capsys))
    knee = doc["knee"]
    assert doc["front_kind"] == "confirmed" and knee in [e["trial"] for e in doc["front"]]
    assert [e["trial"] for e in doc["front"] if e["knee"]] == [knee]
    for e in doc["front"]:
        assert set(e) >= {"knee", "dominated_by", "confirmed", "on_front"} and e["confirmed"] is not None
    pareto = yaml.safe_load((run / "pareto.yaml").read_text())
    assert pareto["knee"] == knee and [e["trial"] for e in pareto["front"]] == [e["trial"] for e in doc["front"]]
    for fmt in ("csv", "markdown", "yaml"):
        assert main(["show", str(run), "--format", fmt]) == 0
        text = capsys.readouterr().out
        assert knee in text and ("knee" in text)
    assert main(["export", str(run), "--knee", "-o", str(tmp_path / "k.yaml")]) == 0
    assert f"trial {knee}," in capsys.readouterr().out
    html = (run / "report.html").read_text()
    assert f"knee: trial {knee}" in html and len(set(re.findall(r"knee: trial (\S+?)[<\"]", html))) == 1
    assert "Confirmed front" in html


# ----------------------------------------------------------------- 5-6. numbers as people write them; validate


def test_numbers_in_scientific_notation_are_numbers(tmp_path, capsys):
    path = study_file(tmp_path, train={"lr": "1e-3", "weight_decay": "5e-4"}, memory={"budget": "2e9"})
    path.write_text(path.read_text().replace("'1e-3'", "1e-3").replace("'5e-4'", "5e-4").replace("'2e9'", "2e9"))
    assert "lr: 1e-3" in path.read_text() and "budget: 2e9" in path.read_text()
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_validate_warns_about_a_budget_nothing_fits_and_a_tiny_split(tmp_path, capsys):
    path = study_file(tmp_path, memory={"budget": "0.5MiB"}, data={"val_fraction": 0.004})
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "the lightest designs of the space need" in out and "rejected untrained" in out
    assert "the validation split has" in out and "rarest class" in out


def test_validate_runs_the_network_at_the_datas_size(tmp_path, capsys):
    path = study_file(tmp_path, backbone={"name": "timm:convnext_atto"},
                      search_space={"modules": 2, "families": ["dgl"]})
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "cannot run on a" in err


def test_validate_deep_opens_every_file_and_names_a_corrupt_one(tmp_path, capsys):
    from PIL import Image

    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "images" / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (12, 12), (40 * i, 80, 120)).save(tmp_path / "images" / split / c / f"{i}.jpg")
    (tmp_path / "images" / "train" / "b" / "2.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    path = study_file(tmp_path, data={"name": "imagefolder", "root": "images", "image_size": 8, "in_chans": 3,
                                      "val_fraction": 0.3, "seed": None})
    raw = yaml.safe_load(path.read_text())
    raw["data"] = {k: v for k, v in raw["data"].items() if v is not None}
    path.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(path), "--deep"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot be read" in err and "Traceback" not in err


# ----------------------------------------------------------------- 7. commands say what they mean


def test_train_prints_validation_and_test(tiny, tmp_path, capsys):
    _, run = tiny
    assert main(["export", str(run), "--knee", "-o", str(tmp_path / "best.yaml")]) == 0
    capsys.readouterr()
    assert main(["train", str(tmp_path / "best.yaml"), "--epochs", "1", "--lr", "1e-2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"validation accuracy 0\.\d{4}, test accuracy 0\.\d{4} \(read once", out), out


def test_export_refusals_name_the_designs_state_in_mib(tiny, tmp_path, capsys):
    _, run = tiny
    doc = json.loads(_show_json(run, capsys))
    off = [r for r in doc["search_front"] if r["trial"] not in {e["trial"] for e in doc["front"]}]
    assert main(["export", str(run), "--max-memory", "1KiB", "-o", str(tmp_path / "x.yaml")]) == 2
    assert re.search(r"fits in 0\.0 MiB; the lightest needs [\d.]+ MiB", capsys.readouterr().err)
    if off:  # a single-seed design the confirmation did not keep
        assert main(["export", str(run), "--trial", off[0]["trial"], "-o", str(tmp_path / "x.yaml")]) == 2
        err = capsys.readouterr().err
        assert f"trial {off[0]['trial']} is" in err and ("unconfirmed" in err or "dominated" in err)


def test_draw_writes_what_its_suffix_says_or_refuses(tiny, tmp_path, capsys):
    _, run = tiny
    design = next((run / "designs").glob("*.yaml"))
    assert main(["draw", str(design), "-o", str(tmp_path / "d.txt")]) == 2
    assert "draw writes .html, .png or .svg" in capsys.readouterr().err
    code = main(["draw", str(design), "-o", str(tmp_path / "d.png")])
    if code == 0:  # an image exporter is installed: a real PNG
        assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert code == 2 and "kaleido" in capsys.readouterr().err and not (tmp_path / "d.png").exists()


def test_optunas_info_lines_stay_quiet_and_ctrl_c_is_one_line(tmp_path, capsys, monkeypatch):
    path = study_file(tmp_path, n_trials=1, confirm={"seeds": 0})
    assert main(["run", str(path), "--no-progress"]) == 0
    assert "A new study created" not in capsys.readouterr().err
    from auxsearch import commands

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "cmd_show", interrupted)
    assert main(["show", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted" in err


def test_a_moved_run_folder_still_confirms(tiny, tmp_path, capsys):
    _, run = tiny
    moved = tmp_path / "elsewhere" / "my-run"
    shutil.copytree(run, moved)  # the study file is not beside it any more
    assert main(["confirm", str(moved), "--seeds", "3", "--no-progress"]) == 0
    doc = json.loads(_show_json(moved, capsys))
    assert all(len(e["confirmed"]["seeds"]) == 3 for e in doc["front"])


def _show_json(run: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["show", str(run), "--json"]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_a_study_journal_opened_for_reading_is_not_written(tiny, tmp_path):
    _, run = copy_run(tiny, tmp_path)
    before = (run / "study.journal").read_bytes()
    open_storage(f"journal:{run / 'study.journal'}", create=False, writes=False)
    assert (run / "study.journal").read_bytes() == before
