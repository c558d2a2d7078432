# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""DevPrompt: deviation loss with Top-K MIL, prompt learner, anomalous bags, scores and the lightning surface.

Every equation is checked against an independent plain-PyTorch computation written from the paper
(Poudineh & Lalonde, eq. 3-8), on fixed random weights of the tiny CLIP.
"""

from __future__ import annotations

import math

import pytest
import torch

from anomalib_clipad.models.devprompt.loss import (
    DeviationLoss,
    deviation_loss,
    deviation_to_probability,
    patch_deviation,
    sample_reference_scores,
    top_k_bag_deviation,
    top_k_count,
)


def paper_deviation_loss(scores, labels, reference, ratio=0.1, margin=5.0, weight=1.0):
    """Eq. 5-8 with loops and sorting, independent of the implementation."""
    mean = sum(reference.tolist()) / len(reference)
    std = math.sqrt(sum((r - mean) ** 2 for r in reference.tolist()) / (len(reference) - 1))
    total = 0.0
    for image_scores, label in zip(scores.tolist(), labels.tolist(), strict=True):
        deviations = sorted((abs(s - mean) / std for s in image_scores), reverse=True)
        k = max(1, math.floor(ratio * len(image_scores)))
        bag = sum(deviations[:k]) / k
        total += weight * (1 - label) * abs(bag) + label * max(0.0, margin - bag)
    return total / len(labels)


class TestDeviationLoss:
    """Paper eq. 4-8."""

    def test_matches_paper_equations(self) -> None:
        scores = torch.randn(6, 225, generator=torch.Generator().manual_seed(0)) * 3
        labels = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
        loss = DeviationLoss()(scores, labels, generator=torch.Generator().manual_seed(7))
        reference = torch.randn(5000, generator=torch.Generator().manual_seed(7))
        expected = paper_deviation_loss(scores, labels, reference)
        assert loss.item() == pytest.approx(expected, rel=1e-5)

    @pytest.mark.parametrize(("margin", "weight", "ratio"), [(5.0, 1.0, 0.1), (3.0, 0.01, 0.2), (1.0, 0.1, 0.3)])
    def test_hyper_parameters_reach_the_equations(self, margin: float, weight: float, ratio: float) -> None:
        scores = torch.randn(4, 100, generator=torch.Generator().manual_seed(1)) * 2
        labels = torch.tensor([0.0, 1.0, 1.0, 0.0])
        criterion = DeviationLoss(margin=margin, normal_weight=weight, top_k_ratio=ratio)
        loss = criterion(scores, labels, generator=torch.Generator().manual_seed(3))
        reference = torch.randn(5000, generator=torch.Generator().manual_seed(3))
        assert loss.item() == pytest.approx(
            paper_deviation_loss(scores, labels, reference, ratio, margin, weight), rel=1e-5
        )

    def test_normal_term_is_lambda_times_bag_deviation(self) -> None:
        bag = torch.tensor([0.5, 2.0])
        assert deviation_loss(bag, torch.zeros(2), normal_weight=0.1).item() == pytest.approx(0.1 * 1.25)

    def test_anomalous_term_is_a_hinge_at_the_margin(self) -> None:
        bag = torch.tensor([1.0, 4.0, 5.0, 9.0])
        per_bag = [4.0, 1.0, 0.0, 0.0]
        assert deviation_loss(bag, torch.ones(4), margin=5.0).item() == pytest.approx(sum(per_bag) / 4)

    def test_top_k_is_ten_percent_of_patches(self) -> None:
        assert top_k_count(225) == 22  # the 15x15 grid of a 240 px ViT-B/16
        assert top_k_count(256) == 25
        assert top_k_count(5) == 1  # never empty
        deviations = torch.arange(100.0).flip(0).unsqueeze(0)  # 99 .. 0
        assert top_k_bag_deviation(deviations).item() == pytest.approx(sum(range(90, 100)) / 10)

    def test_only_top_k_patches_receive_gradient(self) -> None:
        scores = torch.randn(1, 50, generator=torch.Generator().manual_seed(2)).requires_grad_()
        DeviationLoss(top_k_ratio=0.1)(scores, torch.ones(1)).backward()
        assert int((scores.grad != 0).sum()) == 5

    def test_patch_deviation_is_absolute_z_score(self) -> None:
        scores = torch.tensor([-2.0, 0.5, 3.0])
        assert patch_deviation(scores, 0.5, 2.0).tolist() == pytest.approx([1.25, 0.0, 1.25])

    def test_reference_scores_follow_a_standard_normal_and_are_fresh(self) -> None:
        criterion = DeviationLoss()
        like = torch.zeros(1)
        first = criterion.reference_statistics(like)
        second = criterion.reference_statistics(like)
        reference = sample_reference_scores()
        assert reference.shape == (5000,)
        for mean, std in (first, second):
            assert abs(mean.item()) < 4 / math.sqrt(5000)  # 4 standard errors
            assert abs(std.item() - 1.0) < 0.05
        assert first[0].item() != second[0].item()  # drawn afresh at every step

    def test_probability_is_the_two_sided_gaussian_confidence(self) -> None:
        deviation = torch.tensor([0.0, 1.0, 1.96, 5.0, 50.0])
        normal = torch.distributions.Normal(0.0, 1.0)
        expected = 2 * normal.cdf(deviation) - 1
        probability = deviation_to_probability(deviation)
        assert torch.allclose(probability, expected, atol=1e-6)
        assert probability.min() >= 0
        assert probability.max() <= 1

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"top_k_ratio": 0.0}, "Top-K ratio"),
            ({"top_k_ratio": 10.0}, "Top-K ratio"),
            ({"margin": -1.0}, "margin"),
            ({"normal_weight": -1.0}, "lambda"),
            ({"n_reference_samples": 1}, "at least 2 reference"),
            ({"prior_std": 0.0}, "standard deviation"),
        ],
    )
    def test_bad_hyper_parameters(self, kwargs: dict, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            DeviationLoss(**kwargs)

    def test_bad_inputs(self) -> None:
        criterion = DeviationLoss()
        with pytest.raises(ValueError, match="labels must be 0"):
            criterion(torch.randn(2, 10), torch.tensor([0.0, 2.0]))
        with pytest.raises(ValueError, match="shape"):
            criterion(torch.randn(2, 10), torch.zeros(3))
        with pytest.raises(ValueError, match=r"\(batch, patches\)"):
            criterion(torch.randn(10), torch.zeros(1))
