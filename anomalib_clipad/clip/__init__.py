# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The CLIP layer: the only code of anomalib-clipad that knows open_clip's internals.

Models build their CLIP with :func:`build_clip` (weights, activation, position embeddings, checks).
"""

from .attention import value_value_attention
from .builder import (
    INTERPOLATE_BICUBIC,
    INTERPOLATE_BILINEAR,
    POSITION_EMBEDDING_MODES,
    RESIZE_AT_LOAD,
    ClipTowers,
    build_clip,
    check_position_embedding_mode,
)
from .loading import (
    FROM_CHECKPOINT,
    TINY_BACKBONE,
    TINY_BACKBONE_24,
    PretrainedWeightsError,
    UnknownBackboneError,
    check_backbone,
    get_tokenizer,
    load_clip,
    set_quick_gelu,
    uses_quick_gelu,
)
from .text import ClipTextTower, splice_context
from .vision import ClipVisionTower, VisionFeatures, validate_images, window_indices

__all__ = [
    "FROM_CHECKPOINT",
    "INTERPOLATE_BICUBIC",
    "INTERPOLATE_BILINEAR",
    "POSITION_EMBEDDING_MODES",
    "RESIZE_AT_LOAD",
    "TINY_BACKBONE",
    "TINY_BACKBONE_24",
    "ClipTextTower",
    "ClipTowers",
    "ClipVisionTower",
    "PretrainedWeightsError",
    "UnknownBackboneError",
    "VisionFeatures",
    "build_clip",
    "check_backbone",
    "check_position_embedding_mode",
    "get_tokenizer",
    "load_clip",
    "set_quick_gelu",
    "splice_context",
    "uses_quick_gelu",
    "validate_images",
    "value_value_attention",
    "window_indices",
]
