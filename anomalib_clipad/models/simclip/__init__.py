# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""SimCLIP / SimCLIP+: realigned CLIP features for zero-/few-shot anomaly detection (Deng et al., ACM MM 2024)."""

from .lightning_model import SimCLIP
from .reference_format import convert_reference_weights
from .torch_model import ImplicitPromptTuning, SimCLIPModel, binary_prompts

__all__ = [
    "ImplicitPromptTuning",
    "SimCLIP",
    "SimCLIPModel",
    "binary_prompts",
    "convert_reference_weights",
]
