"""Malformed input at every place a user types, through the real CLI entry point.

Every case must end the same way: exit code 2, one line on stderr that starts with
``auxsearch: error:`` and names the offending key (or CLI option, or file), and no
traceback anywhere. Most cases only parse; one module-scoped fixture trains a tiny run
for the commands that read run folders.
"""

from __future__ import annotations

import copy
import shutil
import traceback
from pathlib import Path

import optuna
import pytest
import yaml
from test_study import write_study as tiny_study

from auxsearch.cli import main

ROOT = Path(__file__).resolve().parents[1]
DESIGNS = ROOT / "studies" / "designs"
PREFIX = "auxsearch: error: "
KNOWN_FAMILIES = ("augment", "dgl", "infopro", "momentum")


# ----------------------------------------------------------------------------- helpers


def run_cli(argv: list, capsys) -> tuple[object, str, str]:
    """``main(argv)`` as the console script runs it: (exit code, stdout, stderr)."""
    capsys.readouterr()
    extra = ""
    try:
        code: object = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse, or anything else that exits
        code = exc.code
    except Exception:  # what the console script would print as a traceback
        code = "uncaught exception"
        extra = traceback.format_exc()
    out, err = capsys.readouterr()
    return code, out, err + extra


def assert_user_error(argv: list, capsys, *needles: str) -> None:
    code, out, err = run_cli(argv, capsys)
    shown = f"argv: {[str(a) for a in argv]}\nexit: {code!r}\nstdout: {out!r}\nstderr: {err!r}"
    assert "Traceback" not in out + err, shown
    assert code == 2, shown
    assert err.startswith(PREFIX), shown
    assert err.endswith("\n") and err.count("\n") == 1, f"stderr is not exactly one line\n{shown}"
    missing = [n for n in needles if n not in err]
    assert not missing, f"message does not name {missing}\n{shown}"


def write_study(folder: Path, **overrides) -> Path:
    """A tiny valid study (quickstart, 1 epoch at 8x8, 2 trials), with top-level keys replaced."""
    return tiny_study(folder, **{"n_trials": 2, **overrides})


TINY_DESIGN = {
    "version": 1,
    "backbone": {"name": "resnet8", "args": {}},
    "input_shape": [1, 16, 16],
    "num_classes": 10,
    "num_units": 4,
    "splits": [2],
    "aux": [{"family": "dgl", "depth": 1, "width": 8}],
    "data": {"name": "digits", "image_size": 16},
    "train": {"epochs": 1, "batch_size": 64},
}


def design_text(**changes) -> str:
    """The tiny design with top-level keys replaced (a value of ``...`` deletes the key)."""
    d = copy.deepcopy(TINY_DESIGN)
    for k, v in changes.items():
        if v is ...:
            d.pop(k, None)
        else:
            d[k] = v
    return yaml.safe_dump(d, sort_keys=False)


def aux(**entry) -> list[dict]:
    return [{"family": "dgl", "depth": 1, "width": 8, **entry}]


def stale_hash_design() -> str:
    """A saved design whose splits were edited while its design_hash line was kept."""
    raw = yaml.safe_load((DESIGNS / "digits_dgl_k4.yaml").read_text())
    assert raw["splits"] == [3, 5, 7] and raw["design_hash"]
    raw["splits"] = [2, 5, 7]
    return yaml.safe_dump(raw, sort_keys=False)


# ----------------------------------------------------------------------------- study files

# (id, how to make the study, words the error line must hold). ``change`` is either a dict
# of top-level overrides for write_study, raw YAML text, or a callable(tmp_path) -> path.


def _raw(text: str):
    def make(tmp: Path) -> Path:
        path = tmp / "study.yaml"
        path.write_text(text)
        return path
    return make


def _with_space_file(text: str):
    def make(tmp: Path) -> Path:
        (tmp / "space.yaml").write_text(text)
        return write_study(tmp, search_space="space.yaml")
    return make


def _with_enqueued_file(text: str):
    def make(tmp: Path) -> Path:
        (tmp / "mine.yaml").write_text(text)
        return write_study(tmp, enqueue=["mine.yaml"])
    return make


def _missing_study(tmp: Path) -> Path:
    return tmp / "no_such_study.yaml"


