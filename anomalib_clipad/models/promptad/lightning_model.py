# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""PromptAD for anomalib: few-shot prompt learning from normal images only (Li et al., CVPR 2024).

Example:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from anomalib_clipad import PromptAD
    >>> model = PromptAD(k_shot=1)  # doctest: +SKIP
    >>> Engine().train(model, datamodule=MVTecAD(category="bottle"))  # doctest: +SKIP

CLI::

    anomalib train --model anomalib_clipad.PromptAD --model.k_shot 1 --data MVTecAD --data.category bottle

The prompts are trained for ``epochs`` (100) on exactly ``k_shot`` normal training images chosen with ``seed``
(:class:`~anomalib_clipad.training.k_shot.NormalShotsRecipe`, which the model owns); the last state is used. The
CLIP is built where Lightning configures the model (:class:`~anomalib_clipad.models.common.BuiltOnFirstUse`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.models import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch import Callback

from anomalib_clipad.clip.builder import INTERPOLATE_BICUBIC, check_position_embedding_mode
from anomalib_clipad.export import QuietExportMixin
from anomalib_clipad.models.checkpoint_policy import ClipCheckpointPolicy
from anomalib_clipad.models.common import (
    BuiltOnFirstUse,
    build_torch_model,
    clip_pre_processor,
    load_without_original_weights,
    resolve_class_name,
    warn_if_calibrating_on_test,
)
from anomalib_clipad.training.k_shot import NormalShotsRecipe
from anomalib_clipad.training.progress import InferenceTiming

from .torch_model import BACKBONE, MEMORY_TAPS, PRETRAINED, PromptADModel, resolve_anomaly_states

logger = logging.getLogger(__name__)

__all__ = ["PromptAD"]


class PromptAD(QuietExportMixin, AnomalibModule):
    """PromptAD: one-class prompt learning with semantic concatenation and an explicit anomaly margin.

    Args:
        k_shot: number of normal training images the prompts are trained on (and the vision memory holds).
        seed: seed of the shot selection and of the prompt initialisation.
        class_name: object name used in the prompts; default: the datamodule's ``category``.
        backbone: open_clip architecture.
        pretrained: open_clip pretrained tag, path of a local weight file, ``None`` for random weights (tests only),
            or ``"checkpoint"``: the architecture only, weights from the checkpoint loaded next (``--ckpt_path``;
            ``load_from_checkpoint`` uses it by default).
        quick_gelu: QuickGELU activations in the CLIP (OpenAI weights) or GELU; ``None``: the weights' default (the
            tag's, a recognisably OpenAI file's, else the backbone's). Recorded in checkpoints; a model reloaded with
            ``pretrained="checkpoint"`` takes the checkpoint's.
        image_size: input size (square); 240 for ``ViT-B-16-plus-240``.
        n_ctx: learnable normal prefix tokens ``E_N``.
        n_normal_prompts_image: learnable normal prompts ``N`` of the image head.
        n_normal_prompts_pixel: learnable normal prompts ``N`` of the pixel head.
        n_learned_anomaly_prompts: learnable anomaly prompts ``L`` per normal prompt.
        n_ctx_anomaly: learnable tokens per anomaly prompt ``E_A``.
        epochs: training epochs (one step each: all shots in one batch). Sets the trainer's ``max_epochs``.
        lr: SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        min_lr: final learning rate of the cosine schedule.
        alignment_weight: ``λ`` of the alignment loss.
        eam_margin: margin of the explicit anomaly margin loss.
        memory_layers: image-tower blocks (1-indexed) of the vision memories.
        anomaly_states: your own class-specific anomalous states with a ``{}`` placeholder (e.g.
            ``["{} with scratch"]``); default: the built-in MVTec AD / VisA list of the category, or the 8 generic
            states only for other categories.
        sigma: Gaussian sigma of the pixel map at 400 px (scaled with the input size).
        position_embedding: how position embeddings follow an ``image_size`` other than the backbone's:
            ``"interpolate_bicubic"`` (default), ``"interpolate_bilinear"`` or ``"resize_at_load"``.
        memory_tap: where the memory tokens of layer ``l`` are read: ``"block_output"`` (output of block ``l``, the
            paper) or ``"reference"`` (inside block ``l + 1`` after its attention residual, where the official code's
            hooks read them; reproduces the reference implementation's numbers).
        pre_processor: anomalib pre-processor, or ``True`` for :meth:`configure_pre_processor`.
        post_processor: anomalib post-processor, or ``True`` for :meth:`configure_post_processor`.
        evaluator: anomalib evaluator or ``True`` for the default.
        visualizer: anomalib visualizer or ``True`` for the default.
    """

    model = BuiltOnFirstUse()

    def __init__(  # noqa: PLR0917 (anomalib-style hyper-parameters)
        self,
        k_shot: int = 1,
        seed: int = 0,
        class_name: str | None = None,
        backbone: str = BACKBONE,
        pretrained: str | None = PRETRAINED,
        quick_gelu: bool | None = None,
        image_size: int = 240,
        n_ctx: int = 4,
        n_normal_prompts_image: int = 3,
        n_normal_prompts_pixel: int = 1,
        n_learned_anomaly_prompts: int = 4,
        n_ctx_anomaly: int = 1,
        epochs: int = 100,
        lr: float = 0.002,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        min_lr: float = 1e-5,
        alignment_weight: float = 0.001,
        eam_margin: float = 0.0,
        memory_layers: Sequence[int] = (3, 8),
        anomaly_states: list[str] | None = None,
        sigma: float = 4.0,
        memory_tap: str = "block_output",
        position_embedding: str = INTERPOLATE_BICUBIC,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        # cheap checks only: the CLIP is built in configure_model (errors there reach the user unwrapped)
        if memory_tap not in MEMORY_TAPS:
            msg = f"memory_tap must be one of {MEMORY_TAPS}, got {memory_tap!r}."
            raise ValueError(msg)
        check_position_embedding_mode(position_embedding)
        if anomaly_states is not None:
            resolve_anomaly_states(class_name or "object", anomaly_states)  # malformed user states fail early
        if isinstance(pre_processor, bool) and pre_processor:
            pre_processor = self.configure_pre_processor(image_size)
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.save_hyperparameters(ignore=["pre_processor", "post_processor", "evaluator", "visualizer"])
        self.recipe = NormalShotsRecipe.from_hparams(type(self).__name__, self.hparams, self._refresh_text_features)
        # k_shot sizes the memories; memory_tap changes what they hold
        self.timing = InferenceTiming(type(self).__name__)
        self.checkpoint_policy = ClipCheckpointPolicy(
            type(self).__name__,
            ("backbone", "image_size", "k_shot", "memory_layers", "memory_tap", "position_embedding"),
            requested_quick_gelu=quick_gelu,
        )

    def configure_model(self) -> None:
        """Build the torch model and its CLIP (once); record the activation and weight source."""
        build_torch_model(self, PromptADModel)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> PromptAD:
        """Lightning's ``load_from_checkpoint`` with ``pretrained="checkpoint"`` by default (no original weights)."""
        return load_without_original_weights(super().load_from_checkpoint, checkpoint_path, *args, **kwargs)

    # ---------------------------------------------------------------------------------------------- anomalib
    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | int | None = None) -> PreProcessor:
        """Resize (bicubic) to the model input (240 by default) and CLIP mean/std normalisation."""
        return clip_pre_processor(image_size if image_size is not None else 240)

    @staticmethod
    def configure_post_processor() -> PostProcessor:
        """Anomalib's post-processor (thresholds and normalisation calibrated on the validation set)."""
        return PostProcessor()

    @property
    def learning_type(self) -> LearningType:
        """``ONE_CLASS``: trained on normal images only, through Lightning's loop (see the recipe)."""
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """The recipe's: ``epochs`` fixed epochs, no sanity validation, one device."""
        return self.recipe.trainer_arguments

    def configure_callbacks(self) -> list[Callback]:
        """The component callbacks of anomalib, the training recipe and the checkpoint policy."""
        return [*super().configure_callbacks(), self.recipe, self.checkpoint_policy, self.timing]

    def configure_optimizers(self) -> dict[str, Any]:
        """SGD + cosine schedule (the recipe's) on the learnable prompts."""
        return self.recipe.configure_optimizers(self.model.prompt_learners.parameters(), self.trainer)

    def setup(self, stage: str) -> None:
        """Build the prompts of the class to train (``class_name`` or the datamodule's ``category``).

        At inference the prompts come from the checkpoint, whose class the checkpoint policy checks.

        Raises:
            ValueError: training without a class name.
        """
        self.configure_model()
        warn_if_calibrating_on_test(self._trainer, type(self).__name__)
        if stage == "fit":
            class_name = resolve_class_name(self.hparams.class_name, self._trainer)
            self.model.set_class(class_name, self.hparams.anomaly_states)
            self.checkpoint_policy.class_name = class_name

    # ---------------------------------------------------------------------------------------------- steps
    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> Any:
        """Both heads' losses (CE + EAM + λ align) on the cached features of the shots."""
        del args, kwargs
        return self.recipe.training_step(
            self, batch, self.model.encode_images, self.model.losses, on_shots_encoded=self.model.set_references
        )

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> Batch:
        """Score a validation batch (the post-processor calibrates thresholds on it)."""
        del args, kwargs
        return batch.update(**self.model(batch.image)._asdict())

    def _refresh_text_features(self) -> None:
        self.model.update_text_features()

    # ---------------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the class of the prompts (the recipe records the shot paths)."""
        super().on_save_checkpoint(checkpoint)
        self.checkpoint_policy.save(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse another architecture or activation; restore the class and the shot paths."""
        self.checkpoint_policy.load(checkpoint, self)
        super().on_load_checkpoint(checkpoint)
        self.recipe.load(checkpoint)

    @property
    def few_shot_paths(self) -> list[str]:
        """The image paths of the k shots (from training or the checkpoint)."""
        return self.recipe.few_shot_paths
