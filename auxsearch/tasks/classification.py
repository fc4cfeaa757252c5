"""Image classification: global average pooling + linear head, cross-entropy, top-1 accuracy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from auxsearch.tasks.base import FinalHead, Task
from auxsearch.tasks.classification_data import load_image_data


class ClassifierHead(FinalHead):
    """The network's real task head: global average pooling + linear, on the deepest tap."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, taps: list[Tensor]) -> Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(taps[-1], 1), 1))

    def loss(self, raw: Tensor, image: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(raw, target)


class Classification(Task):
    name = "classification"

    def load_data(self, cfg: Mapping | None, key: str = "data"):
        return load_image_data(cfg, key)

    def taps(self, design: Mapping, unit_out_shapes: Sequence[tuple]) -> list[int]:
        return [len(unit_out_shapes) - 1]

    def head(self, design: Mapping, tap_shapes: Sequence[tuple]) -> FinalHead:
        return ClassifierHead(tap_shapes[-1][0], design["num_classes"])

    def example_batch(self, design: Mapping, batch_size: int, device: torch.device | str = "cpu"):
        x = torch.rand(batch_size, *design["input_shape"], device=device)
        return x, torch.randint(0, design["num_classes"], (batch_size,), device=device)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        correct = total = 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            correct += (model(x).argmax(1) == y).sum().item()
            total += y.numel()
        return {"accuracy": correct / max(total, 1)}
