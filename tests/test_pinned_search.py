"""The quickstart's seeded search path is pinned: refactors must not change which designs it tries.

The study's own sampler asks the quickstart space for designs; each is told a deterministic
fake result derived from its hash, so the test exercises the sampler's model (ehvi after the
startup trials; its memory oracle takes one real step per candidate, nothing more is
trained). The pins were recorded before the aux-family spec and the
study split (issue 10), which held them; the quickstart's was recorded again when its space
moved to ``splits: memory`` (issue 12) again when it moved to ``sampler: auto`` (ehvi), and again when memory became the peak of two steps
(ehvi reads it), deliberate changes of the search path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import optuna

from auxsearch.design.graph import design_hash, normalize
from auxsearch.design.space import suggest_design
from auxsearch.search.prepare import prepare
from auxsearch.search.samplers import make_sampler

ROOT = Path(__file__).resolve().parents[1]
PIN = ROOT / "tests" / "data" / "quickstart_pinned_designs.json"


def _fake_values(h: str) -> tuple[float, float]:
    n = int(hashlib.sha256(h.encode()).hexdigest()[:8], 16)
    return 0.5 + (n % 1000) / 2000.0, float(1_000_000 + (n >> 10) % 3_000_000)


def sequence(n: int = 8) -> list[dict]:  # 2 random + 6 ehvi choices; each choice measures up to 12 candidates
    run = prepare(ROOT / "studies" / "quickstart.yaml")
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(run))
    out = []
    for _ in range(n):
        trial = study.ask()
        design = normalize(suggest_design(trial, run.space, run.base, run.unit_costs))
        h = design_hash(design)
        trial.set_user_attr("design_hash", h)  # as a study records them: ehvi reads a trained design's memory
        trial.set_user_attr("design", design)
        study.tell(trial, _fake_values(h))
        out.append({"params": trial.params, "design_hash": h})
    return out


def test_quickstart_suggestions_are_pinned():
    got = sequence()
    want = json.loads(PIN.read_text())
    assert [g["design_hash"] for g in got] == [w["design_hash"] for w in want]
    assert [g["params"] for g in got] == [w["params"] for w in want]


if __name__ == "__main__":  # python tests/test_pinned_search.py > tests/data/quickstart_pinned_designs.json
    print(json.dumps(sequence(), indent=1))


# Every dimension searched at once, on a classification and a dense base, with and without
# per-module choices: every branch of "which option applies when" is walked.
FULL_SPACE = {"modules": {"low": 2, "high": 4}, "families": ["dgl", "infopro", "augment", "momentum"],
              "depth": {"low": 1, "high": 2}, "width": [8, 16], "momentum": [0.9, 0.995],
              "learnable_scale": [True, False], "head": ["dgl", "infopro"], "tau": [0.25, 0.5],
              "pool": [2, 4], "end": ["local", "global", "global_ema", "global_copy"], "global_weight": [0.5, 1.0],
              "through": ["ema", "trainable"],
              "through_momentum": [0.9, 0.99]}
BASES = {"classification": {"task": {"name": "classification", "args": {}}},
         "detection": {"task": {"name": "detection", "args": {"levels": 2, "fpn_channels": 64, "head_convs": 2,
                                                                "score_thresh": 0.05, "nms_thresh": 0.6,
                                                                "detections_per_img": 100}}}}


def full_sequence(task: str, per_module: bool, n: int = 40) -> list[dict]:
    from auxsearch.design.space import parse_space

    raw = dict(FULL_SPACE, per_module=per_module)
    if task != "classification":
        raw.update(families=["dgl", "augment", "momentum"], head="dgl")
    space = parse_space(raw)
    base = {**BASES[task], "backbone": {"name": "resnet8", "args": {}}, "input_shape": [3, 32, 32],
            "num_classes": 10, "num_units": 4}
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=7))
    out = []
    for _ in range(n):
        trial = study.ask()
        h = design_hash(normalize(suggest_design(trial, space, base, [4.0, 3.0, 2.0, 1.0])))
        study.tell(trial, _fake_values(h))
        out.append({"params": trial.params, "design_hash": h})
    return out


FULL_PIN = ROOT / "tests" / "data" / "full_space_pinned_designs.json"


def test_full_space_suggestions_are_pinned():
    want = json.loads(FULL_PIN.read_text())
    for key, seq in want.items():
        task, per_module = key.split("/")
        got = full_sequence(task, per_module == "per_module")
        assert [g["params"] for g in got] == [w["params"] for w in seq], key
        assert [g["design_hash"] for g in got] == [w["design_hash"] for w in seq], key
