# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Train learnable prompts on exactly k normal shots through Lightning's own training loop.

anomalib 2.7's ``Engine.fit`` only *validates* models whose learning type is ``ZERO_SHOT`` or ``FEW_SHOT`` (no
``training_step``, no optimizer). Prompt-learning methods (PromptAD, DevPrompt) do train, so
:class:`FewShotPromptTrainingMixin` declares ``LearningType.ONE_CLASS`` and, in ``setup("fit")``, narrows the
datamodule's train set to the ``k_shot`` chosen normal images:

* the shots are drawn from the normal images of the **train** split by
  :func:`anomalib_clipad.data.shots.choose_normal_shots` (seeded, no duplicates); their paths are logged and stored
  in the checkpoint (``checkpoint["few_shot_paths"]``);
* all shots go in one batch (``train_batch_size = k_shot``), so one epoch is one optimizer step, as in PromptAD;
* Lightning then runs the epochs, progress bar, logging and checkpointing as usual; the epoch count is the real one;
* the frozen image encoder runs **once per training image**: :meth:`compute_cached_features` is called for images
  not seen before and its output is cached by image path (no augmentation is used, so the features never change);
  later epochs only run :meth:`loss_on_cached_features`;
* a fixed number of epochs is run and the last state is used: no early stopping and no model selection. Validation
  (anomalib's threshold and normalisation calibration) runs once, after the last epoch.

The mixin also supplies the training recipe the prompt-learning methods share (PromptAD's; DevPrompt reuses it):
the fixed epoch count without sanity validation (:attr:`trainer_arguments`), SGD on the trainable (prompt)
parameters with cosine annealing to ``min_lr`` per epoch (:meth:`configure_optimizers`), a validation step that
scores the batch for the post-processor's calibration, anomalib's post-processor, the class name of the prompts (the
``class_name`` hyper-parameter or the datamodule's ``category``), and checkpoints that store the shot paths and the
class name and refuse weights of another architecture (:attr:`checkpoint_architecture_hparams`).

The k-shot train loader runs in the main process (``num_workers=0``): with all shots in one batch and the features
cached, an epoch is one small batch, and re-spawning the datamodule's worker processes every epoch (anomalib's
default is 8 workers) cost about 0.4 s per epoch, ten times the rest of a tiny model's epoch.

Hosts implement five hooks:

* :meth:`configure_class` ``(class_name)``: build the prompts of a class;
* :meth:`compute_cached_features` ``(images) -> dict[str, Tensor]``: frozen-encoder features of a batch;
* :meth:`on_shots_encoded` ``(features)``: called once when every shot is cached (features stacked in the order of
  :attr:`few_shot_paths`), e.g. to build a vision memory;
* :meth:`loss_on_cached_features` ``(features) -> dict[str, Tensor]`` with a ``"loss"`` entry; every entry is logged
  as ``train_<name>``;
* :meth:`refresh_inference_state` ``()``: recompute whatever inference needs from the current parameters (e.g. text
  prototypes); called before validation, test, predict and checkpointing when parameters changed.

Use it as the first base: ``class PromptAD(FewShotPromptTrainingMixin, AnomalibModule)``; the host must have the
hyper-parameters ``k_shot``, ``seed``, ``class_name``, ``epochs``, ``lr``, ``momentum``, ``weight_decay`` and
``min_lr`` (``self.hparams``), and a torch model ``self.model`` with a ``class_name`` attribute.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.post_processing import PostProcessor
from torch.utils.data import DataLoader

from anomalib_clipad.data.shots import choose_normal_shots
from anomalib_clipad.models.common import (
    refuse_other_checkpoint_hparams,
    resolve_class_name,
    warn_if_calibrating_on_test,
)

logger = logging.getLogger(__name__)

CHECKPOINT_PATHS_KEY = "few_shot_paths"
CHECKPOINT_CLASS_KEY = "prompt_class_name"


def check_training_arguments(model_name: str, k_shot: int, epochs: int) -> None:
    """Validate the arguments every prompt-learning model shares, before any weights are loaded.

    Raises:
        ValueError: ``k_shot`` or ``epochs`` below 1.
    """
    if k_shot < 1:
        msg = f"{model_name} needs at least one normal shot, got k_shot={k_shot}."
        raise ValueError(msg)
    if epochs < 1:
        msg = f"epochs must be at least 1, got {epochs}."
        raise ValueError(msg)


class FewShotPromptTrainingMixin:
    """Mixin for an ``AnomalibModule`` that trains prompts on k cached normal shots (see the module docstring)."""

    few_shot_paths: list[str]
    checkpoint_architecture_hparams: tuple[str, ...] = ("backbone", "image_size", "memory_layers")
    """Hyper-parameters that shape the weights: a checkpoint made with other values is refused with a clear error."""

    # ------------------------------------------------------------------------------------------ hooks to implement
    def configure_class(self, class_name: str) -> None:
        """Build the prompts (and tokens) of ``class_name``."""
        raise NotImplementedError

    def compute_cached_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frozen-encoder features of pre-processed training images ``(B, 3, H, W)``; every value has batch dim B."""
        raise NotImplementedError

    def on_shots_encoded(self, features: dict[str, torch.Tensor]) -> None:
        """Called once when all k shots are encoded (``(k, ...)`` features in :attr:`few_shot_paths` order)."""
        del features

    def loss_on_cached_features(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training losses of a batch of cached features; must contain ``"loss"``."""
        raise NotImplementedError

    def refresh_inference_state(self) -> None:
        """Recompute inference buffers from the current parameters (called when they changed)."""

    # ------------------------------------------------------------------------------------------------ anomalib
    @property
    def learning_type(self) -> LearningType:
        """``ONE_CLASS``: trained on normal images only, through Lightning's training loop (see module docstring)."""
        return LearningType.ONE_CLASS

    # ---------------------------------------------------------------------------------------------- shot choice
    def _shot_state(self) -> dict[str, Any]:
        if "_few_shot_state" not in self.__dict__:
            self.__dict__["_few_shot_state"] = {"cache": {}, "encoded": False, "stale": False}
        return self.__dict__["_few_shot_state"]

    @staticmethod
    def configure_post_processor() -> PostProcessor:
        """Anomalib's post-processor (thresholds and normalisation calibrated on the validation set)."""
        return PostProcessor()

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """Fixed epoch count (``epochs``), no sanity validation, one device."""
        return {"max_epochs": int(self.hparams.epochs), "num_sanity_val_steps": 0, "devices": 1}  # type: ignore[attr-defined]

    def configure_optimizers(self) -> dict[str, Any]:
        """SGD on the trainable (prompt) parameters, cosine annealing to ``min_lr`` over the epochs (per epoch)."""
        hparams = self.hparams  # type: ignore[attr-defined]
        parameters = [parameter for parameter in self.model.parameters() if parameter.requires_grad]  # type: ignore[attr-defined]
        optimizer = torch.optim.SGD(
            parameters,
            lr=hparams.lr,
            momentum=hparams.momentum,
            weight_decay=hparams.weight_decay,
        )
        trainer = self.trainer  # type: ignore[attr-defined]
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs, eta_min=hparams.min_lr)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> Batch:
        """Score a validation batch (the post-processor calibrates thresholds on it)."""
        del args, kwargs
        return batch.update(**self.model(batch.image)._asdict())  # type: ignore[attr-defined]

    def setup(self, stage: str) -> None:
        """Build the prompts of the class; on ``"fit"`` also narrow the datamodule's train set to the k shots.

        The class name (``class_name`` or the datamodule's ``category``) is required to train; at inference from a
        checkpoint it may be missing, and the checkpoint's stored prompts are used.

        Lightning calls ``setup`` once per stage (``"fit"``, ``"validate"``, ``"test"``, ``"predict"``), after the
        datamodule's own ``setup``; narrowing is idempotent, so repeated fits keep the same shots.

        Raises:
            ValueError: training without a class name.
        """
        try:
            class_name = resolve_class_name(self.hparams.class_name, self._trainer)  # type: ignore[attr-defined]
        except ValueError:
            if stage == "fit":
                raise
            class_name = None
        if class_name is not None:
            self.configure_class(class_name)
        if not self._shot_state().get("warned_calibration"):
            self._shot_state()["warned_calibration"] = warn_if_calibrating_on_test(self._trainer, type(self).__name__)  # type: ignore[attr-defined]
        super().setup(stage)  # type: ignore[misc]
        if stage == "fit":
            self.narrow_train_set()

    def narrow_train_set(self) -> list[str]:
        """Restrict ``trainer.datamodule.train_data`` to the ``k_shot`` chosen normal images.

        Returns:
            The chosen image paths (also in :attr:`few_shot_paths`).

        Raises:
            RuntimeError: training without an anomalib datamodule.
            ValueError: fewer normal training images than ``k_shot``.
        """
        trainer = self.trainer  # type: ignore[attr-defined]
        datamodule = getattr(trainer, "datamodule", None)
        dataset = getattr(datamodule, "train_data", None)
        if dataset is None:
            msg = (
                f"{type(self).__name__} trains on k normal shots chosen from an anomalib datamodule's train split; "
                "pass a datamodule (e.g. `--data MVTecAD`), not bare dataloaders."
            )
            raise RuntimeError(msg)
        k_shot, seed = int(self.hparams.k_shot), int(self.hparams.seed)  # type: ignore[attr-defined]
        chosen = choose_normal_shots(dataset, k_shot, seed)
        dataset.subsample(chosen, inplace=True)
        datamodule.train_batch_size = k_shot
        # all shots in one batch, loaded in this process: no worker processes re-spawned every epoch
        datamodule.train_dataloader = partial(
            DataLoader, dataset, batch_size=k_shot, shuffle=False, num_workers=0, collate_fn=dataset.collate_fn
        )
        self.few_shot_paths = [str(path) for path in dataset.samples["image_path"]]
        state = self._shot_state()
        state["cache"] = {path: value for path, value in state["cache"].items() if path in self.few_shot_paths}
        state["encoded"] = False
        logger.info(
            "%s trains on %d normal shot(s) (seed %d): %s", type(self).__name__, k_shot, seed, self.few_shot_paths
        )
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs > 0:
            # validation calibrates thresholds only; run it once, after the last (fixed) epoch
            trainer.check_val_every_n_epoch = max_epochs
        return self.few_shot_paths

    # ------------------------------------------------------------------------------------------------- training
    def cached_features(self, images: torch.Tensor, paths: list[str]) -> dict[str, torch.Tensor]:
        """Features of a batch: from the cache, encoding (once) only images not seen before.

        Args:
            images: pre-processed images ``(B, 3, H, W)``.
            paths: their file paths (cache keys).

        Returns:
            Stacked features of the batch, in batch order.
        """
        cache = self._shot_state()["cache"]
        missing = [index for index, path in enumerate(paths) if path not in cache]
        if missing:
            with torch.no_grad():
                fresh = self.compute_cached_features(images[missing])
            for position, index in enumerate(missing):
                cache[paths[index]] = {name: value[position].detach() for name, value in fresh.items()}
        return {name: torch.stack([cache[path][name] for path in paths]) for name in cache[paths[0]]}

    def training_step(self, batch: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """One step on the (cached) features of the shots in the batch; logs every loss term."""
        del args, kwargs
        paths = [str(path) for path in batch.image_path]
        features = self.cached_features(batch.image, paths)
        state = self._shot_state()
        if not state["encoded"] and all(path in state["cache"] for path in self.few_shot_paths):
            self.on_shots_encoded(self.cached_features(batch.image, self.few_shot_paths))
            state["encoded"] = True
        losses = self.loss_on_cached_features(features)
        state["stale"] = True
        self.log_dict(  # type: ignore[attr-defined]
            {f"train_{name}": value.detach() for name, value in losses.items() if name != "loss"},
            batch_size=len(paths),
            on_step=False,
            on_epoch=True,
        )
        self.log("train_loss", losses["loss"].detach(), batch_size=len(paths), prog_bar=True, on_epoch=True)  # type: ignore[attr-defined]
        return losses["loss"]

    def _refresh_if_stale(self) -> None:
        state = self._shot_state()
        if state["stale"]:
            self.refresh_inference_state()
            state["stale"] = False

    def on_train_epoch_end(self) -> None:
        """Refresh inference buffers after the last epoch (so the checkpoint holds the final state)."""
        super().on_train_epoch_end()  # type: ignore[misc]
        trainer = self.trainer  # type: ignore[attr-defined]
        if trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs:
            self._refresh_if_stale()

    def on_train_end(self) -> None:
        """Refresh inference buffers when training stops (also when stopped by the user); free the feature cache."""
        super().on_train_end()  # type: ignore[misc]
        self._refresh_if_stale()
        state = self._shot_state()
        state["cache"] = {}
        state["encoded"] = False

    def on_validation_start(self) -> None:
        """Inference buffers must reflect the current parameters."""
        super().on_validation_start()  # type: ignore[misc]
        self._refresh_if_stale()

    def on_test_start(self) -> None:
        """Inference buffers must reflect the current parameters."""
        super().on_test_start()  # type: ignore[misc]
        self._refresh_if_stale()

    def on_predict_start(self) -> None:
        """Inference buffers must reflect the current parameters."""
        super().on_predict_start()  # type: ignore[misc]
        self._refresh_if_stale()

    # ---------------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the shot paths and the class name of the prompts (and make sure the saved buffers are current)."""
        self._refresh_if_stale()
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        checkpoint[CHECKPOINT_PATHS_KEY] = list(getattr(self, "few_shot_paths", []))
        checkpoint[CHECKPOINT_CLASS_KEY] = self.model.class_name  # type: ignore[attr-defined]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another architecture; restore the shot paths and the class name.

        Raises:
            ValueError: a hyper-parameter of :attr:`checkpoint_architecture_hparams` differs from this model's.
        """
        refuse_other_checkpoint_hparams(
            checkpoint,
            self.hparams,  # type: ignore[attr-defined]
            self.checkpoint_architecture_hparams,
            type(self).__name__,
        )
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        self.few_shot_paths = list(checkpoint.get(CHECKPOINT_PATHS_KEY, []))
        model = self.model  # type: ignore[attr-defined]
        model.class_name = checkpoint.get(CHECKPOINT_CLASS_KEY, model.class_name)
