"""Tests of the synthetic scene generator auxsearch.tasks.scenes."""

from __future__ import annotations

import numpy as np
import pytest

from auxsearch.errors import ConfigError
from auxsearch.tasks.scenes import CLASSES, compose, make_scenes, scene_splits, shape_pixels


@pytest.fixture(scope="module")
def scenes():
    """200 scenes of 48 x 48 with their instance maps, drawn once for the module."""
    return make_scenes(200, image_size=48, seed=5, instances=True)


def _same(a: tuple, b: tuple) -> bool:
    images_a, targets_a, masks_a = a[:3]
    images_b, targets_b, masks_b = b[:3]
    return (np.array_equal(images_a, images_b) and np.array_equal(masks_a, masks_b)
            and all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
                    for x, y in zip(targets_a, targets_b, strict=True)))


def test_deterministic_per_seed_and_different_across_seeds() -> None:
    first, again = make_scenes(6, 32, seed=3), make_scenes(6, 32, seed=3)
    assert _same(first, again)
    other = make_scenes(6, 32, seed=4)
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[2], other[2])
    test_stream = make_scenes(6, 32, seed=3, stream=1)
    assert not any(np.array_equal(a, b) for a in first[0] for b in test_stream[0])


def test_scene_depends_on_index_only() -> None:
    """A longer run starts with the scenes of a shorter one: ``num_train`` can grow safely."""
    short, long = make_scenes(3, 32, seed=2), make_scenes(7, 32, seed=2)
    assert _same(short, tuple(part[:3] for part in long))


def test_dtypes_shapes_and_ranges(scenes) -> None:
    images, targets, masks, instances = scenes
    assert images.shape == (200, 3, 48, 48) and images.dtype == np.float32
    assert masks.shape == instances.shape == (200, 48, 48) and masks.dtype == np.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert set(np.unique(masks)) <= set(range(len(CLASSES) + 1))
    for boxes, labels in targets:
        assert boxes.dtype == np.float32 and labels.dtype == np.int64
        assert boxes.shape == (len(labels), 4) and len(labels) <= 4
        assert ((labels >= 1) & (labels <= len(CLASSES))).all()
        assert (boxes >= 0).all() and (boxes <= 48).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


def test_boxes_agree_with_masks(scenes) -> None:
    """Each box's visible pixels lie inside it and carry its class; hidden objects' pixels
    still carry their class in the mask."""
    _, targets, masks, instances = scenes
    for (boxes, labels), mask, owner in zip(targets, masks, instances, strict=True):
        assert np.array_equal(owner != 0, mask != 0)
        for j, ((x1, y1, x2, y2), label) in enumerate(zip(boxes, labels, strict=True)):
            rows, cols = np.nonzero(owner == j + 1)
            assert len(rows) > 0
            assert (cols >= x1).all() and (cols + 1 <= x2).all()
            assert (rows >= y1).all() and (rows + 1 <= y2).all()
            assert (mask[rows, cols] == label).all()
        assert set(np.unique(owner)) <= set(range(-1, len(labels) + 1))


def test_every_class_appears_and_scenes_vary(scenes) -> None:
    images, targets, masks, _ = scenes
    labels = np.concatenate([labels for _, labels in targets])
    assert set(labels.tolist()) == set(range(1, len(CLASSES) + 1))
    assert set(np.unique(masks).tolist()) == set(range(len(CLASSES) + 1))
    counts = np.bincount(labels, minlength=len(CLASSES) + 1)[1:]
    assert counts.min() > 0.5 * counts.max()  # no class starved
    background = np.array([image[:, mask == 0].std() for image, mask in zip(images, masks,
                                                                           strict=True)])
    assert np.median(background) > 0.05  # textured, not flat backgrounds


