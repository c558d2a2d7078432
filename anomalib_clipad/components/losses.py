# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Losses of prompt learning: one-class (PromptAD, DevPrompt) and segmentation on labelled data (focal, dice).

Notation (PromptAD, CVPR 2024, Sec. 4.2-4.3): ``z`` is a normal visual feature (the class token for the image head,
one patch token for the pixel head), ``g(s)`` the text feature of prompt ``s``,
``w̄^n = mean_i g(s^n_i)`` the normal prototype, ``W`` the set of all anomaly prompt features (manual and learned),
``w̄^a`` the anomaly prototype (the mean over ``W``), ``τ`` the temperature. All functions take raw (not normalised)
text features and normalise them the way the paper's equations say.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812


def _check_features(visual: torch.Tensor, *text: torch.Tensor) -> None:
    if visual.ndim != 2:
        msg = f"Visual features must have shape (n, D), got {tuple(visual.shape)}."
        raise ValueError(msg)
    for features in text:
        if features.shape[-1] != visual.shape[-1]:
            msg = f"Text feature dimension {features.shape[-1]} does not match the visual {visual.shape[-1]}."
            raise ValueError(msg)


def prototype(features: torch.Tensor) -> torch.Tensor:
    """Prototype of a prompt set: the mean of the raw prompt features, L2-normalised.

    Args:
        features: ``(n_prompts, D)`` raw text features.

    Returns:
        ``(D,)`` unit-norm prototype, e.g. ``w̄^n / ||w̄^n||``.
    """
    return F.normalize(features.mean(dim=0), dim=-1)


def prompt_contrastive_loss(
    visual_features: torch.Tensor,
    normal_features: torch.Tensor,
    anomaly_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
) -> torch.Tensor:
    r"""Contrastive loss of the normal prototype against every anomaly prompt (PromptAD eq. 12).

    .. math::

        L_{clip} = E_z\left[-\log \frac{\exp(\langle z, \bar w^n\rangle/\tau)}
        {\exp(\langle z, \bar w^n\rangle/\tau) + \sum_{w \in W} \exp(\langle z, w\rangle/\tau)}\right]

    ``<., .>`` is the cosine similarity, so ``z``, ``w̄^n`` and every ``w`` are L2-normalised; ``w̄^n`` is the
    normalised mean of the raw normal prompt features. It is a cross-entropy over ``1 + |W|`` logits with target 0.

    Args:
        visual_features: ``(n, D)`` normal visual features ``z`` (normalised here).
        normal_features: ``(N, D)`` raw features of the normal prompts.
        anomaly_features: ``(|W|, D)`` raw features of every anomaly prompt (manual and learned).
        logit_scale: ``1 / τ``. PromptAD's reference multiplies by CLIP's *raw* ``logit_scale`` parameter (about
            4.6 for trained CLIPs), not its exponential; pass what the method prescribes.

    Returns:
        Scalar loss, mean over the ``n`` visual features.
    """
    _check_features(visual_features, normal_features, anomaly_features)
    visual = F.normalize(visual_features, dim=-1)
    positive = visual @ prototype(normal_features).unsqueeze(-1)  # (n, 1)
    negatives = visual @ F.normalize(anomaly_features, dim=-1).T  # (n, |W|)
    logits = torch.cat([positive, negatives], dim=-1) * logit_scale
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def explicit_anomaly_margin_loss(
    visual_features: torch.Tensor,
    normal_features: torch.Tensor,
    anomaly_features: torch.Tensor,
    margin: float = 0.0,
) -> torch.Tensor:
    r"""Explicit anomaly margin (EAM, PromptAD eq. 13-14), squared-distance hinge as the reference implements it.

    .. math::

        L_{eam} = E_z\left[\max\left(0,\; d(\hat z, \hat w^n)^2 - d(\hat z, \hat w^a)^2 + m\right)\right],
        \qquad \bar w^a = \frac{\sum_{W} w}{|W|}

    with ``x̂ = x / ||x||`` and ``d`` the Euclidean distance. The paper writes ``d`` (not squared) and fixes the margin
    ``m`` to 0; for unit vectors ``d^2 = 2 - 2 cos``, so with ``m = 0`` both forms are zero exactly when the visual
    feature is at least as close to the normal prototype as to the anomaly prototype. We use the squared distance,
    as the reference code and our specs do.

    Args:
        visual_features: ``(n, D)`` normal visual features ``z``.
        normal_features: ``(N, D)`` raw features of the normal prompts.
        anomaly_features: ``(|W|, D)`` raw features of every anomaly prompt (manual and learned).
        margin: the margin ``m`` (PromptAD: 0).

    Returns:
        Scalar loss, mean over the ``n`` visual features.
    """
    _check_features(visual_features, normal_features, anomaly_features)
    visual = F.normalize(visual_features, dim=-1)
    normal_distance = (visual - prototype(normal_features)).pow(2).sum(dim=-1)
    anomaly_distance = (visual - prototype(anomaly_features)).pow(2).sum(dim=-1)
    return torch.relu(normal_distance - anomaly_distance + margin).mean()


