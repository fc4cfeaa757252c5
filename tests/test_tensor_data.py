"""Tests of auxsearch.tasks.tensor_data: tensor-held data sets batched and augmented on device."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from test_classification_data import _train_row, _write_cifar10
from torch.utils.data import DataLoader, Subset, TensorDataset
from torchvision import transforms

from auxsearch.tasks.classification_data import load_image_data
from auxsearch.tasks.tensor_data import DeviceBatches, TensorImages, augment_batch, tensor_source

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _steps(loader, epochs: int, generator: torch.Generator | None):
    """Every batch of ``epochs`` epochs and the generator state after ``iter()`` and after each
    ``next()`` (including the one that finds the epoch over)."""
    batches, states = [], []
    state = (lambda: generator.get_state()) if generator is not None else torch.get_rng_state
    for _ in range(epochs):
        it = iter(loader)
        states.append(state())
        while (batch := next(it, None)) is not None:
            batches.append(batch)
            states.append(state())
        states.append(state())
    return batches, states


def _same(a, b) -> None:
    assert len(a) == len(b)
    for (x1, y1), (x2, y2) in zip(a, b, strict=True):
        assert x1.dtype == x2.dtype == torch.float32 and y1.dtype == y2.dtype == torch.int64
        assert torch.equal(x1.cpu(), x2.cpu()) and torch.equal(y1.cpu(), y2.cpu())


def _padded(image: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """``image`` (C x H x W) inside a border of ``pad`` zeros, written out by hand."""
    c, h, w = image.shape
    out = torch.zeros(c, h + 2 * pad, w + 2 * pad, dtype=image.dtype)
    out[:, pad:pad + h, pad:pad + w] = image
    return out


def _window(image: torch.Tensor, top: int, left: int, flip: bool, pad: int = 4) -> torch.Tensor:
    _, h, w = image.shape
    crop = _padded(image, pad)[:, top:top + h, left:left + w]
    return crop.flip(-1) if flip else crop


# ---------------------------------------------------------------- order: identical to DataLoader


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("batch_size", [64, 359, 2000])  # 359 divides the 1077 training items
def test_device_batches_equal_dataloader_over_two_epochs(drop_last: bool, batch_size: int) -> None:
    data = load_image_data({"name": "digits"})
    assert len(data.train) == 1077
    loader = DataLoader(data.train, batch_size, shuffle=True, drop_last=drop_last,
                        generator=torch.Generator().manual_seed(3))
    device = DeviceBatches(data.train, batch_size, shuffle=True, drop_last=drop_last,
                           generator=torch.Generator().manual_seed(3))
    assert len(device) == len(loader)
    want, want_states = _steps(loader, 2, loader.generator)
    got, got_states = _steps(device, 2, device.generator)
    _same(want, got)  # bitwise the same batches, in the same order
    assert len(want_states) == len(got_states)
    for a, b in zip(want_states, got_states, strict=True):  # same draws at the same moments
        assert torch.equal(a, b)
    assert len(want) == 2 * len(loader)  # none when drop_last drops the one short batch
    if want:
        assert not torch.equal(want[0][1], want[len(loader)][1])  # each epoch reshuffles


def test_device_batches_of_subsets_equal_dataloader() -> None:
    images, labels = torch.rand(50, 1, 8, 8), torch.randint(0, 10, (50,))
    inner = Subset(TensorImages(images, labels), list(range(40, 0, -3)))  # reversed, strided
    dataset = Subset(inner, range(2, 11))
    base, index = tensor_source(dataset)
    assert base.images is images and index.tolist() == [34, 31, 28, 25, 22, 19, 16, 13, 10]
    loader = DataLoader(dataset, 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    device = DeviceBatches(dataset, 4, shuffle=True, drop_last=False,
                           generator=torch.Generator().manual_seed(0))
    _same(_steps(loader, 2, loader.generator)[0], _steps(device, 2, device.generator)[0])
    assert torch.equal(loader.generator.get_state(), device.generator.get_state())


def test_unshuffled_batches_are_sequential_and_draw_like_dataloader() -> None:
    data = load_image_data({"name": "digits", "image_size": 8})
    torch.manual_seed(1)  # no generator: both draw their base seed from the global RNG
    want, want_states = _steps(DataLoader(data.val, 100, shuffle=False), 2, None)
    torch.manual_seed(1)
    got, got_states = _steps(DeviceBatches(data.val, 100, shuffle=False), 2, None)
    _same(want, got)
    assert torch.equal(torch.cat([y for _, y in got[: len(got) // 2]]), data.val.labels)
    assert all(torch.equal(a, b) for a, b in zip(want_states, got_states, strict=True))
    assert not torch.equal(want_states[0], want_states[-1])  # the draws did happen


def test_unseeded_shuffle_draws_like_dataloader() -> None:
    images, labels = torch.rand(30, 1, 4, 4), torch.arange(30)
    torch.manual_seed(7)
    want, want_states = _steps(DataLoader(TensorImages(images, labels), 8, shuffle=True), 2, None)
    torch.manual_seed(7)
    got, got_states = _steps(DeviceBatches(TensorImages(images, labels), 8, shuffle=True), 2, None)
    _same(want, got)
    assert all(torch.equal(a, b) for a, b in zip(want_states, got_states, strict=True))


def test_non_tensor_data_sets_have_no_tensor_source() -> None:
    plain = TensorDataset(torch.rand(5, 1, 4, 4), torch.arange(5))
    assert tensor_source(plain) is None
    assert tensor_source(Subset(plain, [0, 1])) is None
    assert tensor_source([(torch.rand(1, 4, 4), 0)]) is None
    with pytest.raises(TypeError, match="TensorImages"):
        DeviceBatches(plain, 2, shuffle=True)
    whole = TensorImages(torch.rand(5, 1, 4, 4), torch.arange(5))
    assert tensor_source(whole)[0] is whole and tensor_source(whole)[1].tolist() == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- batched augmentation


@pytest.mark.parametrize("device", DEVICES)
def test_augment_batch_crops_windows_of_the_padded_image_and_flips(device: str) -> None:
    x = torch.rand(600, 3, 12, 10)
    gen = torch.Generator().manual_seed(11)
    draws = gen.get_state()
    out = augment_batch(x.to(device), gen).cpu()
    assert out.shape == x.shape and out.dtype == x.dtype

    replay = torch.Generator()
    replay.set_state(draws)  # the documented draws: N tops, N lefts, N coins
    tops = torch.randint(0, 9, (600,), generator=replay).tolist()
    lefts = torch.randint(0, 9, (600,), generator=replay).tolist()
    flips = (torch.rand(600, generator=replay) < 0.5).tolist()
    assert torch.equal(replay.get_state(), gen.get_state())
    for i in range(600):
        assert torch.equal(out[i], _window(x[i], tops[i], lefts[i], flips[i])), i
    assert set(tops) == set(lefts) == set(range(9))  # every shift of a 4-pixel pad
    assert 0.45 < sum(flips) / 600 < 0.55
    unflipped = sum(torch.equal(out[i], _window(x[i], tops[i], lefts[i], False))
                    for i in range(600))
    assert unflipped == 600 - sum(flips)  # a flip is visible: never the same as the plain crop


def test_augment_batch_every_output_is_some_window() -> None:
    x = torch.rand(20, 2, 6, 6)  # independent of the draw order: search all 81 x 2 windows
    out = augment_batch(x, torch.Generator().manual_seed(0))
    for i in range(20):
        found = [(t, left, f) for t in range(9) for left in range(9) for f in (False, True)
                 if torch.equal(out[i], _window(x[i], t, left, f))]
        assert len(found) == 1


def test_augment_batch_is_seeded_and_device_independent() -> None:
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    first = augment_batch(x, torch.Generator().manual_seed(5))
    assert first.dtype == torch.uint8
    assert torch.equal(first, augment_batch(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(first, augment_batch(x, torch.Generator().manual_seed(6)))
    as_float = augment_batch(x.float(), torch.Generator().manual_seed(5))
    assert torch.equal(as_float, first.float())  # the pixel type does not change the draws
    for device in DEVICES[1:]:
        on_device = augment_batch(x.to(device), torch.Generator().manual_seed(5))
        assert on_device.device.type == device and torch.equal(on_device.cpu(), first)


# ---------------------------------------------------------------- per-item reads


def test_tensor_images_items_match_torchvision_transforms() -> None:
    """Per-item augmentation draws as RandomCrop(padding=4) + RandomHorizontalFlip, so a
    DataLoader fallback reads what the torchvision pipeline read for the same seed."""
    pixels = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    data = TensorImages(pixels, torch.arange(10), augment=True)
    reference = transforms.Compose([transforms.RandomCrop(32, padding=4),
                                    transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    pil = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels]
    torch.manual_seed(0)
    want = [reference(image) for image in pil for _ in range(3)]
    torch.manual_seed(0)
    got = [data[i][0] for i in range(10) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    assert sum(not torch.equal(g, transforms.functional.to_tensor(p))
               for g, p in zip(got, [p for p in pil for _ in range(3)], strict=True)) > 20
    plain = TensorImages(pixels, torch.arange(10))
    image, label = plain[4]
    assert image.dtype == torch.float32 and label.dtype == torch.int64 and int(label) == 4
    assert torch.equal(image, transforms.functional.to_tensor(pil[4]))  # ToTensor's bits


def test_tensor_images_augment_only_when_asked_and_pickle() -> None:
    images = torch.rand(6, 3, 16, 16)
    augmented, plain = TensorImages(images, [0] * 6, augment=True), TensorImages(images, [0] * 6)
    torch.manual_seed(0)
    assert any(not torch.equal(augmented[i][0], images[i]) for i in range(6))
    assert all(torch.equal(plain[i][0], images[i]) for i in range(6) for _ in range(3))
    again = pickle.loads(pickle.dumps(augmented))
    assert again.augment and torch.equal(again.images, images)
    with pytest.raises(ValueError, match="labels"):
        TensorImages(images, [0] * 5)
    with pytest.raises(ValueError, match="uint8 or float32"):
        TensorImages(images.double(), [0] * 6)


# ---------------------------------------------------------------- CIFAR through the loader


def test_cifar_is_tensor_backed_and_batches_on_device(tmp_path) -> None:
    written = _write_cifar10(tmp_path, per_batch=20)  # 100 training images
    data = load_image_data({"name": "cifar10", "root": str(tmp_path), "train_limit": 70})
    base, index = tensor_source(data.train)
    assert isinstance(base, TensorImages) and base.augment and base.images.dtype == torch.uint8
    assert index.tolist() == data.train.dataset.indices[:70]
    for split in (data.val, data.test):
        assert not tensor_source(split)[0].augment
    assert tensor_source(data.val)[0].images is base.images  # one copy of the pixels

    for device in DEVICES:
        batches = DeviceBatches(data.train, 32, shuffle=True, drop_last=True,
                                generator=torch.Generator().manual_seed(0), device=device)
        first = DataLoader(data.train, 32, shuffle=True,
                           generator=torch.Generator().manual_seed(0))
        assert len(batches) == 2
        got = list(batches)
        assert len(got) == 2
        (x, y), (_, want_y) = got[0], next(iter(first))
        assert x.device.type == y.device.type == device
        assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
        assert torch.equal(y.cpu(), want_y)  # the first permutation is the DataLoader's
        positions = next(iter(DataLoader(range(70), 32, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))))
        shifted = 0
        for row, position in enumerate(positions.tolist()):
            source, label = _train_row(written, data.train.dataset.indices[position])
            assert int(y[row]) == label
            plain = torch.from_numpy(source.reshape(3, 32, 32)).float() / 255
            windows = [_window(plain, t, left, f) for t in range(9) for left in range(9)
                       for f in (False, True)]
            assert any(torch.equal(x[row].cpu(), w) for w in windows)
            shifted += not torch.equal(x[row].cpu(), plain)
        assert shifted > 16  # augmented on the device

    plain = load_image_data({"name": "cifar10", "root": str(tmp_path), "augment": False})
    loader = DataLoader(plain.train, 16, shuffle=True, generator=torch.Generator().manual_seed(2))
    device_batches = DeviceBatches(plain.train, 16, shuffle=True, drop_last=False,
                                   generator=torch.Generator().manual_seed(2))
    _same(_steps(loader, 2, loader.generator)[0],
          _steps(device_batches, 2, device_batches.generator)[0])  # bitwise, uint8 included


def test_cifar_resize_at_load_matches_pil_resize(tmp_path) -> None:
    written = _write_cifar10(tmp_path)
    data = load_image_data({"name": "cifar10", "root": str(tmp_path), "image_size": 16,
                            "augment": False})
    assert tensor_source(data.train)[0].images.shape == (20, 3, 16, 16)
    resize = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])
    for split in (data.train, data.val):
        for position in range(len(split)):
            row, _ = _train_row(written, split.indices[position])
            pil = Image.fromarray(np.ascontiguousarray(row.reshape(3, 32, 32).transpose(1, 2, 0)))
            assert torch.equal(split[position][0], resize(pil))  # the old per-read transform
