# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""WinCLIP / WinCLIP+ as an anomalib model.

Zero-shot (``k_shot=0``, WinCLIP) or few-normal-shot (``k_shot>0``, WinCLIP+). Nothing is trained: ``setup`` builds the
text prototypes of the class and, for WinCLIP+, the reference memories of ``k_shot`` normal images, drawn from the
datamodule's train split by a seeded sampler (or from a user folder). Their file paths are logged and stored in the
checkpoint.

Example:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from anomalib_clipad import WinCLIPPlus
    >>> model = WinCLIPPlus(k_shot=1)  # doctest: +SKIP
    >>> Engine().test(model, datamodule=MVTecAD(category="bottle"))  # doctest: +SKIP

Paper: Jeong et al., "WinCLIP: Zero-/Few-Shot Anomaly Classification and Segmentation", CVPR 2023.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch import Callback

from anomalib_clipad.components.prompts import class_specific_anomalous_states, known_categories, prompt_class_name
from anomalib_clipad.data.shots import Shots, collect_shots, load_reference_folder
from anomalib_clipad.export import QuietExportMixin
from anomalib_clipad.models.checkpoint_policy import ClipCheckpointPolicy
from anomalib_clipad.models.common import (
    BuiltOnFirstUse,
    build_torch_model,
    clip_pre_processor,
    clip_transform,
    load_without_original_weights,
    resolve_class_name,
    warn_if_calibrating_on_test,
)
from anomalib_clipad.training.progress import InferenceTiming

from .torch_model import DEFAULT_BACKBONE, DEFAULT_PRETRAINED, WinCLIPPlusModel

logger = logging.getLogger(__name__)

BUILTIN_STATES = "builtin"
"""Value of ``task_specific_states`` that selects the built-in MVTec AD / VisA defect list of the category."""

_CHECKPOINT_KEY = "winclip_plus_reference_paths"

__all__ = ["WinCLIPPlus"]


