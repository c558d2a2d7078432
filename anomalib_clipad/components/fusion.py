# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Score aggregation and fusion, and the map post-processing shared by the methods.

* :func:`harmonic_mean`: ``n / sum_i (1 / x_i)`` (WinCLIP's aggregation across scales).
* :func:`aggregate_windows`: a patch's score from the windows that cover it (WinCLIP eq. 3, harmonic).
* :func:`reciprocal_fusion`: ``1 / (1 / a + 1 / b)``, what PromptAD and DevPrompt call "harmonic" fusion (half of the
  harmonic mean of ``a`` and ``b``).
* :func:`gaussian_smooth`: map smoothing (scipy-exact); resizing is :func:`.scoring.upsample`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

from .scoring import upsample

__all__ = ["EPSILON", "aggregate_windows", "gaussian_smooth", "harmonic_mean", "reciprocal_fusion", "upsample"]

EPSILON = 1e-12


def harmonic_mean(scores: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Harmonic mean ``n / sum(1 / x)`` of positive scores along ``dim``."""
    return scores.shape[dim] / (1.0 / scores.clamp_min(EPSILON)).sum(dim=dim)


def reciprocal_fusion(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """PromptAD's "harmonic" fusion of two scores: ``1 / (1 / a + 1 / b)``."""
    return 1.0 / (1.0 / first.clamp_min(EPSILON) + 1.0 / second.clamp_min(EPSILON))


def aggregate_windows(
    window_scores: torch.Tensor,
    indices: torch.Tensor,
    n_patches: int,
    mode: str = "harmonic",
) -> torch.Tensor:
    """Score of every patch from the scores of the windows that cover it.

    Args:
        window_scores: ``(B, n_windows)`` one score per window.
        indices: ``(n_windows, k)`` patch indices of each window (``clip.vision.window_indices``).
        n_patches: number of patches in the grid.
        mode: ``"harmonic"`` (WinCLIP eq. 3: ``|W(p)| / sum_{w in W(p)} 1 / s_w``) or ``"mean"`` (arithmetic mean).

    Returns:
        ``(B, n_patches)`` patch scores; patches covered by no window get 0.

    Raises:
        ValueError: unknown mode.
    """
    if mode not in ("harmonic", "mean"):
        msg = f"mode must be 'harmonic' or 'mean', got {mode!r}."
        raise ValueError(msg)
    batch = window_scores.shape[0]
    values = 1.0 / window_scores.clamp_min(EPSILON) if mode == "harmonic" else window_scores
    window_length = indices.shape[1]
    flat_indices = indices.reshape(1, -1).expand(batch, -1)
    per_patch = values.repeat_interleave(window_length, dim=1)
    totals = torch.zeros(batch, n_patches, dtype=values.dtype, device=values.device)
    totals = totals.scatter_add(1, flat_indices, per_patch)
    counts = torch.bincount(indices.reshape(-1), minlength=n_patches).to(values.dtype)
    if mode == "harmonic":
        return torch.where(counts > 0, counts / totals.clamp_min(EPSILON), torch.zeros_like(totals))
    return torch.where(counts > 0, totals / counts.clamp_min(1), torch.zeros_like(totals))


def _symmetric_pad(maps: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Pad by mirroring including the edge sample (scipy's ``mode="reflect"``, numpy's ``"symmetric"``)."""
    before = maps.narrow(dim, 0, radius).flip(dim)
    after = maps.narrow(dim, maps.shape[dim] - radius, radius).flip(dim)
    return torch.cat([before, maps, after], dim=dim)


def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian filter of maps ``(..., H, W)``, identical to ``scipy.ndimage.gaussian_filter``.

    The reference implementations smooth with scipy (radius ``int(4 * sigma + 0.5)``, edges mirrored including the edge
    sample), which differs at the borders from the ``"reflect"`` padding of torch/kornia/anomalib's ``GaussianBlur2d``;
    this separable version reproduces scipy exactly and exports to ONNX. ``sigma <= 0`` returns the maps unchanged.
    """
    if sigma <= 0:
        return maps
    shape = maps.shape
    maps = maps.reshape(-1, 1, *shape[-2:])
    radius = min(int(4.0 * sigma + 0.5), maps.shape[-1] - 1, maps.shape[-2] - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    smoothed = F.conv2d(_symmetric_pad(maps, radius, dim=-1), kernel.view(1, 1, 1, -1))
    smoothed = F.conv2d(_symmetric_pad(smoothed, radius, dim=-2), kernel.view(1, 1, -1, 1))
    return smoothed.reshape(shape)
