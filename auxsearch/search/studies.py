"""Opening (or resuming) a prepared study's search in its storage, with its references enqueued.

The search study holds only designs a sampler drew; the end-to-end reference and the designs
the study enqueues by name are trials of the sibling reference study (why:
docs/concepts.md, "Where trials live"). The reference is trained until it completes: when no
E2E trial of the reference study is COMPLETE, waiting or running, a new one is enqueued.
``n_trials`` counts the finished trials of both studies.
"""

from __future__ import annotations

import platform
import warnings

import optuna
from optuna.trial import TrialState

from auxsearch.errors import ConfigError
from auxsearch.search.ehvi import EHVISampler
from auxsearch.search.prepare import PreparedStudy, enqueued_designs
from auxsearch.search.samplers import make_sampler
from auxsearch.store.record import SearchAttrs
from auxsearch.store.storage import RunStudies, open_run
from auxsearch.train.devices import device_name
from auxsearch.version import __version__

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ALIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING, TrialState.RUNNING)  # not retried


def open_search(p: PreparedStudy, sampler: optuna.samplers.BaseSampler | None = None) -> RunStudies:
    """Create or resume the run's studies in its storage (a journal file by default)."""
    sampler = sampler or make_sampler(p)
    studies = open_run(p.storage_url, p.cfg.name, directions=p.directions(), sampler=sampler)
    if [d.name.lower() for d in studies.search.directions] != p.directions():
        raise ConfigError("objectives", f"the stored study {p.cfg.name!r} has other objectives; "
                          "use another name or output folder")
    with warnings.catch_warnings():  # experimental in Optuna; we rely on it on purpose
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for study in (studies.search, studies.references()):  # the dashboard names both studies' values
            study.set_metric_names(p.metric_names())
    if "auxsearch" not in studies.search.user_attrs:
        studies.search.set_user_attr("auxsearch", provenance(p))
    enqueue_references(p, studies)
    if isinstance(sampler, EHVISampler):  # the references are points of its front
        sampler.references = lambda: studies.references().get_trials(deepcopy=False)
    return studies


def enqueue_references(p: PreparedStudy, studies: RunStudies) -> None:
    """Enqueue the E2E reference and each enqueued design unless a trial of it finished, waits or runs
    (a failed one is tried again by the next ``run``)."""
    ref = studies.references()
    alive = {SearchAttrs.of(t).enqueued for t in ref.get_trials(deepcopy=False) if t.state in ALIVE}
    if "e2e" not in alive:
        ref.enqueue_trial({}, user_attrs={"is_e2e": True, "enqueued": "e2e"})
    for name, design in enqueued_designs(p):
        if name not in alive:
            ref.enqueue_trial({}, user_attrs={"design": design, "enqueued": name})


def count_finished(studies: RunStudies) -> int:
    """Finished (COMPLETE or PRUNED) trials of the search and its references: what ``n_trials`` counts."""
    return len(studies.all_trials(FINISHED))


def count_running(studies: RunStudies) -> int:
    return len(studies.all_trials((TrialState.RUNNING,)))


def provenance(p: PreparedStudy) -> dict:
    """Package versions, the machine and the study file's hash, stored with the study.

    The device is named without initialising CUDA (this process does not train): NVML's name of
    the first GPU when the driver is there, else the processor; each trial records the device it
    trained on itself. The study file is named, not located (run.yaml says where it is, relative to
    the run folder): a journal carries no folder of the machine that wrote it.
    """
    import hashlib

    import torch

    return {"auxsearch": __version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "python": platform.python_version(), "device": device_name(), "study_file": p.path.name,
            "study_file_sha256": hashlib.sha256(p.path.read_bytes()).hexdigest()}
