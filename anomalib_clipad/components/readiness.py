# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""One readiness convention: state a model fills before inference lives in buffers that are empty until filled.

A buffer of size zero means "not set up yet"; filling it (set-up, training, or loading a checkpoint, whose sizes the
buffers then take) makes the model ready. :func:`require_ready` gives the one clear error when inference runs before
that. The check reads buffer *shapes*, which are static when a model is traced, so exported graphs have no branch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn


class ModelNotReadyError(RuntimeError):
    """Raised when a model is used before what it needs (prompts, memories, prototypes) was set up or loaded."""


class ClassMismatchError(ValueError):
    """Raised when a model set up or trained for one class (its prompts, memories) is used on another."""


def require_ready(model_name: str, parts: Mapping[str, bool], how: str) -> None:
    """Raise :class:`ModelNotReadyError` naming every part that is missing.

    Args:
        model_name: the model, for the message.
        parts: what the model needs at inference, and whether each is there (e.g. ``{"text prototypes": True}``).
        how: how to get it (e.g. "train it on k normal shots first or load a trained checkpoint (`--ckpt_path`)").

    Raises:
        ModelNotReadyError: a part is missing.
    """
    missing = [name for name, ready in parts.items() if not ready]
    if missing:
        msg = f"{model_name} has no {' and no '.join(missing)} yet: {how}"
        raise ModelNotReadyError(msg)


def resize_buffers_to_state_dict(module: nn.Module, state_dict: Mapping, prefix: str, names: Iterable[str]) -> None:
    """Give buffers the number of rows stored in a state dict before it is loaded (buffers empty until set up).

    Call it from a module's ``_load_from_state_dict`` before the default loading. Only the first dimension (how many
    entries) may differ: a stored feature dimension other than the buffer's means another backbone.

    Raises:
        ValueError: a stored buffer has another feature dimension.
    """
    for name in names:
        stored = state_dict.get(prefix + name)
        current = module._buffers.get(name)
        if stored is None or current is None or stored.shape == current.shape:
            continue
        if tuple(stored.shape[1:]) != tuple(current.shape[1:]):
            msg = (
                f"The checkpoint's {prefix + name} has feature shape {tuple(stored.shape[1:])}, this model "
                f"{tuple(current.shape[1:])}: it was made with another backbone."
            )
            raise ValueError(msg)
        module._buffers[name] = torch.empty(stored.shape, dtype=current.dtype, device=current.device)


def as_state_tensor(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor`` to store in a buffer: detached, on ``like``'s device and dtype, never an inference tensor.

    State filled while Lightning tests or predicts (under ``torch.inference_mode``) would otherwise be an inference
    tensor, which autograd-tracked code (training later, ``torch.export`` of the model) refuses to use.
    """
    with torch.inference_mode(False):
        return tensor.detach().to(device=like.device, dtype=like.dtype).clone()
