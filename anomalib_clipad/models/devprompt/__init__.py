# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""DevPrompt: deviation-based prompt learning for one-normal-shot anomaly detection (Poudineh & Lalonde, 2026)."""

from .lightning_model import DevPrompt
from .loss import DeviationLoss
from .torch_model import DevPromptModel, SharedContextPromptLearner, synthesize_anomalies

__all__ = ["DevPrompt", "DevPromptModel", "DeviationLoss", "SharedContextPromptLearner", "synthesize_anomalies"]
