# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Calibrate thresholds on the *target* dataset, never on the scored images and never on the training data.

Models trained on auxiliary data (AnomalyCLIP, SimCLIP) are tested on another dataset. anomalib 2.7's
``Engine.test`` runs no validation first with a ``ckpt_path`` (and never for ``ONE_CLASS`` models), so its
post-processor would keep the statistics of the *training* datamodule: NaN when the fit ran no validation, otherwise a
min-max normalisation that clamps the target's scores to [0, 1] and creates ties that change AUROC.

These models' scores are already anomaly probabilities in [0, 1], so they are reported **raw** (the models configure
anomalib's post-processor without normalisation: reported AUROC is the AUROC of the raw scores). Only thresholds
(F1, predicted labels and masks) need calibration. :func:`calibrate_on_target`, at the start of every test, forgets
any earlier thresholds and (setting them through :mod:`.thresholds`):

* when the target datamodule has a validation split disjoint from its test split (``val_split_mode: from_test`` or
  ``from_dir``), scores that split and sets anomalib's adaptive F1 thresholds from it;
* otherwise uses the probability threshold 0.5 and says so (e.g. MVTecAD's default ``same_as_test``, where
  calibrating would tune the thresholds on the scored images).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer

from .thresholds import get_thresholds, reset_thresholds, set_thresholds

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


def calibrate_on_target(trainer: Trainer, pl_module: LightningModule) -> None:
    """Set the post-processor's thresholds for the target before its images are scored (see the module docstring).

    The model calls this at the start of every test
    (:meth:`~anomalib_clipad.models.base.ClipModelMixin.prepare_for_scoring`).

    Args:
        trainer: the trainer; its datamodule is the target.
        pl_module: the model (its ``post_processor``, ``pre_processor`` and ``validation_step``).
    """
    model_name = type(pl_module).__name__
    post_processor = getattr(pl_module, "post_processor", None)
    if post_processor is None or not getattr(post_processor, "enable_thresholding", False):
        return
    test_data = getattr(getattr(trainer, "datamodule", None), "test_data", None)
    if test_data is not None and len(test_data) == 0:
        return  # nothing is scored (e.g. `anomalib train` on AuxiliaryData tests on its empty test split)
    loader = held_out_validation_loader(trainer)
    if loader is None:
        set_thresholds(post_processor, PROBABILITY_THRESHOLD)
        logger.warning(
            "%s: the target %s has no validation split disjoint from its test split, so thresholds are not "
            "calibrated: predicted labels and masks use the probability %.1f (AUROC does not depend on it). Pass "
            "`--data.val_split_mode from_test` to calibrate them on held-out target images.",
            model_name,
            type(getattr(trainer, "datamodule", None)).__name__,
            PROBABILITY_THRESHOLD,
        )
        return
    if getattr(trainer.datamodule, "seed", 0) is None:
        logger.warning(
            "%s: the target's held-out validation split is drawn without a seed, so every run calibrates (and "
            "scores) other images; pass `--data.seed 0` for runs that can be compared.",
            model_name,
        )
    reset_thresholds(post_processor)
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
    thresholds = get_thresholds(post_processor)
    logger.info(
        "%s: thresholds calibrated on %d held-out validation images of the target (image %.4f, pixel %.4f).",
        model_name,
        count,
        thresholds["image"],
        thresholds["pixel"],
    )
