# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Scores from features and text prototypes, and the map post-processing every method shares.

* :func:`anomaly_probability`: ``softmax(s * <f / ||f||, [t_n, t_a]>)[anomalous]``; the scale ``s`` is each method's:
  ``1 / 0.07`` (WinCLIP, AnomalyCLIP), CLIP's raw ``logit_scale`` (PromptAD), ``100`` (SimCLIP).
* :func:`scaled_sigma`: a Gaussian sigma given at a reference map size, scaled to the output size.
* :func:`upsample`: bilinear resizing of maps, with the ``align_corners`` choice of each reference (SimCLIP: ``True``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812


def anomaly_probability(features: torch.Tensor, prototypes: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Anomaly probability of features ``(..., D)`` against ``[t_normal, t_anomalous]`` ``(2, D)``.

    Args:
        features: image or patch features (normalised here).
        prototypes: L2-normalised text prototypes, normal first.
        scale: the logit scale ``s`` (an inverse temperature).

    Returns:
        ``softmax(s * cos)[..., 1]``, shape ``(...)``, in ``[0, 1]``.
    """
    logits = scale * (F.normalize(features, dim=-1) @ prototypes.T)
    return logits.softmax(dim=-1)[..., 1]


def scaled_sigma(sigma: float, reference_size: int, output_size: tuple[int, int] | int) -> float:
    """``sigma`` given for maps of ``reference_size`` pixels, scaled to ``output_size`` (mean of height and width).

    PromptAD smooths with sigma 4 at 400 px, AnomalyCLIP 4 at 518 px, SimCLIP 7 at 518 px.
    """
    height, width = (output_size, output_size) if isinstance(output_size, int) else output_size
    return float(sigma) * (height + width) / (2 * reference_size)


def upsample(maps: torch.Tensor, size: tuple[int, int] | int, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of maps ``(B, H, W)`` or ``(B, C, H, W)``; keeps the input rank.

    Args:
        maps: the maps.
        size: ``(height, width)`` or a side.
        align_corners: ``False`` for WinCLIP, PromptAD, DevPrompt, AnomalyCLIP; ``True`` for SimCLIP's reference.
    """
    squeeze = maps.ndim == 3
    maps = maps.unsqueeze(1) if squeeze else maps
    size = (size, size) if isinstance(size, int) else tuple(size)
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=align_corners)
    return maps.squeeze(1) if squeeze else maps
