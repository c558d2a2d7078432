# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The one adapter through which anomalib-clipad reads and sets anomalib's thresholds.

anomalib 2.7's :class:`~anomalib.post_processing.PostProcessor` computes its image and pixel thresholds only at the
end of a validation epoch (F1-adaptive) and keeps them in the private buffers ``_image_threshold`` and
``_pixel_threshold`` (checkpointed, and baked into exported graphs); ``image_threshold`` / ``pixel_threshold`` are
read-only properties; the min-max normalisation range is in the buffers ``image_min`` ... ``pixel_max``.
Calibration on the target (:mod:`anomalib_clipad.training.calibration`), normal-only calibration
(:mod:`anomalib_clipad.training.normal_calibration`), the speed tools and a learned-state file's stored thresholds set
them through :func:`set_thresholds` and :func:`set_normalization` only, so that a change of anomalib's internals is
fixed in one place. ``NaN`` means "not calibrated".

:class:`RawScorePostProcessor` is the post-processor of the models reporting raw probabilities: anomalib 2.7's
compares scores with the *normalised* threshold (``1 - sensitivity``, 0.5) even when it does not normalise, so the raw
thresholds set here would never reach the predicted labels and masks.
"""

from __future__ import annotations

from typing import Any

import torch
from anomalib.post_processing import PostProcessor

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


def set_normalization(post_processor: Any, image: tuple[float, float], pixel: tuple[float, float]) -> None:
    """Set the post-processor's min-max normalisation ranges ``(min, max)`` of the raw image scores and maps.

    Raises:
        TypeError: the post-processor is not anomalib's (it has no normalisation buffers).
    """
    for kind, (low, high) in (("image", image), ("pixel", pixel)):
        for bound, value in (("min", low), ("max", high)):
            buffer = getattr(post_processor, f"{kind}_{bound}", None)
            if not isinstance(buffer, torch.Tensor):
                msg = f"{type(post_processor).__name__} has no {kind}_{bound!r} buffer (anomalib 2.x's PostProcessor)."
                raise TypeError(msg)
            buffer.fill_(float(value))


def reset_thresholds(post_processor: Any) -> None:
    """Forget any thresholds (both become ``NaN``, anomalib's "not calibrated")."""
    set_thresholds(post_processor, float("nan"))


class RawScorePostProcessor(PostProcessor):
    """anomalib's post-processor for raw scores: labels and masks use the raw thresholds set on it.

    No normalisation (``enable_normalization=False``); a score is anomalous when it is above the image (pixel)
    threshold, as anomalib's rule; where that is not calibrated (``NaN``), above ``1 - sensitivity`` (the probability
    0.5 by default), which is what anomalib 2.7 uses for every raw score.

    Args:
        **kwargs: :class:`~anomalib.post_processing.PostProcessor`'s other arguments.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("enable_normalization", None)
        super().__init__(enable_normalization=False, **kwargs)

    def _raw_or_default(self, raw: torch.Tensor, default: torch.Tensor) -> torch.Tensor:
        if self.enable_normalization:
            return default
        return torch.where(torch.isnan(raw), default.to(raw.device), raw)

    @property
    def normalized_image_threshold(self) -> torch.Tensor:
        """The image threshold the labels use: the raw one (``1 - image_sensitivity`` where not calibrated)."""
        return self._raw_or_default(self.image_threshold, super().normalized_image_threshold)

    @property
    def normalized_pixel_threshold(self) -> torch.Tensor:
        """The pixel threshold the masks use: the raw one (``1 - pixel_sensitivity`` where not calibrated)."""
        return self._raw_or_default(self.pixel_threshold, super().normalized_pixel_threshold)
