"""Tests of auxsearch.tasks.sr_metrics against known values and scikit-image's colour maths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr

from auxsearch.tasks.sr_metrics import psnr_y, rgb_to_y, ssim_y

# Adding c to R, G and B moves Y by c * (65.481 + 128.553 + 24.966) / 255 = c * 219 / 255.
_Y_GAIN = 219.0 / 255.0


def _images(b: int = 2, size: int = 32, top: float = 0.8) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(0)) * top


def _perfect(psnr: torch.Tensor) -> bool:
    """Identical images: torchmetrics divides by a zero MSE and returns inf."""
    return bool((torch.isinf(psnr) | (psnr > 100)).all())


def test_y_matches_skimage() -> None:
    rgb = np.random.default_rng(1).random((9, 7, 3))
    expected = rgb2ycbcr(rgb)[..., 0] / 255.0
    got = rgb_to_y(torch.from_numpy(rgb).permute(2, 0, 1))
    assert got.shape == (1, 9, 7)
    assert np.abs(got[0].numpy() - expected).max() < 1e-4
    corners = rgb_to_y(torch.tensor([[0.0, 1.0]] * 3).view(1, 3, 1, 2))
    assert corners.flatten().tolist() == pytest.approx([16 / 255, 235 / 255])


def test_identical_images() -> None:
    x = _images()
    psnr = psnr_y(x, x.clone(), scale=2)
    assert psnr.shape == (2,) and _perfect(psnr)
    assert ssim_y(x, x.clone(), scale=2) == pytest.approx([1.0, 1.0], abs=1e-5)


def test_known_offset_gives_known_psnr() -> None:
    target = _images()
    pred = target + 0.1 / _Y_GAIN  # Y shifts by 0.1 everywhere: MSE 0.01, PSNR 20 dB
    assert psnr_y(pred, target, scale=3).tolist() == pytest.approx([20.0, 20.0], abs=1e-3)
    half = target.clone()
    half[1] += 0.05 / _Y_GAIN  # per image: only the second one moves, to 26.02 dB
    expected = 10 * math.log10(1 / 0.05**2)
    assert psnr_y(half, target, scale=3)[1].item() == pytest.approx(expected, abs=1e-3)
    assert _perfect(psnr_y(half, target, scale=3)[0])
    assert (ssim_y(pred, target, 3) < 1).all()


def test_border_crop_ignores_the_border() -> None:
    target, scale = _images(b=1), 4
    pred = target.clone()
    pred[..., :scale, :] = 1.0
    pred[..., :, -scale:] = 0.0
    assert _perfect(psnr_y(pred, target, scale))
    assert ssim_y(pred, target, scale).item() == pytest.approx(1.0, abs=1e-5)
    inside = target.clone()
    inside[..., scale, scale + 3] += 0.2  # first row inside the crop: seen
    assert psnr_y(inside, target, scale).item() < 80
    assert psnr_y(pred, target, scale - 1).item() < 40


def test_prediction_is_clamped() -> None:
    target = torch.zeros(1, 3, 16, 16)
    target[..., 8:, :] = 1.0
    pred = target * 3.0 - 1.0  # 1 -> 2 and 0 -> -1: both clamp back to the target
    assert _perfect(psnr_y(pred, target, 2))


def test_shape_mismatch_and_tiny_images_refused() -> None:
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        psnr_y(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9), 2)
    with pytest.raises(ValueError, match="crop"):
        ssim_y(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), 4)
    with pytest.raises(ValueError, match="3 channels"):
        rgb_to_y(torch.rand(2, 1, 4, 4))
