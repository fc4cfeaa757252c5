"""`run --workers N` supervises its workers; storage faults; a run folder written whole.

* workers that keep dying are given up after --max-restarts, with one line, and the same
  command resumes; a study that stops at its timeout is not an error;
* a full disk mid-study (ENOSPC, with a partial write) gives a clear error, leaves no
  fragment in the journal, and the same command finishes the study with every finished trial;
* PostgreSQL restarted mid-study: the study still finishes with every finished trial (slow);
* pareto.yaml, trials.csv, report.html and the design files are always whole, even when
  their writer is SIGKILLed.
"""

from __future__ import annotations

import csv
import errno
import importlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pgserver
import pytest
import yaml
from test_study import write_study

from auxsearch.cli import main
from auxsearch.errors import ConfigError, StorageError
from auxsearch.outputs import files
from auxsearch.search import workers
from auxsearch.store import journal as journals
from auxsearch.store.failures import storage_failure
from auxsearch.store.storage import open_storage

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def _cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "auxsearch", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(**env), cwd=ROOT)


def _trials(journal: Path, name: str = "quickstart") -> list[optuna.trial.FrozenTrial]:
    """The references' trials, then the search's (what ``n_trials`` counts)."""
    storage = open_storage(f"journal:{journal}")
    return [t for n in (f"{name}:reference", name) for t in optuna.load_study(study_name=n, storage=storage).get_trials()]


def _finished(trials) -> dict[tuple, tuple]:
    """Finished trials by (reference or search, number)."""
    return {("enqueued" in t.user_attrs, t.number): tuple(t.values) for t in trials
            if t.state.name in ("COMPLETE", "PRUNED")}


# --- the policy in small pieces -----------------------------------------------------------------------


