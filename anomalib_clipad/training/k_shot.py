# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The k-normal-shot training recipe (PromptAD, DevPrompt): prompts trained on exactly k normal images.

anomalib 2.7's ``Engine.fit`` only *validates* models whose learning type is ``ZERO_SHOT`` or ``FEW_SHOT``, so a
prompt-learning model declares ``LearningType.ONE_CLASS`` and trains through Lightning's own loop. The model **owns** a
:class:`NormalShotsRecipe` (a Lightning ``Callback`` it returns from ``configure_callbacks``), built with explicit
arguments; the model's few hooks (``trainer_arguments``, ``configure_optimizers``, ``training_step``) delegate to it.

What the recipe does:

* **Shots.** At ``setup("fit")`` it draws ``k_shot`` normal images of the datamodule's **train** split
  (:func:`~anomalib_clipad.data.shots.choose_normal_shots`: seeded, no duplicates), logs their paths and keeps them
  for the checkpoint. It *derives* a loader of those shots (one batch, loaded in the main process: re-spawning
  anomalib's 8 default workers every epoch cost ~0.4 s per epoch) and has Lightning's fit loop read it; the user's
  datamodule, its dataset, batch size and ``train_dataloader`` are left as they were.
* **Fixed epochs, no model selection.** ``max_epochs = epochs``, no sanity validation; validation (anomalib's
  threshold and normalisation calibration) runs once, after the last epoch; the last state is used.
* **Optimiser.** SGD with momentum and weight decay on the trainable (prompt) parameters, cosine annealing to
  ``min_lr`` per epoch (PromptAD's recipe; DevPrompt keeps it).
* **Features computed once.** The frozen image encoder runs once per training image
  (:meth:`NormalShotsRecipe.features`, cached by image path; no augmentation, so features never change); each step
  only runs the learnable text side. The features of all k shots (the one batch, in :attr:`few_shot_paths` order)
  are handed once to the model's ``use_shots_as_references`` (its vision memory).
* **State stays the model's.** Each step tells the model which images it fits (``record_training_images``: the
  model then knows its inference state is stale and its provenance); the encoded shots fill the model's reference
  memory through ``use_shots_as_references``. The recipe keeps only its own working data (the shots' loader and the
  feature cache).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader

from anomalib_clipad.data.shots import choose_normal_shots

from .feature_cache import FeatureCache
from .loaders import serve_train_loader
from .loss_logging import log_losses

logger = logging.getLogger(__name__)


class NormalShotsRecipe(Callback):
    """Train on exactly ``k_shot`` normal shots: one batch, SGD + cosine schedule, fixed epochs, cached features.

    Args:
        model_name: the model, for messages.
        k_shot: number of normal training images.
        seed: seed of the shot selection.
        epochs: training epochs (one optimiser step each).
        lr: SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        min_lr: final learning rate of the cosine schedule.

    Raises:
        ValueError: ``k_shot`` or ``epochs`` below 1, or a negative learning rate.
    """

    def __init__(
        self,
        model_name: str,
        *,
        k_shot: int,
        seed: int,
        epochs: int,
        lr: float,
        momentum: float,
        weight_decay: float,
        min_lr: float,
    ) -> None:
        if k_shot < 1:
            msg = f"{model_name} needs at least one normal shot, got k_shot={k_shot}."
            raise ValueError(msg)
        if epochs < 1:
            msg = f"epochs must be at least 1, got {epochs}."
            raise ValueError(msg)
        if lr < 0 or min_lr < 0:
            msg = f"Learning rates must not be negative, got lr={lr}, min_lr={min_lr}."
            raise ValueError(msg)
        self.model_name = model_name
        self.k_shot, self.seed, self.epochs = int(k_shot), int(seed), int(epochs)
        self.lr, self.momentum, self.weight_decay, self.min_lr = lr, momentum, weight_decay, min_lr
        self.few_shot_paths: list[str] = []
        self.cache = FeatureCache()
        self.shots_encoded = False
        self.train_loader: DataLoader | None = None

    @classmethod
    def from_hparams(cls, model_name: str, hparams: Any) -> NormalShotsRecipe:
        """The recipe of a model whose hyper-parameters name its arguments (``k_shot``, ``seed``, ``epochs``, ...)."""
        names = ("k_shot", "seed", "epochs", "lr", "momentum", "weight_decay", "min_lr")
        return cls(model_name, **{name: hparams[name] for name in names})

    # ------------------------------------------------------------------------------------------- the model's hooks
    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """Fixed epoch count, no sanity validation, one device."""
        return {"max_epochs": self.epochs, "num_sanity_val_steps": 0, "devices": 1}

    def configure_optimizers(self, parameters: Iterable[torch.nn.Parameter], trainer: Trainer) -> dict[str, Any]:
        """SGD on ``parameters`` with cosine annealing to ``min_lr`` over the trainer's epochs (stepped per epoch)."""
        optimizer = torch.optim.SGD(
            list(parameters), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs, eta_min=self.min_lr)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def features(
        self,
        images: torch.Tensor,
        paths: list[str],
        encode: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """Frozen-encoder features of a batch, encoding (once, without gradients) only images not seen before."""

        def encode_without_grad(batch: torch.Tensor) -> dict[str, torch.Tensor]:
            with torch.no_grad():
                return encode(batch)

        return self.cache.get_or_compute(paths, images, encode_without_grad)

    def training_step(
        self,
        pl_module: LightningModule,
        batch: Any,
        encode: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        losses: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
        references: bool = True,
    ) -> torch.Tensor:
        """One step on the (cached) features of the shots in the batch; logs every loss term.

        Args:
            pl_module: the model (it records the images it fits, and logs).
            batch: an anomalib batch of shots.
            encode: the frozen image side (run once per shot).
            losses: the training losses of a batch of features, with a ``"loss"`` entry.
            references: hand the features of all k shots, once, to the model's ``use_shots_as_references`` (its
                vision memory).

        Returns:
            The loss.
        """
        paths = [str(path) for path in batch.image_path]
        pl_module.record_training_images(paths)  # the model's provenance; its inference state is now stale
        features = self.features(batch.image, paths, encode)
        if references and not self.shots_encoded and paths == self.few_shot_paths:
            pl_module.use_shots_as_references(paths, features)  # the one batch holds every shot, in shot order
            self.shots_encoded = True
        terms = losses(features)
        log_losses(pl_module, terms, len(paths))
        return terms["loss"]

    def choose_shots(self, trainer: Trainer) -> list[str]:
        """Draw the shots from the train split and derive their loader (the datamodule is not changed).

        Returns:
            The chosen image paths.

        Raises:
            RuntimeError: training without an anomalib datamodule.
            ValueError: fewer normal training images than ``k_shot``.
        """
        datamodule = getattr(trainer, "datamodule", None)
        dataset = getattr(datamodule, "train_data", None)
        if dataset is None:
            msg = (
                f"{self.model_name} trains on k normal shots chosen from an anomalib datamodule's train split; "
                "pass a datamodule (e.g. `--data MVTecAD`), not bare dataloaders."
            )
            raise RuntimeError(msg)
        chosen = choose_normal_shots(dataset, self.k_shot, self.seed)
        shots = dataset.subsample(chosen, inplace=False)
        self.few_shot_paths = [str(path) for path in shots.samples["image_path"]]
        self.train_loader = DataLoader(
            shots, batch_size=self.k_shot, shuffle=False, num_workers=0, collate_fn=shots.collate_fn
        )
        logger.info(
            "%s trains on %d normal shot(s) (seed %d): %s", self.model_name, self.k_shot, self.seed, self.few_shot_paths
        )
        return self.few_shot_paths

    # ------------------------------------------------------------------------------------------- Lightning callback
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """On ``fit``: choose the shots, serve their loader, validate once after the last epoch."""
        del pl_module
        if stage != "fit":
            return
        self.choose_shots(trainer)
        self.shots_encoded = False
        serve_train_loader(trainer, self.train_loader)
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            trainer.check_val_every_n_epoch = trainer.max_epochs

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Free the feature cache."""
        del trainer, pl_module
        self.cache.clear()
        self.shots_encoded = False
