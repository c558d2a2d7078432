# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Reference memory, fusion, smoothing and prompt sets against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from anomalib_clipad.clip import window_indices
from anomalib_clipad.components.fusion import (
    aggregate_windows,
    gaussian_smooth,
    harmonic_mean,
    reciprocal_fusion,
    upsample,
)
from anomalib_clipad.components.memory import associate, build_memory
from anomalib_clipad.components.prompts import (
    ANOMALOUS_STATES,
    NORMAL_STATES,
    WINCLIP_TEMPLATES,
    class_specific_anomalous_states,
    generic_anomalous_states,
    known_categories,
    prompt_class_name,
)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(7)


def test_association_is_min_over_memory_of_half_cosine_distance(generator: torch.Generator) -> None:
    references = torch.randn(2, 5, 8, generator=generator, dtype=torch.float64)
    queries = torch.randn(3, 4, 8, generator=generator, dtype=torch.float64)
    memory = build_memory(references)
    assert memory.shape == (10, 8)
    scores = associate(queries, memory)
    for b in range(3):
        for n in range(4):
            distances = [
                (1 - torch.nn.functional.cosine_similarity(queries[b, n], reference, dim=0)) / 2
                for reference in references.reshape(-1, 8)
            ]
            assert scores[b, n].item() == pytest.approx(min(distances).item(), abs=1e-12)
    # a reference feature itself is at distance 0
    assert associate(references[:1], memory).abs().max().item() < 1e-12


def test_memory_errors() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        build_memory(torch.zeros(0, 4, 8))
    with pytest.raises(ValueError, match="dimension 7"):
        associate(torch.zeros(1, 2, 7), build_memory(torch.ones(3, 8)))


def test_harmonic_mean_and_reciprocal_fusion() -> None:
    values = torch.tensor([[0.2, 0.5], [0.4, 0.25]], dtype=torch.float64)
    torch.testing.assert_close(harmonic_mean(values, dim=0), torch.tensor([2 / (5 + 2.5), 2 / (2 + 4)]).double())
    torch.testing.assert_close(reciprocal_fusion(values[0], values[1]), 1 / (1 / values[0] + 1 / values[1]))


@pytest.mark.parametrize("mode", ["harmonic", "mean"])
def test_window_aggregation_matches_per_patch_loop(generator: torch.Generator, mode: str) -> None:
    indices = window_indices((5, 6), 3)
    scores = torch.rand(2, indices.shape[0], generator=generator, dtype=torch.float64) + 0.01
    aggregated = aggregate_windows(scores, indices, n_patches=30, mode=mode)
    for patch in range(30):
        covering = [w for w in range(indices.shape[0]) if patch in indices[w].tolist()]
        values = scores[:, covering]
        expected = len(covering) / (1 / values).sum(dim=1) if mode == "harmonic" else values.mean(dim=1)
        torch.testing.assert_close(aggregated[:, patch], expected)
    with pytest.raises(ValueError, match="mode"):
        aggregate_windows(scores, indices, 30, mode="max")


def test_gaussian_smoothing_equals_scipy(generator: torch.Generator) -> None:
    maps = torch.rand(2, 1, 40, 56, generator=generator, dtype=torch.float64)
    expected = np.stack([gaussian_filter(single[0], sigma=4) for single in maps.numpy()])[:, None]
    np.testing.assert_allclose(gaussian_smooth(maps, 4.0).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(
        gaussian_smooth(maps[:, 0], 1.5).numpy(),
        np.stack([gaussian_filter(single[0], sigma=1.5) for single in maps.numpy()]),
        atol=1e-12,
    )
    assert gaussian_smooth(maps, 0) is maps


def test_upsample_keeps_rank_and_is_bilinear(generator: torch.Generator) -> None:
    maps = torch.rand(2, 15, 15, generator=generator)
    up = upsample(maps, 240)
    assert up.shape == (2, 240, 240)
    expected = torch.nn.functional.interpolate(maps[:, None], size=(240, 240), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, expected[:, 0])
    assert upsample(maps[:, None], (30, 20)).shape == (2, 1, 30, 20)


def test_winclip_prompt_sets_follow_the_paper() -> None:
    assert len(WINCLIP_TEMPLATES) == 22
    assert len(set(WINCLIP_TEMPLATES)) == 22
    assert all(template.endswith(".") and "{}" in template for template in WINCLIP_TEMPLATES)
    assert "a cropped photo of a {}." in WINCLIP_TEMPLATES
    assert len(NORMAL_STATES) == 7
    assert len(ANOMALOUS_STATES) == 4


def test_vocabulary_lookups() -> None:
    assert prompt_class_name("metal_nut") == "metal nut"
    assert prompt_class_name("pcb3") == "printed circuit board"
    assert prompt_class_name("my_part") == "my part"
    assert len(generic_anomalous_states()) == 8
    assert class_specific_anomalous_states("bottle") == [
        "{} with large breakage",
        "{} with small breakage",
        "{} with contamination",
    ]
    assert class_specific_anomalous_states("my_part") is None
    assert {"bottle", "screw", "pcb1", "candle"} <= set(known_categories())
    with pytest.raises(ValueError, match="class name"):
        prompt_class_name("  ")
