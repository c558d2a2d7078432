# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""SimCLIP's other learned-state formats: the official code's published pair of files and our former weights files.

Registered with :func:`~anomalib_clipad.models.learned_state.register_reference_format`, so
:func:`~anomalib_clipad.models.learned_state.read_learned_state` (``--model.learned_state``) reads them, always with
``torch.load(..., weights_only=True)``:

* **the reference's** (ChengHaodeng/SimCLIP ``train.py``): the CLIP file ``{"clip": state_dict}`` (its IPT and
  fine-tuned projections) and the adapter file ``{"trainable_linearlayer": state_dict}``, given as two paths in any
  order (or one file holding both keys); see :func:`convert_reference_weights`. They were trained on plain GELU (see
  the model's ``quick_gelu``); they record no backbone, so they are checked by tensor shapes only.
* **our former weights files** (``{"format": "anomalib_clipad.simclip.weights", "version": 1, "weights": {name:
  tensor}, "backbone", "feature_layers", "image_size", "quick_gelu", "training_classes", "training_paths"}``), with
  the names of :meth:`~anomalib_clipad.models.simclip.torch_model.SimCLIPModel.learned_state_dict`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from anomalib_clipad.models.learned_state import LearnedState, Provenance, ReferenceFormat, register_reference_format

logger = logging.getLogger(__name__)

MODEL = "SimCLIP"
FORMER_FORMAT = "anomalib_clipad.simclip.weights"
FORMER_VERSION = 1
REFERENCE_CLIP_KEY = "clip"
REFERENCE_ADAPTER_KEY = "trainable_linearlayer"
REFERENCE_FEATURE_LAYERS = (6, 12, 18, 24)


def convert_reference_weights(
    clip_state_dict: Mapping[str, torch.Tensor],
    adapter_state_dict: Mapping[str, torch.Tensor],
    feature_layers: Sequence[int] = REFERENCE_FEATURE_LAYERS,
) -> dict[str, torch.Tensor]:
    """Turn the reference code's published weights into :meth:`SimCLIPModel.learned_state_dict` form.

    The reference saves the whole CLIP (``{"clip": state_dict}``, with its IPT parameters and fine-tuned projections)
    and the adapters (``{"trainable_linearlayer": state_dict}``, ``fc.<i>`` for the ``i``-th feature layer). Its
    adapters were trained on GELU activations: build the model with ``quick_gelu=False`` to use them.

    Args:
        clip_state_dict: the reference CLIP state dict (or the ``{"clip": ...}`` file content).
        adapter_state_dict: the reference adapter state dict (or the ``{"trainable_linearlayer": ...}`` content).
        feature_layers: the feature layers the adapters belong to, in order.

    Returns:
        A state dict for :meth:`SimCLIPModel.load_learned_state_dict`.

    Raises:
        KeyError: a reference key is missing (e.g. weights of an older reference version).
    """
    clip = clip_state_dict.get(REFERENCE_CLIP_KEY, clip_state_dict)
    adapters = adapter_state_dict.get(REFERENCE_ADAPTER_KEY, adapter_state_dict)
    mapping = {
        "ipt.token_weighting.weight": "x_learner_proj.linear.weight",
        "ipt.token_weighting.bias": "x_learner_proj.linear.bias",
        "ipt.prompt_mlp.0.weight": "layer_learner_1_upProj.0.weight",
        "ipt.prompt_mlp.0.bias": "layer_learner_1_upProj.0.bias",
        "ipt.prompt_mlp.2.weight": "layer_learner_1_upProj.2.weight",
        "ipt.prompt_mlp.2.bias": "layer_learner_1_upProj.2.bias",
        "ipt.fusion.weight": "layer_learner_1_proj.linear.weight",
        "ipt.fusion.bias": "layer_learner_1_proj.linear.bias",
        "vision.proj": "visual.proj",
        "text.text_projection": "text_projection",
    }
    for index, layer in enumerate(feature_layers):
        mapping[f"adapters.{layer}.weight"] = f"fc.{index}.weight"
        mapping[f"adapters.{layer}.bias"] = f"fc.{index}.bias"
    missing = [key for ours, key in mapping.items() if key not in (adapters if ours.startswith("adapters.") else clip)]
    if "layer_learner_1" not in clip:
        missing.append("layer_learner_1")
    if missing:
        msg = f"The reference weights lack {missing}; they are not SimCLIP reference weights of the supported version."
        raise KeyError(msg)
    converted = {ours: (adapters if ours.startswith("adapters.") else clip)[key] for ours, key in mapping.items()}
    converted["ipt.prompt_seed"] = clip["layer_learner_1"].reshape(1, -1)
    return {key: value.float() for key, value in converted.items()}


# ------------------------------------------------------------------------------------------------ the reference pair
def _reference_kinds(content: Mapping[str, Any]) -> set[str]:
    kinds = set()
    if REFERENCE_CLIP_KEY in content or "x_learner_proj.linear.weight" in content:
        kinds.add("clip")
    if REFERENCE_ADAPTER_KEY in content or "fc.0.weight" in content:
        kinds.add("adapters")
    return kinds


def _convert_reference(contents: Sequence[tuple[str, Mapping[str, Any]]], torch_model: nn.Module) -> LearnedState:
    reference = {kind: content for _, content in contents for kind in _reference_kinds(content)}
    if "clip" not in reference or "adapters" not in reference:
        missing = (
            "CLIP file ({'clip': ...})" if "clip" not in reference else "adapter file ({'trainable_linearlayer': ...})"
        )
        msg = (
            f"The reference SimCLIP weights come as two files; the {missing} is missing. Pass both: "
            "`--model.learned_state '[clip.pth, adapters.pth]'`."
        )
        raise ValueError(msg)
    adapters = reference["adapters"]
    adapter_state = adapters.get(REFERENCE_ADAPTER_KEY, adapters)
    n_adapters = sum(1 for key in adapter_state if key.startswith("fc.") and key.endswith(".weight"))
    layers = tuple(torch_model.feature_layers)
    if n_adapters != len(layers):
        msg = (
            f"The reference adapters hold {n_adapters} layers, this model reads {len(layers)} "
            f"(feature_layers={list(layers)})."
        )
        raise ValueError(msg)
    try:
        weights = convert_reference_weights(reference["clip"], adapters, layers)
    except KeyError as error:
        raise ValueError(str(error.args[0]) if error.args else str(error)) from error
    if torch_model.clip_hparams.get("quick_gelu", True):
        logger.warning(
            "SimCLIP: the reference trained its published weights on plain GELU (its open_clip builds ViT-L-14-336 at "
            "518 px without QuickGELU); this model uses QuickGELU. Build it with `--model.quick_gelu false` to "
            "reproduce the reference's numbers."
        )
    sources = " and ".join(source for source, _ in contents)
    return _state(weights, origin=f"the reference SimCLIP weights {sources}")


# ------------------------------------------------------------------------------------------------ our former files
def _convert_former(contents: Sequence[tuple[str, Mapping[str, Any]]], torch_model: nn.Module) -> LearnedState:
    del torch_model
    if len(contents) != 1:
        msg = f"{contents[0][0]} is a complete SimCLIP learned-weights file: pass it alone."
        raise ValueError(msg)
    source, content = contents[0]
    version = content.get("version")
    if version != FORMER_VERSION:
        msg = (
            f"{source} is a SimCLIP learned-weights file of version {version!r}; this version reads version "
            f"{FORMER_VERSION}."
        )
        raise ValueError(msg)
    weights = content.get("weights")
    if not isinstance(weights, Mapping):
        msg = f"{source} has no 'weights' dictionary."
        raise ValueError(msg)
    feature_layers = content.get("feature_layers")
    return _state(
        dict(weights),
        origin=f"the former SimCLIP weights file {source}",
        backbone=content.get("backbone"),
        image_size=content.get("image_size"),
        quick_gelu=content.get("quick_gelu"),
        architecture={} if feature_layers is None else {"feature_layers": list(feature_layers)},
        provenance=Provenance(
            training_paths=tuple(str(path) for path in content.get("training_paths", ())),
            training_classes=tuple(str(name) for name in content.get("training_classes", ())),
        ),
    )


def _state(weights: dict[str, torch.Tensor], origin: str, **recorded: Any) -> LearnedState:
    """A class-agnostic SimCLIP state with what a converted file records."""
    return LearnedState(
        model=MODEL,
        backbone=recorded.get("backbone"),
        image_size=recorded.get("image_size"),
        quick_gelu=recorded.get("quick_gelu"),
        weight_source=None,
        architecture=recorded.get("architecture", {}),
        class_name=None,
        state=weights,
        provenance=recorded.get("provenance", Provenance()),
        origin=origin,
    )


REFERENCE_FORMAT = register_reference_format(
    ReferenceFormat(
        model=MODEL,
        description="reference SimCLIP files ({'clip': ...} and {'trainable_linearlayer': ...})",
        recognises=lambda content: bool(_reference_kinds(content)),
        convert=_convert_reference,
    )
)
FORMER_FILE_FORMAT = register_reference_format(
    ReferenceFormat(
        model=MODEL,
        description=f"former SimCLIP weights file ({FORMER_FORMAT!r})",
        recognises=lambda content: content.get("format") == FORMER_FORMAT,
        convert=_convert_former,
    )
)
