"""What training a design gives back: scores, peak memory, time (plain data, crosses process boundaries)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class NonFiniteLoss(RuntimeError):
    """A local loss became NaN or inf: the design (or its learning rate) diverged."""


@dataclass
class TrainResult:
    metric: str
    score: float
    peak_memory_bytes: int
    memory_mode: str
    epochs: int
    seconds: float
    design_hash: str
    device: str
    history: list[float] = field(default_factory=list)  # validation score after each epoch
    stopped_early: bool = False
    scores: dict[str, float] = field(default_factory=dict)  # every validation metric of the last epoch
    test_scores: dict[str, float] | None = None  # the held-out test split, only when asked for (final_test)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "model"}