def prompt_alignment_loss(
    manual_features: torch.Tensor,
    learned_features: torch.Tensor,
    weight: float = 1.0,
    normalize_means: bool = False,
) -> torch.Tensor:
    r"""Alignment of the learned anomaly prompts with the manual ones (PromptAD eq. 15).

    .. math::

        L_{align} = \lambda \left\| \frac{\bar w^m}{\|\bar w^m\|_2} - \frac{\bar w^l}{\|\bar w^l\|_2}
        \right\|_2^2

    where ``w̄^m`` and ``w̄^l`` are the means of the (L2-normalised) manual and learned anomaly prompt features.
    The reference implementation takes the means of the normalised features and does *not* re-normalise the means
    (``normalize_means=False``, the default, which the parity fixture checks); ``normalize_means=True`` applies the
    outer normalisation exactly as the equation is printed. The two agree when the prompt features of each set
    point the same way and differ by a few percent otherwise; with ``λ = 0.001`` the effect on training is tiny.

    Args:
        manual_features: ``(N x M, D)`` raw features of the manual anomaly prompts.
        learned_features: ``(N x L, D)`` raw features of the learned anomaly prompts.
        weight: ``λ`` (PromptAD: 0.001). Use 1 to get the bare term.
        normalize_means: re-normalise the two means (the printed equation) instead of the reference's form.

    Returns:
        Scalar loss.
    """
    manual_mean = F.normalize(manual_features, dim=-1).mean(dim=0)
    learned_mean = F.normalize(learned_features, dim=-1).mean(dim=0)
    if normalize_means:
        manual_mean, learned_mean = F.normalize(manual_mean, dim=-1), F.normalize(learned_mean, dim=-1)
    return weight * (manual_mean - learned_mean).pow(2).sum()


def focal_loss(
    probabilities: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    smooth: float = 1e-5,
) -> torch.Tensor:
    r"""Focal loss on class probabilities (Lin et al. 2017), as AnomalyCLIP's and SimCLIP's training uses it.

    .. math::

        L_{focal} = \frac{1}{|P|} \sum_{p} -(1 - p_t)^\gamma \log p_t, \qquad
        p_t = \sum_c \tilde y_{p,c}\, P_{p,c} + \epsilon

    over every pixel ``p``, with the one-hot target smoothed to ``[\epsilon / (C - 1), 1 - \epsilon]`` (the reference
    implementation's label smoothing, ``epsilon = smooth``; no class weights).

    Args:
        probabilities: ``(B, C, H, W)`` (or ``(N, C)``) class probabilities (a softmax output, not logits).
        target: ``(B, H, W)`` (or ``(N,)``) class indices, e.g. a binary mask (1 = anomalous = class 1).
        gamma: focusing parameter (2).
        smooth: label smoothing and log floor ``epsilon`` (1e-5).

    Returns:
        Scalar loss, mean over pixels.
    """
    n_classes = probabilities.shape[1]
    flat = probabilities.movedim(1, -1).reshape(-1, n_classes)
    one_hot = F.one_hot(target.reshape(-1).long(), n_classes).to(flat.dtype)
    if smooth:
        one_hot = one_hot.clamp(smooth / (n_classes - 1), 1.0 - smooth)
    p_t = (one_hot * flat).sum(dim=1) + smooth
    return (-((1.0 - p_t) ** gamma) * p_t.log()).mean()


def dice_loss(probability: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    r"""Binary dice loss, averaged over the images of a batch (the AnomalyCLIP/SimCLIP reference's form).

    .. math::

        L_{dice} = 1 - \frac{1}{B} \sum_b \frac{2 \sum_p x_{b,p} y_{b,p} + s}{\sum_p x_{b,p} + \sum_p y_{b,p} + s}

    Args:
        probability: ``(B, H, W)`` predicted probability of the foreground (e.g. ``p_a``, or ``p_n`` against
            ``1 - mask``).
        target: ``(B, H, W)`` binary target.
        smooth: the smoothing ``s`` (1).

    Returns:
        Scalar loss.
    """
    batch = target.shape[0]
    prediction, truth = probability.reshape(batch, -1), target.reshape(batch, -1).to(probability.dtype)
    dice = (2 * (prediction * truth).sum(dim=1) + smooth) / (prediction.sum(dim=1) + truth.sum(dim=1) + smooth)
    return 1.0 - dice.mean()
