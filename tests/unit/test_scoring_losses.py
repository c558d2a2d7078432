# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Shared scoring helpers, focal and dice losses, the reference memory and the text-prototype buffer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from anomalib_clipad.components.losses import dice_loss, focal_loss
from anomalib_clipad.components.memory import ReferenceMemory
from anomalib_clipad.components.readiness import ModelNotReadyError, require_ready
from anomalib_clipad.components.scoring import anomaly_probability, scaled_sigma, upsample
from anomalib_clipad.components.text_prototypes import TextPrototypes


def test_focal_loss_is_the_equation_pixel_by_pixel() -> None:
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.rand(2, 2, 3, 4, generator=generator).softmax(dim=1)
    target = (torch.rand(2, 3, 4, generator=generator) > 0.5).long()
    eps = 1e-5
    total, count = 0.0, 0
    for b in range(2):
        for i in range(3):
            for j in range(4):
                y = int(target[b, i, j])
                smoothed = [1 - eps if c == y else eps for c in range(2)]  # eps / (C - 1) with C = 2
                p_t = sum(smoothed[c] * float(probabilities[b, c, i, j]) for c in range(2)) + eps
                total += -((1 - p_t) ** 2) * math.log(p_t)
                count += 1
    assert focal_loss(probabilities, target).item() == pytest.approx(total / count, rel=1e-5)
    # a confident correct prediction costs (almost) nothing, a confident wrong one a lot
    confident = F.one_hot(target, 2).movedim(-1, 1).float()
    assert focal_loss(confident, target) < 1e-6 < focal_loss(1 - confident, target)


def test_dice_loss_is_the_equation_per_image() -> None:
    generator = torch.Generator().manual_seed(1)
    probability = torch.rand(3, 5, 5, generator=generator)
    target = (torch.rand(3, 5, 5, generator=generator) > 0.7).float()
    per_image = [
        (2 * (probability[b] * target[b]).sum() + 1) / (probability[b].sum() + target[b].sum() + 1) for b in range(3)
    ]
    assert dice_loss(probability, target).item() == pytest.approx(1 - sum(per_image).item() / 3, rel=1e-6)
    assert dice_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)


def test_anomaly_probability_and_sigma_and_upsampling() -> None:
    features = torch.randn(4, 7, 8)
    prototypes = F.normalize(torch.randn(2, 8), dim=-1)
    cos = F.normalize(features, dim=-1) @ prototypes.T
    expected = torch.exp(cos[..., 1] / 0.07) / torch.exp(cos / 0.07).sum(dim=-1)
    torch.testing.assert_close(anomaly_probability(features, prototypes, 1 / 0.07), expected)
    assert scaled_sigma(4.0, 400, 240) == pytest.approx(2.4)
    assert scaled_sigma(4.0, 400, (200, 600)) == pytest.approx(4.0)
    maps = torch.rand(2, 3, 3)
    assert upsample(maps, 6).shape == (2, 6, 6)
    corners = upsample(maps, 6, align_corners=True)
    torch.testing.assert_close(corners[:, 0, 0], maps[:, 0, 0])  # align_corners keeps the corner samples
    assert not torch.allclose(upsample(maps, 6), corners)  # the two conventions give other maps


def test_reference_memory_returns_distance_and_index_and_reloads() -> None:
    memory = ReferenceMemory(8, keep_raw=True)
    assert not memory.is_ready
    with pytest.raises(ValueError, match="empty"):
        memory.nearest(torch.randn(1, 2, 8))
    references = torch.randn(2, 5, 8)
    memory.fill(references)
    assert len(memory) == 10
    torch.testing.assert_close(memory.raw, references.reshape(10, 8))
    queries = torch.cat([references[1, 3:4], torch.randn(1, 8)]).unsqueeze(0)  # (1, 2, 8)
    distance, index = memory.nearest(queries)
    assert int(index[0, 0]) == 8
    assert float(distance[0, 0]) == pytest.approx(0.0, abs=1e-6)
    cos = F.normalize(queries, dim=-1) @ F.normalize(references.reshape(10, 8), dim=-1).T
    torch.testing.assert_close(distance, (1 - cos.amax(dim=-1)) / 2)
    torch.testing.assert_close(index, cos.argmax(dim=-1))
    restored = ReferenceMemory(8, keep_raw=True)
    restored.load_state_dict(memory.state_dict())
    torch.testing.assert_close(restored.features, memory.features)
    with pytest.raises(ValueError, match="dimension"):
        restored.fill(torch.randn(3, 4))


def test_text_prototypes_and_readiness() -> None:
    prototypes = TextPrototypes(4)
    with pytest.raises(ModelNotReadyError, match="Demo has no text prototypes yet: train it"):
        require_ready("Demo", {"text prototypes": prototypes.is_ready}, how="train it.")
    prototypes.set(torch.tensor([[3.0, 0, 0, 0], [0, 0, 0, 2.0]]))
    torch.testing.assert_close(prototypes.features, torch.eye(4)[[0, 3]])
    require_ready("Demo", {"text prototypes": prototypes.is_ready}, how="train it.")
    with pytest.raises(ValueError, match="Expected 2 text features"):
        prototypes.set(torch.randn(3, 4))
    restored = TextPrototypes(4)
    restored.load_state_dict(prototypes.state_dict())
    assert restored.is_ready
