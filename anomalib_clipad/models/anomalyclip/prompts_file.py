# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""AnomalyCLIP prompts files: our own small format, and the official code's published checkpoints.

AnomalyCLIP's whole trained state is its prompts (a few tens of kB); the frozen CLIP comes from its usual weights.
Two formats are read, always with ``torch.load(..., weights_only=True)``:

* **ours**, written by :func:`save_prompts`: ``{"format": "anomalib_clipad.anomalyclip.prompts", "version": 1,
  "prompts": {name: tensor}}`` with the names of
  :meth:`~anomalib_clipad.models.anomalyclip.torch_model.AnomalyCLIPModel.learnable_state_dict`;
* **the reference's** (zqhang/AnomalyCLIP ``train.py``, e.g. its ``checkpoints/9_12_4_multiscale/epoch_15.pth``):
  ``{"prompt_learner": state_dict}``, whose learnable entries map to ours as

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
  normal prompt, ``neg`` the anomalous one.) A bare reference state dict (without the ``prompt_learner`` wrapper) is
  read too.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

FORMAT = "anomalib_clipad.anomalyclip.prompts"
FORMAT_VERSION = 1
REFERENCE_WRAPPER_KEY = "prompt_learner"
REFERENCE_IGNORED_PREFIXES = (
    "token_prefix_",
    "token_suffix_",
    "tokenized_prompts",
    "compound_prompt_projections.",
)
_REFERENCE_DEEP = re.compile(r"^compound_prompts_text\.(\d+)$")


def save_prompts(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    training_paths: Sequence[str] = (),
) -> Path:
    """Write a prompts file in our format.

    Args:
        state_dict: :meth:`AnomalyCLIPModel.learnable_state_dict` output.
        path: where to write it (parent folders are created).
        training_paths: the auxiliary training images, so that a model scoring with the file alone still refuses a
            target made of them (the leakage guard).

    Returns:
        The path written.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    prompts = {name: tensor.detach().cpu().float().contiguous() for name, tensor in state_dict.items()}
    content = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "prompts": prompts,
        "training_paths": sorted(training_paths),
    }
    torch.save(content, path)
    return path


def prompt_training_paths(path: str | os.PathLike) -> list[str]:
    """The auxiliary training images a prompts file of ours records (none for the reference's files)."""
    content = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    if isinstance(content, Mapping) and content.get("format") == FORMAT:
        return [str(item) for item in content.get("training_paths", [])]
    return []


def load_prompts(
    path: str | os.PathLike,
    expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, torch.Tensor]:
    """Read a prompts file of either format into our parameter names.

    Args:
        path: our prompts file, or a reference AnomalyCLIP checkpoint (``{"prompt_learner": ...}``).
        expected_shapes: name -> shape the model needs
            (:meth:`AnomalyCLIPModel.expected_prompt_shapes`); checked when given.

    Returns:
        Name -> float32 tensor, ready for :meth:`AnomalyCLIPModel.load_learnable_state_dict`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a prompts file that can be read safely, an unknown layout, or a missing or wrongly shaped
            entry (named in the message).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        msg = f"AnomalyCLIP prompts file {str(path)!r} does not exist."
        raise FileNotFoundError(msg)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
        msg = (
            f"{str(path)!r} is not an AnomalyCLIP prompts file that can be read safely (weights_only=True): "
            f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
        )
        raise ValueError(msg) from error
    return prompts_from_checkpoint(content, expected_shapes, source=str(path))


def prompts_from_checkpoint(
    content: Any,
    expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
    source: str = "the prompts",
) -> dict[str, torch.Tensor]:
    """Our parameter names and tensors from the loaded content of a prompts file of either format.

    Args:
        content: what ``torch.load`` returned.
        expected_shapes: name -> shape the model needs; checked when given.
        source: what to call it in error messages.

    Returns:
        Name -> float32 tensor.

    Raises:
        ValueError: unknown layout, or a missing or wrongly shaped entry.
    """
    if not isinstance(content, Mapping):
        msg = f"{source} holds a {type(content).__name__}, not an AnomalyCLIP prompts dictionary."
        raise ValueError(msg)
    if content.get("format") == FORMAT:
        version = content.get("version")
        if version != FORMAT_VERSION:
            msg = f"{source} is an AnomalyCLIP prompts file of version {version}; this version reads {FORMAT_VERSION}."
            raise ValueError(msg)
        prompts = dict(content.get("prompts", {}))
    elif REFERENCE_WRAPPER_KEY in content:
        prompts = from_reference_state_dict(content[REFERENCE_WRAPPER_KEY], expected_shapes)
    elif "ctx_pos" in content or "ctx_neg" in content:
        prompts = from_reference_state_dict(content, expected_shapes)
    elif "normal_context" in content:
        prompts = dict(content)
    else:
        keys = list(content)[:8]
        msg = (
            f"{source} is neither an anomalib-clipad AnomalyCLIP prompts file nor a reference AnomalyCLIP checkpoint "
            f"({{'{REFERENCE_WRAPPER_KEY}': state_dict}}); its keys: {keys}."
        )
        raise ValueError(msg)
    prompts = {name: tensor.float() if isinstance(tensor, torch.Tensor) else tensor for name, tensor in prompts.items()}
    if expected_shapes is not None:
        check_prompt_state_dict(prompts, expected_shapes)
    return prompts


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


def check_prompt_state_dict(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> None:
    """Raise a clear error unless ``state_dict`` has exactly the expected prompt tensors.

    Args:
        state_dict: name -> tensor.
        expected: name -> shape.

    Raises:
        ValueError: naming the first missing key, wrongly shaped tensor or unexpected key.
    """
    for name, shape in expected.items():
        if name not in state_dict:
            msg = f"AnomalyCLIP prompts: missing key {name!r} (expected keys: {list(expected)})."
            raise ValueError(msg)
        value = state_dict[name]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shape):
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            msg = f"AnomalyCLIP prompts: {name!r} has shape {found}, the model expects {tuple(shape)}."
            raise ValueError(msg)
    unexpected = [name for name in state_dict if name not in expected]
    if unexpected:
        msg = f"AnomalyCLIP prompts: unexpected key {unexpected[0]!r} (expected keys: {list(expected)})."
        raise ValueError(msg)
