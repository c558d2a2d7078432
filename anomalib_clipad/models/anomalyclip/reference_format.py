# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""AnomalyCLIP's other learned-state formats: the official code's published checkpoints and our former prompts files.

Registered with :func:`~anomalib_clipad.models.learned_state.register_reference_format`, so
:func:`~anomalib_clipad.models.learned_state.read_learned_state` (``--model.learned_state``) reads them, always with
``torch.load(..., weights_only=True)``:

* **the reference's** (zqhang/AnomalyCLIP ``train.py``, e.g. its ``checkpoints/9_12_4_multiscale/epoch_15.pth``):
  ``{"prompt_learner": state_dict}`` (a bare state dict is read too), whose learnable entries map to ours as

  ============================== ===========================
  reference                      ours
  ============================== ===========================
  ``ctx_pos`` (1, 1, E, W)       ``normal_context`` (E, W)
  ``ctx_neg`` (1, 1, E, W)       ``abnormal_context`` (E, W)
  ``compound_prompts_text.<i>``  ``deep_prompts.<i>`` (Q, W)
  ============================== ===========================

  Its buffers (``token_prefix_*``, ``token_suffix_*``, ``tokenized_prompts_*``) are the fixed token embeddings and
  token ids of ``"X x 12 object."`` / ``"X x 12 damaged object."``, which the model rebuilds from its own CLIP, and its
  ``compound_prompt_projections.*`` are never used by the reference; all of these are ignored. (``pos`` is the
  normal prompt, ``neg`` the anomalous one.) The file records no backbone: it is checked by tensor shapes only.
* **our former prompts files** (``{"format": "anomalib_clipad.anomalyclip.prompts", "version": 1, "prompts": {name:
  tensor}, "training_paths": [...]}``), with the names of
  :meth:`~anomalib_clipad.models.anomalyclip.torch_model.AnomalyCLIPModel.learned_state_dict`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from anomalib_clipad.models.learned_state import (
    LearnedState,
    Provenance,
    ReferenceFormat,
    learned_shapes,
    register_reference_format,
)

MODEL = "AnomalyCLIP"
FORMER_FORMAT = "anomalib_clipad.anomalyclip.prompts"
FORMER_VERSION = 1
REFERENCE_WRAPPER_KEY = "prompt_learner"
REFERENCE_IGNORED_PREFIXES = (
    "token_prefix_",
    "token_suffix_",
    "tokenized_prompts",
    "compound_prompt_projections.",
)
_REFERENCE_DEEP = re.compile(r"^compound_prompts_text\.(\d+)$")


def prompts_from_checkpoint(
    content: Any,
    expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
    source: str = "the prompts",
) -> dict[str, torch.Tensor]:
    """Our parameter names and tensors from the loaded content of a reference checkpoint or a former prompts file.

    Args:
        content: what ``torch.load`` returned.
        expected_shapes: name -> shape the model needs
            (:func:`~anomalib_clipad.models.learned_state.learned_shapes`): a reference checkpoint is checked
            against it (its entries are named in errors); our names are checked when the state is loaded.
        source: what to call it in error messages.

    Returns:
        Name -> float32 tensor.

    Raises:
        ValueError: unknown layout or version, or a missing or wrongly shaped reference entry (named).
    """
    if not isinstance(content, Mapping):
        msg = f"{source} holds a {type(content).__name__}, not an AnomalyCLIP prompts dictionary."
        raise ValueError(msg)
    if content.get("format") == FORMER_FORMAT:
        version = content.get("version")
        if version != FORMER_VERSION:
            msg = f"{source} is an AnomalyCLIP prompts file of version {version}; this version reads {FORMER_VERSION}."
            raise ValueError(msg)
        prompts = dict(content.get("prompts", {}))
    elif REFERENCE_WRAPPER_KEY in content:
        prompts = from_reference_state_dict(content[REFERENCE_WRAPPER_KEY], expected_shapes)
    elif "ctx_pos" in content or "ctx_neg" in content:
        prompts = from_reference_state_dict(content, expected_shapes)
    elif "normal_context" in content:
        prompts = dict(content)
    else:
        msg = (
            f"{source} is neither a former anomalib-clipad AnomalyCLIP prompts file nor a reference AnomalyCLIP "
            f"checkpoint ({{'{REFERENCE_WRAPPER_KEY}': state_dict}}); its keys: {list(content)[:8]}."
        )
        raise ValueError(msg)
    return {name: tensor.float() if isinstance(tensor, torch.Tensor) else tensor for name, tensor in prompts.items()}