def _rect(label: int, top: int, left: int, height: int, width: int
          ) -> tuple[int, np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[top:top + height, left:left + width]
    return label, rows.ravel(), cols.ravel()


def test_occlusion_keeps_forty_percent_visible() -> None:
    """A 20 x 20 square hidden on 12 of its 20 columns keeps 40 % and its full box; hidden on
    13 columns it is dropped, but its visible pixels keep their class in the mask."""
    back = _rect(2, 10, 10, 20, 20)
    boxes, labels, _, owner = compose([back, _rect(1, 10, 10, 20, 12)], 40)
    assert labels.tolist() == [2, 1]
    assert boxes.tolist() == [[10, 10, 30, 30], [10, 10, 22, 30]]  # full shapes, not visible
    assert (owner[10:30, 22:30] == 1).all() and (owner[10:30, 10:22] == 2).all()
    boxes, labels, mask, owner = compose([back, _rect(1, 10, 10, 20, 13)], 40)
    assert labels.tolist() == [1] and boxes.tolist() == [[10, 10, 23, 30]]
    assert (mask[10:30, 23:30] == 2).all() and (owner[10:30, 23:30] == -1).all()
    assert (owner[10:30, 10:23] == 1).all() and (mask[10:30, 10:23] == 1).all()
    assert (mask == 0).sum() == 40 * 40 - 400 and (owner == 0).sum() == 40 * 40 - 400


def test_outside_pixels_count_as_hidden_and_boxes_clip() -> None:
    half_out = _rect(3, -10, 5, 20, 20)  # rows -10..9: half inside
    boxes, labels, _, _ = compose([half_out], 32)
    assert labels.tolist() == [3] and boxes[0].tolist() == [5, 0, 25, 10]
    mostly_out = _rect(3, -15, 5, 20, 20)  # a quarter inside
    boxes, labels, mask, owner = compose([mostly_out], 32)
    assert len(labels) == 0 and boxes.shape == (0, 4)
    assert (mask[:5, 5:25] == 3).all() and (owner[:5, 5:25] == -1).all()


def test_shape_pixels_are_unclipped_and_sized() -> None:
    radius = 10
    rows, cols = shape_pixels(CLASSES.index("circle") + 1, (0.0, 0.0), 2 * radius)
    assert rows.min() < 0 and cols.min() < 0
    assert len(rows) == pytest.approx(np.pi * radius ** 2, rel=0.05)
    rows, cols = shape_pixels(CLASSES.index("square") + 1, (0.0, 0.0), 2 * radius)
    assert rows.min() < 0 and cols.min() < 0  # polygons too, despite skimage's clipping
    assert len(rows) == pytest.approx(2 * radius ** 2, rel=0.05)  # inscribed square
    for label in range(1, len(CLASSES) + 1):
        rows, cols = shape_pixels(label, (30.0, 20.0), 16, angle=0.7)
        assert abs(rows.mean() - 19.5) < 2.5 and abs(cols.mean() - 29.5) < 2.5
        assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == len(rows)


def test_scene_splits_draw_validation_from_its_own_stream() -> None:
    """Train and test are streams 0 and 1 as before validation existed; validation is stream 2,
    so its size never moves a train or test scene."""
    cfg = {"name": "scenes", "image_size": 24, "num_train": 4, "num_val": 3, "num_test": 2,
           "seed": 9}
    train, val, test, size = scene_splits(cfg, "data")
    assert size == 24 and [len(part[0]) for part in (train, val, test)] == [4, 3, 2]
    for part, stream in ((train, 0), (test, 1), (val, 2)):
        assert _same(part, make_scenes(len(part[0]), 24, seed=9, stream=stream))
    _, more_val, _, _ = scene_splits({**cfg, "num_val": 5}, "data")
    assert _same(tuple(p[:3] for p in more_val), val)
    same_train, _, same_test, _ = scene_splits({**cfg, "num_val": 1}, "data")
    assert _same(same_train, train) and _same(same_test, test)
    drawn = [image.tobytes() for part in (train, test) for image in part[0]]
    assert not any(image.tobytes() in drawn for image in val[0])
    assert len(scene_splits({k: v for k, v in cfg.items() if k != "num_val"}, "data")[1][0]) == 256
    for bad in ({"num_val": 0}, {"num_val": 1.5}, {"val_fraction": 0.2}):
        with pytest.raises(ConfigError) as info:
            scene_splits({**cfg, **bad}, "task.data")
        assert info.value.key == f"task.data.{next(iter(bad))}"

