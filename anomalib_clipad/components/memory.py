# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Reference memory and association: how far is each test feature from the nearest normal reference feature.

WinCLIP+, PromptAD ("vision-guided" map), DevPrompt and SimCLIP+ all score a test feature ``f`` against a memory
``R`` of L2-normalised features of the few normal reference images::

    M(f) = min_{r in R} (1 - <f / ||f||, r>) / 2        in [0, 1]

:class:`ReferenceMemory` is the one memory type of the package: a module whose buffers (so checkpoints and exported
graphs carry them) hold the normalised features and, when asked, the raw ones; :meth:`ReferenceMemory.nearest` returns
the distance **and** the index of the nearest entry (SimCLIP+ reads the nearest raw feature). :func:`build_memory` and
:func:`associate` are the same mathematics on plain tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from .readiness import as_state_tensor, resize_buffers_to_state_dict


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


def nearest(features: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance ``min (1 - cos) / 2`` of each feature to the memory, and the index of the nearest entry.

    Args:
        features: ``(B, N, C)`` query features (normalised here).
        memory: ``(M, C)`` memory from :func:`build_memory` (already normalised).

    Returns:
        ``(B, N)`` distances in ``[0, 1]`` (0 = identical to a reference feature), ``(B, N)`` indices into ``memory``.

    Raises:
        ValueError: feature dimensions differ, or the memory is empty.
    """
    if features.shape[-1] != memory.shape[-1]:
        msg = f"Feature dimension {features.shape[-1]} does not match the memory's {memory.shape[-1]}."
        raise ValueError(msg)
    if memory.shape[0] == 0:
        msg = "The reference memory is empty: fill it with the features of the normal reference images first."
        raise ValueError(msg)
    similarity = F.normalize(features, dim=-1) @ memory.T  # (B, N, M)
    best, index = similarity.max(dim=-1)
    return (1.0 - best) / 2.0, index


def associate(features: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """Distance of each feature to its nearest memory entry, ``min (1 - cos) / 2`` (see :func:`nearest`)."""
    return nearest(features, memory)[0]


class ReferenceMemory(nn.Module):
    """Features of the normal reference images, ready for nearest-neighbour association.

    Empty until :meth:`fill`; the buffers take the stored sizes when a state dict is loaded (their size is ``k`` times
    the features per image, known only once the references are seen).

    Args:
        dim: feature dimension ``C``.
        keep_raw: also keep the raw (not normalised) features, e.g. for SimCLIP+ which re-scores the nearest one.

    Attributes:
        features: ``(M, C)`` L2-normalised features (buffer).
        raw: ``(M, C)`` raw features (buffer), only if ``keep_raw``; ``None`` otherwise.
    """

    raw: torch.Tensor | None

    def __init__(self, dim: int, keep_raw: bool = False) -> None:
        super().__init__()
        self.keep_raw = keep_raw
        self.register_buffer("features", torch.empty(0, dim))
        self.register_buffer("raw", torch.empty(0, dim) if keep_raw else None)

    @property
    def dim(self) -> int:
        """Feature dimension ``C``."""
        return int(self.features.shape[1])

    @property
    def is_ready(self) -> bool:
        """Whether the memory holds features (filled, or loaded from a checkpoint)."""
        return self.features.shape[0] > 0

    def __len__(self) -> int:
        """Number of entries ``M``."""
        return int(self.features.shape[0])

    @torch.no_grad()
    def fill(self, features: torch.Tensor) -> None:
        """Store reference features ``(k, N, C)`` or ``(M, C)`` (normalised here; raw kept if asked).

        Raises:
            ValueError: empty features or another dimension than :attr:`dim`.
        """
        memory = build_memory(features)
        if memory.shape[1] != self.dim:
            msg = f"Reference features have dimension {memory.shape[1]}, the memory {self.dim}."
            raise ValueError(msg)
        self.features = as_state_tensor(memory, self.features)
        if self.raw is not None:
            self.raw = as_state_tensor(features.reshape(-1, features.shape[-1]), self.raw)

    def clear(self) -> None:
        """Empty the memory (zero-shot)."""
        self.features = self.features[:0]
        if self.raw is not None:
            self.raw = self.raw[:0]

    def nearest(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, N)`` distances ``min (1 - cos) / 2`` of queries ``(B, N, C)`` and indices of the nearest entries."""
        return nearest(queries, self.features)

    def distance(self, queries: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` distances ``min (1 - cos) / 2`` of queries ``(B, N, C)`` to the memory."""
        return self.nearest(queries)[0]

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        resize_buffers_to_state_dict(self, state_dict, prefix, ("features", "raw"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class LayerMemories(nn.ModuleDict):
    """One :class:`ReferenceMemory` per image-tower layer (PromptAD's and DevPrompt's vision memories).

    Args:
        layers: the layers (1-indexed); the keys are their numbers as strings.
        dim: feature dimension ``C``.
    """

    def __init__(self, layers: Sequence[int], dim: int) -> None:
        super().__init__({str(layer): ReferenceMemory(dim) for layer in layers})

    @property
    def is_ready(self) -> bool:
        """Whether every layer's memory holds features."""
        return all(memory.is_ready for memory in self.values())

    def fill(self, features: Mapping[str, torch.Tensor]) -> None:
        """Fill each layer's memory from ``features[f"memory_{layer}"]`` (the models' :meth:`encode_images` keys)."""
        for layer, memory in self.items():
            memory.fill(features[f"memory_{layer}"])

    def clear(self) -> None:
        """Empty every layer's memory."""
        for memory in self.values():
            memory.clear()