SS = "search_space"
STUDY_CASES = [
    # YAML syntax: the line number is named
    ("yaml-bad-indent", _raw("name: x\ntrain:\n  epochs: 2\n   batch_size: 3\n"), ("line 4",)),
    ("yaml-tab", _raw("name: x\ntrain:\n\tepochs: 2\n"), ("line 3",)),
    ("yaml-two-colons", _raw("name: x\nn_trials: 3: 4\nseed: 1\n"), ("line 2",)),
    ("yaml-unclosed-flow", _raw("name: x\ntrain: {epochs: 2\nn_trials: 3\n"), ("line 3",)),
    ("study-file-missing", _missing_study, ("no_such_study.yaml",)),
    ("study-is-a-list", _raw("- name: x\n- n_trials: 3\n"), ("study.yaml",)),
    # unknown keys at every level
    ("unknown-top", {"n_trails": 3}, ("n_trails", "n_trials")),
    ("unknown-train", {"train": {"epochz": 1}}, ("train.epochz",)),
    ("unknown-memory", {"memory": {"budjet": "2MiB"}}, ("memory.budjet",)),
    ("unknown-sampler", {"sampler": {"seeed": 1}}, ("sampler.seeed",)),
    ("unknown-pruning", {"pruning": {"margn": 0.1}}, ("pruning.margn",)),
    ("unknown-search-space", {SS: {"modulez": 3}}, ("search_space.modulez",)),
    ("unknown-range-key", {SS: {"momentum": {"low": 0.9, "high": 0.99, "stepp": 0.01}}},
     ("search_space.momentum.stepp",)),
    ("unknown-space-file-key", _with_space_file("modules: 2\nwidths: [8]\n"), ("search_space.widths",)),
    ("unknown-data-key", {"data": {"name": "digits", "imagesize": 8}}, ("data.imagesize",)),
    ("unknown-backbone-key", {"backbone": {"name": "resnet20", "argz": {}}}, ("backbone.argz",)),
    # wrong types
    ("n-trials-string", {"n_trials": "ten"}, ("n_trials",)),
    ("n-trials-bool", {"n_trials": True}, ("n_trials",)),
    ("n-trials-float", {"n_trials": 2.5}, ("n_trials",)),
    ("train-list", {"train": [1, 2]}, ("train",)),
    ("train-epochs-bool", {"train": {"epochs": True}}, ("train.epochs",)),
    ("train-epochs-string", {"train": {"epochs": "one"}}, ("train.epochs",)),
    ("train-lr-string", {"train": {"lr": "fast"}}, ("train.lr",)),
    ("memory-batch-string", {"memory": {"batch_size": "big"}}, ("memory.batch_size",)),
    ("memory-input-size-one", {"memory": {"input_size": [8]}}, ("memory.input_size",)),
    ("sampler-string", {"sampler": "tpe"}, ("sampler",)),
    ("pruning-enabled-string", {"pruning": {"enabled": "yes"}}, ("pruning.enabled",)),
    ("objectives-string", {"objectives": "score"}, ("objectives",)),
    ("enqueue-string", {"enqueue": "man_k4"}, ("enqueue",)),
    ("timeout-string", {"timeout": "soon"}, ("timeout",)),
    ("data-list", {"data": ["digits"]}, ("data",)),
    ("space-depth-low-string", {SS: {"depth": {"low": "1", "high": 3}}}, ("search_space.depth.low",)),
    ("space-per-module-string", {SS: {"per_module": "yes"}}, ("search_space.per_module",)),
    ("space-list", {SS: ["modules", "depth"]}, ("search_space",)),
    ("space-file-is-a-list", _with_space_file("- modules\n- depth\n"), ("search_space",)),
    # impossible values
    ("momentum-range-high-1", {SS: {"momentum": {"low": 0.9, "high": 1.0}}}, ("search_space.momentum.high",)),
    ("momentum-range-low-0", {SS: {"momentum": {"low": 0.0, "high": 0.9}}}, ("search_space.momentum.low",)),
    ("momentum-list-1", {SS: {"momentum": [0.9, 1.0]}}, ("search_space.momentum.1",)),
    ("momentum-list-negative", {SS: {"momentum": [-0.5]}}, ("search_space.momentum.0",)),
    ("momentum-fixed-1.5", {SS: {"momentum": 1.5}}, ("search_space.momentum",)),
    ("splits-setting", {SS: {"splits": "sometimes"}}, ("search_space.splits",)),
    ("grid-with-free-splits", {"sampler": {"name": "grid"}, SS: {"splits": "free"}}, ("search_space.splits",)),
    ("grid-with-a-skew-range", {"sampler": {"name": "grid"}}, ("search_space.skew", "float range")),
    ("K-beyond-units", {SS: {"modules": {"low": 2, "high": 40}}}, ("search_space.modules", "40")),
    ("K-low-above-high", {SS: {"modules": {"low": 4, "high": 2}}}, ("search_space.modules",)),
    ("K-zero", {SS: {"modules": 0}}, ("search_space.modules",)),
    ("space-depth-zero", {SS: {"depth": 0}}, ("search_space.depth",)),
    ("space-tau-2", {SS: {"tau": 2.0}}, ("search_space.tau",)),
    ("space-width-empty", {SS: {"width": []}}, ("search_space.width",)),
    ("space-head-unknown", {SS: {"head": ["dgl", "bogus"]}}, ("search_space.head.1",)),
    ("epochs-negative", {"train": {"epochs": -1}}, ("train.epochs",)),
    ("batch-size-negative", {"train": {"batch_size": -8}}, ("train.batch_size",)),
    ("lr-negative", {"train": {"lr": -0.1}}, ("train.lr",)),
    ("train-momentum-1", {"train": {"momentum": 1.0}}, ("train.momentum",)),
    ("train-device-gpu", {"train": {"device": "gpu"}}, ("train.device", "cuda")),
    ("n-trials-zero", {"n_trials": 0}, ("n_trials",)),
    ("timeout-negative", {"timeout": -5}, ("timeout",)),
    ("budget-lots", {"memory": {"budget": "lots"}}, ("memory.budget",)),
    ("budget-negative", {"memory": {"budget": "-1MiB"}}, ("memory.budget",)),
    ("budget-zero", {"memory": {"budget": 0}}, ("memory.budget",)),
    ("memory-input-size-zero", {"memory": {"input_size": [0, 8]}}, ("memory.input_size",)),
    ("population-size-1", {"sampler": {"population_size": 1}}, ("sampler.population_size",)),
    ("min-rivals-0", {"pruning": {"min_rivals": 0}}, ("pruning.min_rivals",)),
    ("digits-image-size-4", {"data": {"name": "digits", "image_size": 4}}, ("data.image_size",)),
    # data paths
    ("cifar10-root-missing", {"data": {"name": "cifar10", "root": "no/such/folder"}}, ("data.root",)),
    ("imagefolder-no-root", {"data": {"name": "imagefolder"}}, ("data.root",)),
    ("imagefolder-root-missing", {"data": {"name": "imagefolder", "root": "no/such/folder"}}, ("data.root",)),
    # unknown names list the known ones
    ("unknown-backbone", {"backbone": {"name": "resnet21"}}, ("backbone.name", "resnet21", "resnet20")),
    ("unknown-python-backbone", {"backbone": {"python": "no_such_module:fn"}}, ("backbone.python",)),
    ("unknown-data-set", {"data": {"name": "mnist"}}, ("data.name", "mnist", "cifar10", "digits")),
    ("unknown-sampler-name", {"sampler": {"name": "bayes"}}, ("sampler.name", "bayes", "tpe", "nsga2")),
    ("unknown-aux-family", {SS: {"families": ["dgl", "dgll"]}}, ("search_space.families.1", *KNOWN_FAMILIES)),
    ("unknown-optimizer", {"train": {"optimizer": "lion"}}, ("train.optimizer", "sgd", "adamw")),
    # files named by the study
    ("space-file-missing", {SS: "nowhere.yaml"}, ("search_space", "nowhere.yaml")),
    ("space-file-yaml-error", _with_space_file("modules: 2\ndepth: {low: 1, high: 2\nwidth: 8\n"),
     ("search_space", "line 3")),
    ("enqueue-unknown-name", {"enqueue": ["man_k5"]}, ("enqueue.0", "man_k5", "man_k4")),
    ("enqueue-missing-file", {"enqueue": ["man_k4", "missing.yaml"]}, ("enqueue.1", "missing.yaml")),
    ("enqueue-other-backbone", _with_enqueued_file(design_text()), ("enqueue.0", "backbone")),
    ("enqueue-file-yaml-error", _with_enqueued_file("backbone: [resnet20\n"), ("enqueue.0", "line")),
    # objectives
    ("objectives-wrong-order", {"objectives": ["memory", "score"]}, ("objectives",)),
    ("objectives-duplicate", {"objectives": ["score", "memory", "score"]}, ("objectives",)),
    ("objectives-unknown", {"objectives": ["score", "memory", "accuracy"]}, ("objectives",)),
]


