# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""PromptAD: learning prompts with only normal samples for few-shot anomaly detection (Li et al., CVPR 2024)."""

from .lightning_model import PromptAD
from .torch_model import PromptADModel, PromptLearner, resolve_anomaly_states

__all__ = ["PromptAD", "PromptADModel", "PromptLearner", "resolve_anomaly_states"]
