# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""AnomalyCLIP: object-agnostic prompt learning for zero-shot anomaly detection (Zhou et al., ICLR 2024)."""

from .lightning_model import AnomalyCLIP
from .reference_format import from_reference_state_dict, prompts_from_checkpoint
from .torch_model import AnomalyCLIPModel

__all__ = [
    "AnomalyCLIP",
    "AnomalyCLIPModel",
    "from_reference_state_dict",
    "prompts_from_checkpoint",
]
