# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Checks of the raw-score models (AnomalyCLIP, SimCLIP) on a target: reported metrics and calibrated thresholds."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from anomalib.metrics import F1AdaptiveThreshold
from torchmetrics.functional.classification import binary_auroc


def raw_outputs(model: Any, loader: Any) -> dict[str, torch.Tensor]:
    """The torch model's raw scores and maps on a loader's images, with their labels and masks."""
    outputs: dict[str, list[torch.Tensor]] = {"pred_score": [], "anomaly_map": [], "gt_label": [], "gt_mask": []}
    model.eval()
    with torch.no_grad():
        for batch in loader:
            prediction = model.model(model.pre_processor.transform(batch.image))
            outputs["pred_score"].append(prediction.pred_score)
            outputs["anomaly_map"].append(prediction.anomaly_map)
            outputs["gt_label"].append(batch.gt_label)
            mask = batch.gt_mask.float()
            if mask.shape[-2:] != prediction.anomaly_map.shape[-2:]:  # images smaller than the model input
                mask = torch.nn.functional.interpolate(mask.unsqueeze(1), prediction.anomaly_map.shape[-2:]).squeeze(1)
            outputs["gt_mask"].append(mask.bool())
    return {name: torch.cat(values) for name, values in outputs.items()}


def adaptive_threshold(scores: torch.Tensor, labels: torch.Tensor, fields: list[str]) -> float:
    """anomalib's F1-adaptive threshold of ``scores`` against ``labels``."""
    metric = F1AdaptiveThreshold(fields=fields)
    metric.update(SimpleNamespace(**dict(zip(fields, (scores, labels), strict=True))))
    return float(metric.compute())


def assert_reported_auroc_is_that_of_the_raw_scores(model: Any, datamodule: Any, results: dict[str, float]) -> None:
    """Image and pixel AUROC as reported equal the AUROC of the torch model's raw outputs on the scored images."""
    raw = raw_outputs(model, datamodule.test_dataloader())
    assert raw["pred_score"].shape[0] == len(datamodule.test_data)
    assert 0 < int(raw["gt_label"].sum()) < len(raw["gt_label"])  # both classes among the scored images
    assert raw["pred_score"].unique().numel() > 1  # not a degenerate (constant) score
    expected_image = float(binary_auroc(raw["pred_score"], raw["gt_label"].int()))
    assert results["image_AUROC"] == pytest.approx(expected_image, abs=1e-6)
    assert raw["anomaly_map"].shape == raw["gt_mask"].shape  # both at the model's input size
    expected_pixel = float(binary_auroc(raw["anomaly_map"].flatten(), raw["gt_mask"].flatten().int()))
    assert results["pixel_AUROC"] == pytest.approx(expected_pixel, abs=1e-6)


def assert_thresholds_come_from_the_held_out_split(model: Any, datamodule: Any) -> None:
    """The post-processor's thresholds are anomalib's F1-adaptive ones of the validation split, disjoint from test."""
    validation_paths = set(map(str, datamodule.val_data.samples["image_path"]))
    test_paths = set(map(str, datamodule.test_data.samples["image_path"]))
    assert validation_paths
    assert not validation_paths & test_paths
    raw = raw_outputs(model, datamodule.val_dataloader())
    image_threshold = adaptive_threshold(raw["pred_score"], raw["gt_label"], ["pred_score", "gt_label"])
    pixel_threshold = adaptive_threshold(raw["anomaly_map"], raw["gt_mask"], ["anomaly_map", "gt_mask"])
    assert float(model.post_processor.image_threshold) == pytest.approx(image_threshold, abs=1e-6)
    assert float(model.post_processor.pixel_threshold) == pytest.approx(pixel_threshold, abs=1e-6)
