# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The one vocabulary of the torch models: what every CLIP-based anomaly detector of anomalib-clipad offers.

:class:`ClipAnomalyDetector` is a :class:`typing.Protocol`: the five torch models (``WinCLIPPlusModel``,
``PromptADModel``, ``DevPromptModel``, ``AnomalyCLIPModel``, ``SimCLIPModel``) implement it without inheriting from
it, and code that works on any of them (Lightning models, benchmarks, export) uses these names only, never the model's
class. It is ``runtime_checkable``: ``isinstance(model, ClipAnomalyDetector)`` checks that every name is there.

The life of a model: build it, :meth:`~ClipAnomalyDetector.set_class` (the text side of a class),
:meth:`~ClipAnomalyDetector.set_references` where :attr:`~ClipAnomalyDetector.uses_references` (a memory of normal
images), train or load what it learns, then call it on images. :attr:`~ClipAnomalyDetector.is_ready` says whether it
can score; :meth:`~ClipAnomalyDetector.require_ready` raises a
:class:`~anomalib_clipad.components.readiness.ModelNotReadyError` naming what is missing.

Example:
    >>> from anomalib_clipad.models.interface import ClipAnomalyDetector
    >>> def prepare(model: ClipAnomalyDetector, class_name, references) -> None:
    ...     model.set_class(class_name)
    ...     if model.uses_references:
    ...         model.set_references(references)
    ...     model.require_ready()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from anomalib.data import InferenceBatch


@runtime_checkable
class ClipAnomalyDetector(Protocol):
    """A torch model that scores images for anomalies with a frozen CLIP.

    Attributes:
        class_name: the class the text side is set up for (as given to :meth:`set_class`); ``None`` before.
        clip_hparams: what the CLIP builder decided (``quick_gelu``, ``weight_source``), recorded in the Lightning
            model's hyper-parameters.
    """

    class_name: str | None
    clip_hparams: dict[str, Any]

    @property
    def uses_references(self) -> bool:
        """Whether scoring uses a reference memory of normal images (filled by :meth:`set_references`)."""
        ...

    @property
    def references_ready(self) -> bool:
        """Whether the reference memory holds features (always ``False`` for a model without one)."""
        ...

    @property
    def is_ready(self) -> bool:
        """Whether the model can score: its text side and, where :attr:`uses_references`, its references are there."""
        ...

    def set_class(self, class_name: str, anomaly_states: Sequence[str] | None = None) -> None:
        """Set the text side up for a class: its prompts or text prototypes.

        Args:
            class_name: the object name (a dataset category such as ``"metal_nut"`` is accepted where the model maps
                it to prompt words). Sets :attr:`class_name`.
            anomaly_states: extra class-specific anomalous state phrases, ``{}`` standing for the class name, for the
                models whose prompts have such states; the others raise ``ValueError`` when given some.

        Raises:
            ValueError: empty class name, or states the model cannot use.
        """
        ...

    def set_references(self, references: torch.Tensor | Mapping[str, torch.Tensor] | None) -> None:
        """Fill the reference memory from normal images; ``None`` clears it.

        Args:
            references: ``(K, 3, H, W)`` pre-processed normal images, or the :meth:`encode_images` output of them.

        Raises:
            ValueError: invalid images, another number of images than the model was built for, or references given
                to a model that has no reference memory.
        """
        ...

    def require_ready(self) -> None:
        """Check that the model can score.

        Raises:
            ModelNotReadyError: naming every missing part (text side, reference memory) and how to get it.
        """
        ...

    def encode_images(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The frozen image side: one pass of the image tower, everything scoring needs (cacheable per image).

        Args:
            images: ``(B, 3, H, W)`` pre-processed images of the model's input size.

        Returns:
            Named feature tensors, their first dimension the batch.

        Raises:
            ValueError: grayscale, wrong rank or wrong size.
        """
        ...

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Score a batch of pre-processed images.

        Args:
            images: ``(B, 3, H, W)`` pre-processed images of the model's input size.

        Returns:
            ``InferenceBatch`` with ``pred_score`` ``(B,)`` and ``anomaly_map`` ``(B, H, W)``.

        Raises:
            ModelNotReadyError: the model is not ready (see :meth:`require_ready`).
        """
        ...

    def update_text_features(self) -> None:
        """Store the text side computed from the learned parameters for inference (a no-op where nothing is learned).

        Call it after training or after loading learned parameters.
        """
        ...

    def architecture(self) -> dict[str, Any]:
        """The settings a learned state must share with this model.

        Returns:
            ``backbone``, ``image_size`` and the settings that give learned tensors or stored reference memories their
            shapes (e.g. ``feature_layers``, ``n_ctx``, ``k_shot``).
        """
        ...
