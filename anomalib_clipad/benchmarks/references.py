# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""What the speed command divides by: a plain CLIP pass, and the implementations our models replace.

* :func:`plain_image_forward`: open_clip's ``CLIP.encode_image`` of a batch, nothing of ours: the floor of any
  CLIP-based detector's inference.
* :data:`COUNTERPARTS`: per model, another implementation of the same method to time against ours on the same images
  (anomalib's ``WinClip`` for WinCLIP+).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn


def plain_image_forward(clip: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``clip.encode_image(images)`` without gradients."""
    with torch.no_grad():
        return clip.encode_image(images)


def anomalib_winclip(backbone: str, image_size: int, class_name: str, references: torch.Tensor) -> nn.Module:
    """The ``WinClipModel`` of anomalib on ``backbone`` at ``image_size`` px, random weights, set up few-shot.

    anomalib hard-codes its backbone, weights tag and input size (the backbone's own); they are replaced while it is
    built, so that both implementations run the same architecture on the same images.

    Args:
        backbone: open_clip architecture.
        image_size: input side in pixels.
        class_name: the object name of its prompts.
        references: ``(K, 3, H, W)`` pre-processed normal images (its reference memory).

    Returns:
        The model in eval mode, set up with ``K`` reference images.
    """
    import anomalib.models.image.winclip.torch_model as winclip
    import open_clip

    def create_model_and_transforms(name: str, pretrained: str | None = None, **kwargs: Any) -> Any:
        del pretrained  # random weights: the timings do not depend on them
        return open_clip.create_model_and_transforms(name, pretrained=None, force_image_size=image_size, **kwargs)

    saved = winclip.BACKBONE, winclip.open_clip
    winclip.BACKBONE = backbone
    winclip.open_clip = SimpleNamespace(create_model_and_transforms=create_model_and_transforms)
    try:
        model = winclip.WinClipModel(scales=(2, 3)).eval()
    finally:
        winclip.BACKBONE, winclip.open_clip = saved
    with torch.no_grad():
        model.setup(class_name, references)
    return model


@dataclass(frozen=True)
class Counterpart:
    """Another implementation of a model's method, timed against ours.

    Attributes:
        label: its name in the table (e.g. ``"anomalib WinClip"``).
        build: ``(backbone, image_size, class_name, references) -> model``: the implementation set up on the same
            reference images as ours, called on the same pre-processed images.
        goal: how many times slower than ours it should be (our speed-up), if there is a goal.
    """

    label: str
    build: Callable[[str, int, str, torch.Tensor], nn.Module]
    goal: float | None = None


COUNTERPARTS: dict[str, Counterpart] = {
    "WinCLIPPlus": Counterpart("anomalib WinClip", anomalib_winclip, goal=1.8),
}
"""Registry name -> the implementation it is timed against (models without one are only divided by plain CLIP)."""
