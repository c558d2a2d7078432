# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The micro backbone: the tests' smallest CLIP, for tests whose cost is an ONNX export.

``clipad-micro-vit-16`` (``anomalib_clipad/clip/model_configs``) has 2 image blocks of width 32 and patch 16: the
dynamo ONNX export of a model on it takes a third to a half of the time it takes on the registry's 8-block tiny
backbone, and the export's graph has every operation of the full-size one (the export tests check all of them). Each
model needs its own layer settings on 2 blocks (:data:`MICRO_LAYERS`); :func:`micro_settings` adds them to the
registry's tiny settings. The ``micro_registry`` fixture (``conftest.py``) puts them in the registry for one test, for
the scripts whose ``--tiny`` reads the registry.
"""

from __future__ import annotations

from typing import Any

from anomalib_clipad.registry import get_spec

MICRO_BACKBONE = "clipad-micro-vit-16"
"""2 image blocks of width 32, patch 16."""
MICRO_IMAGE_SIZE = 64
MICRO_LAYERS: dict[str, dict[str, Any]] = {
    "WinCLIPPlus": {"scales": [2]},
    "PromptAD": {"memory_layers": [1, 2]},
    "DevPrompt": {"memory_layers": [1, 2]},
    "AnomalyCLIP": {"dpam_start_layer": 1, "feature_layers": [1, 2]},
    "SimCLIP": {"feature_layers": [1, 2]},
}
"""Each model's layer settings on the micro backbone (WinCLIP+'s window scale: 2 patches of the 4 x 4 grid)."""


def micro_settings(name: str, **overrides: Any) -> dict[str, Any]:
    """The registry's tiny settings of ``name`` on the micro backbone (random weights unless ``overrides`` say)."""
    return {
        **get_spec(name).tiny,
        "backbone": MICRO_BACKBONE,
        "image_size": MICRO_IMAGE_SIZE,
        **MICRO_LAYERS[get_spec(name).name],
        **overrides,
    }
