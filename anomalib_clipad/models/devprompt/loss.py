# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""DevPrompt's deviation loss with Top-K multiple-instance learning (paper eq. 4-8).

The paper (Poudineh & Lalonde, "DevPrompt", sec. 3.4) follows DevNet (Pang et al., 2021): a standard Gaussian prior
is assumed for the alignment scores of normal patches, a large set of reference scores is drawn from it, and each
patch's score becomes a z-score-like deviation::

    r_1 .. r_l ~ N(0, 1),  l = 5000            mu_r = mean(r),  sigma_r = std(r)
    d(p) = |s(p) - mu_r| / sigma_r                                                  (eq. 5)

An image is a bag of patches. Its bag deviation is the mean of its top-K patch deviations, K a fraction of the
number of patches P (10 % by default)::

    M(x) = Top-K { d(p) | p = 1 .. P }                                              (eq. 6)
    D(x) = 1/K * sum_{m in M(x)} m                                                  (eq. 7)

and the loss pushes normal bags (y = 0) to zero deviation and anomalous bags (y = 1) beyond the margin a::

    L_dev(x, y) = lambda * (1 - y) * |D(x)| + y * max(0, a - D(x)),  a = 5, lambda = 1        (eq. 8)

averaged over the bags of a batch (DevNet's reduction).

At inference there is no sampling: the deviation uses the prior's own parameters (mean 0, standard deviation 1),
which the sampled ``mu_r``, ``sigma_r`` estimate, so scores are deterministic. A deviation is a |z|-score under that
prior; :func:`deviation_to_probability` maps it to an anomaly probability in [0, 1] with the two-sided Gaussian
confidence ``erf(d / sqrt(2)) = P(|Z| < d)``.

Example:
    >>> import torch
    >>> from anomalib_clipad.models.devprompt.loss import DeviationLoss
    >>> loss = DeviationLoss()
    >>> patch_scores = torch.rand(4, 225)  # s(p) for 4 images of 15x15 patches
    >>> labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    >>> loss(patch_scores, labels).shape
    torch.Size([])
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_REFERENCE_SAMPLES = 5000
DEFAULT_TOP_K_RATIO = 0.1
DEFAULT_MARGIN = 5.0
DEFAULT_NORMAL_WEIGHT = 1.0


def sample_reference_scores(
    n_samples: int = DEFAULT_REFERENCE_SAMPLES,
    *,
    prior_mean: float = 0.0,
    prior_std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw DevNet's reference scores ``r_i ~ N(prior_mean, prior_std^2)`` (standard normal by default).

    Args:
        n_samples: number of reference scores l (the paper: 5000, drawn afresh at every step).
        prior_mean: mean of the Gaussian prior.
        prior_std: standard deviation of the Gaussian prior.
        generator: optional random generator (for reproducible draws).
        device: device of the result.
        dtype: dtype of the result.

    Returns:
        Tensor of shape ``(n_samples,)``.

    Raises:
        ValueError: ``n_samples < 2`` (a standard deviation needs two samples) or ``prior_std <= 0``.
    """
    if n_samples < 2:
        msg = f"The deviation loss needs at least 2 reference scores to estimate a standard deviation, got {n_samples}."
        raise ValueError(msg)
    if prior_std <= 0:
        msg = f"The Gaussian prior's standard deviation must be positive, got {prior_std}."
        raise ValueError(msg)
    samples = torch.randn(n_samples, generator=generator, device=device, dtype=dtype)
    return samples * prior_std + prior_mean


def patch_deviation(
    scores: torch.Tensor,
    reference_mean: torch.Tensor | float,
    reference_std: torch.Tensor | float,
) -> torch.Tensor:
    """Patch deviation ``d(p) = |s(p) - mu_r| / sigma_r`` (paper eq. 5).

    Args:
        scores: patch alignment scores s(p), any shape.
        reference_mean: ``mu_r``, the mean of the reference scores.
        reference_std: ``sigma_r``, their standard deviation.

    Returns:
        Deviations, same shape as ``scores``, non-negative.
    """
    return (scores - reference_mean).abs() / reference_std


def top_k_count(n_patches: int, ratio: float = DEFAULT_TOP_K_RATIO) -> int:
    """Number K of patches in the Top-K MIL set: ``max(1, floor(ratio * n_patches))`` (DevNet's rule).

    Args:
        n_patches: number of patches P of one image.
        ratio: K as a fraction of P (the paper: 10 %).

    Returns:
        K, at least 1 and at most ``n_patches``.

    Raises:
        ValueError: ``ratio`` is not in (0, 1] or ``n_patches < 1``.
    """
    if not 0.0 < ratio <= 1.0:
        msg = f"The Top-K ratio must be in (0, 1] (a fraction of the patches, e.g. 0.1 for 10 %), got {ratio}."
        raise ValueError(msg)
    if n_patches < 1:
        msg = f"An image needs at least one patch for Top-K MIL, got {n_patches}."
        raise ValueError(msg)
    return max(1, int(ratio * n_patches))


def top_k_bag_deviation(deviations: torch.Tensor, ratio: float = DEFAULT_TOP_K_RATIO) -> torch.Tensor:
    """Bag deviation ``D(x)``: mean of the K largest patch deviations (paper eq. 6-7).

    Args:
        deviations: patch deviations d(p), shape ``(B, P)`` (one bag of P patches per image).
        ratio: K as a fraction of P.

    Returns:
        Tensor of shape ``(B,)``.

    Raises:
        ValueError: ``deviations`` is not 2-D.
    """
    if deviations.ndim != 2:
        msg = f"Patch deviations must have shape (batch, patches), got {tuple(deviations.shape)}."
        raise ValueError(msg)
    k = top_k_count(deviations.shape[1], ratio)
    return deviations.topk(k, dim=1).values.mean(dim=1)


def deviation_loss(
    bag_deviation: torch.Tensor,
    labels: torch.Tensor,
    margin: float = DEFAULT_MARGIN,
    normal_weight: float = DEFAULT_NORMAL_WEIGHT,
) -> torch.Tensor:
    """Deviation loss ``lambda (1 - y) |D(x)| + y max(0, a - D(x))`` averaged over bags (paper eq. 8).

    Args:
        bag_deviation: D(x) per bag, shape ``(B,)``.
        labels: y per bag, 0 for normal and 1 for anomalous, shape ``(B,)``.
        margin: the confidence margin a (a z-score threshold; the paper: 5).
        normal_weight: the deviation coefficient lambda on the normal term (the paper: 1).

    Returns:
        Scalar loss.

    Raises:
        ValueError: shapes differ, or a label is neither 0 nor 1.
    """
    if bag_deviation.shape != labels.shape or bag_deviation.ndim != 1:
        msg = (
            f"Bag deviations and labels must both have shape (batch,), got {tuple(bag_deviation.shape)} and "
            f"{tuple(labels.shape)}."
        )
        raise ValueError(msg)
    if not torch.all((labels == 0) | (labels == 1)):
        msg = f"Deviation-loss labels must be 0 (normal) or 1 (anomalous), got {labels.unique().tolist()}."
        raise ValueError(msg)
    labels = labels.to(bag_deviation.dtype)
    normal_term = normal_weight * (1 - labels) * bag_deviation.abs()
    anomalous_term = labels * torch.clamp(margin - bag_deviation, min=0)
    return (normal_term + anomalous_term).mean()


def deviation_to_probability(deviation: torch.Tensor) -> torch.Tensor:
    """Map a |z|-score deviation to an anomaly probability ``P(|Z| < d) = erf(d / sqrt(2))``.

    Under the Gaussian prior of normal scores, a deviation d is anomalous with the confidence of the two-sided
    interval that it leaves behind: 0 at the prior's mean, 0.683 at one standard deviation, 0.99999943 at the margin
    a = 5. The map is monotone, so rankings (and AUROC) are those of the deviations themselves.

    Args:
        deviation: non-negative deviations, any shape.

    Returns:
        Probabilities in [0, 1], same shape.
    """
    return torch.erf(deviation.clamp(min=0) / math.sqrt(2.0))


class DeviationLoss(nn.Module):
    """Deviation loss with Top-K MIL over patch alignment scores (paper eq. 4-8).

    Each call draws fresh reference scores from the Gaussian prior, turns every patch score into a deviation,
    aggregates each image's top-K deviations into its bag deviation and applies the margin loss.

    Args:
        margin: the confidence margin a (paper: 5).
        normal_weight: the deviation coefficient lambda of the normal term (paper: 1).
        top_k_ratio: K as a fraction of the patches (paper: 10 %).
        n_reference_samples: reference scores drawn per call (paper: 5000).
        prior_mean: mean of the Gaussian prior of normal scores (paper: 0).
        prior_std: standard deviation of the prior (paper: 1).

    Raises:
        ValueError: a hyper-parameter is out of range.
    """

    def __init__(
        self,
        margin: float = DEFAULT_MARGIN,
        normal_weight: float = DEFAULT_NORMAL_WEIGHT,
        top_k_ratio: float = DEFAULT_TOP_K_RATIO,
        *,
        n_reference_samples: int = DEFAULT_REFERENCE_SAMPLES,
        prior_mean: float = 0.0,
        prior_std: float = 1.0,
    ) -> None:
        """Validate and store the hyper-parameters."""
        super().__init__()
        top_k_count(1, top_k_ratio)  # validates the ratio
        if margin <= 0:
            msg = f"The deviation margin a must be positive, got {margin}."
            raise ValueError(msg)
        if normal_weight < 0:
            msg = f"The deviation coefficient lambda must be non-negative, got {normal_weight}."
            raise ValueError(msg)
        if n_reference_samples < 2 or prior_std <= 0:
            sample_reference_scores(
                n_reference_samples, prior_mean=prior_mean, prior_std=prior_std
            )  # raises the clear error
        self.margin = margin
        self.normal_weight = normal_weight
        self.top_k_ratio = top_k_ratio
        self.n_reference_samples = n_reference_samples
        self.prior_mean = prior_mean
        self.prior_std = prior_std

    def reference_statistics(
        self,
        like: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw the reference scores and return their mean and standard deviation ``(mu_r, sigma_r)``.

        Args:
            like: a tensor whose device and dtype the statistics take.
            generator: optional random generator.

        Returns:
            Tuple of two scalar tensors.
        """
        reference = sample_reference_scores(
            self.n_reference_samples,
            prior_mean=self.prior_mean,
            prior_std=self.prior_std,
            generator=generator,
            device=like.device,
            dtype=like.dtype,
        )
        return reference.mean(), reference.std()

    def forward(
        self,
        patch_scores: torch.Tensor,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Compute the loss for a batch of bags.

        Args:
            patch_scores: patch alignment scores s(p), shape ``(B, P)``.
            labels: bag labels y, shape ``(B,)``, 0 normal and 1 anomalous.
            generator: optional random generator for the reference draw.

        Returns:
            Scalar loss.
        """
        reference_mean, reference_std = self.reference_statistics(patch_scores, generator)
        deviations = patch_deviation(patch_scores, reference_mean, reference_std)
        bag = top_k_bag_deviation(deviations, self.top_k_ratio)
        return deviation_loss(bag, labels, self.margin, self.normal_weight)
