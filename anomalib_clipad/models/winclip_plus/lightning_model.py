# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""WinCLIP / WinCLIP+ as an anomalib model.

Zero-shot (``k_shot=0``, WinCLIP) or few-normal-shot (``k_shot>0``, WinCLIP+). Nothing is trained: before scoring,
the model builds the text prototypes of the class and, for WinCLIP+, the reference memories of ``k_shot`` normal
images, drawn from the datamodule's train split by a seeded sampler (or from a user folder); their file paths are
logged and stored in the checkpoint and the learned-state file (the shared
:class:`~anomalib_clipad.models.base.ClipModelMixin`).

Example:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from anomalib_clipad import WinCLIPPlus
    >>> model = WinCLIPPlus(k_shot=1)  # doctest: +SKIP
    >>> Engine().test(model, datamodule=MVTecAD(category="bottle"))  # doctest: +SKIP

Paper: Jeong et al., "WinCLIP: Zero-/Few-Shot Anomaly Classification and Segmentation", CVPR 2023.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer

from anomalib_clipad.components.prompts import class_specific_anomalous_states, known_categories
from anomalib_clipad.models.base import ClipModelMixin

from .torch_model import DEFAULT_BACKBONE, DEFAULT_PRETRAINED, WinCLIPPlusModel

BUILTIN_STATES = "builtin"
"""Value of ``task_specific_states`` that selects the built-in MVTec AD / VisA defect list of the category."""

__all__ = ["WinCLIPPlus"]


class WinCLIPPlus(ClipModelMixin, AnomalibModule):
    """WinCLIP (zero-shot) and WinCLIP+ (few-normal-shot) anomaly classification and segmentation.

    Named ``WinCLIPPlus`` so that it never collides with anomalib's built-in ``WinClip``, even case-insensitively
    (``anomalib.models.get_model`` compares lower-case names).

    Args:
        class_name: object name for the prompts; default: the datamodule's ``category`` (e.g. MVTecAD's). Dataset
            names are mapped to words (``metal_nut`` -> ``"metal nut"``).
        k_shot: number of normal reference images; ``0`` runs zero-shot WinCLIP, ``> 0`` WinCLIP+.
        scales: window sizes in patches (paper: 2 and 3).
        backbone: open_clip architecture (paper: ``ViT-B-16-plus-240``).
        pretrained: open_clip pretrained tag, path to a local weight file, ``None`` (random weights, tests only), or
            ``"checkpoint"``: the architecture only, weights from the checkpoint loaded next (``--ckpt_path``;
            ``load_from_checkpoint`` uses it by default).
        quick_gelu: QuickGELU activations in the CLIP (OpenAI weights) or GELU; ``None``: the weights' default.
            Recorded in checkpoints; a model reloaded with ``pretrained="checkpoint"`` takes the checkpoint's.
        image_size: side of the square model input in pixels (paper: 240).
        seed: seed of the reference-image selection.
        few_shot_source: folder of normal reference images to use instead of the train split.
        task_specific_states: extra anomalous state phrases (``{}`` = class name), or ``"builtin"`` for the MVTec AD /
            VisA defect list of the category; ``None`` uses the paper's generic states only.
        learned_state: a learned-state file (``weights/learned_state.pt`` of a run: text prototypes and reference
            memories) to score with; it must match the backbone and activation (another class is re-built).
        calibration: ``"held_out"`` (F1-adaptive thresholds from a held-out split with anomalies) or ``"normal_only"``
            (from good images only: :mod:`~anomalib_clipad.training.normal_calibration`).
        false_alarm_rate: ``normal_only``: the share of good images flagged; needs ``ceil(1 / rate)`` normal images.
        pre_processor: pre-processor, ``True`` for the default (bicubic resize to ``image_size`` + CLIP mean/std).
        post_processor: post-processor, ``True`` for the default.
        evaluator: evaluator, ``True`` for the default.
        visualizer: visualizer, ``True`` for the default.

    Set-up is per class: used on another category (e.g. a second ``Engine.test`` with another datamodule, or a
    checkpoint of class A tested on class B), the model re-builds its prompts (and, for WinCLIP+, its reference
    memories from the new datamodule's train split) and logs it; where it cannot, it stops with a clear error.

    Raises:
        ValueError: ``k_shot`` is negative.
    """

    torch_model_class: ClassVar[type] = WinCLIPPlusModel
    default_image_size: ClassVar[int] = 240
    draws_references: ClassVar[bool] = True

    def __init__(  # noqa: PLR0917 (anomalib-style hyper-parameters)
        self,
        class_name: str | None = None,
        k_shot: int = 0,
        scales: tuple[int, ...] = (2, 3),
        backbone: str = DEFAULT_BACKBONE,
        pretrained: str | None = DEFAULT_PRETRAINED,
        quick_gelu: bool | None = None,
        image_size: int = 240,
        seed: int = 0,
        few_shot_source: str | Path | None = None,
        task_specific_states: list[str] | str | None = None,
        learned_state: str | None = None,
        calibration: str = "held_out",
        false_alarm_rate: float = 0.01,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        if k_shot < 0:
            msg = f"k_shot must be 0 (zero-shot WinCLIP) or positive (WinCLIP+), got {k_shot}."
            raise ValueError(msg)
        if isinstance(task_specific_states, str) and task_specific_states != BUILTIN_STATES:
            msg = f"task_specific_states must be a list of state phrases, {BUILTIN_STATES!r} or None."
            raise ValueError(msg)
        super().__init__(
            image_size=image_size,
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )

    def anomaly_states(self, class_name: str) -> Sequence[str] | None:
        """``task_specific_states``: the user's phrases, the built-in defect list of the category, or none.

        Raises:
            ValueError: ``"builtin"`` for a category without a built-in list.
        """
        states = self.hparams.task_specific_states
        if states != BUILTIN_STATES:
            return states
        builtin = class_specific_anomalous_states(class_name)
        if builtin is None:
            msg = (
                f"No built-in defect list for category {class_name!r}; known: {', '.join(known_categories())}. "
                "Pass the state phrases as a list instead."
            )
            raise ValueError(msg)
        return builtin