@pytest.mark.parametrize("change, needles", [pytest.param(c, n, id=i) for i, c, n in STUDY_CASES])
def test_validate_refuses_a_bad_study_file(tmp_path, capsys, change, needles):
    path = change(tmp_path) if callable(change) else write_study(tmp_path, **change)
    assert_user_error(["validate", path], capsys, *needles)


def test_run_refuses_a_bad_study_file_before_training(tmp_path, capsys):
    path = write_study(tmp_path, train={"epochs": 1, "batch_size": "big"})
    assert_user_error(["run", path, "--no-progress"], capsys, "train.batch_size")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- design files

# (id, design text or callable() -> text, words, commands). Commands: the design runs
# through ``train DESIGN --epochs 1`` and/or ``memory DESIGN --batch-size 2``.

TINY_LINES = design_text().count("\n")  # the bad-indent case adds 3 lines after these
BOTH = ("train", "memory")
TRAIN = ("train",)  # the data block is only read when training
DESIGN_CASES = [
    ("yaml-unclosed-flow", "backbone: {name: resnet8\ninput_shape: [1, 16, 16]\nnum_classes: 10\n",
     ("line 2",), BOTH),
    ("yaml-bad-indent", design_text() + "train:\n  epochs: 1\n   batch_size: 3\n",
     (f"line {TINY_LINES + 3}",), BOTH),
    ("design-is-a-list", "- backbone: resnet8\n- num_units: 4\n", ("bad.yaml",), BOTH),
    ("unknown-top-key", design_text(splitz=[2]), ("splitz",), BOTH),
    ("unknown-aux-option", design_text(aux=aux(momentum=0.9)), ("aux.0.momentum",), BOTH),
    ("splits-not-increasing", design_text(splits=[2, 2], aux=aux() * 2), ("splits.1",), BOTH),
    ("splits-past-the-last-unit", design_text(splits=[4]), ("splits.0",), BOTH),
    ("splits-zero", design_text(splits=[0]), ("splits.0",), BOTH),
    ("splits-not-a-list", design_text(splits=2), ("splits",), BOTH),
    ("aux-too-few", design_text(splits=[1, 2]), ("aux",), BOTH),
    ("aux-too-many", design_text(aux=aux() * 2), ("aux",), BOTH),
    ("aux-entry-string", design_text(aux=["dgl"]), ("aux.0",), BOTH),
    ("aux-momentum-1", design_text(aux=[{"family": "momentum", "momentum": 1.0}]), ("aux.0.momentum",), BOTH),
    ("aux-depth-0", design_text(aux=aux(depth=0)), ("aux.0.depth",), BOTH),
    ("aux-width-string", design_text(aux=aux(width="wide")), ("aux.0.width",), BOTH),
    ("aux-unknown-family", design_text(aux=[{"family": "dgll"}]), ("aux.0.family", "dgll", *KNOWN_FAMILIES),
     BOTH),
    ("aux-head-only-option", design_text(aux=[{"family": "momentum", "head": "infopro", "pool": 4}]),
     ("aux.0.pool",), BOTH),
    ("stale-design-hash", stale_hash_design, ("design_hash",), BOTH),
    ("input-shape-two-numbers", design_text(input_shape=[16, 16]), ("input_shape",), BOTH),
    ("input-shape-string-entry", design_text(input_shape=[1, 16, "16"]), ("input_shape.2",), BOTH),
    ("num-classes-missing", design_text(num_classes=...), ("num_classes",), BOTH),
    ("num-units-wrong", design_text(num_units=5, splits=[4]), ("num_units",), BOTH),
    ("version-2", design_text(version=2), ("version",), BOTH),
    ("unknown-backbone", design_text(backbone={"name": "resnet9"}), ("backbone.name", "resnet9", "resnet20"),
     BOTH),
    ("python-backbone-missing-module", design_text(backbone={"python": "no_such_module:fn"}),
     ("backbone.python", "no_such_module"), BOTH),
    ("train-unknown-key", design_text(train={"epochz": 1}), ("train.epochz",), BOTH),
    ("train-epochs-string", design_text(train={"epochs": "one"}), ("train.epochs",), BOTH),
    ("train-block-list", design_text(train=[1]), ("train",), BOTH),
    ("data-shape-mismatch", design_text(input_shape=[3, 32, 32]), ("input_shape",), TRAIN),
    ("data-classes-mismatch", design_text(num_classes=100), ("num_classes",), TRAIN),
    ("data-unknown-name", design_text(data={"name": "mnist"}), ("data.name", "digits"), TRAIN),
    ("data-cifar10-root-missing", design_text(data={"name": "cifar10", "root": "no/such/folder"}),
     ("data.root",), TRAIN),
    ("data-imagefolder-no-root", design_text(data={"name": "imagefolder"}), ("data.root",), TRAIN),
]

