# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The one builder of every model's CLIP: weights, activation, position embeddings, frozen towers, checks.

Every torch model of anomalib-clipad gets its CLIP from :func:`build_clip` (anomalib's own models build their
backbone in the torch model too)::

    towers = build_clip("ViT-L-14-336", "openai", image_size=518, position_embedding="interpolate_bilinear",
                        layers=(6, 12, 18, 24))
    towers.vision   # ClipVisionTower, frozen
    towers.text     # ClipTextTower, frozen
    towers.hparams  # {"quick_gelu": True, "weight_source": "tag:openai"}: what a Lightning model records

Weights come from an open_clip tag, a local file, ``None`` (random, loud warning) or ``"checkpoint"`` (the
architecture only; :mod:`.loading`). The activation is decided by the ``quick_gelu`` argument (``None``: the weights'
default, see :func:`~anomalib_clipad.clip.loading.load_clip`).

Position embeddings at an input size other than the backbone's are handled in one of three named ways, since they
give different features (up to 0.32 apart on a 24 -> 37 grid):

* ``"resize_at_load"``: resized once when the weights are loaded, with open_clip's ``resize_pos_embed`` (bicubic,
  antialiased); WinCLIP's and SimCLIP's way;
* ``"interpolate_bilinear"``: interpolated bilinearly in every forward pass (AnomalyCLIP's reference);
* ``"interpolate_bicubic"``: interpolated bicubically in every forward pass (PromptAD's and DevPrompt's).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .loading import FROM_CHECKPOINT, _is_path_like, check_backbone, load_clip, uses_quick_gelu
from .text import ClipTextTower
from .vision import ClipVisionTower

RESIZE_AT_LOAD = "resize_at_load"
INTERPOLATE_BILINEAR = "interpolate_bilinear"
INTERPOLATE_BICUBIC = "interpolate_bicubic"
POSITION_EMBEDDING_MODES = (RESIZE_AT_LOAD, INTERPOLATE_BILINEAR, INTERPOLATE_BICUBIC)


def check_position_embedding_mode(mode: str) -> None:
    """Raise a clear error for an unknown position-embedding mode (cheap: call it in ``__init__``).

    Raises:
        ValueError: ``mode`` is not one of :data:`POSITION_EMBEDDING_MODES`.
    """
    if mode not in POSITION_EMBEDDING_MODES:
        msg = f"position_embedding must be one of {POSITION_EMBEDDING_MODES}, got {mode!r}."
        raise ValueError(msg)


def block_list(argument: str, layers: Sequence[int]) -> tuple[int, ...]:
    """A model's list of image-tower blocks (1-indexed) as a tuple; at least one, each once.

    Whether each block exists is checked once the tower is built (:func:`build_clip`'s ``layers``).

    Args:
        argument: the model argument the blocks come from (``"feature_layers"``, ``"memory_layers"``), for the error.
        layers: the blocks.

    Returns:
        The blocks as integers, in the given order.

    Raises:
        ValueError: no block, or a block named twice.
    """
    blocks = tuple(int(layer) for layer in layers)
    if not blocks or len(set(blocks)) != len(blocks):
        msg = f"{argument} must name at least one image-tower block, each once; got {list(layers)}."
        raise ValueError(msg)
    return blocks


def weight_source(pretrained: str | os.PathLike | nn.Module | None) -> str:
    """Where the weights came from: ``tag:<tag>``, ``file:<path>``, ``random``, ``checkpoint`` or ``module``."""
    if isinstance(pretrained, nn.Module):
        return "module"
    if pretrained is None:
        return "random"
    if pretrained == FROM_CHECKPOINT:
        return FROM_CHECKPOINT
    if _is_path_like(pretrained):
        return f"file:{Path(pretrained).expanduser()}"
    return f"tag:{pretrained}"


@dataclass
class ClipTowers:
    """The frozen CLIP towers a model is built on, and what the builder decided.

    Attributes:
        vision: the image tower.
        text: the text tower.
        backbone: the open_clip architecture name.
        image_size: the square input size the towers were checked for.
        quick_gelu: whether the transformer MLPs use QuickGELU (OpenAI weights) rather than GELU.
        weight_source: see :func:`weight_source`.
        position_embedding: one of :data:`POSITION_EMBEDDING_MODES`.
    """

    vision: ClipVisionTower
    text: ClipTextTower
    backbone: str
    image_size: int
    quick_gelu: bool
    weight_source: str
    position_embedding: str

    @property
    def hparams(self) -> dict[str, Any]:
        """What a Lightning model records in its hyper-parameters (checkpoints keep it)."""
        return {"quick_gelu": self.quick_gelu, "weight_source": self.weight_source}


def build_clip(
    backbone: str,
    pretrained: str | os.PathLike | nn.Module | None,
    *,
    image_size: int,
    quick_gelu: bool | None = None,
    position_embedding: str = RESIZE_AT_LOAD,
    layers: Sequence[int] | Mapping[str, int | Sequence[int] | None] = (),
) -> ClipTowers:
    """Build a model's frozen CLIP towers and check them against what the model will ask of them.

    Args:
        backbone: open_clip architecture name.
        pretrained: open_clip tag, path of a local weight file, ``None`` (random weights, tests only),
            ``"checkpoint"`` (architecture only; the weights come from the checkpoint loaded next), or an already built
            open_clip CLIP of ``backbone`` (used as it is, frozen; e.g. weights held in memory, as the parity tests do).
        image_size: side of the square model input in pixels; must be a multiple of the patch size.
        quick_gelu: QuickGELU (``True``) or GELU (``False``); ``None`` takes the weights' default.
        position_embedding: how position embeddings are adapted to ``image_size`` (see the module docstring).
        layers: image-tower blocks (1-indexed) the model reads; each must exist. A mapping names the model argument
            each comes from (``{"feature_layers": (6, 12, 18, 24), "dpam_start_layer": 6}``; ``None`` values are
            skipped), so that the error for a block the backbone does not have says which argument to change.

    Returns:
        The :class:`ClipTowers`.

    Raises:
        UnknownBackboneError: unknown architecture.
        PretrainedWeightsError: weights cannot be had.
        ValueError: unknown position-embedding mode, an image size that is not a multiple of the patch size, or a
            layer the image tower does not have.
    """
    check_position_embedding_mode(position_embedding)
    image_size = int(image_size)
    if image_size < 1:
        msg = f"image_size must be positive, got {image_size}."
        raise ValueError(msg)
    if isinstance(pretrained, nn.Module):
        check_backbone(backbone)
        clip = pretrained.eval().requires_grad_(False)
        if quick_gelu is not None and uses_quick_gelu(clip) != bool(quick_gelu):
            uses = "uses" if uses_quick_gelu(clip) else "does not use"
            msg = f"The given CLIP {uses} QuickGELU, but quick_gelu={quick_gelu}."
            raise ValueError(msg)
    else:
        clip = load_clip(
            backbone,
            pretrained,
            quick_gelu=quick_gelu,
            image_size=image_size if position_embedding == RESIZE_AT_LOAD else None,
        )
    interpolation = "bilinear" if position_embedding == INTERPOLATE_BILINEAR else "bicubic"
    vision = ClipVisionTower(clip.visual, position_interpolation=interpolation)
    text = ClipTextTower(clip, backbone)
    vision.check_image_size(image_size, backbone)
    layers_by_argument = layers if isinstance(layers, Mapping) else {"layers": layers}
    for argument, value in layers_by_argument.items():
        if value is not None:
            blocks = (value,) if isinstance(value, int) else tuple(value)
            vision.check_layers(blocks, argument=argument, backbone=backbone)
    grid = vision.grid_size((image_size, image_size))
    if position_embedding == RESIZE_AT_LOAD and grid != vision.trained_grid_size:
        msg = (
            f"The given CLIP's image tower is built for a {vision.trained_grid_size} patch grid, not {grid}: build it "
            f"at image_size {image_size} (open_clip's force_image_size) or use a forward-pass interpolation mode."
        )
        raise ValueError(msg)
    return ClipTowers(
        vision=vision,
        text=text,
        backbone=backbone,
        image_size=image_size,
        quick_gelu=uses_quick_gelu(clip),
        weight_source=weight_source(pretrained),
        position_embedding=position_embedding,
    )
