from __future__ import annotations

import random

import pytest

from auxsearch.design.graph import design_hash
from auxsearch.errors import AuxsearchError
from auxsearch.outputs.report import write_report
from auxsearch.outputs.rows import families
from auxsearch.outputs.tables import pareto_table
from auxsearch.pareto import hypervolume_2d, hypervolume_history, knee, normaliser, pareto_front

MIB = 2**20
BUNDLE_MARK = "Copyright 2012-"  # the plotly.js licence banner, once per inlined bundle
FAMILIES = ("dgl", "infopro", "augment", "momentum")


def design(splits=(2,), family="dgl", width=8):
    return {"backbone": {"name": "resnet8", "args": {}}, "input_shape": [1, 16, 16], "num_classes": 10,
            "num_units": 4, "splits": list(splits), "aux": [{"family": family, "depth": 1, "width": width}
                                                             for _ in splits]}


def record(number, score, mib, state="COMPLETE", splits=(2,), family="dgl", **kw):
    d = design(splits, family)
    r = {"number": number, "trial": str(number), "state": state, "score": score,
         "peak_memory_bytes": None if mib is None else int(mib * MIB), "seconds": 1.5 + number,
         "design_hash": design_hash(d), "params": {"split_0": splits[0] if splits else 0, "family": family,
                                                   "lr": 10 ** -(1 + number % 3)},
         "design": d, "is_e2e": False, "reused_from": None,
         "history": [] if score is None else [score / 2, score], "reason": None, "K": len(splits) + 1}
    r.update(kw)
    return r


def e2e(number=0, score=0.9, mib=80.0):
    return record(number, score, mib, splits=(), is_e2e=True, K=1)


def sample_records(n=30, seed=0):
    """An E2E reference at 80 MiB, then local designs; infeasible ones above a 55 MiB budget."""
    rng = random.Random(seed)
    out = [e2e()]
    for i in range(1, n):
        splits = tuple(sorted(rng.sample([1, 2, 3], rng.randint(1, 3))))
        state = rng.choice(["COMPLETE"] * 6 + ["PRUNED", "INFEASIBLE", "FAIL"])
        mib = 10 + 40 * rng.random() / len(splits) + (rng.uniform(55, 70) if state == "INFEASIBLE" else 0)
        score = 0.5 + 0.4 * rng.random() * (1 - 0.1 * len(splits))
        out.append(record(i, None if state in ("INFEASIBLE", "FAIL") else score,
                          None if state == "FAIL" else mib, state=state, splits=splits,
                          family=rng.choice(FAMILIES), reason=None if state == "COMPLETE" else f"{state} <why>"))
    return out


def brute_front(records):
    done = [r for r in records if r["state"] == "COMPLETE"]

    def dominated(r):
        return any(o["score"] >= r["score"] and o["peak_memory_bytes"] <= r["peak_memory_bytes"]
                   and (o["score"], o["peak_memory_bytes"]) != (r["score"], r["peak_memory_bytes"]) for o in done)

    return {r["number"] for r in done if not dominated(r)}


@pytest.mark.parametrize("seed", range(5))
def test_front_matches_brute_force(seed):
    rng = random.Random(seed)
    recs = [record(i, rng.choice([0.5, 0.6, 0.7, rng.random()]), rng.choice([10, 20, rng.uniform(5, 50)]),
                   state=rng.choice(["COMPLETE", "COMPLETE", "PRUNED"])) for i in range(60)]
    front = pareto_front(recs)
    mems = [r["peak_memory_bytes"] for r in front]
    assert mems == sorted(mems)
    assert all(a["score"] < b["score"] for a, b in zip(front, front[1:], strict=False))
    # every non-dominated point is on the front, one record per distinct point
    points = {(r["score"], r["peak_memory_bytes"]) for r in recs if r["number"] in brute_front(recs)}
    assert {(r["score"], r["peak_memory_bytes"]) for r in front} == points
    assert len(front) == len(points)


def test_front_duplicates_keep_lowest_number_and_skip_other_states():
    recs = [record(5, 0.8, 10), record(2, 0.8, 10, reused_from=5), record(3, 0.7, 10), record(4, 0.99, 1,
            state="PRUNED"), record(6, 0.9, 20), record(7, 0.95, 5, state="INFEASIBLE")]
    assert [r["number"] for r in pareto_front(recs)] == [2, 6]
    assert pareto_front([]) == []


def test_hypervolume_known_cases():
    assert hypervolume_2d([(0.5, 50)], (0.0, 100)) == pytest.approx(25.0)
    # two steps: (0.5, 50) and (1.0, 80): 0.5*30 + 1.0*20
    assert hypervolume_2d([(1.0, 80), (0.5, 50)], (0.0, 100)) == pytest.approx(35.0)
    # a dominated point and points outside the box add nothing
    assert hypervolume_2d([(1.0, 80), (0.5, 50), (0.4, 60), (2.0, 100), (-1, 10)], (0.0, 100)) == pytest.approx(35.0)
    assert hypervolume_2d([], (0.0, 100)) == 0.0