def test_restart_delay_doubles_up_to_the_cap():
    assert [workers.restart_delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_storage_failures_are_told_apart_from_other_errors():
    assert "No space left" in storage_failure(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/x/j"))
    assert "Read-only" in storage_failure(OSError(errno.EROFS, os.strerror(errno.EROFS)))
    assert storage_failure(StorageError("cannot open 'postgresql://...'")) is not None
    from sqlalchemy.exc import OperationalError

    db = OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    assert "server closed the connection" in storage_failure(db)
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    wrapped.__cause__ = db
    assert "server closed the connection" in storage_failure(wrapped)
    assert storage_failure(ValueError("a bug")) is None
    assert storage_failure(OSError(errno.ENOENT, "no such file")) is None
    assert storage_failure(ConfigError("enqueue.0", "bad")) is None


def test_a_journal_lock_left_by_a_killed_worker_is_released_and_a_live_one_is_not(tmp_path):
    journal = tmp_path / "study.journal"
    journal.write_text("")
    lock = Path(f"{journal}.lock")
    os.symlink(journal, lock)  # as Optuna's JournalFileSymlinkLock holds it
    watch = journals.LockWatch(journal, stale=0.3)
    watch.after_death()
    assert not watch.check() and lock.is_symlink()  # too soon to tell
    time.sleep(0.4)
    assert watch.check() and not lock.is_symlink() and watch.released == 1
    os.symlink(journal, lock)  # another worker's lock, taken and released in milliseconds
    watch.after_death()
    lock.unlink()
    os.symlink(journal, lock)  # a new lock: not the one seen at the death
    time.sleep(0.4)
    assert not watch.check() and lock.is_symlink()


def _fail_journal_writes(monkeypatch, journal: Path) -> dict:
    """os.write on ``journal`` writes half its bytes, then refuses the rest with ENOSPC (a disk filling up)."""
    real = os.write
    state = {"armed": False, "half": False, "refused": 0}

    def write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if state["armed"] and target == str(journal):
            if not state["half"]:
                state["half"] = True
                return real(fd, bytes(data)[: max(1, len(data) // 2)])
            state["half"] = False
            state["refused"] += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    return state


def test_a_journal_append_cut_by_a_full_disk_leaves_no_fragment(tmp_path, monkeypatch):
    journal = tmp_path / "study.journal"
    storage = open_storage(f"journal:{journal}")
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize"])
    study.add_trial(optuna.create_trial(values=[0.9, 1.0]))
    before = journal.read_bytes()
    state = _fail_journal_writes(monkeypatch, journal)
    state["armed"] = True
    with pytest.raises(OSError) as err:
        study.add_trial(optuna.create_trial(values=[0.8, 2.0], user_attrs={"pad": "x" * 500}))
    assert err.value.errno == errno.ENOSPC and state["refused"] == 1
    assert journal.read_bytes() == before  # the half line was cut back
    state["armed"] = False  # space again: the next append lands on a whole journal
    study.add_trial(optuna.create_trial(values=[0.7, 3.0]))
    fresh = optuna.load_study(study_name="s", storage=open_storage(f"journal:{journal}"))
    assert [t.values for t in fresh.trials] == [[0.9, 1.0], [0.7, 3.0]]


def test_a_fragment_left_by_an_older_writer_is_cut_before_the_next_append(tmp_path):
    journal = tmp_path / "study.journal"
    storage = open_storage(f"journal:{journal}")
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize"])
    study.add_trial(optuna.create_trial(values=[0.9, 1.0]))
    with open(journal, "ab") as f:  # a power cut in the middle of a line
        f.write(b'{"op_code":6,"worker_id":"x","trial_id":0,"sta')
    other = optuna.load_study(study_name="s", storage=open_storage(f"journal:{journal}"))
    other.set_user_attr("opened", True)  # another process opening the study writes first
    study.add_trial(optuna.create_trial(values=[0.7, 3.0]))
    assert journal.read_bytes().endswith(b"\n") and b'"sta{' not in journal.read_bytes()
    fresh = optuna.load_study(study_name="s", storage=open_storage(f"journal:{journal}"))
    assert [t.values for t in fresh.trials] == [[0.9, 1.0], [0.7, 3.0]] and fresh.user_attrs == {"opened": True}


# --- supervision end to end ------------------------------------------------------------------------


def _worker_children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid and \
                        b"worker" in (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


@pytest.mark.slow  # 34 s; restarts in CI: the kill -9 and run-folder tests
def test_workers_that_keep_dying_are_given_up_in_one_line_and_the_same_command_resumes(tmp_path):
    path = write_study(tmp_path, n_trials=3, enqueue=[])
    args = [sys.executable, "-m", "auxsearch", "run", str(path), "--workers", "2", "--max-restarts", "1",
            "--no-progress"]
    proc = subprocess.Popen(args, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: set[int] = set()

    def killer() -> None:  # every worker dies as soon as it exists: none can finish a trial
        while proc.poll() is None:
            for pid in _worker_children(proc.pid):
                if pid not in killed:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    out, err = proc.communicate(timeout=240)
    thread.join(5)
    assert proc.returncode == workers.EXIT_INCOMPLETE == 3, err[-3000:]
    assert len(killed) == 4  # 2 workers, each started once and restarted once
    assert err.count("killed by SIGKILL; restart 1 of 1 in 1 s") == 2, err[-3000:]
    assert err.count("gave up after 2 deaths in a row without a finished trial (--max-restarts 1)") == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("auxsearch: study incomplete: 0 of 3 finished (") and \
        last.endswith("; the same command resumes it"), last
    assert "Traceback" not in err and "run folder" not in out  # no front printed as if all went well
    assert (tmp_path / "run" / "trials.csv").is_file()  # the run folder shows where the study stands
    again = _cli("run", str(path), "--workers", "2", "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(_finished(_trials(tmp_path / "run" / "study.journal"))) == 3


@pytest.mark.slow  # 18 s of a study running into its timeout; run with -m slow
def test_a_study_that_stops_at_its_timeout_is_not_an_error(tmp_path):
    path = write_study(tmp_path, n_trials=50, enqueue=[])
    done = _cli("run", str(path), "--workers", "2", "--timeout", "1", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the study stopped at its timeout (1 s)" in done.stderr
    assert "study incomplete" not in done.stderr and "restart" not in done.stderr
    finished = len(_finished(_trials(tmp_path / "run" / "study.journal")))
    assert 1 <= finished < 50


_SITECUSTOMIZE = '''
import errno, os
_real, _state = os.write, {"completes": 0, "half": False, "more": 5}
_AFTER = int(os.environ["AUXSEARCH_TEST_ENOSPC_AFTER"])  # trials completed; then 5 more lines: a trial begins

def _write(fd, data):
    try:
        journal = os.readlink(f"/proc/self/fd/{fd}").endswith("study.journal")
    except OSError:
        journal = False
    if journal:
        if _state["completes"] >= _AFTER and _state["more"] > 0:
            _state["more"] -= 1
        elif _state["completes"] >= _AFTER:  # the disk is full: half a line goes in, then ENOSPC
            if not _state["half"]:
                _state["half"] = True
                return _real(fd, bytes(data)[: max(1, len(data) // 2)])
            _state["half"] = False
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if b'"state":1,"values":[' in bytes(data):
            _state["completes"] += 1
    return _real(fd, data)

os.write = _write
'''


def test_a_full_disk_mid_study_is_a_clear_error_and_the_same_command_finishes_it(tmp_path):
    path = write_study(tmp_path, n_trials=4, enqueue=[])
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    full = _cli("run", str(path), "--no-progress", PYTHONPATH=f"{hook}{os.pathsep}{ROOT}",
                AUXSEARCH_TEST_ENOSPC_AFTER="2")
    assert full.returncode == workers.EXIT_INCOMPLETE, full.stderr[-3000:]
    last = full.stderr.strip().splitlines()[-1]
    assert last == ("auxsearch: study incomplete: 2 of 4 finished (cannot write the study's storage: "
                    "No space left on device); the same command resumes it"), full.stderr[-3000:]
    assert "Traceback" not in full.stderr
    journal = tmp_path / "run" / "study.journal"
    raw = journal.read_bytes()
    assert raw.endswith(b"\n")  # no fragment of the refused line
    for line in raw.splitlines():
        json.loads(line)  # every line whole
    before = _finished(_trials(journal))
    assert len(before) == 2
    again = _cli("run", str(path), "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    after = _trials(journal)
    assert len(_finished(after)) == 4
    assert all(_finished(after)[n] == v for n, v in before.items())  # nothing finished was lost
    cut = [t for t in after if t.state.name == "FAIL"]  # the trial running when the disk filled
    assert len(cut) == 1 and "worker died" in cut[0].user_attrs["reason"], [(t.number, t.state) for t in after]
    assert any(t.system_attrs.get("failed_trial") == cut[0].number for t in after)  # and retried


@pytest.mark.slow
def test_postgresql_restarted_mid_study_the_study_still_finishes(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        chaos = importlib.import_module("chaos")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    try:
        pg = chaos.Postgres()
        pg.start()
    except pgserver.PostgresUnavailable as exc:
        pgserver.unavailable(str(exc))  # skipped like the postgres_url fixture (a failure where required)
    try:
        study = chaos.write_study(tmp_path, quick=True)
        proc = subprocess.Popen([sys.executable, "-m", "auxsearch", "run", str(study), "--workers", "2",
                                 "--storage", pg.url, "--no-progress"], env=_env(), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 180
        before: dict[int, tuple] = {}
        while time.time() < deadline and len(before) < 2 and proc.poll() is None:
            time.sleep(0.5)
            try:
                before = _finished(chaos.load_trials(pg.url, "chaos"))
            except Exception:  # not created yet
                pass
        assert len(before) >= 2 and proc.poll() is None, "the study never got going"
        pg.restart(down_seconds=3.0)  # every connection is closed; the server is gone for 3 s
        out, err = proc.communicate(timeout=300)
        print(err[-4000:])  # what the workers and their supervisor said (pytest -s)
        assert proc.returncode == 0, err[-4000:]
        assert "Traceback" not in err  # each worker that lost the database said so in one line
        after = _finished(chaos.load_trials(pg.url, "chaos"))
        assert len(after) == chaos.n_trials_of(study)
        assert all(after[n] == v for n, v in before.items())
    finally:
        if proc.poll() is None:
            proc.kill()
        pg.stop()


# --- the run folder, written whole -----------------------------------------------------------------

_WRITER = '''
import sys
from pathlib import Path
from auxsearch.outputs.runfolder import load_run, write_outputs
folder = Path(sys.argv[1])
meta, records = load_run(folder)
print("ready", flush=True)
while True:
    write_outputs(folder, meta, records)
'''


def _whole(folder: Path, expect: dict) -> None:
    """Every output parses and holds what it must; no temporary file stands where an output is read."""
    pareto = yaml.safe_load((folder / "pareto.yaml").read_text())
    assert [e["trial"] for e in pareto["front"]] == expect["front"]
    rows = list(csv.DictReader(io.StringIO((folder / "trials.csv").read_text())))
    assert [r["trial"] for r in rows] == expect["rows"]
    html = (folder / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.endswith("</html>\n")
    for n in expect["front"]:
        assert yaml.safe_load((folder / "designs" / f"trial-{n}.yaml").read_text())["design_hash"]


def test_the_run_folder_is_always_whole_even_when_its_writer_is_killed(tmp_path, capsys):
    path = write_study(tmp_path, n_trials=3, enqueue=[])
    first = _cli("run", str(path), "--no-progress")  # one thread: quick on a busy machine too
    assert first.returncode == 0, first.stderr[-3000:]
    folder = tmp_path / "run"
    expect = {"front": [e["trial"] for e in yaml.safe_load((folder / "pareto.yaml").read_text())["front"]],
              "rows": ["e2e", "0", "1"]}
    outputs = {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}
    rng = random.Random(0)
    reads, kills = 0, 0
    for _ in range(3):
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(folder)], env=_env(), cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True)
        try:  # a failed check must not leave the writer looping after the test
            assert writer.stdout.readline().strip() == "ready"
            stop = time.monotonic() + rng.uniform(1.0, 3.0)
            while time.monotonic() < stop:  # read while it writes
                _whole(folder, expect)
                reads += 1
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait()
        kills += 1
        _whole(folder, expect)  # whatever it was doing when it died
    assert reads >= 20 and kills == 3
    left = {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()} - outputs
    assert all(files.is_temporary(p) for p in left), left  # only hidden .NAME.PID.XXXX.tmp files, if any
    for p in left:  # an hour later, the next write sweeps them away
        os.utime(folder / p, (time.time() - 2 * files.STALE_TEMP_SECONDS,) * 2)
    assert main(["plot", str(folder)]) == 0
    assert {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()} == outputs
    assert main(["show", str(folder), "--json"]) == 0
    assert [e["trial"] for e in json.loads(capsys.readouterr().out.splitlines()[-1])["front"]] == expect["front"]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "pareto.yaml"
    files.atomic_write_text(target, "old: 1\n")

    def half(tmp: Path) -> None:
        tmp.write_text("new: [1, 2")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError):
        files.atomic_write(target, half)
    assert target.read_text() == "old: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pareto.yaml"]  # the temporary file is gone too