class WinCLIPPlus(QuietExportMixin, AnomalibModule):
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

    model = BuiltOnFirstUse()

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
        if pre_processor is True:
            pre_processor = self.configure_pre_processor((image_size, image_size))
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.save_hyperparameters(ignore=["pre_processor", "post_processor", "evaluator", "visualizer"])
        self.timing = InferenceTiming(type(self).__name__)
        self.checkpoint_policy = ClipCheckpointPolicy(
            type(self).__name__,
            ("backbone", "image_size", "scales"),
            requested_quick_gelu=quick_gelu,
            rebuild_for_class=self._rebuild_for_class,
        )
        self.class_name = class_name
        self.k_shot = k_shot
        self.image_size = image_size
        self.seed = seed
        self.few_shot_source = Path(few_shot_source) if few_shot_source else None
        self.task_specific_states = task_specific_states
        self.reference_paths: list[str] = []
        self._not_ready_reason: str | None = None

    def configure_model(self) -> None:
        """Build the torch model and its CLIP (once); record the activation and weight source."""
        build_torch_model(self, WinCLIPPlusModel)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> WinCLIPPlus:
        """Reload from the checkpoint alone: ``pretrained="checkpoint"`` unless given (it holds every weight)."""
        return load_without_original_weights(super().load_from_checkpoint, checkpoint_path, *args, **kwargs)

    def configure_callbacks(self) -> list[Callback]:
        """The component callbacks of anomalib and the checkpoint policy (real weights, the class of the set-up)."""
        return [*super().configure_callbacks(), self.checkpoint_policy, self.timing]

    def setup(self, stage: str | None = None) -> None:
        """Build the text prototypes and, for WinCLIP+, the reference memories of the class.

        Done once per class: a later set-up for the same class keeps them; another class re-builds them (logged).
        What cannot be built here (no class name, no source of reference images, e.g. ``anomalib predict
        --ckpt_path`` on a folder of images) may still come from the checkpoint that Lightning restores after this
        hook; if it does not, the start of validation, test or prediction raises a clear error (:meth:`require_ready`).

        Raises:
            ValueError: ``k_shot`` larger than the number of normal images available, or unknown category for
                ``task_specific_states="builtin"``.
        """
        del stage
        self.configure_model()
        trainer = getattr(self, "_trainer", None)
        warn_if_calibrating_on_test(trainer, type(self).__name__)
        try:
            category = resolve_class_name(self.class_name, trainer)
        except ValueError as error:
            self._not_ready_reason = str(error)
            return
        current = self.checkpoint_policy.class_name
        if current is not None and prompt_class_name(current) == prompt_class_name(category):
            return
        if current is not None:
            logger.info("WinCLIPPlus: re-building for class %r (it was set up for %r).", category, current)
        self._build_for_class(category, trainer)

    def _rebuild_for_class(self, category: str) -> None:
        self._build_for_class(category, getattr(self, "_trainer", None))
        self.require_ready()

    def _build_for_class(self, category: str, trainer: Any) -> None:
        """Text prototypes of ``category`` and, for WinCLIP+, the memories of ``k_shot`` normal images."""
        references = None
        if self.k_shot:
            shots = self._collect_shots(trainer)
            if shots is None:
                self._not_ready_reason = (
                    f"WinCLIP+ with k_shot={self.k_shot} needs normal reference images: run it with a datamodule that "
                    "has a train split, pass `few_shot_source` (a folder of normal images), or a checkpoint."
                )
            else:
                references = shots.images
                self.reference_paths = shots.paths
                logger.info("WinCLIP+ reference images (k=%d, seed=%d): %s", self.k_shot, self.seed, shots.paths)
        self.model.set_class(prompt_class_name(category), self._task_specific_states(category))
        self.model.set_references(references)  # None: never keep another class's memories
        self.checkpoint_policy.class_name = category

    def require_ready(self) -> None:
        """Raise a clear error if the text prototypes or (for ``k_shot > 0``) the reference memories are missing.

        Raises:
            ValueError: what ``setup`` could not build was not restored from a checkpoint either.
        """
        if not self.model.is_ready:
            raise ValueError(self._not_ready_reason or "WinCLIPPlus is not set up: call setup() first.")

    def on_validation_start(self) -> None:
        """Check that the model is ready (after any checkpoint restore and the policy's class check)."""
        super().on_validation_start()
        self.require_ready()

    on_test_start = on_validation_start
    on_predict_start = on_validation_start

    def _collect_shots(self, trainer: Any) -> Shots | None:
        transform = getattr(self.pre_processor, "transform", None) or clip_transform(self.image_size)
        if self.few_shot_source is not None:
            return load_reference_folder(self.few_shot_source, self.k_shot, self.seed, transform)
        train_data = getattr(getattr(trainer, "datamodule", None), "train_data", None)
        if train_data is None:
            return None
        return collect_shots(train_data, self.k_shot, self.seed, transform)

    def _task_specific_states(self, category: str) -> list[str] | None:
        if self.task_specific_states != BUILTIN_STATES:
            return self.task_specific_states
        states = class_specific_anomalous_states(category)
        if states is None:
            msg = (
                f"No built-in defect list for category {category!r}; known: {', '.join(known_categories())}. "
                "Pass the state phrases as a list instead."
            )
            raise ValueError(msg)
        return states

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the class and the reference image paths in the checkpoint."""
        super().on_save_checkpoint(checkpoint)
        self.checkpoint_policy.save(checkpoint)
        checkpoint[_CHECKPOINT_KEY] = list(self.reference_paths)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Check the checkpoint; restore its class and reference paths (the memories are buffers of the state dict)."""
        self.checkpoint_policy.load(checkpoint, self)
        super().on_load_checkpoint(checkpoint)
        self.reference_paths = list(checkpoint.get(_CHECKPOINT_KEY, []))

    @staticmethod
    def configure_optimizers() -> None:
        """WinCLIP / WinCLIP+ train nothing."""
        return

    def validation_step(self, batch: Batch, *args, **kwargs) -> Batch:
        """Score a validation batch (anomalib calibrates thresholds and normalisation on these)."""
        del args, kwargs
        return batch.update(**self.model(batch.image)._asdict())

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No training: no special trainer arguments."""
        return {}

    @property
    def learning_type(self) -> LearningType:
        """``FEW_SHOT`` with reference images, else ``ZERO_SHOT``."""
        return LearningType.FEW_SHOT if self.k_shot else LearningType.ZERO_SHOT

    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """Bicubic resize to the model input (default 240x240) and CLIP mean/std normalisation."""
        return clip_pre_processor(image_size or (240, 240))

    @staticmethod
    def configure_post_processor() -> PostProcessor:
        """Anomalib's default post-processor (thresholds and min-max normalisation from the validation set)."""
        return PostProcessor()
