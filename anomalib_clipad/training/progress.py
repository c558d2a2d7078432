# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Time per image at the end of a test or prediction run, so that long CPU runs report what they cost.

CLIP models at full size take seconds per image on a CPU; with anomalib's default evaluation batch of 32 a progress
bar then sits at "0/1" for minutes. Our configs set smaller evaluation batches (the bar moves per batch), and
:class:`InferenceTiming`, a callback every model owns, logs the images scored and the wall time per image when the
run ends.
The benchmark pipeline (:mod:`anomalib_clipad.benchmarks.jobs`) times its test runs with the same callback (its
``seconds_per_image`` column). On a GPU the clock is read after the queued work of the batch is done.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

logger = logging.getLogger(__name__)


class InferenceTiming(Callback):
    """Log ``N images in T s: t ms per image`` at the end of testing and prediction.

    A batch is timed from its ``on_*_batch_start`` to its ``on_*_batch_end`` hook, so what is inside depends on the
    callback's place among the others: as a trainer callback (the benchmark pipeline's), it times anomalib's
    pre-processing and the forward pass; as a model's own callback, the forward pass and the post-processing.

    Args:
        model_name: the model (or run), for the message.
    """

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.images = 0
        self.seconds = 0.0
        self._started: float | None = None

    @staticmethod
    def _synchronise(pl_module: LightningModule) -> None:
        device = getattr(pl_module, "device", None)
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    def _start(self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any) -> None:
        del trainer, args, kwargs
        self._synchronise(pl_module)
        self._started = time.perf_counter()

    def _end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, *args: Any) -> None:
        del trainer, outputs, args
        if self._started is not None:
            self._synchronise(pl_module)
            self.seconds += time.perf_counter() - self._started
            self.images += len(getattr(batch, "image", []))
            self._started = None

    def _reset(self, trainer: Trainer, pl_module: LightningModule) -> None:
        del trainer, pl_module
        self.images, self.seconds = 0, 0.0

    def _report(self, trainer: Trainer, pl_module: LightningModule) -> None:
        del trainer, pl_module
        if self.images:
            logger.info(
                "%s scored %d images in %.1f s: %.1f ms per image (model and post-processing, wall time).",
                self.model_name,
                self.images,
                self.seconds,
                1000 * self.seconds / self.images,
            )

    on_test_start = on_predict_start = _reset
    on_test_batch_start = on_predict_batch_start = _start
    on_test_batch_end = on_predict_batch_end = _end
    on_test_end = on_predict_end = _report

    @property
    def seconds_per_image(self) -> float | None:
        """Wall time per image of the last run, ``None`` before one."""
        return self.seconds / self.images if self.images else None