def from_reference_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, torch.Tensor]:
    """Map the reference ``AnomalyCLIP_PromptLearner`` state dict to our parameter names.

    Args:
        state_dict: the reference prompt learner's state dict (``checkpoint["prompt_learner"]``).
        expected_shapes: name -> shape the model needs. Without it, the number of deep prompt layers is taken from
            the file and only the layout is checked.

    Returns:
        ``normal_context``, ``abnormal_context`` ``(E, W)`` and ``deep_prompts.<i>`` ``(Q, W)``.

    Raises:
        ValueError: naming the first reference key that is missing, wrongly shaped, or not known.
    """
    if not isinstance(state_dict, Mapping):
        msg = f"The reference prompt learner state must be a dictionary, got {type(state_dict).__name__}."
        raise ValueError(msg)
    deep_indices = sorted(int(match.group(1)) for key in state_dict if (match := _REFERENCE_DEEP.match(key)))
    if expected_shapes is not None:
        n_deep = sum(1 for name in expected_shapes if name.startswith("deep_prompts."))
    else:
        n_deep = len(deep_indices)
    mapping = {"ctx_pos": "normal_context", "ctx_neg": "abnormal_context"}
    mapping.update({f"compound_prompts_text.{index}": f"deep_prompts.{index}" for index in range(n_deep)})
    prompts: dict[str, torch.Tensor] = {}
    for reference_key, name in mapping.items():
        if reference_key not in state_dict:
            msg = f"Reference AnomalyCLIP prompts: missing key {reference_key!r} (for our {name!r})."
            raise ValueError(msg)
        value = state_dict[reference_key]
        if not isinstance(value, torch.Tensor):
            msg = f"Reference AnomalyCLIP prompts: {reference_key!r} is a {type(value).__name__}, not a tensor."
            raise ValueError(msg)
        if name.endswith("_context"):
            if value.ndim != 4 or value.shape[:2] != (1, 1):
                msg = (
                    f"Reference AnomalyCLIP prompts: {reference_key!r} has shape {tuple(value.shape)}, expected "
                    "(1, 1, n_ctx, width) (one object-agnostic prompt per state)."
                )
                raise ValueError(msg)
            value = value[0, 0]
        shape = tuple(expected_shapes[name]) if expected_shapes is not None and name in expected_shapes else None
        if shape is not None and tuple(value.shape) != shape:
            wanted = (1, 1, *shape) if name.endswith("_context") else shape
            found = tuple(state_dict[reference_key].shape)
            msg = f"Reference AnomalyCLIP prompts: {reference_key!r} has shape {found}, the model expects {wanted}."
            raise ValueError(msg)
        prompts[name] = value.detach().clone()
    for key in state_dict:
        if key in mapping or key.startswith(REFERENCE_IGNORED_PREFIXES):
            continue
        msg = (
            f"Reference AnomalyCLIP prompts: unexpected key {key!r} (the model has {n_deep} deep prompt layers; "
            "another depth or prompt design was trained)."
        )
        raise ValueError(msg)
    return prompts


def _recognises(content: Mapping[str, Any]) -> bool:
    return (
        content.get("format") == FORMER_FORMAT
        or REFERENCE_WRAPPER_KEY in content
        or "ctx_pos" in content
        or "ctx_neg" in content
        or "normal_context" in content
    )


def _convert(contents: Sequence[tuple[str, Mapping[str, Any]]], torch_model: nn.Module) -> LearnedState:
    if len(contents) != 1:
        msg = f"AnomalyCLIP's prompts come in one file; got {len(contents)}: {[source for source, _ in contents]}."
        raise ValueError(msg)
    source, content = contents[0]
    former = content.get("format") == FORMER_FORMAT
    prompts = prompts_from_checkpoint(content, learned_shapes(torch_model), source)
    training_paths = tuple(str(path) for path in content.get("training_paths", ())) if former else ()
    return LearnedState(
        model=MODEL,
        backbone=None,
        image_size=None,
        quick_gelu=None,
        weight_source=None,
        architecture={},
        class_name=None,
        state=prompts,
        provenance=Provenance(training_paths=training_paths),
        origin=f"the {'former AnomalyCLIP prompts file' if former else 'reference AnomalyCLIP checkpoint'} {source}",
    )


REFERENCE_FORMAT = register_reference_format(
    ReferenceFormat(
        model=MODEL,
        description=(
            f"reference AnomalyCLIP checkpoint ({{'{REFERENCE_WRAPPER_KEY}': state_dict}}) or former AnomalyCLIP "
            f"prompts file ({FORMER_FORMAT!r})"
        ),
        recognises=_recognises,
        convert=_convert,
    )
)
