# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""anomalib's evaluator, leaving out the metrics a dataset cannot feed (pixel metrics without masks), said once.

anomalib's default evaluator holds image AUROC / F1 and pixel AUROC / F1, the pixel ones non-strict
(``strict=False``): a batch without ``gt_mask`` (a ``Folder`` without ``mask_dir``, a set of unlabelled images) skips
their update. At the end of the epoch the evaluator still logs them, and torchmetrics then warns, twice per metric and
every run: "The ``compute`` method of metric AUROC was called before the ``update`` method which may lead to
errors". :class:`ComputableMetricsEvaluator` logs only the metrics that received data, and says once per run which
it left out and why.

Example:
    >>> from anomalib_clipad.training.evaluation import ComputableMetricsEvaluator
    >>> evaluator = ComputableMetricsEvaluator.default()
    >>> [metric.name for metric in evaluator.test_metrics]
    ['image_AUROC', 'image_F1Score', 'pixel_AUROC', 'pixel_F1Score']
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from anomalib.metrics import AnomalibMetric, Evaluator

logger = logging.getLogger(__name__)


class ComputableMetricsEvaluator(Evaluator):
    """anomalib's ``Evaluator`` that logs only the metrics updated during the epoch (the others are said once)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._said: set[tuple[str, ...]] = set()
        self._missing: set[str] = set()  # the fields of the skipped metrics that the batches lacked

    @classmethod
    def default(cls) -> ComputableMetricsEvaluator:
        """The default metrics of anomalib (``AnomalibModule.configure_evaluator``) in this evaluator."""
        from anomalib.models import AnomalibModule

        return cls(test_metrics=list(AnomalibModule.configure_evaluator().test_metrics))

    def computable(self, metrics: Sequence[AnomalibMetric], stage: str) -> list[AnomalibMetric]:
        """The metrics that received data; says once per set which were left out."""
        kept, left_out = [], []
        for metric in metrics:
            if getattr(metric, "_update_count", 1) == 0 and not getattr(metric, "strict", True):
                left_out.append(metric)
            else:
                kept.append(metric)
        names = tuple(metric.name for metric in left_out)
        if names and names not in self._said:
            self._said.add(names)
            fields = sorted(self._missing & {field for metric in left_out for field in metric.fields})
            logger.info(
                "%s metrics left out: %s (no %s batch had %s; e.g. a dataset without masks).",
                stage.capitalize(),
                ", ".join(names),
                stage,
                " / ".join(fields) or "their fields",
            )
        self._missing.clear()
        return kept

    def _note_missing(self, metrics: Sequence[AnomalibMetric], batch: Any) -> None:
        self._missing.update(
            field for metric in metrics for field in metric.fields if getattr(batch, field, None) is None
        )

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, *args: Any) -> None:
        """Update the validation metrics (anomalib's), noting the fields the batch lacks."""
        self._note_missing(self.val_metrics, batch)
        super().on_validation_batch_end(trainer, pl_module, outputs, batch, *args)

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, *args: Any) -> None:
        """Update the test metrics (anomalib's), noting the fields the batch lacks."""
        self._note_missing(self.test_metrics, batch)
        super().on_test_batch_end(trainer, pl_module, outputs, batch, *args)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Compute and log the validation metrics that received data."""
        self._log_epoch(trainer, self.computable(self.val_metrics, "validation"))

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Compute and log the test metrics that received data."""
        self._log_epoch(trainer, self.computable(self.test_metrics, "test"))

    def _log_epoch(self, trainer: Any, metrics: Sequence[AnomalibMetric]) -> None:
        # anomalib's on_*_epoch_end, over the kept metrics
        for metric in metrics:
            self.log(metric.name, metric)
            if trainer.barebones:
                value = metric.compute()
                trainer.callback_metrics[metric.name] = value
                trainer.logged_metrics[metric.name] = value
