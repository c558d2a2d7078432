# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The test metrics of ``anomalib-clipad benchmark``: anomalib's, fed one shape per batch field whatever the model.

anomalib's models do not agree on the shapes of their outputs: Padim (and every model whose anomaly map is
``(B, 1, H, W)``) gives ``pred_score`` and ``pred_label`` of shape ``(B, 1)``, others ``(B,)``; a map may be
``(B, 1, H, W)`` or ``(B, H, W)``. anomalib's own ``AUROC`` and ``AUPR`` flatten their inputs and ``AUPRO`` squeezes
the channel, but torchmetrics' ``BinaryAveragePrecision`` and ``BinaryF1Score`` (``AP``, ``F1Score``) require
identical shapes ("Predictions and targets are expected to have the same shape, but got torch.Size([6, 1]) and
torch.Size([6])"). Every metric class here reads its batch fields through :func:`aligned_fields` first: image-level
fields become ``(B,)`` and pixel-level fields ``(B, H, W)``, predictions and targets alike, so that one benchmark can
score any anomalib model beside ours.

The classes keep anomalib's names (a metric is logged as ``prefix + class name``, e.g. ``image_AP``), and are
module-level, so that a job's evaluator pickles (one process per GPU).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from anomalib import metrics as anomalib_metrics
from anomalib.metrics import AnomalibMetric
from torchmetrics.classification import BinaryAveragePrecision

IMAGE_FIELDS = frozenset({"pred_score", "pred_label", "gt_label"})
"""Batch fields with one value per image: aligned to ``(B,)``."""
MAP_FIELDS = frozenset({"anomaly_map", "pred_mask", "gt_mask"})
"""Batch fields with one map per image: aligned to ``(B, H, W)``."""


def align_field(name: str, value: Any) -> Any:
    """One batch field in the shape every metric here expects.

    Args:
        name: The field's name (``pred_score``, ``anomaly_map``, ...).
        value: Its value; anything but a tensor (``None``) is returned as it is.

    Returns:
        For :data:`IMAGE_FIELDS`, ``(B,)`` from ``(B, 1)``, ``(B, 1, 1)``, ... (or ``(1,)`` from a scalar); for
        :data:`MAP_FIELDS`, ``(B, H, W)`` from ``(B, 1, H, W)`` (or ``(1, H, W)`` from ``(H, W)``). Other shapes, and
        other fields, are returned unchanged (a metric then reports the mismatch itself).
    """
    if not isinstance(value, torch.Tensor):
        return value
    if name in IMAGE_FIELDS:
        if value.ndim == 0:
            return value.reshape(1)
        if value.ndim > 1 and value[0].numel() == 1:
            return value.reshape(value.shape[0])
    elif name in MAP_FIELDS:
        if value.ndim == 2:
            return value.unsqueeze(0)
        if value.ndim == 4 and value.shape[1] == 1:
            return value.squeeze(1)
    return value


def aligned_fields(batch: Any, fields: list[str] | tuple[str, ...]) -> SimpleNamespace:
    """The ``fields`` of ``batch`` passed through :func:`align_field` (a field the batch lacks stays absent)."""
    return SimpleNamespace(**{name: align_field(name, getattr(batch, name)) for name in fields if hasattr(batch, name)})


class AlignedFields:
    """Mixin before an :class:`~anomalib.metrics.AnomalibMetric`: ``update`` sees :func:`aligned_fields` of the batch.

    anomalib's checks of missing fields (``strict``) are unchanged: they run on the aligned view.
    """

    fields: list[str]

    def update(self, batch: Any, *args: Any, **kwargs: Any) -> None:
        """Update the metric with the batch's fields in the aligned shapes."""
        super().update(aligned_fields(batch, self.fields), *args, **kwargs)  # type: ignore[misc]


class AUROC(AlignedFields, anomalib_metrics.AUROC):
    """anomalib's ``AUROC`` on aligned fields."""


class AUPR(AlignedFields, anomalib_metrics.AUPR):
    """anomalib's ``AUPR`` (trapezoidal area under the precision-recall curve) on aligned fields."""


class AUPRO(AlignedFields, anomalib_metrics.AUPRO):
    """anomalib's ``AUPRO`` on aligned fields."""


class F1Score(AlignedFields, anomalib_metrics.F1Score):
    """anomalib's ``F1Score`` (torchmetrics' ``BinaryF1Score`` at the calibrated threshold) on aligned fields."""


class F1Max(AlignedFields, anomalib_metrics.F1Max):
    """anomalib's ``F1Max`` (F1 at the best threshold) on aligned fields."""


class AP(AlignedFields, AnomalibMetric, BinaryAveragePrecision):
    """Average precision (area under the step precision-recall curve, the papers' "AP") on aligned fields."""


METRIC_CLASSES: dict[str, type] = {cls.__name__: cls for cls in (AUROC, AP, AUPR, F1Score, F1Max, AUPRO)}
"""The metric classes by the class names of :data:`anomalib_clipad.benchmarks.pipeline.METRICS`."""
