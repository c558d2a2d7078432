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
(see :mod:`anomalib_clipad.models.few_shot_training`); the last state is used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.models import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer

from anomalib_clipad.clip.loading import load_clip
from anomalib_clipad.models.common import clip_pre_processor, resolve_class_name
from anomalib_clipad.models.few_shot_training import FewShotPromptTrainingMixin

from .torch_model import PromptADModel

logger = logging.getLogger(__name__)

BACKBONE = "ViT-B-16-plus-240"
PRETRAINED = "laion400m_e32"
CHECKPOINT_CLASS_KEY = "promptad_class_name"


class PromptAD(FewShotPromptTrainingMixin, AnomalibModule):
    """PromptAD: one-class prompt learning with semantic concatenation and an explicit anomaly margin.

    Args:
        k_shot: number of normal training images the prompts are trained on (and the vision memory holds).
        seed: seed of the shot selection and of the prompt initialisation.
        class_name: object name used in the prompts; default: the datamodule's ``category``.
        backbone: open_clip architecture.
        pretrained: open_clip pretrained tag, path of a local weight file, or ``None`` for random weights (tests only).
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
        pre_processor: anomalib pre-processor, or ``True`` for :meth:`configure_pre_processor`.
        post_processor: anomalib post-processor, or ``True`` for :meth:`configure_post_processor`.
        evaluator: anomalib evaluator or ``True`` for the default.
        visualizer: anomalib visualizer or ``True`` for the default.
    """

    def __init__(  # noqa: PLR0917 (anomalib-style hyper-parameters)
        self,
        k_shot: int = 1,
        seed: int = 0,
        class_name: str | None = None,
        backbone: str = BACKBONE,
        pretrained: str | None = PRETRAINED,
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
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        if epochs < 1:
            msg = f"epochs must be at least 1, got {epochs}."
            raise ValueError(msg)
        if isinstance(pre_processor, bool) and pre_processor:
            pre_processor = self.configure_pre_processor(image_size)
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.save_hyperparameters(ignore=["pre_processor", "post_processor", "evaluator", "visualizer"])
        clip = load_clip(backbone, pretrained)
        self.model = PromptADModel(
            clip,
            backbone,
            k_shot=k_shot,
            image_size=image_size,
            n_ctx=n_ctx,
            n_normal_prompts_image=n_normal_prompts_image,
            n_normal_prompts_pixel=n_normal_prompts_pixel,
            n_learned_anomaly_prompts=n_learned_anomaly_prompts,
            n_ctx_anomaly=n_ctx_anomaly,
            memory_layers=tuple(memory_layers),
            alignment_weight=alignment_weight,
            eam_margin=eam_margin,
            sigma=sigma,
            seed=seed,
        )
        if anomaly_states is not None and class_name is not None:
            # fail early on malformed user states
            self.model.configure_prompts(class_name, anomaly_states)

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
    def trainer_arguments(self) -> dict[str, Any]:
        """Fixed epoch count (``epochs``), no sanity validation, one device."""
        return {"max_epochs": int(self.hparams.epochs), "num_sanity_val_steps": 0, "devices": 1}

    def configure_optimizers(self) -> dict[str, Any]:
        """SGD on the prompt parameters only, cosine annealing to ``min_lr`` over the epochs (per epoch)."""
        parameters = [parameter for parameter in self.model.parameters() if parameter.requires_grad]
        optimizer = torch.optim.SGD(
            parameters,
            lr=self.hparams.lr,
            momentum=self.hparams.momentum,
            weight_decay=self.hparams.weight_decay,
        )
        max_epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs, eta_min=self.hparams.min_lr)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def setup(self, stage: str) -> None:
        """Build the prompts for the class (required to train; optional for inference from a checkpoint)."""
        try:
            class_name = resolve_class_name(self.hparams.class_name, self._trainer)
        except ValueError:
            if stage == "fit":
                raise
            class_name = None
        if class_name is not None:
            self.model.configure_prompts(class_name, self.hparams.anomaly_states)
        super().setup(stage)

    # ------------------------------------------------------------------------------------------- mixin hooks
    def compute_cached_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """VV-CLIP features of the training images (class token, V-V tokens, memory-layer tokens)."""
        return self.model.encode_images(images)

    def on_shots_encoded(self, features: dict[str, torch.Tensor]) -> None:
        """Build the vision memories from the k shots."""
        self.model.build_memory(features)

    def loss_on_cached_features(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Both heads' losses (CE + EAM + λ align) on the cached features."""
        return self.model.losses(features)

    def refresh_inference_state(self) -> None:
        """Recompute both heads' text prototypes from the trained contexts."""
        self.model.update_text_features()

    # -------------------------------------------------------------------------------------------- evaluation
    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> Batch:
        """Score a validation batch (the post-processor calibrates thresholds on it)."""
        del args, kwargs
        return batch.update(**self.model(batch.image)._asdict())

    # ------------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also store the class name the prompts were built for."""
        super().on_save_checkpoint(checkpoint)
        checkpoint[CHECKPOINT_CLASS_KEY] = self.model.class_name

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse checkpoints of another backbone or size with a clear message.

        Raises:
            ValueError: the checkpoint's backbone, image size or k_shot differs from this model's.
        """
        saved = checkpoint.get("hyper_parameters", {})
        for name in ("backbone", "image_size", "k_shot", "memory_layers"):
            if name in saved and _normalise(saved[name]) != _normalise(self.hparams[name]):
                msg = (
                    f"This checkpoint was trained with {name}={saved[name]!r}, but the model was built with "
                    f"{name}={self.hparams[name]!r}. Build the model with the checkpoint's settings (or load it with "
                    "`PromptAD.load_from_checkpoint`, which does so)."
                )
                raise ValueError(msg)
        super().on_load_checkpoint(checkpoint)
        self.model.class_name = checkpoint.get(CHECKPOINT_CLASS_KEY, self.model.class_name)


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value
