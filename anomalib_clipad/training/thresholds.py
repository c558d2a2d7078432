# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The one adapter through which anomalib-clipad reads and sets anomalib's thresholds.

anomalib 2.7's :class:`~anomalib.post_processing.PostProcessor` computes its image and pixel thresholds only at the
end of a validation epoch (F1-adaptive) and keeps them in the private buffers ``_image_threshold`` and
``_pixel_threshold`` (checkpointed, and baked into exported graphs); ``image_threshold`` / ``pixel_threshold`` are
read-only properties. Calibration on the target (:mod:`anomalib_clipad.training.calibration`), the speed tools and a
learned-state file's stored thresholds set them through :func:`set_thresholds` only, so that a change of anomalib's
internals is fixed in one place. ``NaN`` means "not calibrated".
"""

from __future__ import annotations

from typing import Any

import torch

_BUFFERS = {"image": "_image_threshold", "pixel": "_pixel_threshold"}


def _buffer(post_processor: Any, kind: str) -> torch.Tensor:
    buffer = getattr(post_processor, _BUFFERS[kind], None)
    if not isinstance(buffer, torch.Tensor):
        msg = (
            f"{type(post_processor).__name__} has no {_BUFFERS[kind]!r} buffer: anomalib-clipad sets thresholds on "
            "anomalib 2.x's PostProcessor."
        )
        raise TypeError(msg)
    return buffer


def set_thresholds(post_processor: Any, image: float, pixel: float | None = None) -> None:
    """Set the post-processor's raw-score thresholds (``pixel`` defaults to ``image``; ``NaN``: not calibrated).

    Raises:
        TypeError: the post-processor is not anomalib's (it has no threshold buffers).
    """
    _buffer(post_processor, "image").fill_(float(image))
    _buffer(post_processor, "pixel").fill_(float(image if pixel is None else pixel))


def get_thresholds(post_processor: Any) -> dict[str, float]:
    """The post-processor's raw-score thresholds ``{"image": ..., "pixel": ...}`` (``NaN``: not calibrated)."""
    return {kind: float(_buffer(post_processor, kind)) for kind in _BUFFERS}


def reset_thresholds(post_processor: Any) -> None:
    """Forget any thresholds (both become ``NaN``, anomalib's "not calibrated")."""
    set_thresholds(post_processor, float("nan"))
