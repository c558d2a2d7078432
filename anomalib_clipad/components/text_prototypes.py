# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The text-prototype buffer every method scores against: one L2-normalised feature per prompt class.

``[t_normal, t_anomalous]`` for every method here (WinCLIP's compositional ensembles, the learned prompts of PromptAD,
DevPrompt, AnomalyCLIP and SimCLIP, computed once after training). Empty until :meth:`TextPrototypes.set`; a checkpoint
restores it (see :mod:`.readiness`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from .readiness import as_state_tensor, resize_buffers_to_state_dict


class TextPrototypes(nn.Module):
    """``(n_prompts, D)`` L2-normalised text features, in a buffer.

    Args:
        dim: joint embedding dimension ``D``.
        n_prompts: number of prototypes (2: normal, anomalous).

    Attributes:
        features: ``(n_prompts, D)`` once set, ``(0, D)`` before (buffer).
    """

    def __init__(self, dim: int, n_prompts: int = 2) -> None:
        super().__init__()
        self.n_prompts = n_prompts
        self.register_buffer("features", torch.empty(0, dim))

    @property
    def is_ready(self) -> bool:
        """Whether the prototypes were set (or loaded)."""
        return self.features.shape[0] > 0

    @torch.no_grad()
    def set(self, features: torch.Tensor) -> None:
        """Store ``(n_prompts, D)`` text features, L2-normalised here.

        Raises:
            ValueError: another shape than ``(n_prompts, D)``.
        """
        if features.ndim != 2 or features.shape[0] != self.n_prompts or features.shape[1] != self.features.shape[1]:
            dim = self.features.shape[1]
            msg = f"Expected {self.n_prompts} text features of dimension {dim}, got {tuple(features.shape)}."
            raise ValueError(msg)
        self.features = as_state_tensor(F.normalize(features.detach(), dim=-1), self.features)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        resize_buffers_to_state_dict(self, state_dict, prefix, ("features",))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
