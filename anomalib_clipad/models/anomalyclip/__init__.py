# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""AnomalyCLIP: object-agnostic prompt learning for zero-shot anomaly detection (Zhou et al., ICLR 2024)."""

from .lightning_model import AnomalyCLIP
from .prompts_file import (
    check_prompt_state_dict,
    from_reference_state_dict,
    load_prompts,
    prompts_from_checkpoint,
    save_prompts,
)
from .torch_model import AnomalyCLIPModel

__all__ = [
    "AnomalyCLIP",
    "AnomalyCLIPModel",
    "check_prompt_state_dict",
    "from_reference_state_dict",
    "load_prompts",
    "prompts_from_checkpoint",
    "save_prompts",
]
