# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The labelled-auxiliary-data recipe (AnomalyCLIP, SimCLIP): learn once on another dataset, detect zero-shot anywhere.

The model trains on anomalous images **with masks** of an auxiliary dataset
(:class:`~anomalib_clipad.data.auxiliary.AuxiliaryData`, e.g. VisA's test split when the target is MVTec AD), then
scores any category of any dataset with no further training. The model owns an :class:`AuxiliaryDataRecipe` (a
Lightning ``Callback`` with explicit arguments) and delegates its ``trainer_arguments``, ``configure_optimizers`` and
``training_step`` to it:

* **Fixed epochs, last state.** ``max_epochs = epochs``, no sanity validation, no model selection. Several devices
  work (``--trainer.devices N --trainer.strategy ddp``): Lightning shards the batches and averages the gradients.
* **Adam** on the learnable parameters (AnomalyCLIP: lr 1e-3, betas (0.5, 0.999)).
* **The frozen image tower runs once per training image over the whole run**: nothing learnable touches it, so its
  outputs are cached by image path in a bounded :class:`~anomalib_clipad.training.feature_cache.FeatureCache`
  (memory, then disk, then recompute, saying so); later epochs run only the learnable side.
* **Leakage guard.** Each step tells the model which images (and classes) it fits (``record_training_images``); the
  model keeps them (checkpoints and learned-state files record them) and refuses a target whose test or validation
  images are among them (:func:`~anomalib_clipad.data.auxiliary.check_no_overlap`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from .feature_cache import FeatureCache
from .loss_logging import log_losses

logger = logging.getLogger(__name__)


class AuxiliaryDataRecipe(Callback):
    """Train learnable prompts (and adapters) on labelled auxiliary images with masks, features cached.

    Args:
        model_name: the model, for messages.
        epochs: training epochs (the last state is used).
        lr: Adam learning rate.
        betas: Adam betas.
        cache_max_bytes: memory budget of the feature cache (``None``: a quarter of the available memory, at most
            16 GiB); past it, features go to disk (``cache_dir``), then are recomputed.
        cache_dir: folder for cache entries that do not fit in memory (``None``: a temporary folder).

    Raises:
        ValueError: ``epochs`` below 1 or a negative learning rate.
    """

    def __init__(
        self,
        model_name: str,
        *,
        epochs: int,
        lr: float,
        betas: tuple[float, float],
        cache_max_bytes: int | None = None,
        cache_dir: str | None = None,
    ) -> None:
        if epochs < 1:
            msg = f"epochs must be at least 1, got {epochs}."
            raise ValueError(msg)
        if lr < 0:
            msg = f"The learning rate must not be negative, got {lr}."
            raise ValueError(msg)
        self.model_name = model_name
        self.epochs, self.lr, self.betas = int(epochs), float(lr), (float(betas[0]), float(betas[1]))
        self.cache = FeatureCache(cache_max_bytes, cache_dir)

    @classmethod
    def from_hparams(cls, model_name: str, hparams: Any) -> AuxiliaryDataRecipe:
        """The recipe of a model whose hyper-parameters name its arguments (``epochs``, ``lr``, ``betas``, ...)."""
        return cls(
            model_name,
            epochs=hparams["epochs"],
            lr=hparams["lr"],
            betas=tuple(hparams["betas"]),
            cache_max_bytes=hparams["cache_max_bytes"],
            cache_dir=hparams["cache_dir"],
        )

    # ------------------------------------------------------------------------------------------- the model's hooks
    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """Fixed epoch count and no sanity validation (devices and strategy are the user's)."""
        return {"max_epochs": self.epochs, "num_sanity_val_steps": 0}

    def configure_optimizers(self, parameters: Iterable[torch.nn.Parameter], trainer: Trainer) -> torch.optim.Optimizer:
        """Adam on the learnable parameters."""
        del trainer
        return torch.optim.Adam(list(parameters), lr=self.lr, betas=self.betas)

    def training_step(
        self,
        pl_module: LightningModule,
        batch: Any,
        encode: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        losses: Callable[[dict[str, torch.Tensor], Any], dict[str, torch.Tensor]],
    ) -> torch.Tensor:
        """One step: cached frozen features of the batch, then the model's losses on them; logs every term.

        Args:
            pl_module: the model (it records the images and classes it fits, and logs).
            batch: an anomalib batch of labelled images (``gt_label``, ``gt_mask``; AuxiliaryData adds ``category``
                and ``has_mask``).
            encode: the frozen image side (run once per training image over the whole run).
            losses: the losses of the features and the batch, with a ``"loss"`` entry.

        Returns:
            The loss.
        """
        paths = [str(path) for path in batch.image_path]
        category = getattr(batch, "category", None)
        classes = [category] * len(paths) if isinstance(category, str) else list(category or [])
        pl_module.record_training_images(paths, classes)  # the model's provenance; its inference state is now stale

        def encode_without_grad(images: torch.Tensor) -> dict[str, torch.Tensor]:
            with torch.no_grad():
                return encode(images)

        features = self.cache.get_or_compute(paths, batch.image, encode_without_grad)
        terms = losses(features, batch)
        log_losses(pl_module, terms, len(paths))
        return terms["loss"]

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Before a fit: refuse training data without a single anomalous image (the objective would be degenerate).

        Raises:
            ValueError: the datamodule's train split holds normal images only (e.g. anomalib's plain ``MVTecAD``).
        """
        del pl_module
        if stage != "fit":
            return
        datamodule = getattr(trainer, "datamodule", None)
        samples = getattr(getattr(datamodule, "train_data", None), "samples", None)
        if samples is None or "label_index" not in samples or len(samples) == 0 or samples["label_index"].max() > 0:
            return
        msg = (
            f"{self.model_name} learns from labelled anomalous images with masks of an auxiliary dataset, but the "
            f"train split of {type(datamodule).__name__} holds {len(samples)} normal images and no anomalous one: "
            "the losses would have nothing to learn. Train on `--data anomalib_clipad.data.AuxiliaryData "
            "--data.dataset MVTecAD|Visa|Folder --data.root <folder>` (the anomalous images and masks of other "
            "categories or another dataset), then test on the target."
        )
        raise ValueError(msg)

    # ------------------------------------------------------------------------------------------- Lightning callback
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Free the feature cache, and say how often the encoder ran."""
        del trainer, pl_module
        logger.info(
            "%s: the frozen image tower encoded %d training images in %d calls over the run (cache: %s).",
            self.model_name,
            self.cache.computed_images,
            self.cache.compute_calls,
            self.cache.stats,
        )
        self.cache.clear()
