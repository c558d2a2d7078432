# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""WinCLIP / WinCLIP+ (Jeong et al., CVPR 2023): zero-/few-normal-shot anomaly classification and segmentation."""

from .lightning_model import WinCLIPPlus
from .torch_model import WinCLIPPlusModel

__all__ = ["WinCLIPPlus", "WinCLIPPlusModel"]
