# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The one list of anomalib-clipad's models: what each is, how it learns, and how to build it small.

Everything that needs "all our models" takes it from :data:`MODELS`: the package's ``__all__`` and its registration
with anomalib, the speed command (``python -m anomalib_clipad.benchmarks.speed``), the CI benchmark grid and the
contract test (``tests/unit/test_model_contract.py``). A sixth method is its folder under ``models/`` plus one row
here (see ``docs/adding_a_method.md``).

This module imports nothing heavy (``import anomalib_clipad`` reads it): the classes are imported on first use of
:attr:`ModelSpec.lightning_class`. The tiny backbone names are those of the open_clip configs in
``anomalib_clipad/clip/model_configs`` (:data:`anomalib_clipad.clip.TINY_BACKBONE`; the contract test checks they
agree).

Example:
    >>> from anomalib_clipad.registry import MODELS, get_spec
    >>> [spec.name for spec in MODELS]
    ['WinCLIPPlus', 'PromptAD', 'DevPrompt', 'AnomalyCLIP', 'SimCLIP']
    >>> get_spec("promptad").protocol
    <Protocol.NORMAL_SHOTS: 'normal_shots'>
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

TINY_BACKBONE = "clipad-tiny-vit-16"
"""8 image blocks, 240 px native, patch 16 (registered with open_clip by :mod:`anomalib_clipad.clip.loading`)."""
TINY_BACKBONE_24 = "clipad-tiny-vit-14-l24"
"""24 image blocks, patch 14: the layer indices of the ViT-L models' papers exist."""


class Protocol(str, Enum):
    """How a model gets what it scores with."""

    SET_UP = "set_up"
    """Nothing is trained: text prototypes (and reference memories of k normal images) are built at set-up."""
    NORMAL_SHOTS = "normal_shots"
    """Prompts are trained on k normal images of the target class (few-shot)."""
    AUXILIARY_DATA = "auxiliary_data"
    """Learned once on labelled anomalous images of another dataset, then scores any target (zero-shot)."""


@dataclass(frozen=True)
class ModelSpec:
    """One row of the registry.

    Args:
        name: the Lightning class name (``anomalib train --model <name>``).
        module: the model's package (``anomalib_clipad.models.<folder>``), which exports the class.
        torch_class_name: the torch model's class in ``<module>.torch_model``.
        protocol: how it learns (:class:`Protocol`).
        tiny: arguments that build it in seconds on a CPU, with a tiny randomly initialised CLIP (tests, CI grid).
        few_shot: arguments that add normal reference shots (``{}`` where the model has none).
        folder: the model's folder name under ``anomalib_clipad/models``.
    """

    name: str
    module: str
    torch_class_name: str
    protocol: Protocol
    tiny: dict[str, Any] = field(default_factory=dict)
    few_shot: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        """The model's folder under ``anomalib_clipad/models``."""
        return self.module.rsplit(".", 1)[-1]

    @property
    def lightning_class(self) -> type:
        """The ``AnomalibModule`` class (imported on first use)."""
        return getattr(importlib.import_module(self.module), self.name)

    @property
    def torch_class(self) -> type:
        """The torch model class (imported on first use)."""
        return getattr(importlib.import_module(f"{self.module}.torch_model"), self.torch_class_name)

    @property
    def trains(self) -> bool:
        """Whether ``fit`` trains parameters (else it only sets the model up)."""
        return self.protocol is not Protocol.SET_UP

    def build_tiny(self, **overrides: Any) -> Any:
        """The Lightning model with :attr:`tiny` settings (random weights), ``overrides`` on top."""
        return self.lightning_class(**{**self.tiny, **overrides})


_TINY_16 = {"backbone": TINY_BACKBONE, "pretrained": None, "image_size": 64}
_TINY_24 = {"backbone": TINY_BACKBONE_24, "pretrained": None, "image_size": 56}

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="WinCLIPPlus",
        module="anomalib_clipad.models.winclip_plus",
        torch_class_name="WinCLIPPlusModel",
        protocol=Protocol.SET_UP,
        tiny=dict(_TINY_16),
        few_shot={"k_shot": 1},
    ),
    ModelSpec(
        name="PromptAD",
        module="anomalib_clipad.models.promptad",
        torch_class_name="PromptADModel",
        protocol=Protocol.NORMAL_SHOTS,
        tiny={**_TINY_16, "epochs": 1},
        few_shot={"k_shot": 1},
    ),
    ModelSpec(
        name="DevPrompt",
        module="anomalib_clipad.models.devprompt",
        torch_class_name="DevPromptModel",
        protocol=Protocol.NORMAL_SHOTS,
        tiny={**_TINY_16, "epochs": 1, "n_synthetic_per_shot": 1},
        few_shot={"k_shot": 1},
    ),
    ModelSpec(
        name="AnomalyCLIP",
        module="anomalib_clipad.models.anomalyclip",
        torch_class_name="AnomalyCLIPModel",
        protocol=Protocol.AUXILIARY_DATA,
        tiny={**_TINY_24, "epochs": 1},
        few_shot={},
    ),
    ModelSpec(
        name="SimCLIP",
        module="anomalib_clipad.models.simclip",
        torch_class_name="SimCLIPModel",
        protocol=Protocol.AUXILIARY_DATA,
        tiny={**_TINY_24, "epochs": 1},
        few_shot={"k_shot": 1},
    ),
)
"""Every model of anomalib-clipad, in the order of the README's table."""

MODEL_NAMES: tuple[str, ...] = tuple(spec.name for spec in MODELS)


def get_spec(name: str) -> ModelSpec:
    """The registry row of a model, by class name (case-insensitive).

    Raises:
        KeyError: no such model; the message lists the known names.
    """
    for spec in MODELS:
        if spec.name.lower() == name.lower():
            return spec
    msg = f"No anomalib-clipad model {name!r}; known: {', '.join(MODEL_NAMES)}."
    raise KeyError(msg)
