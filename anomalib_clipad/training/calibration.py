# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Calibrate thresholds on the *target* dataset, never on the scored images and never on the training data.

Models trained on auxiliary data (AnomalyCLIP, SimCLIP) are tested on another dataset. anomalib 2.7's
``Engine.test`` runs no validation first with a ``ckpt_path`` (and never for ``ONE_CLASS`` models), so its
post-processor would keep the statistics of the *training* datamodule: NaN when the fit ran no validation, otherwise a
min-max normalisation that clamps the target's scores to [0, 1] and creates ties that change AUROC.

These models' scores are already anomaly probabilities in [0, 1], so they are reported **raw** (the models configure
anomalib's post-processor without normalisation: reported AUROC is the AUROC of the raw scores). Only thresholds
(F1, predicted labels and masks) need calibration. :class:`TargetCalibration`, at the start of every test, forgets any
earlier thresholds and:

* when the target datamodule has a validation split disjoint from its test split (``val_split_mode: from_test`` or
  ``from_dir``), scores that split and sets anomalib's adaptive F1 thresholds from it;
* otherwise uses the probability threshold 0.5 and says so (e.g. MVTecAD's default ``same_as_test``, where
  calibrating would tune the thresholds on the scored images).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

logger = logging.getLogger(__name__)

PROBABILITY_THRESHOLD = 0.5


def held_out_validation_loader(trainer: Trainer) -> Any | None:
    """The target datamodule's validation loader if its images are disjoint from the test images, else ``None``."""
    datamodule = getattr(trainer, "datamodule", None)
    mode = getattr(datamodule, "val_split_mode", None)
    if datamodule is None or str(getattr(mode, "value", mode)) in {"same_as_test", "none", "None"}:
        return None
    validation, test = getattr(datamodule, "val_data", None), getattr(datamodule, "test_data", None)
    if validation is None or len(validation) == 0:
        return None
    if test is not None:
        test_paths = set(map(str, test.samples["image_path"]))
        if test_paths & set(map(str, validation.samples["image_path"])):
            return None
    return datamodule.val_dataloader()


class TargetCalibration(Callback):
    """Thresholds from a held-out split of the target, or the probability threshold 0.5 (see the module docstring).

    Args:
        model_name: the model, for messages.
    """

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Calibrate the post-processor's thresholds for this target before its images are scored."""
        post_processor = getattr(pl_module, "post_processor", None)
        if post_processor is None or not getattr(post_processor, "enable_thresholding", False):
            return
        test_data = getattr(getattr(trainer, "datamodule", None), "test_data", None)
        if test_data is not None and len(test_data) == 0:
            return  # nothing is scored (e.g. `anomalib train` on AuxiliaryData tests on its empty test split)
        loader = held_out_validation_loader(trainer)
        if loader is None:
            self._set_thresholds(post_processor, PROBABILITY_THRESHOLD)
            logger.warning(
                "%s: the target %s has no validation split disjoint from its test split, so thresholds are not "
                "calibrated: predicted labels and masks use the probability %.1f (AUROC does not depend on it). Pass "
                "`--data.val_split_mode from_test` to calibrate them on held-out target images.",
                self.model_name,
                type(getattr(trainer, "datamodule", None)).__name__,
                PROBABILITY_THRESHOLD,
            )
            return
        if getattr(trainer.datamodule, "seed", 0) is None:
            logger.warning(
                "%s: the target's held-out validation split is drawn without a seed, so every run calibrates (and "
                "scores) other images; pass `--data.seed 0` for runs that can be compared.",
                self.model_name,
            )
        self._set_thresholds(post_processor, float("nan"))
        count = 0
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            for index, loaded in enumerate(loader):
                batch = pl_module.transfer_batch_to_device(loaded, pl_module.device, 0)
                if pl_module.pre_processor is not None:
                    pl_module.pre_processor.on_validation_batch_start(trainer, pl_module, batch, index)
                outputs = pl_module.validation_step(batch, index)
                post_processor.on_validation_batch_end(trainer, pl_module, outputs, batch, index)
                count += len(batch.image_path)
        post_processor.on_validation_epoch_end(trainer, pl_module)
        pl_module.train(was_training)
        logger.info(
            "%s: thresholds calibrated on %d held-out validation images of the target (image %.4f, pixel %.4f).",
            self.model_name,
            count,
            float(post_processor.image_threshold),
            float(post_processor.pixel_threshold),
        )

    @staticmethod
    def _set_thresholds(post_processor: Any, value: float) -> None:
        # anomalib's PostProcessor keeps its thresholds in these buffers (checkpointed); NaN means "not calibrated"
        for name in ("_image_threshold", "_pixel_threshold"):
            getattr(post_processor, name).fill_(value)
