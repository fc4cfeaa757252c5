"""Super-resolution metrics as SR papers report them: PSNR and SSIM on the luma (Y) channel.

The protocol is the one of EDSR (Lim et al. 2017) and RCAN (Zhang et al. 2018): clamp the
prediction to ``[0, 1]``, convert both images to Y, crop ``scale`` pixels from every border (the
upsampler cannot know what lies past the LR border, and the bicubic LR itself is unreliable
there), then score every image on its own. PSNR and SSIM come from torchmetrics' functional API
(SSIM: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, as in Wang et al. 2004) so that the
numbers follow a maintained reference rather than a local formula.

Papers also round the prediction to 8-bit levels before scoring; these functions do not, which
can move PSNR by a few hundredths of a dB.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

# ITU-R BT.601 luma for 8-bit studio range, applied to RGB in [0, 1]:
# Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255, giving Y in [16/255, 235/255].
_Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
_Y_OFFSET = 16.0 / 255.0


def rgb_to_y(t: Tensor) -> Tensor:
    """Luma of RGB images in ``[0, 1]`` (channels at dim -3), kept as a one-channel dim.

    ITU-R Recommendation BT.601 (studio range), as MATLAB's ``rgb2ycbcr`` and every SR benchmark
    script compute it: ``Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255``.
    """
    if t.dim() < 3 or t.shape[-3] != 3:
        raise ValueError(f"expected RGB images with 3 channels at dim -3, got shape "
                         f"{tuple(t.shape)}")
    weights = torch.tensor(_Y_WEIGHTS, dtype=t.dtype, device=t.device).view(3, 1, 1)
    return (t * weights).sum(dim=-3, keepdim=True) + _Y_OFFSET


def _prepare(pred: Tensor, target: Tensor, scale: int) -> tuple[Tensor, Tensor]:
    """Clamp, convert to Y and crop the border: the shared first half of both metrics."""
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"pred and target must both be B x 3 x H x W, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    if scale < 0 or 2 * scale >= min(pred.shape[-2:]):
        raise ValueError(f"cannot crop {scale} pixels from each border of a "
                         f"{pred.shape[-2]} x {pred.shape[-1]} image")
    pred_y, target_y = rgb_to_y(pred.clamp(0.0, 1.0)), rgb_to_y(target)
    if scale:
        pred_y = pred_y[..., scale:-scale, scale:-scale]
        target_y = target_y[..., scale:-scale, scale:-scale]
    return pred_y.float(), target_y.float()


def psnr_y(pred: Tensor, target: Tensor, scale: int) -> Tensor:
    """Per-image PSNR in dB (``Tensor[B]``) on Y after cropping ``scale`` border pixels.

    Identical images give ``inf``; average with care (or cap) when reporting a mean.
    """
    pred_y, target_y = _prepare(pred, target, scale)
    return peak_signal_noise_ratio(pred_y, target_y, data_range=1.0, reduction="none",
                                   dim=(1, 2, 3))


def ssim_y(pred: Tensor, target: Tensor, scale: int) -> Tensor:
    """Per-image SSIM (``Tensor[B]``) on Y after cropping ``scale`` border pixels."""
    pred_y, target_y = _prepare(pred, target, scale)
    return structural_similarity_index_measure(pred_y, target_y, data_range=1.0,
                                               reduction="none")
