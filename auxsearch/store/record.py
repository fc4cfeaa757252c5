"""The typed trial record: every user attribute a trial carries, owned by one dataclass each.

A search trial (:class:`SearchAttrs`) and a confirmation run (:class:`ConfirmAttrs`) store their
facts as Optuna user attributes. Every writer goes through :func:`write` (or
:func:`write_to_storage` where only the storage is at hand) and every reader through
``SearchAttrs.of(trial)`` / ``ConfirmAttrs.of(trial)``: a misspelt name is an error where it is
written, and a reader gets a typed default instead of ``None`` from a stray key.

Torch-free; the values are plain data (JSON: what Optuna stores).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

A = TypeVar("A", bound="_Attrs")


class _Attrs:
    """Reading a trial's user attributes into the dataclass; unknown keys (older runs) are ignored."""

    KIND: ClassVar[str] = ""

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def of(cls: type[A], trial: Any) -> A:
        """The record of a (frozen or live) trial."""
        attrs = trial.user_attrs
        return cls(**{k: v for k, v in attrs.items() if k in cls.names()})

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        unknown = sorted(set(values) - cls.names())
        if unknown:
            raise KeyError(f"{unknown[0]!r} is not a field of {cls.__name__} (fields: {', '.join(sorted(cls.names()))})")


@dataclass
class SearchAttrs(_Attrs):
    """What a trial of the search (or of the reference study) records."""

    KIND: ClassVar[str] = "search"

    design: dict | None = None  # the normalised compact design trained (no recipe)
    design_hash: str | None = None
    K: int | None = None  # modules
    is_e2e: bool = False  # the end-to-end reference (K = 1), trained under the same recipe
    enqueued: str | None = None  # the reference's name: e2e, a published design, a design file
    worker: int | None = None  # index of the worker process that ran it
    sampler_seed: int | None = None
    isolated: bool | None = None  # trained in a fresh process
    history: list = field(default_factory=list)  # validation score after each epoch
    scores: dict = field(default_factory=dict)  # every validation metric of the last epoch
    seconds: float | None = None
    peak_memory_bytes: int | None = None  # the scored peak (measured, or simulated at the target)
    measured_peak_bytes: int | None = None  # measured on the trial's own scale
    simulated_peak_bytes: int | None = None
    device: str | None = None
    parameters: int | None = None
    over_budget: bool = False  # the E2E reference breaks the memory budget (trained anyway)
    reused_from: str | None = None  # the trial whose identical design's result this one records
    reason: str | None = None  # why it failed, was pruned or is infeasible
    failure: str | None = None  # the exception type a failed trial ended with
    traceback: str | None = None
    retry_of: int | None = None  # the number of the trial this one retries (its worker died)


@dataclass
class ConfirmAttrs(_Attrs):
    """What one confirmation run (a design retrained with one fresh seed) records."""

    KIND: ClassVar[str] = "confirm"

    design: dict | None = None
    design_hash: str | None = None
    seed: int | None = None
    source_trial: str | None = None  # the search record it confirms (its label)
    epochs: int | None = None
    val_score: float | None = None
    val_scores: dict = field(default_factory=dict)
    test_score: float | None = None
    test_scores: dict = field(default_factory=dict)
    peak_memory_bytes: int | None = None
    seconds: float | None = None
    reason: str | None = None
    worker: int | None = None


def write(trial: Any, kind: type[_Attrs], **values: Any) -> None:
    """Set ``values`` as user attributes of a live trial; every name must be a field of ``kind``."""
    kind.check(values)
    for k, v in values.items():
        trial.set_user_attr(k, v)


def write_to_storage(storage: Any, trial_id: int, kind: type[_Attrs], **values: Any) -> None:
    """The same through a storage object and a trial id (a trial this process does not run)."""
    kind.check(values)
    for k, v in values.items():
        storage.set_trial_user_attr(trial_id, k, v)


# What a retry of a trial whose worker died starts from: the design as it was enqueued or drawn (search and
# reference trials), or the confirmation job (design, seed, epochs, the search trial it confirms).
RETRY_KEEPS = ("design", "design_hash", "K", "is_e2e", "enqueued", "seed", "epochs", "source_trial",
               "peak_memory_bytes")
