"""Seeded synthetic scenes: coloured shapes on photographic textures, with boxes and masks.

The scenes give detection and segmentation searches a data set that needs no files, so a design
can be tried anywhere, while staying hard enough that a detector's mAP depends on the design:

* backgrounds are random crops (random position, scale and flips, random per-channel gain) of
  the photographs bundled with scikit-image, so edges and colours are everywhere, not only on the
  objects;
* the class of an object is its *shape* only (``CLASSES``): colour, size (15 % to 45 % of the
  image side), rotation and position are drawn at random, the colour merely kept apart from the
  pixels it covers so that an object is visible at all;
* objects are painted in order and may overlap; an object of which less than ``min_visible`` of
  its pixels stays visible (hidden by later objects or outside the image) gets no box, as in real
  data sets where heavily hidden objects go unannotated, yet its visible pixels keep their class
  in the mask because they do show that shape.

Coordinates: pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``; a box is ``x1, y1, x2, y2``
in those pixel-edge units, the box of the object's *full* shape clipped to the image, so every
visible pixel of an object lies inside its box.

Scene ``i`` of ``make_scenes(n, seed=s, stream=t)`` depends only on ``(s, t, i)``: a longer run
starts with the same scenes, and streams 0, 1 and 2 (train, test and validation, see
:func:`scene_splits`) never share one.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np
from skimage import data as skdata
from skimage import draw

from auxsearch.tasks.data import check_keys, int_option

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross")

# Photographs that ship inside the scikit-image wheel (no download on first use).
TEXTURES: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
                             "brick", "grass", "gravel", "camera", "coins", "moon")

_MIN_SIZE, _MAX_SIZE = 0.15, 0.45  # object extent as a fraction of the image side
_MIN_CONTRAST = 0.35  # least RGB distance between an object's colour and what it covers
_NOISE = 0.02  # standard deviation of the pixel noise added to the finished scene


@lru_cache(maxsize=1)
def _textures() -> tuple[np.ndarray, ...]:
    """The bundled photographs as float32 3 x H x W arrays in [0, 1], loaded once per process
    (channels first, the layout the scenes are drawn in)."""
    out = []
    for name in TEXTURES:
        image = np.asarray(getattr(skdata, name)(), dtype=np.float32) / 255.0
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        out.append(np.ascontiguousarray(image[:, :, :3].transpose(2, 0, 1)))
    return tuple(out)


def _taps(start: int, side: int, size: int, flip: bool) -> tuple[np.ndarray, ...]:
    """Bilinear sample positions along one axis: the two source indices and the weight of the
    second, for ``size`` outputs spanning ``side`` source pixels from ``start``."""
    pos = np.clip((np.arange(size) + 0.5) * side / size - 0.5, 0, side - 1)
    lo = pos.astype(np.int64)
    hi = np.minimum(lo + 1, side - 1)
    weight = (pos - lo).astype(np.float32)
    if flip:
        lo, hi = side - 1 - lo, side - 1 - hi
    return start + lo, start + hi, weight


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A 3 x size x size float32 crop of a random bundled photograph: random place, crop side
    1 to 3 times ``size`` (capped by the photograph), random flips and per-channel gain.

    The bilinear resize is done by hand with flat gathers: a general resize costs more in set-up
    than in work at these sizes, and this is the hot loop of :func:`make_scenes`.
    """
    textures = _textures()
    texture = textures[rng.integers(len(textures))]
    _, h, w = texture.shape
    side = int(min(h, w, size * rng.uniform(1.0, 3.0)))
    top, left = rng.integers(h - side + 1), rng.integers(w - side + 1)
    flip_r, flip_c = rng.random(2) < 0.5
    r0, r1, wr = _taps(top, side, size, flip_r)
    c0, c1, wc = _taps(left, side, size, flip_c)
    flat = texture.reshape(3, -1)

    def at(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.take(flat, (rows[:, None] * w + cols[None, :]).ravel(), axis=1).reshape(
            3, size, size)

    upper, lower = at(r0, c0), at(r1, c0)
    upper += (at(r0, c1) - upper) * wc
    lower += (at(r1, c1) - lower) * wc
    wr = wr[:, None]
    gain = rng.uniform(0.6, 1.0, size=(3, 1, 1)).astype(np.float32)
    return (upper + (lower - upper) * wr) * gain


def _polygon(label: int, extent: float, angle: float) -> np.ndarray:
    """Vertices (k x 2, as x, y around the origin) of a polygon class whose circumscribed
    circle has diameter ``extent``."""
    radius = extent / 2
    if CLASSES[label - 1] == "cross":
        arm, half = radius, 0.3 * radius
        xy = np.array([(half, arm), (-half, arm), (-half, half), (-arm, half), (-arm, -half),
                       (-half, -half), (-half, -arm), (half, -arm), (half, -half), (arm, -half),
                       (arm, half), (half, half)], dtype=np.float64)
    else:
        corners = 4 if CLASSES[label - 1] == "square" else 3
        turns = np.arange(corners) * 2 * np.pi / corners
        xy = radius * np.stack([np.cos(turns), np.sin(turns)], axis=1)
    cos, sin = np.cos(angle), np.sin(angle)
    return xy @ np.array([[cos, sin], [-sin, cos]])


def shape_pixels(label: int, centre: tuple[float, float], extent: float,
                 angle: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of every pixel whose centre lies inside the shape, *not* clipped to any
    image, so that the caller can tell how much of the shape an image shows.

    ``label`` is 1-based into ``CLASSES``; ``centre`` is ``(x, y)`` in pixel-edge units.
    """
    x, y = centre
    if CLASSES[label - 1] == "circle":  # skimage puts pixel centres at integers: shift by 0.5
        rows, cols = draw.disk((y - 0.5, x - 0.5), extent / 2)
        return rows.astype(np.int64), cols.astype(np.int64)
    xy = _polygon(label, extent, angle) + (x - 0.5, y - 0.5)
    # draw.polygon drops negative coordinates even without a shape: draw in a shifted frame
    shift_r, shift_c = int(np.floor(xy[:, 1].min())), int(np.floor(xy[:, 0].min()))
    rows, cols = draw.polygon(xy[:, 1] - shift_r, xy[:, 0] - shift_c)
    return rows.astype(np.int64) + shift_r, cols.astype(np.int64) + shift_c


def _inside(rows: np.ndarray, cols: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    keep = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    return rows[keep], cols[keep]


def compose(shapes: list[tuple[int, np.ndarray, np.ndarray]], size: int,
            min_visible: float = 0.4) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lay ``shapes`` (``label, rows, cols``, first one at the back) on a size x size grid.

    Returns ``boxes`` (k x 4 float32) and ``labels`` (k int64) of the shapes that keep at least
    ``min_visible`` of their pixels, the class mask (size x size int64, 0 = background) and an
    instance map (size x size int64): ``j + 1`` on the visible pixels of kept shape ``j``,
    ``-1`` on those of dropped shapes, ``0`` on the background.
    """
    owner = np.full((size, size), -1, dtype=np.int64)
    for index, (_, rows, cols) in enumerate(shapes):
        owner[_inside(rows, cols, size)] = index
    visible = np.bincount(owner[owner >= 0], minlength=len(shapes))
    kept = np.zeros(len(shapes) + 1, dtype=np.int64)  # kept[index + 1]: instance id, -1 dropped
    boxes, labels = [], []
    for index, (label, rows, cols) in enumerate(shapes):
        kept[index + 1] = -1
        if len(rows) and visible[index] >= min_visible * len(rows):
            boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
            labels.append(label)
            kept[index + 1] = len(labels)
    classes = np.array([0] + [label for label, _, _ in shapes], dtype=np.int64)
    boxes = np.clip(np.array(boxes, dtype=np.float32).reshape(-1, 4), 0, size)
    return boxes, np.array(labels, dtype=np.int64), classes[owner + 1], kept[owner + 1]


def _colour(rng: np.random.Generator, covered: np.ndarray) -> np.ndarray:
    """A random RGB colour at least ``_MIN_CONTRAST`` away from the mean of the covered pixels
    (the most distant of eight draws if none is)."""
    under = covered.mean(axis=0) if len(covered) else np.full(3, 0.5, np.float32)
    candidates = rng.random((8, 3)).astype(np.float32)
    distance = np.linalg.norm(candidates - under, axis=1)
    far = np.flatnonzero(distance >= _MIN_CONTRAST)
    return candidates[far[0] if len(far) else int(distance.argmax())]


def draw_scene(rng: np.random.Generator, size: int, max_objects: int = 4,
               min_visible: float = 0.4) -> tuple[np.ndarray, ...]:
    """One scene: image (3 x size x size float32 in [0, 1]), then boxes, labels, class mask and
    instance map as :func:`compose` returns them."""
    image = background(rng, size)
    shapes = []
    for _ in range(rng.integers(1, max_objects + 1)):
        label = int(rng.integers(1, len(CLASSES) + 1))
        extent = size * rng.uniform(_MIN_SIZE, _MAX_SIZE)
        centre = tuple(size * rng.uniform(0.1, 0.9, size=2))
        rows, cols = shape_pixels(label, centre, extent, rng.uniform(0, 2 * np.pi))
        rows_in, cols_in = _inside(rows, cols, size)
        image[:, rows_in, cols_in] = _colour(rng, image[:, rows_in, cols_in].T)[:, None]
        shapes.append((label, rows, cols))
    image += _NOISE * rng.standard_normal(image.shape, dtype=np.float32)
    np.clip(image, 0.0, 1.0, out=image)
    return (image, *compose(shapes, size, min_visible))


def make_scenes(n: int, image_size: int = 64, seed: int = 0, max_objects: int = 4,
                min_visible: float = 0.4, stream: int = 0, instances: bool = False) -> tuple:
    """Draw ``n`` scenes; deterministic in ``(seed, stream)`` and scene index.

    Returns ``images`` (n x 3 x S x S float32 in [0, 1]), ``targets`` (a list of ``(boxes
    float32 k x 4 xyxy in pixels, labels int64 k in 1..len(CLASSES))``) and ``masks`` (n x S x S
    int64, 0 = background, c = class c), plus the instance maps of :func:`compose` as a fourth
    item when ``instances`` is true (tests use them to tie boxes to pixels).
    """
    if n < 0 or image_size < 8 or max_objects < 1:
        raise ValueError("need n >= 0, image_size >= 8 and max_objects >= 1")
    images = np.empty((n, 3, image_size, image_size), dtype=np.float32)
    masks = np.empty((n, image_size, image_size), dtype=np.int64)
    owners = np.empty_like(masks) if instances else None
    targets = []
    for i in range(n):
        rng = np.random.default_rng((seed, stream, i))
        image, boxes, labels, mask, owner = draw_scene(rng, image_size, max_objects, min_visible)
        images[i], masks[i] = image, mask
        targets.append((boxes, labels))
        if owners is not None:
            owners[i] = owner
    return (images, targets, masks, owners) if instances else (images, targets, masks)


SCENE_KEYS = {"name", "image_size", "num_train", "num_val", "num_test", "max_objects", "seed"}
STREAMS = {"train": 0, "test": 1, "val": 2}  # train and test streams predate val: kept as they were
NUM_SCENES = {"train": 1024, "val": 256, "test": 256}


def scene_splits(cfg: Mapping, key: str) -> tuple[tuple, tuple, tuple, int]:
    """Check the ``scenes`` keys of a ``data`` block and draw the three splits: the
    :func:`make_scenes` results of train (stream 0), validation (stream 2) and test (stream 1),
    then the image size. Validation scenes are drawn from their own stream of the same seeded
    generator, so adding them changed no train or test scene. Shared by the detection and
    segmentation loaders."""
    check_keys(cfg, SCENE_KEYS, key)
    size = int_option(cfg, "image_size", 64, key, minimum=16)
    counts = {s: int_option(cfg, f"num_{s}", d, key) for s, d in NUM_SCENES.items()}
    max_objects = int_option(cfg, "max_objects", 4, key)
    seed = int_option(cfg, "seed", 0, key, minimum=0)
    train, val, test = (make_scenes(counts[split], size, seed=seed, max_objects=max_objects,
                                    stream=STREAMS[split]) for split in ("train", "val", "test"))
    return train, val, test, size
