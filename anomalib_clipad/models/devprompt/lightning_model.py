# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""DevPrompt for anomalib: deviation-guided prompt learning for few-normal-shot anomaly detection.

Example:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from anomalib_clipad import DevPrompt
    >>> model = DevPrompt(k_shot=1)  # doctest: +SKIP
    >>> Engine().train(model, datamodule=MVTecAD(category="bottle"))  # doctest: +SKIP

CLI::

    anomalib train --model anomalib_clipad.DevPrompt --model.k_shot 1 --data MVTecAD --data.category bottle

DevPrompt is PromptAD's pipeline ("other hyper-parameters as PromptAD"), so it owns the same k-normal-shot recipe
(:class:`~anomalib_clipad.training.k_shot.NormalShotsRecipe`): the context is trained for ``epochs`` (100) on exactly
``k_shot`` normal training images chosen with ``seed`` and on anomalies synthesised from them (:mod:`.torch_model`);
the last state is used.
"""

from __future__ import annotations

from pathlib import Path
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

from .loss import DeviationLoss
from .torch_model import ANOMALOUS_SUFFIX, BACKBONE, IMAGE_SIZE, NORMAL_SUFFIX, PRETRAINED, DevPromptModel

__all__ = ["DevPrompt"]


class DevPrompt(ClipModelMixin, AnomalibModule):
    """DevPrompt: shared learnable context, class-aware suffixes, deviation loss with Top-K MIL.

    Args:
        k_shot: number of normal training images (the prompts are trained on them; the vision memory holds them).
        seed: seed of the shot selection, the context initialisation and the anomaly synthesis.
        class_name: object name used in the prompts; default: the datamodule's ``category``.
        backbone: open_clip architecture.
        pretrained: open_clip pretrained tag, path of a local weight file, ``None`` for random weights (tests only),
            or ``"checkpoint"``: the architecture only, weights from the checkpoint loaded next (``--ckpt_path``;
            ``load_from_checkpoint`` uses it by default).
        quick_gelu: QuickGELU activations in the CLIP (OpenAI weights) or GELU; ``None``: the weights' default.
            Recorded in checkpoints; a model reloaded with ``pretrained="checkpoint"`` takes the checkpoint's.
        image_size: input size (square). 240 shares PromptAD's ``ViT-B-16-plus-240`` without interpolating position
            embeddings (the paper resizes to 256; see the README).
        n_ctx: learnable context vectors ``C`` shared by the normal and the abnormal prompt.
        normal_suffix: fixed normal suffix, ``{}`` = class name (``T_n = [C; suffix_n]``).
        anomalous_suffix: fixed abnormal suffix, ``{}`` = class name (``T_a = [C; suffix_a]``).
        top_k_ratio: K of the Top-K MIL as a fraction of the patches (paper: 10 %).
        deviation_margin: confidence margin ``a`` of the deviation loss (paper: 5).
        deviation_weight: deviation coefficient ``lambda`` of the normal term (paper: 1).
        n_reference_samples: reference scores drawn from N(0, 1) per step (paper: 5000).
        synthesize_anomalies: synthesise anomalous bags (y = 1) from the shots with anomalib's Perlin anomaly
            generator (our interpretation); ``False`` trains on the normal bags only.
        n_synthetic_per_shot: synthesised anomalies per shot (a fixed bank, encoded once).
        anomaly_source_path: optional texture folder (e.g. DTD) for the Perlin generator; default: noise textures.
        epochs: training epochs (one step each: all shots in one batch). Sets the trainer's ``max_epochs``.
        lr: SGD learning rate (PromptAD's recipe).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        min_lr: final learning rate of the cosine schedule.
        memory_layers: image-tower blocks (1-indexed) of the vision memory.
        sigma: Gaussian sigma of the pixel map at 400 px (scaled with the input size).
        position_embedding: how position embeddings follow an ``image_size`` other than the backbone's
            (``"interpolate_bicubic"``, ``"interpolate_bilinear"`` or ``"resize_at_load"``).
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

    torch_model_class: ClassVar[type] = DevPromptModel
    default_image_size: ClassVar[int] = IMAGE_SIZE
    learns_per_class: ClassVar[bool] = True
    renamed_torch_arguments: ClassVar[dict[str, str]] = {"smoothing_sigma": "sigma"}

    def __init__(  # noqa: PLR0917 (anomalib-style hyper-parameters)
        self,
        k_shot: int = 1,
        seed: int = 0,
        class_name: str | None = None,
        backbone: str = BACKBONE,
        pretrained: str | None = PRETRAINED,
        quick_gelu: bool | None = None,
        image_size: int = IMAGE_SIZE,
        n_ctx: int = 4,
        normal_suffix: str = NORMAL_SUFFIX,
        anomalous_suffix: str = ANOMALOUS_SUFFIX,
        top_k_ratio: float = 0.1,
        deviation_margin: float = 5.0,
        deviation_weight: float = 1.0,
        n_reference_samples: int = 5000,
        synthesize_anomalies: bool = True,
        n_synthetic_per_shot: int = 10,
        anomaly_source_path: str | None = None,
        epochs: int = 100,
        lr: float = 0.002,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        min_lr: float = 1e-5,
        memory_layers: list[int] | tuple[int, ...] = (3, 8),
        sigma: float = 4.0,
        position_embedding: str = INTERPOLATE_BICUBIC,
        learned_state: str | None = None,
        calibration: str = "held_out",
        false_alarm_rate: float = 0.01,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        """Check the arguments (the CLIP is built in :meth:`configure_model`)."""
        if anomaly_source_path is not None and not Path(anomaly_source_path).is_dir():
            msg = f"anomaly_source_path {anomaly_source_path!r} is not a folder of texture images."
            raise ValueError(msg)
        if synthesize_anomalies and n_synthetic_per_shot < 1:
            msg = f"n_synthetic_per_shot must be at least 1 when anomalies are synthesised, got {n_synthetic_per_shot}."
            raise ValueError(msg)
        check_position_embedding_mode(position_embedding)
        DeviationLoss(deviation_margin, deviation_weight, top_k_ratio, n_reference_samples=n_reference_samples)
        super().__init__(
            image_size=image_size,
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.recipe = NormalShotsRecipe.from_hparams(type(self).__name__, self.hparams)

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> Any:
        """Deviation loss with Top-K MIL on the cached bags (shots and their synthesised anomalies)."""
        del args, kwargs
        return self.recipe.training_step(
            self,
            batch,
            self.model.encode_training_images,
            lambda features: {"loss": self.model.training_loss(features, self.global_step)},
        )
