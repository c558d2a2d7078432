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
    anomalib test --model AnomalyCLIP --model.prompts <learned_state.pt> --data MVTecAD --data.category screw

The prompts train for ``epochs`` (15) with Adam on the auxiliary data
(:class:`~anomalib_clipad.training.auxiliary.AuxiliaryDataRecipe`, which caches the frozen image features once per
image); the last state is used. After training the learned prompts alone are written next to the checkpoint as a
small learned-state file (``weights/learned_state.pt``, :mod:`anomalib_clipad.models.learned_state`) that
``--model.prompts`` takes, as it takes the reference's published prompt checkpoints. On the target, thresholds are
calibrated on a held-out split of the target (:class:`~anomalib_clipad.training.calibration.TargetCalibration`);
scores are reported raw.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.models import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch import Callback

from anomalib_clipad.export import QuietExportMixin
from anomalib_clipad.models.checkpoint_policy import ClipCheckpointPolicy
from anomalib_clipad.models.common import (
    BuiltOnFirstUse,
    build_torch_model,
    clip_pre_processor,
    load_without_original_weights,
    warn_if_calibrating_on_test,
)
from anomalib_clipad.models.learned_state import (
    LEARNED_STATE_FILE,
    LearnedState,
    Provenance,
    human_size,
    read_learned_state,
)
from anomalib_clipad.training.auxiliary import AuxiliaryDataRecipe
from anomalib_clipad.training.calibration import TargetCalibration
from anomalib_clipad.training.progress import InferenceTiming

from .reference_format import MODEL
from .torch_model import AnomalyCLIPModel

logger = logging.getLogger(__name__)

__all__ = ["AnomalyCLIP"]


class AnomalyCLIP(QuietExportMixin, AnomalibModule):
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
        prompts: a learned-state file to score with, instead of training: ours (written after training), the
            reference's published ``{"prompt_learner": ...}`` checkpoint, or a former prompts file.
        cache_max_bytes: memory budget of the training feature cache (``None``: a quarter of the free memory, at
            most 16 GiB); past it, features go to ``cache_dir`` (default: a temporary folder), then are recomputed.
        cache_dir: folder of cache entries that do not fit in memory.
        pre_processor: anomalib pre-processor, or ``True`` for :meth:`configure_pre_processor`.
        post_processor: anomalib post-processor, or ``True`` for :meth:`configure_post_processor`.
        evaluator: anomalib evaluator or ``True`` for the default.
        visualizer: anomalib visualizer or ``True`` for the default.
    """

    model = BuiltOnFirstUse()

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
        prompts: str | None = None,
        cache_max_bytes: int | None = None,
        cache_dir: str | None = None,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        if prompts is not None and not Path(prompts).expanduser().is_file():
            msg = f"The prompts file {prompts!r} does not exist."
            raise FileNotFoundError(msg)
        if isinstance(pre_processor, bool) and pre_processor:
            pre_processor = self.configure_pre_processor(image_size)
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.save_hyperparameters(ignore=["pre_processor", "post_processor", "evaluator", "visualizer"])
        self.recipe = AuxiliaryDataRecipe(
            type(self).__name__,
            epochs=epochs,
            lr=lr,
            betas=tuple(betas),
            refresh=self._refresh_text_features,
            cache_max_bytes=cache_max_bytes,
            cache_dir=cache_dir,
        )
        self.timing = InferenceTiming(type(self).__name__)
        self.checkpoint_policy = ClipCheckpointPolicy(
            type(self).__name__,
            ("backbone", "image_size", "n_ctx", "deep_prompt_length", "deep_prompt_depth", "feature_layers"),
            requested_quick_gelu=quick_gelu,
        )
        self.calibration = TargetCalibration(type(self).__name__)

    def configure_model(self) -> None:
        """Build the torch model and its CLIP (once); with ``prompts``, load the learned state from that file."""
        if self._modules.get("model") is not None:
            return
        build_torch_model(self, AnomalyCLIPModel)
        if self.hparams.prompts is not None:
            state = read_learned_state(self.hparams.prompts, self.model, MODEL)
            state.apply_to(self.model)
            self.recipe.training_paths.update(state.provenance.training_paths)  # for the leakage guard
            logger.info("AnomalyCLIP scores with %s (%s, no training).", state.origin, human_size(state.size_bytes))

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> AnomalyCLIP:
        """Lightning's ``load_from_checkpoint`` building the CLIP architecture only (every weight is in it)."""
        return load_without_original_weights(super().load_from_checkpoint, checkpoint_path, *args, **kwargs)

    # ---------------------------------------------------------------------------------------------- anomalib
    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | int | None = None) -> PreProcessor:
        """Resize (bicubic) to the model input (518 by default) and CLIP mean/std normalisation."""
        return clip_pre_processor(image_size if image_size is not None else 518)

    @staticmethod
    def configure_post_processor() -> PostProcessor:
        """Scores are probabilities, reported raw (no normalisation); thresholds come from the target."""
        return PostProcessor(enable_normalization=False)

    @property
    def learning_type(self) -> LearningType:
        """``ONE_CLASS``: anomalib's engine trains it through Lightning's loop (on labelled auxiliary data)."""
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """The recipe's: ``epochs`` fixed epochs and no sanity validation."""
        return self.recipe.trainer_arguments

    def configure_callbacks(self) -> list[Callback]:
        """Callbacks: anomalib's components, the auxiliary-data recipe, the checkpoint policy, target calibration."""
        return [*super().configure_callbacks(), self.recipe, self.checkpoint_policy, self.calibration, self.timing]

    def configure_optimizers(self) -> Any:
        """Adam (the recipe's) on the learnable prompts: contexts and deep prompts."""
        return self.recipe.configure_optimizers(p for p in self.model.parameters() if p.requires_grad)

    def setup(self, stage: str) -> None:
        """Build the model; warn when a target calibrates on its test split."""
        del stage
        self.configure_model()
        warn_if_calibrating_on_test(self._trainer, type(self).__name__)

    # ---------------------------------------------------------------------------------------------- steps
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

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> Batch:
        """Image scores and maps of a batch (thresholds are calibrated on these)."""
        del args, kwargs
        return batch.update(**self.model(batch.image)._asdict())

    def _refresh_text_features(self) -> None:
        self.model.update_text_features()

    def on_train_end(self) -> None:
        """Write the learned state alone, for ``--model.prompts`` on any other dataset (no checkpoint needed)."""
        trainer = self._trainer
        if trainer is not None and trainer.is_global_zero:
            self.recipe.refresh_if_stale()
            provenance = Provenance(training_paths=tuple(self.recipe.training_paths))
            state = LearnedState.from_model(self.model, MODEL, class_name=None, provenance=provenance)
            path = state.save(Path(trainer.default_root_dir) / LEARNED_STATE_FILE)
            logger.info("AnomalyCLIP: use %s with --model.prompts to score without a checkpoint.", path)

    # ---------------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the checkpoint policy's fields (the recipe records the training image paths)."""
        super().on_save_checkpoint(checkpoint)
        self.checkpoint_policy.save(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse another architecture or activation; restore the training image paths for the leakage guard."""
        self.checkpoint_policy.load(checkpoint, self)
        super().on_load_checkpoint(checkpoint)
        self.recipe.load(checkpoint)
