# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The CLIP layer: the only code of anomalib-clipad that knows open_clip's internals."""

from .attention import value_value_attention
from .loading import (
    FROM_CHECKPOINT,
    TINY_BACKBONE,
    PretrainedWeightsError,
    UnknownBackboneError,
    get_tokenizer,
    load_clip,
)
from .text import ClipTextTower, splice_context
from .vision import ClipVisionTower, VisionFeatures, validate_images, window_indices

__all__ = [
    "FROM_CHECKPOINT",
    "TINY_BACKBONE",
    "ClipTextTower",
    "ClipVisionTower",
    "PretrainedWeightsError",
    "UnknownBackboneError",
    "VisionFeatures",
    "get_tokenizer",
    "load_clip",
    "splice_context",
    "validate_images",
    "value_value_attention",
    "window_indices",
]
