# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Plain CLIP passes that the speed benchmarks divide by: what open_clip itself does, nothing of ours.

* :func:`plain_image_forward`: ``CLIP.encode_image`` of a batch.
* :func:`plain_text_forward_backward`: one forward and backward pass of the text encoder over a prompt set, the way
  prompt learning (CoOp) differentiates it: open_clip's own full-length (``context_length`` positions) causal pass,
  with the token embeddings as the leaf that receives gradients.
"""

from __future__ import annotations

import torch
from torch import nn


def plain_image_forward(clip: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``clip.encode_image(images)`` without gradients."""
    with torch.no_grad():
        return clip.encode_image(images)


def plain_text_forward_backward(clip: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """One forward + backward of open_clip's text encoder on ``tokens`` ``(N, context_length)``.

    The token embeddings are a leaf that requires gradients (as learnable context would be), so the backward pass
    runs through every text block; the CLIP weights get no gradients (frozen, as in prompt learning). Works for
    open_clip ``CLIP`` models (text tower inlined in the model).

    Returns:
        The gradient of the summed features with respect to the token embeddings ``(N, context_length, width)``.

    Raises:
        TypeError: the model's text tower is not inlined (``CustomTextCLIP``).
    """
    if not hasattr(clip, "token_embedding") or not hasattr(clip, "transformer"):
        msg = "plain_text_forward_backward needs an open_clip CLIP model with its text tower inlined."
        raise TypeError(msg)
    with torch.enable_grad():
        embeddings = clip.token_embedding(tokens).detach().requires_grad_(True)
        hidden = clip.transformer(embeddings + clip.positional_embedding, attn_mask=clip.attn_mask)
        hidden = clip.ln_final(hidden)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), tokens.argmax(dim=-1)]
        features = pooled @ clip.text_projection
        # gradients of the embeddings only: the CLIP weights are frozen in prompt learning
        (gradient,) = torch.autograd.grad(features.sum(), embeddings)
    return gradient
