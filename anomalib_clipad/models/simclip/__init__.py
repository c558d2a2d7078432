# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""SimCLIP / SimCLIP+: realigned CLIP features for zero-/few-shot anomaly detection (Deng et al., ACM MM 2024)."""

from .lightning_model import SimCLIP, load_learned_weights, save_learned_weights
from .torch_model import ImplicitPromptTuning, SimCLIPModel, binary_prompts, convert_reference_weights

__all__ = [
    "ImplicitPromptTuning",
    "SimCLIP",
    "SimCLIPModel",
    "binary_prompts",
    "convert_reference_weights",
    "load_learned_weights",
    "save_learned_weights",
]
