"""optuna-dashboard opens a run's journal storage: the study, its objective names and its trials.

optuna-dashboard is an optional extra (``pip install -e ".[dashboard]"``; ``dev`` includes it).
Its WSGI app is called in-process (a WSGI environ in, JSON out): no server, no socket.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import pytest
from test_study import write_study

from auxsearch.cli import main
from auxsearch.outputs import runfolder as rundir
from auxsearch.store.storage import open_storage

optuna_dashboard = pytest.importorskip(
    "optuna_dashboard", reason="optuna-dashboard is not installed (the optional extra: pip install -e '.[dashboard]')")

SPACE = {"modules": 2, "splits": "balanced", "families": "dgl", "depth": 1, "width": 8, "momentum": 0.99,
         "learnable_scale": True, "head": "dgl", "pool": 4}


def get(app, path: str) -> tuple[str, dict]:
    """GET ``path`` from a WSGI app: (status line, JSON body)."""
    environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO(b"")}
    setup_testing_defaults(environ)
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = status

    body = b"".join(app(environ, start_response))
    return seen["status"], json.loads(body) if body.strip().startswith(b"{") else {}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("dashboard")
    path = write_study(tmp, search_space=SPACE, n_trials=3, enqueue=[], pruning={"enabled": False},
                       objectives=["score", "memory", "seconds"],
                       train={"epochs": 1, "batch_size": 64, "lr": 0.05, "device": "cpu"})
    assert main(["run", str(path), "--no-progress"]) == 0
    return tmp / "run"


def test_the_dashboard_serves_the_run_study_objectives_and_trials(run_dir):
    meta = rundir.read_meta(run_dir)
    assert meta["storage"].startswith("journal:") and (run_dir / "study.journal").is_file()
    app = optuna_dashboard.wsgi(open_storage(meta["storage"], create=False))

    status, listing = get(app, "/api/studies")
    assert status.startswith("200"), status
    studies = {s["study_name"]: s for s in listing["study_summaries"]}
    assert {"quickstart", "quickstart:reference"} <= set(studies), list(studies)  # the search, E2E beside it
    summary = studies["quickstart"]
    assert summary["directions"] == ["maximize", "minimize", "minimize"]

    status, detail = get(app, f"/api/studies/{summary['study_id']}")
    assert status.startswith("200"), status
    assert detail["name"] == "quickstart"
    assert detail["objective_names"] == ["accuracy", "peak_memory_bytes", "seconds"], detail.get("objective_names")
    trials = detail["trials"]
    assert [t["number"] for t in trials] == [0, 1]
    assert all(t["state"] == "Complete" and len(t["values"]) == 3 for t in trials)
    assert 0.0 < trials[0]["values"][0] <= 1.0 and trials[0]["values"][1] > 0  # accuracy, peak bytes
    _, records = rundir.load_run(run_dir)  # the same numbers auxsearch reports
    searched = [r for r in records if not r["reference"]]
    assert [r["score"] for r in searched] == pytest.approx([t["values"][0] for t in trials])
    assert [r["peak_memory_bytes"] for r in searched] == [t["values"][1] for t in trials]
    status, ref = get(app, f"/api/studies/{studies['quickstart:reference']['study_id']}")
    assert status.startswith("200") and ref["objective_names"] == detail["objective_names"]
    assert [t["state"] for t in ref["trials"]] == ["Complete"]  # the E2E reference

    status, _ = get(app, f"/api/studies/{summary['study_id'] + 99}")
    assert status.startswith("404")
