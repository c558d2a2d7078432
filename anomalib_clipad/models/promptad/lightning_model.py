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
Lightning surface (building, checkpoints, the learned-state file, scoring preparation) is the shared
:class:`~anomalib_clipad.models.base.ClipModelMixin`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.models import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer

from anomalib_clipad.clip.builder import INTERPOLATE_BICUBIC, check_position_embedding_mode
from anomalib_clipad.models.base import ClipModelMixin
from anomalib_clipad.training.k_shot import NormalShotsRecipe

from .torch_model import BACKBONE, MEMORY_TAPS, PRETRAINED, PromptADModel, resolve_anomaly_states

__all__ = ["PromptAD"]


class PromptAD(ClipModelMixin, AnomalibModule):
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
        learned_state: a learned-state file (``weights/learned_state.pt`` of a training run) to score with, without
            training or a checkpoint; it must match the backbone, activation and class.
        calibration: ``"held_out"`` (F1-adaptive thresholds from a held-out split with anomalies) or ``"normal_only"``
            (from good images only: :mod:`~anomalib_clipad.training.normal_calibration`).
        false_alarm_rate: ``normal_only``: the share of good images flagged; needs ``ceil(1 / rate)`` normal images.
        pre_processor: anomalib pre-processor, or ``True`` for :meth:`configure_pre_processor`.
        post_processor: anomalib post-processor, or ``True`` for :meth:`configure_post_processor`.
        evaluator: anomalib evaluator or ``True`` for the default.
        visualizer: anomalib visualizer or ``True`` for the default.
    """

    torch_model_class: ClassVar[type] = PromptADModel
    default_image_size: ClassVar[int] = 240
    learns_per_class: ClassVar[bool] = True

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
        learned_state: str | None = None,
        calibration: str = "held_out",
        false_alarm_rate: float = 0.01,
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
        super().__init__(
            image_size=image_size,
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.recipe = NormalShotsRecipe.from_hparams(type(self).__name__, self.hparams)

    def anomaly_states(self, class_name: str) -> Sequence[str] | None:
        """The user's ``anomaly_states``, else the built-in list of the category (see ``resolve_anomaly_states``)."""
        del class_name
        return self.hparams.anomaly_states

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> Any:
        """Both heads' losses (CE + EAM + λ align) on the cached features of the shots."""
        del args, kwargs
        return self.recipe.training_step(self, batch, self.model.encode_images, self.model.losses)