COMMAND_ARGS = {"train": ["--epochs", "1"], "memory": ["--batch-size", "2"]}


@pytest.mark.parametrize("cmd, text, needles", [
    pytest.param(cmd, text, needles, id=f"{cmd}-{name}")
    for name, text, needles, cmds in DESIGN_CASES for cmd in cmds])
def test_bad_design_file(tmp_path, capsys, cmd, text, needles):
    path = tmp_path / "bad.yaml"
    path.write_text(text() if callable(text) else text)
    assert_user_error([cmd, path, *COMMAND_ARGS[cmd]], capsys, *needles)


@pytest.mark.parametrize("cmd", ["train", "memory", "draw"])
def test_missing_design_file(tmp_path, capsys, cmd):
    args = {"train": ["--epochs", "1"], "memory": ["--batch-size", "2"], "draw": ["-o", tmp_path / "d.html"]}
    assert_user_error([cmd, tmp_path / "no_such_design.yaml", *args[cmd]], capsys, "no_such_design.yaml")


def test_draw_refuses_a_bad_design(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(design_text(aux=aux(depth=0)))
    assert_user_error(["draw", path, "-o", tmp_path / "d.html"], capsys, "aux.0.depth")
    assert not (tmp_path / "d.html").exists()


# ----------------------------------------------------------------------------- CLI options on designs

GOOD_DESIGN = DESIGNS / "digits_dgl_k4.yaml"
OPTION_CASES = [
    ("train-epochs-0", ["train", GOOD_DESIGN, "--epochs", "0"], "--epochs"),
    ("train-batch-size-0", ["train", GOOD_DESIGN, "--epochs", "1", "--batch-size", "0"], "--batch-size"),
    ("train-seed-negative", ["train", GOOD_DESIGN, "--epochs", "1", "--seed", "-1"], "--seed"),
    ("memory-batch-size-0", ["memory", GOOD_DESIGN, "--batch-size", "0"], "--batch-size"),
    ("memory-input-size-0", ["memory", GOOD_DESIGN, "--batch-size", "2", "--input-size", "0", "0"],
     "--input-size"),
    ("memory-measured-on-no-such-device", ["memory", GOOD_DESIGN, "--batch-size", "2", "--mode", "measured",
                                           "--device", "tpu"], "--device"),
]


@pytest.mark.parametrize("argv, option", [pytest.param(a, o, id=i) for i, a, o in OPTION_CASES])
def test_bad_cli_option_on_a_design(capsys, argv, option):
    assert_user_error(argv, capsys, option)


# ----------------------------------------------------------------------------- run folders


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real run (references E2E + man_k4, 1 epoch at 8x8), plus a failed and a pruned search trial (0, 1)."""
    tmp = tmp_path_factory.mktemp("bad_input_run")
    path = write_study(tmp, n_trials=2)
    assert main(["run", str(path), "--no-progress"]) == 0
    run = tmp / "run"
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(run / "study.journal")))
    study = optuna.load_study(study_name="quickstart", storage=storage)  # the search: no trial yet
    references = optuna.load_study(study_name="quickstart:reference", storage=storage)
    done = references.get_trials(deepcopy=False)[1]  # the man_k4 trial: a real design to borrow
    for state, attrs in ((optuna.trial.TrialState.FAIL, {"reason": "RuntimeError: boom"}),
                         (optuna.trial.TrialState.PRUNED, {"reason": "epoch 1: dominated",
                                                           "history": [0.1], "seconds": 0.5,
                                                           "peak_memory_bytes": 1000})):
        trial = study.ask()
        for k in ("design", "design_hash", "K"):
            trial.set_user_attr(k, done.user_attrs[k])
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        study.tell(trial, state=state)
    return path, run


def _copy_run(run: Path, tmp: Path, *names: str) -> Path:
    dest = tmp / "copied_run"
    dest.mkdir()
    for n in names:
        shutil.copy(run / n, dest / n)
    return dest


def _not_a_run(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _nowhere(tmp: Path) -> Path:
    return tmp / "no_such_folder"


def _run_yaml_broken(run: Path, tmp: Path) -> Path:
    dest = _copy_run(run, tmp, "study.journal")
    (dest / "run.yaml").write_text("name: quickstart\nstorage: journal:study.journal\n  metric: [x\n")
    return dest


def _run_yaml_no_storage(run: Path, tmp: Path) -> Path:
    dest = _copy_run(run, tmp, "study.journal")
    (dest / "run.yaml").write_text("name: quickstart\nmetric: accuracy\n")
    return dest


def _journal_deleted(run: Path, tmp: Path) -> Path:
    return _copy_run(run, tmp, "run.yaml")


# (id, argv from (run, study, tmp), words)
RUN_CASES = [
    ("show-not-a-run", lambda run, study, tmp: ["show", _not_a_run(tmp)], ("empty", "run.yaml")),
    ("plot-not-a-run", lambda run, study, tmp: ["plot", _not_a_run(tmp)], ("empty", "run.yaml")),
    ("export-not-a-run", lambda run, study, tmp: ["export", _not_a_run(tmp), "-o", tmp / "x.yaml"],
     ("empty", "run.yaml")),
    ("show-no-such-folder", lambda run, study, tmp: ["show", _nowhere(tmp)], ("no_such_folder",)),
    ("show-broken-run-yaml", lambda run, study, tmp: ["show", _run_yaml_broken(run, tmp)],
     ("run.yaml", "line 3")),
    ("show-run-yaml-without-storage", lambda run, study, tmp: ["show", _run_yaml_no_storage(run, tmp)],
     ("run.yaml", "storage")),
    ("show-journal-deleted", lambda run, study, tmp: ["show", _journal_deleted(run, tmp)],
     ("study.journal",)),
    ("export-trial-99", lambda run, study, tmp: ["export", run, "--trial", "99", "-o", tmp / "x.yaml"],
     ("--trial", "99")),
    ("export-trial-negative", lambda run, study, tmp: ["export", run, "--trial", "-1", "-o", tmp / "x.yaml"],
     ("--trial",)),
    ("export-trial-failed", lambda run, study, tmp: ["export", run, "--trial", "0", "-o", tmp / "x.yaml"],
     ("--trial", "fail")),
    ("export-trial-pruned", lambda run, study, tmp: ["export", run, "--trial", "1", "-o", tmp / "x.yaml"],
     ("--trial", "pruned")),
    ("export-max-memory-1KiB", lambda run, study, tmp: ["export", run, "--max-memory", "1KiB",
                                                        "-o", tmp / "x.yaml"], ("--max-memory",)),
    ("export-max-memory-12parsecs", lambda run, study, tmp: ["export", run, "--max-memory", "12parsecs",
                                                             "-o", tmp / "x.yaml"],
     ("--max-memory", "12parsecs")),
    ("export-max-memory-0", lambda run, study, tmp: ["export", run, "--max-memory", "0", "-o", tmp / "x.yaml"],
     ("--max-memory",)),
    ("export-max-memory-negative", lambda run, study, tmp: ["export", run, "--max-memory=-5MiB",
                                                            "-o", tmp / "x.yaml"], ("--max-memory",)),
    ("export-output-is-a-folder", lambda run, study, tmp: ["export", run, "--best-score", "-o", tmp],
     ("--output",)),
    ("run-n-trials-0", lambda run, study, tmp: ["run", study, "--no-progress", "--n-trials", "0"],
     ("--n-trials",)),
    ("run-timeout-negative", lambda run, study, tmp: ["run", study, "--no-progress", "--timeout", "-5"],
     ("--timeout",)),
]


@pytest.mark.parametrize("make_argv, needles", [pytest.param(a, n, id=i) for i, a, n in RUN_CASES])
def test_bad_use_of_a_run_folder(tiny_run, tmp_path, capsys, make_argv, needles):
    study, run = tiny_run
    assert_user_error(make_argv(run, study, tmp_path), capsys, *needles)
