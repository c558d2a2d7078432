# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Every benchmark metric scores every output shape of anomalib's models, and scores it the same.

Padim's ``pred_score`` and ``pred_label`` are ``(B, 1)`` (its anomaly map is ``(B, 1, H, W)``), ours ``(B,)``; a map
may be ``(B, 1, H, W)`` or ``(B, H, W)``. The metrics of ``anomalib-clipad benchmark`` must give the same numbers for
all of these, equal to scikit-learn's on the flat values where scikit-learn has the metric.
"""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from anomalib_clipad.benchmarks.metrics import align_field
from anomalib_clipad.benchmarks.pipeline import METRICS, build_evaluator

BATCH, SIZE = 6, 8


def _outputs() -> dict[str, torch.Tensor]:
    """One batch of predictions and targets in the canonical shapes: ``(B,)`` and ``(B, H, W)``."""
    generator = torch.Generator().manual_seed(0)
    gt_label = torch.tensor([False, False, False, True, True, True])
    gt_mask = torch.zeros(BATCH, SIZE, SIZE, dtype=torch.bool)
    gt_mask[3:, 2:5, 3:6] = True
    anomaly_map = torch.rand(BATCH, SIZE, SIZE, generator=generator) + 0.5 * gt_mask
    pred_score = torch.rand(BATCH, generator=generator) + 0.3 * gt_label
    return {
        "gt_label": gt_label,
        "gt_mask": gt_mask,
        "pred_score": pred_score,
        "pred_label": pred_score > 0.6,
        "anomaly_map": anomaly_map,
        "pred_mask": anomaly_map > 0.9,
    }


def _shaped(outputs: dict[str, torch.Tensor], layout: str) -> SimpleNamespace:
    """The batch as a model would give it: ``flat`` (ours), ``channel`` (Padim's), ``channel_targets`` too."""
    batch = dict(outputs)
    if layout in {"channel", "channel_targets"}:
        for name in ("pred_score", "pred_label"):
            batch[name] = batch[name].unsqueeze(1)  # (B, 1)
        for name in ("anomaly_map", "pred_mask"):
            batch[name] = batch[name].unsqueeze(1)  # (B, 1, H, W)
    if layout == "channel_targets":
        batch["gt_label"] = batch["gt_label"].unsqueeze(1)
        batch["gt_mask"] = batch["gt_mask"].unsqueeze(1)
    return SimpleNamespace(**batch)


def _scores(layout: str) -> dict[str, float]:
    batch = _shaped(_outputs(), layout)
    scores = {}
    for metric in build_evaluator(list(METRICS)).test_metrics:
        metric.update(batch)
        scores[metric.name] = float(metric.compute())
    return scores


def test_every_metric_accepts_every_output_shape() -> None:
    flat = _scores("flat")
    assert set(flat) == set(METRICS)
    for layout in ("channel", "channel_targets"):
        scores = _scores(layout)  # raised "Predictions and targets are expected to have the same shape" before
        for name, value in scores.items():
            assert value == pytest.approx(flat[name], abs=1e-6), (layout, name)


def test_scores_agree_with_scikit_learn() -> None:
    outputs = _outputs()
    scores = _scores("channel")
    label, score = outputs["gt_label"].numpy(), outputs["pred_score"].numpy()
    mask, amap = outputs["gt_mask"].flatten().numpy(), outputs["anomaly_map"].flatten().numpy()
    assert scores["image_AUROC"] == pytest.approx(roc_auc_score(label, score), abs=1e-5)
    assert scores["image_AP"] == pytest.approx(average_precision_score(label, score), abs=1e-5)
    assert scores["image_F1Score"] == pytest.approx(f1_score(label, outputs["pred_label"].numpy()), abs=1e-5)
    assert scores["pixel_AUROC"] == pytest.approx(roc_auc_score(mask, amap), abs=1e-5)
    assert scores["pixel_F1Score"] == pytest.approx(f1_score(mask, outputs["pred_mask"].flatten().numpy()), abs=1e-5)
    assert 0.0 < scores["pixel_AUPRO"] <= 1.0


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        ("pred_score", (6, 1), (6,)),
        ("pred_label", (6, 1, 1), (6,)),
        ("gt_label", (), (1,)),
        ("pred_score", (6, 2), (6, 2)),  # not one value per image: left for the metric to report
        ("anomaly_map", (6, 1, 8, 8), (6, 8, 8)),
        ("gt_mask", (8, 8), (1, 8, 8)),
        ("pred_mask", (6, 3, 8, 8), (6, 3, 8, 8)),
        ("image", (6, 1, 8, 8), (6, 1, 8, 8)),  # not a metric field
    ],
)
def test_align_field(name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    assert tuple(align_field(name, torch.zeros(shape)).shape) == expected
    assert align_field(name, None) is None


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")  # torchmetrics: compute before update
def test_missing_fields_still_follow_strict() -> None:
    evaluator = build_evaluator(["image_AUROC", "pixel_AUROC"])
    image, pixel = evaluator.test_metrics
    batch = SimpleNamespace(pred_score=torch.rand(2, 1), gt_label=torch.tensor([0, 1]), anomaly_map=None)
    pixel.update(batch)  # not strict: a datamodule without masks keeps its image metrics
    assert pixel.compute() is None
    image.update(batch)
    with pytest.raises(ValueError, match="missing required field: gt_label"):
        image.update(SimpleNamespace(pred_score=torch.rand(2)))


def test_the_evaluator_pickles() -> None:
    """One process per GPU: the job's evaluator crosses a process boundary."""
    copy = pickle.loads(pickle.dumps(build_evaluator(list(METRICS))))
    assert [metric.name for metric in copy.test_metrics] == list(METRICS)
