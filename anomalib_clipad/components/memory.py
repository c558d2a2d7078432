# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Reference memory and association: how far is each test feature from the nearest normal reference feature.

WinCLIP+, PromptAD ("vision-guided" map), DevPrompt and SimCLIP+ all score a test feature ``f`` against a memory
``R`` of L2-normalised features of the few normal reference images::

    M(f) = min_{r in R} (1 - <f / ||f||, r>) / 2        in [0, 1]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812


def build_memory(features: torch.Tensor) -> torch.Tensor:
    """Flatten reference features into an L2-normalised memory.

    Args:
        features: ``(k, N, C)`` features of ``k`` reference images (e.g. patch tokens), or ``(M, C)``.

    Returns:
        ``(M, C)`` L2-normalised memory, ``M = k * N``.

    Raises:
        ValueError: the memory would be empty or the shape is not 2-D or 3-D.
    """
    if features.ndim not in (2, 3) or features.numel() == 0:
        msg = f"Expected non-empty reference features of shape (k, N, C) or (M, C), got {tuple(features.shape)}."
        raise ValueError(msg)
    return F.normalize(features.reshape(-1, features.shape[-1]), dim=-1)


def associate(features: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """Distance of each feature to its nearest memory entry: ``min (1 - cos) / 2``.

    Args:
        features: ``(B, N, C)`` query features (normalised here).
        memory: ``(M, C)`` memory from :func:`build_memory` (already normalised).

    Returns:
        ``(B, N)`` association scores in ``[0, 1]`` (0 = identical to a reference feature).

    Raises:
        ValueError: feature dimensions differ.
    """
    if features.shape[-1] != memory.shape[-1]:
        msg = f"Feature dimension {features.shape[-1]} does not match the memory's {memory.shape[-1]}."
        raise ValueError(msg)
    similarity = F.normalize(features, dim=-1) @ memory.T  # (B, N, M)
    return (1.0 - similarity.amax(dim=-1)) / 2.0