def test_normalised_hypervolume_bounds_and_history():
    recs = sample_records(40, seed=1)
    done = [r for r in recs if r["state"] == "COMPLETE"]
    norm = normaliser(recs)
    assert (norm.s_lo, norm.s_hi) == (min(r["score"] for r in done), max(r["score"] for r in done))
    assert norm.m_lo == min(r["peak_memory_bytes"] for r in done)
    assert norm.point(norm.s_hi, norm.m_lo) == (1.0, 0.0) and norm.point(norm.s_lo, norm.m_hi)[0] == 0.0
    # one ideal design (best score at the lightest memory) fills the unit square, plus the margin to REF
    assert norm.hypervolume([(norm.s_hi, norm.m_lo)]) == pytest.approx(1.01 * 1.01)
    hist = hypervolume_history(recs)
    assert [n for n, _ in hist] == [str(n) for n in sorted(r["number"] for r in recs)]
    values = [v for _, v in hist]
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    front = pareto_front(recs)
    assert values[-1] == pytest.approx(norm.hypervolume((r["score"], r["peak_memory_bytes"]) for r in front))
    assert 0 < values[-1] < 1.03
    # memory's top is E2E's peak when there is one: a design heavier than E2E adds nothing
    e2e = dict(done[0], is_e2e=True, peak_memory_bytes=min(r["peak_memory_bytes"] for r in done) * 2)
    heavy = dict(done[1], number=999, score=max(r["score"] for r in done) + 1, peak_memory_bytes=e2e["peak_memory_bytes"] * 3)
    with_e2e = [e2e if r is done[0] else r for r in recs]
    assert normaliser(with_e2e).m_hi == e2e["peak_memory_bytes"]
    assert normaliser([*with_e2e, heavy]).hypervolume([(heavy["score"], heavy["peak_memory_bytes"])]) == 0.0
    assert normaliser([]) is None and hypervolume_history([]) == []


def test_knee_on_l_shaped_front():
    front = [record(1, 0.50, 10), record(2, 0.89, 20), record(3, 0.90, 30), record(4, 0.91, 100)]
    assert knee(front)["number"] == 2
    assert knee(list(reversed(front)))["number"] == 2
    assert knee(front[:2])["number"] == 2  # < 3 points: highest score
    with pytest.raises(AuxsearchError):
        knee([])


def test_families():
    d = design((1, 2, 3), "momentum")
    assert families(d) == "momentum x3"
    assert families(design(())) == "none (end-to-end)"
    assert families(None) == "-"


def test_table_has_front_and_dominated_e2e_row():
    recs = [e2e(0, 0.80, 80.0), record(1, 0.85, 30), record(2, 0.70, 10), record(3, 0.60, 40)]
    text = pareto_table(recs, metric="accuracy")
    lines = text.splitlines()
    assert "accuracy" in lines[0] and set(lines[1]) <= {"-", " "}
    e2e_line = next(line for line in lines if "E2E reference" in line)
    assert "dominated" in e2e_line and "1.00x" in e2e_line and "none (end-to-end)" in e2e_line
    assert any(line.split()[0] == "1" and "0.38x" in line for line in lines[2:])
    assert not any(line.split()[0] == "3" for line in lines[2:])
    assert "80.0" in e2e_line
    assert "no COMPLETE" in pareto_table([record(1, None, 5, state="INFEASIBLE")])


def test_report_html(tmp_path):
    recs = sample_records(25, seed=3)
    meta = {"name": "demo <study>", "metric": "accuracy", "memory_mode": "simulated",
            "memory_budget_bytes": 60 * MIB, "created": "2025-01-01", "command": "auxsearch run s.yaml"}
    path = write_report(recs, meta, tmp_path / "sub" / "report.html")
    text = path.read_text()
    assert text.count(BUNDLE_MARK) == 1
    assert "demo &lt;study&gt;" in text and "demo <study>" not in text
    assert "&lt;why&gt;" in text and "<why>" not in text  # hover text is escaped too
    assert "How to read this" in text and "E2E reference" in text and "failed trials" in text
    for r in pareto_front(recs):
        assert f"trial {r['number']}" in text
        assert f"<td class='t'>{r['number']}</td>" in text
    assert text.count("Plotly.newPlot") == 3 + len(pareto_front(recs))


@pytest.mark.parametrize("records", [[], [record(1, None, 90, state="INFEASIBLE"), record(2, None, None, state="FAIL")]])
def test_report_without_complete_trials(tmp_path, records):
    text = write_report(records, {"name": "empty", "metric": "accuracy", "memory_mode": "measured"},
                        tmp_path / "r.html").read_text()
    assert "no front" in text
    assert text.count(BUNDLE_MARK) == (1 if records else 0)
