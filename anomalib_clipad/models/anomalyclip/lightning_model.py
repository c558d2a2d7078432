# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

r"""AnomalyCLIP for anomalib: learn object-agnostic prompts once on labelled auxiliary data, detect zero-shot anywhere.

Zhou et al., "AnomalyCLIP: Object-agnostic Prompt Learning for Zero-shot Anomaly Detection", ICLR 2024.

Example:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from anomalib_clipad import AnomalyCLIP
    >>> from anomalib_clipad.data import AuxiliaryData
    >>> model = AnomalyCLIP()  # doctest: +SKIP
    >>> engine = Engine()  # doctest: +SKIP
    >>> engine.fit(model, datamodule=AuxiliaryData(dataset="Visa", root="datasets/VisA"))  # doctest: +SKIP
    >>> engine.test(model, datamodule=MVTecAD(category="screw", val_split_mode="from_test"))  # doctest: +SKIP

CLI::

    anomalib train --model AnomalyCLIP --data anomalib_clipad.data.AuxiliaryData --data.dataset Visa \
        --data.root datasets/VisA
    anomalib test --model AnomalyCLIP --model.pretrained checkpoint --ckpt_path <model.ckpt> \
        --data MVTecAD --data.category screw --data.val_split_mode from_test
    anomalib test --model AnomalyCLIP --model.learned_state <learned_state.pt> --data MVTecAD --data.category screw

The prompts train for ``epochs`` (15) with Adam on the auxiliary data
(:class:`~anomalib_clipad.training.auxiliary.AuxiliaryDataRecipe`, which caches the frozen image features once per
image); the last state is used. After training the learned prompts alone are written next to the checkpoint as a
small file (``weights/learned_state.pt``) that ``--model.learned_state`` takes, as it takes the reference's published
prompt checkpoints. On the target, thresholds are calibrated on a held-out split of the target
(:func:`~anomalib_clipad.training.calibration.calibrate_on_target`); scores are reported raw.
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

from anomalib_clipad.models.base import ClipModelMixin
from anomalib_clipad.training.auxiliary import AuxiliaryDataRecipe

from .torch_model import AnomalyCLIPModel

__all__ = ["AnomalyCLIP"]


class AnomalyCLIP(ClipModelMixin, AnomalibModule):
    """AnomalyCLIP: object-agnostic prompts, deep text prompts and DPAM on a frozen OpenAI CLIP.

    Args:
        backbone: open_clip architecture (paper: ``ViT-L-14-336``).
        pretrained: open_clip tag (paper: ``openai``), path of a local weight file, ``None`` (random weights, tests
            only), or ``"checkpoint"``: the architecture only, weights from the checkpoint loaded next
            (``--ckpt_path``; ``load_from_checkpoint`` uses it by default).
        quick_gelu: QuickGELU (OpenAI's activation) or GELU; ``None``: the weights' default (QuickGELU for
            ``openai`` and for OpenAI-only backbones such as ``ViT-L-14-336``).
        image_size: input size (paper: 518; position embeddings are interpolated bilinearly in the forward pass, as
            the reference does).
        n_ctx: learnable context tokens ``E`` of each object-agnostic prompt (12).
        deep_prompt_length: learnable tokens ``Q`` of each deep text prompt (4).
        deep_prompt_depth: deep prompts go into text layers ``2 .. depth`` (9: layers 2-9).
        dpam_start_layer: first image block with DPAM (V-V attention), 6 (layers 6-24).
        feature_layers: image blocks whose patch features are scored (published setting: ``[24]``; ``[6, 12, 18,
            24]`` uses each layer's own tokens).
        local_loss_weight: ``λ`` of the local (focal + dice) loss (4, with the single layer 24).
        temperature: softmax temperature of the cosine similarities (0.07).
        sigma: Gaussian sigma of the map at 518 px (scaled with the input size).
        epochs: training epochs (15); the last state is used.
        lr: Adam learning rate (1e-3).
        betas: Adam betas ((0.5, 0.999)).
        seed: seed of the prompt initialisation.
        learned_state: a learned-state file to score with, instead of training: ours (``weights/learned_state.pt``,
            written after training), our former prompts files, or the reference's published ``{"prompt_learner":
            ...}`` checkpoint. It must match the backbone and activation.
        cache_max_bytes: memory budget of the training feature cache (``None``: a quarter of the free memory, at
            most 16 GiB); past it, features go to ``cache_dir`` (default: a temporary folder), then are recomputed.
        cache_dir: folder of cache entries that do not fit in memory.
        calibration: ``"held_out"`` (F1-adaptive thresholds from a held-out split with anomalies) or ``"normal_only"``
            (from good images only: :mod:`~anomalib_clipad.training.normal_calibration`).
        false_alarm_rate: ``normal_only``: the share of good images flagged; needs ``ceil(1 / rate)`` normal images.
        pre_processor: anomalib pre-processor, or ``True`` for :meth:`configure_pre_processor`.
        post_processor: anomalib post-processor, or ``True`` for :meth:`configure_post_processor`.
        evaluator: anomalib evaluator or ``True`` for the default.
        visualizer: anomalib visualizer or ``True`` for the default.
    """

    torch_model_class: ClassVar[type] = AnomalyCLIPModel
    default_image_size: ClassVar[int] = 518
    raw_scores: ClassVar[bool] = True
    needs_class_name: ClassVar[bool] = False

    def __init__(  # noqa: PLR0917 (anomalib-style hyper-parameters)
        self,
        backbone: str = "ViT-L-14-336",
        pretrained: str | None = "openai",
        quick_gelu: bool | None = None,
        image_size: int = 518,
        n_ctx: int = 12,
        deep_prompt_length: int = 4,
        deep_prompt_depth: int = 9,
        dpam_start_layer: int = 6,
        feature_layers: Sequence[int] = (24,),
        local_loss_weight: float = 4.0,
        temperature: float = 0.07,
        sigma: float = 4.0,
        epochs: int = 15,
        lr: float = 1e-3,
        betas: Sequence[float] = (0.5, 0.999),
        seed: int = 111,
        learned_state: str | None = None,
        cache_max_bytes: int | None = None,
        cache_dir: str | None = None,
        calibration: str = "held_out",
        false_alarm_rate: float = 0.01,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        super().__init__(
            image_size=image_size,
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.recipe = AuxiliaryDataRecipe.from_hparams(type(self).__name__, self.hparams)

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> Any:
        """The glocal loss on the cached features of a labelled batch (mask-less images: image loss only)."""
        del args, kwargs
        return self.recipe.training_step(
            self,
            batch,
            self.model.encode_images,
            lambda features, data: self.model.losses(
                features, data.gt_label, data.gt_mask, has_mask=getattr(data, "has_mask", None)
            ),
        )
