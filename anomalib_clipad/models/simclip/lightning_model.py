# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

r"""SimCLIP / SimCLIP+ for anomalib: realign CLIP once on labelled auxiliary data, detect zero-/few-shot anywhere.

Deng et al., "SimCLIP: Refining Image-Text Alignment with Simple Prompts for Zero-/Few-shot Anomaly Detection",
ACM MM 2024.

Example:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from anomalib_clipad import SimCLIP
    >>> from anomalib_clipad.data import AuxiliaryData
    >>> model = SimCLIP()  # doctest: +SKIP
    >>> engine = Engine()  # doctest: +SKIP
    >>> engine.fit(model, datamodule=AuxiliaryData(dataset="Visa", root="datasets/VisA"))  # doctest: +SKIP
    >>> engine.test(model, datamodule=MVTecAD(category="screw", val_split_mode="from_test"))  # doctest: +SKIP

CLI::

    anomalib train --model SimCLIP --data anomalib_clipad.data.AuxiliaryData --data.dataset Visa \
        --data.root datasets/VisA
    anomalib test --model SimCLIP --model.pretrained checkpoint --ckpt_path <model.ckpt> \
        --data MVTecAD --data.category screw --data.val_split_mode from_test
    anomalib test --model SimCLIP --model.learned_state <learned_state.pt> --data MVTecAD --data.category screw
    anomalib test --model SimCLIP --model.k_shot 1 --model.learned_state <learned_state.pt> \
        --data MVTecAD --data.category screw

The adapters, IPT and CLIP's two projection heads train for ``epochs`` (5) with Adam on the auxiliary data
(:class:`~anomalib_clipad.training.auxiliary.AuxiliaryDataRecipe`, which caches the frozen image features once per
image), each image with the prompts of its own class (``batch.category``); the last state is used. After training the
learned weights alone are written next to the checkpoint as a small file (``weights/learned_state.pt``) that
``--model.learned_state`` takes, as it takes the reference's published weights (its ``{"clip": ...}`` and
``{"trainable_linearlayer": ...}`` files, given as a list of the two).

On a target, the text prototypes are computed for the target's class with the learned IPT (any class: a model trained
on VisA tests on any MVTec AD category, with a log line); SimCLIP+ (``k_shot >= 1``) fills its memory gallery with
``k_shot`` normal images drawn (seeded) from the target's **train** split, their paths logged and stored in the
checkpoint. Thresholds are calibrated on a held-out split of the target
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
from anomalib_clipad.models.common import resolve_class_name
from anomalib_clipad.training.auxiliary import AuxiliaryDataRecipe

from .torch_model import SimCLIPModel, check_arguments

__all__ = ["SimCLIP"]


class SimCLIP(ClipModelMixin, AnomalibModule):
    """SimCLIP (``k_shot=0``) and SimCLIP+ (``k_shot >= 1``): MHVA adapters and IPT on a frozen OpenAI CLIP.

    Args:
        backbone: open_clip architecture (paper: ``ViT-L-14-336``).
        pretrained: open_clip tag (paper: ``openai``), path of a local weight file, ``None`` (random weights, tests
            only), or ``"checkpoint"``: the architecture only, weights from the checkpoint loaded next
            (``--ckpt_path``; ``load_from_checkpoint`` uses it by default).
        quick_gelu: QuickGELU (``True``: the activation OpenAI's CLIP, which the paper names, was trained with) or
            plain GELU (``False``: what the reference code actually runs on the OpenAI weights at 518 px, and what its
            published weights were trained with; use it to evaluate those). ``None`` (default): the weights' own,
            i.e. QuickGELU for ``ViT-L-14-336`` / ``openai``. Recorded in checkpoints; a model reloaded with
            ``pretrained="checkpoint"`` and no explicit value takes the checkpoint's.
        image_size: input size (518; position embeddings are resized once at load, bicubic, as the reference does).
        feature_layers: image-tower blocks read by the adapters and SimCLIP+'s memory gallery (``[6, 12, 18, 24]``).
        k_shot: 0 for zero-shot SimCLIP; ``k >= 1`` for SimCLIP+, whose memory gallery holds ``k`` normal images
            drawn from the **target** datamodule's train split at test time (seeded; paths logged and stored).
        seed: seed of the initialisation of the adapters and IPT, and of the SimCLIP+ reference images.
        class_name: class name of the prompts on the target (default: the datamodule's ``category``, used as given,
            e.g. ``metal_nut``); in training each image uses its own class (``batch.category``) when the batch has
            one (AuxiliaryData), else this one.
        prompt_size: size of IPT's ``P_s`` (8).
        prompt_hidden_size: hidden width of IPT's MLP (256).
        logit_scale: scale of the cosine similarities before every softmax (100).
        train_projections: train CLIP's image and text projection heads too (the paper; ``False`` freezes them).
        classification_weight: weight of the image cross-entropy in the loss (1.3, reference ``train.py``).
        segmentation_weight: weight of the summed focal and dice terms (0.08, reference ``train.py``).
        focal_gamma: focusing parameter of the focal loss (2).
        sigma: Gaussian sigma of the maps at 518 px (7; scaled with the input size).
        image_score_map: SimCLIP+ map whose maximum enters the image score: ``"final"`` (the paper's few-shot map)
            or ``"unrevised"`` (zero-shot map plus ``M_v`` without the prior-aware revision, as the reference).
        refined_image_prompt: score images against the IPT-refined prompts (the paper's wording) instead of the plain
            prompts (the reference code; default).
        epochs: training epochs (5, the paper); the last state is used.
        lr: Adam learning rate (1e-3).
        betas: Adam betas ((0.5, 0.999), reference ``train.py``).
        learned_state: learned weights to score with, without training or a checkpoint: a file written after
            training (``weights/learned_state.pt``), our former SimCLIP weights files, or the reference's two published
            files as a list (``[clip.pth, adapters.pth]``). It must match the backbone and feature layers.
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

    Raises:
        ValueError: negative ``k_shot``, unknown ``image_score_map``, ``epochs`` below 1 or a negative ``lr``.
        FileNotFoundError: a ``learned_state`` file does not exist.
    """

    torch_model_class: ClassVar[type] = SimCLIPModel
    default_image_size: ClassVar[int] = 518
    raw_scores: ClassVar[bool] = True
    draws_references: ClassVar[bool] = True

    def __init__(  # noqa: PLR0917 (anomalib-style hyper-parameters)
        self,
        backbone: str = "ViT-L-14-336",
        pretrained: str | None = "openai",
        quick_gelu: bool | None = None,
        image_size: int = 518,
        feature_layers: Sequence[int] = (6, 12, 18, 24),
        k_shot: int = 0,
        seed: int = 111,
        class_name: str | None = None,
        prompt_size: int = 8,
        prompt_hidden_size: int = 256,
        logit_scale: float = 100.0,
        train_projections: bool = True,
        classification_weight: float = 1.3,
        segmentation_weight: float = 0.08,
        focal_gamma: float = 2.0,
        sigma: float = 7.0,
        image_score_map: str = "final",
        refined_image_prompt: bool = False,
        epochs: int = 5,
        lr: float = 1e-3,
        betas: Sequence[float] = (0.5, 0.999),
        learned_state: str | list[str] | None = None,
        cache_max_bytes: int | None = None,
        cache_dir: str | None = None,
        calibration: str = "held_out",
        false_alarm_rate: float = 0.01,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        check_arguments(k_shot, image_score_map)  # cheap checks only: the CLIP is built in configure_model
        super().__init__(
            image_size=image_size,
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.recipe = AuxiliaryDataRecipe.from_hparams(type(self).__name__, self.hparams)

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> Any:
        """The loss on the cached features of a labelled batch, each image with its own class's prompts.

        Raises:
            ValueError: the batch has no masks or labels (train on labelled data, e.g. AuxiliaryData), or no class
                name can be found for its images.
        """
        del args, kwargs
        if batch.gt_mask is None or batch.gt_label is None:
            msg = (
                "SimCLIP trains on labelled images with masks (anomalous and normal), e.g. "
                "`--data anomalib_clipad.data.AuxiliaryData`; this batch has no labels or masks."
            )
            raise ValueError(msg)
        names = self._class_names(batch)
        return self.recipe.training_step(
            self,
            batch,
            self.model.encode_images,
            lambda features, data: self.model.losses(
                features,
                data.gt_label,
                data.gt_mask,
                class_names=names,
                has_mask=getattr(data, "has_mask", None),
            ),
        )

    def _class_names(self, batch: Batch) -> list[str]:
        """Each image's class: ``batch.category`` (AuxiliaryData), else ``class_name`` or the datamodule's."""
        size = len(batch.image)
        category = getattr(batch, "category", None)
        if isinstance(category, str):
            category = [category] * size
        if category is not None and len(category) == size:
            return [str(name) for name in category]
        try:
            name = resolve_class_name(self.hparams.class_name, self._trainer)
        except ValueError as error:
            msg = (
                f"SimCLIP: the training images have no class name for their prompts ({error}) Train on "
                "`anomalib_clipad.data.AuxiliaryData`, whose batches carry each image's class, or pass one."
            )
            raise ValueError(msg) from error
        return [name] * size
