# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Attention of a frozen CLIP block computed outside its ``forward``: value-value attention, class-token-only blocks.

PromptAD calls the dual-path ViT that uses it "VV-CLIP", AnomalyCLIP calls it "DPAM" (diagonally prominent attention
map); both follow CLIP Surgery. In a V-V block the query and key projections are replaced by the value projection::

    v = LN_1(x) W_v + b_v                         (per head, d = width / heads)
    VV(x) = softmax(v v^T / sqrt(d)) v W_o + b_o   (the block's own out-projection)

so every token attends mostly to tokens with similar values, which keeps patch tokens local. The dual-path forward
(:meth:`anomalib_clipad.clip.vision.ClipVisionTower.forward`) runs the original blocks unchanged and, from the first
replaced layer on, adds ``VV(x)`` of the original path's input ``x`` to a second stream without any MLP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


def value_value_attention(block: nn.Module, normed_tokens: torch.Tensor) -> torch.Tensor:
    """V-V attention of one open_clip ``ResidualAttentionBlock`` (its weights, q = k = v).

    Args:
        block: an open_clip residual attention block whose ``attn`` is an ``nn.MultiheadAttention``.
        normed_tokens: the block's ``ln_1`` output of the original path, shape ``(B, L, width)``.

    Returns:
        The out-projected V-V attention output, shape ``(B, L, width)`` (layer scale applied if the block has one).

    Raises:
        TypeError: the block's attention is not an ``nn.MultiheadAttention`` with a packed input projection.
    """
    attention = _packed_attention(block)
    batch, length, width = normed_tokens.shape
    heads = attention.num_heads
    value_weight = attention.in_proj_weight[2 * width :]
    value_bias = attention.in_proj_bias[2 * width :] if attention.in_proj_bias is not None else None
    values = F.linear(normed_tokens, value_weight, value_bias)
    values = values.view(batch, length, heads, width // heads).transpose(1, 2)
    attended = F.scaled_dot_product_attention(values, values, values)
    attended = attended.transpose(1, 2).reshape(batch, length, width)
    return block.ls_1(attention.out_proj(attended))


def _packed_attention(block: nn.Module) -> nn.MultiheadAttention:
    attention = block.attn
    if not isinstance(attention, nn.MultiheadAttention) or attention.in_proj_weight is None:
        msg = f"Expected nn.MultiheadAttention blocks with packed projections, got {type(attention)}."
        raise TypeError(msg)
    return attention


def class_token_block(block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The class-token output of an open_clip ``ResidualAttentionBlock``, computing nothing else.

    When only the class token of a block's output is read (the last block of WinCLIP's window pass), the other
    tokens are needed as keys and values only: their queries, attention outputs and MLPs are skipped. The result
    equals ``block(tokens)[:, 0]`` up to floating-point rounding.

    Args:
        block: an open_clip residual attention block (self-attention, ``nn.MultiheadAttention`` with a packed input
            projection).
        tokens: the block's input ``(B, L, width)``, class token first.

    Returns:
        ``(B, width)``: the block's output at the class token.

    Raises:
        TypeError: the block's attention is not an ``nn.MultiheadAttention`` with a packed input projection.
    """
    attention = _packed_attention(block)
    batch, length, width = tokens.shape
    heads = attention.num_heads
    normed = block.ln_1(tokens)
    weight, bias = attention.in_proj_weight, attention.in_proj_bias
    query = F.linear(normed[:, :1], weight[:width], bias[:width] if bias is not None else None)
    keys_values = F.linear(normed, weight[width:], bias[width:] if bias is not None else None)
    keys, values = keys_values.view(batch, length, 2, heads, width // heads).permute(2, 0, 3, 1, 4)
    query = query.view(batch, 1, heads, width // heads).transpose(1, 2)
    attended = F.scaled_dot_product_attention(query, keys, values).transpose(1, 2).reshape(batch, width)
    class_token = tokens[:, 0] + block.ls_1(attention.out_proj(attended))
    return class_token + block.ls_2(block.mlp(block.ln_2(class_token)))
