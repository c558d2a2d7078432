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

The context is trained for ``epochs`` (100, PromptAD's recipe) on exactly ``k_shot`` normal training images chosen
with ``seed`` and on anomalies synthesised from them (see :mod:`anomalib_clipad.models.few_shot_training` and
:mod:`.torch_model`); the last state is used.
"""

from __future__ import annotations

from pathlib import Path

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

from .torch_model import ANOMALOUS_SUFFIX, BACKBONE, IMAGE_SIZE, NORMAL_SUFFIX, PRETRAINED, DevPromptModel


class DevPrompt(FewShotPromptTrainingMixin, ClipCheckpointMixin, AnomalibModule):
    """DevPrompt: shared learnable context, class-aware suffixes, deviation loss with Top-K MIL.

    Args:
        k_shot: number of normal training images (the prompts are trained on them; the vision memory holds them).
        seed: seed of the shot selection, the context initialisation and the anomaly synthesis.
        class_name: object name used in the prompts; default: the datamodule's ``category``.
        backbone: open_clip architecture.
        pretrained: open_clip pretrained tag, path of a local weight file, ``None`` for random weights (tests only),
            or ``"checkpoint"``: the architecture only, weights from the checkpoint loaded next (``--ckpt_path``;
            ``load_from_checkpoint`` uses it by default).
        quick_gelu: QuickGELU activations in the CLIP; ``None`` decides from the weights (OpenAI: yes). Recorded in
            checkpoints, since a state dict does not say it.
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
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        """Build the model (loads the CLIP weights)."""
        check_training_arguments(type(self).__name__, k_shot, epochs)
        if anomaly_source_path is not None and not Path(anomaly_source_path).is_dir():
            msg = f"anomaly_source_path {anomaly_source_path!r} is not a folder of texture images."
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
        clip = load_clip(backbone, pretrained, quick_gelu=quick_gelu)
        self.record_clip_activation(clip)
        self.model = DevPromptModel(
            clip,
            backbone,
            image_size,
            n_ctx=n_ctx,
            normal_suffix=normal_suffix,
            anomalous_suffix=anomalous_suffix,
            memory_layers=tuple(memory_layers),
            top_k_ratio=top_k_ratio,
            deviation_margin=deviation_margin,
            deviation_weight=deviation_weight,
            n_reference_samples=n_reference_samples,
            synthesize_anomalies=synthesize_anomalies,
            n_synthetic_per_shot=n_synthetic_per_shot,
            anomaly_source_path=anomaly_source_path,
            smoothing_sigma=sigma,
            seed=seed,
        )

    # ---------------------------------------------------------------------------------------------- anomalib
    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | int | None = None) -> PreProcessor:
        """Resize (bicubic) to the model input (240 by default) and CLIP mean/std normalisation."""
        return clip_pre_processor(image_size if image_size is not None else IMAGE_SIZE)

    # trainer_arguments, configure_optimizers (SGD + cosine), configure_post_processor, validation_step, setup and
    # the checkpoint hooks come from FewShotPromptTrainingMixin: DevPrompt is PromptAD's pipeline ("other
    # hyper-parameters as PromptAD"), and the mixin holds that shared recipe.

    # ------------------------------------------------------------------------------------------- mixin hooks
    def configure_class(self, class_name: str) -> None:
        """Tokenise ``[T_n, T_a]`` for the class."""
        self.model.set_class_name(class_name)

    def compute_cached_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """VV-CLIP features of the shots and of their synthesised anomalies (encoded once, then cached)."""
        return self.model.encode_training_images(images)

    def on_shots_encoded(self, features: dict[str, torch.Tensor]) -> None:
        """Build the vision memory from the k shots."""
        self.model.build_vision_memory(features)

    def loss_on_cached_features(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Deviation loss with Top-K MIL on the cached bags of this step."""
        return {"loss": self.model.training_loss(features, self.global_step)}

    def refresh_inference_state(self) -> None:
        """Recompute ``[e_n, e_a]`` from the trained context."""
        self.model.update_text_features()
