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

import torch
from anomalib.metrics import Evaluator
from anomalib.models import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer

from anomalib_clipad.clip.loading import load_clip
from anomalib_clipad.models.clip_weights import ClipCheckpointMixin
from anomalib_clipad.models.common import clip_pre_processor
from anomalib_clipad.models.few_shot_training import FewShotPromptTrainingMixin, check_training_arguments

from .torch_model import PromptADModel

logger = logging.getLogger(__name__)

BACKBONE = "ViT-B-16-plus-240"
PRETRAINED = "laion400m_e32"


class PromptAD(FewShotPromptTrainingMixin, ClipCheckpointMixin, AnomalibModule):
    """PromptAD: one-class prompt learning with semantic concatenation and an explicit anomaly margin.

    Args:
        k_shot: number of normal training images the prompts are trained on (and the vision memory holds).
        seed: seed of the shot selection and of the prompt initialisation.
        class_name: object name used in the prompts; default: the datamodule's ``category``.
        backbone: open_clip architecture.
        pretrained: open_clip pretrained tag, path of a local weight file, ``None`` for random weights (tests only),
            or ``"checkpoint"``: the architecture only, weights from the checkpoint loaded next (``--ckpt_path``;
            ``load_from_checkpoint`` uses it by default).
        quick_gelu: QuickGELU activations in the CLIP; ``None`` decides from the weights (OpenAI: yes). Recorded in
            checkpoints, since a state dict does not say it.
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
        memory_tap: where the memory tokens of layer ``l`` are read: ``"block_output"`` (output of block ``l``, the
            paper) or ``"reference"`` (inside block ``l + 1`` after its attention residual, where the official code's
            hooks read them; reproduces the reference implementation's numbers).
        pre_processor: anomalib pre-processor, or ``True`` for :meth:`configure_pre_processor`.
        post_processor: anomalib post-processor, or ``True`` for :meth:`configure_post_processor`.
        evaluator: anomalib evaluator or ``True`` for the default.
        visualizer: anomalib visualizer or ``True`` for the default.
    """

    # k_shot sizes the memory buffers; memory_tap changes what they hold
    checkpoint_architecture_hparams = ("backbone", "image_size", "k_shot", "memory_layers", "memory_tap")

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
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        check_training_arguments(type(self).__name__, k_shot, epochs)
        if isinstance(pre_processor, bool) and pre_processor:
            pre_processor = self.configure_pre_processor(image_size)
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.save_hyperparameters(ignore=["pre_processor", "post_processor", "evaluator", "visualizer"])
        clip = load_clip(backbone, pretrained, quick_gelu=quick_gelu)
        self.record_clip_activation(clip)
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
            memory_tap=memory_tap,
        )
        if anomaly_states is not None and class_name is not None:
            # fail early on malformed user states
            self.model.configure_prompts(class_name, anomaly_states)

    # ---------------------------------------------------------------------------------------------- anomalib
    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | int | None = None) -> PreProcessor:
        """Resize (bicubic) to the model input (240 by default) and CLIP mean/std normalisation."""
        return clip_pre_processor(image_size if image_size is not None else 240)

    # trainer_arguments, configure_optimizers (SGD + cosine), configure_post_processor, validation_step, setup and
    # the checkpoint hooks come from FewShotPromptTrainingMixin (the recipe PromptAD and DevPrompt share).

    # ------------------------------------------------------------------------------------------- mixin hooks
    def configure_class(self, class_name: str) -> None:
        """Build both heads' prompts for the class (with ``anomaly_states`` if given)."""
        self.model.configure_prompts(class_name, self.hparams.anomaly_states)

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
