# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""SimCLIP / SimCLIP+: realigned CLIP features for zero-/few-shot anomaly detection (Deng et al., ACM MM 2024)."""

from .torch_model import ImplicitPromptTuning, SimCLIPModel, binary_prompts, convert_reference_weights

__all__ = ["ImplicitPromptTuning", "SimCLIPModel", "binary_prompts", "convert_reference_weights"]
