"""Tasks: the data, the metric and the real head of what a design is trained for.

Only image classification ships with the engine (``classification``); the
dense tasks (detection, super-resolution, segmentation) plug in here.
"""

from __future__ import annotations

from .classification_data import DATASETS, ImageData, load_image_data

__all__ = ["DATASETS", "ImageData", "load_image_data"]
