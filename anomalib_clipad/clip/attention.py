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

Exported graphs (ONNX, then OpenVINO IR) and short sequences: OpenVINO's CPU ``FullyConnected`` runs a rank-3 input
``(B, L, width)`` whose batch and length are dynamic (anomalib's export) at about half the speed of the same rows as
a rank-2 ``(B * L, width)`` input when ``L`` is short (measured with OpenVINO 2026.4.1, f32, one thread, width 896
-> 3584: 89 GFLOP/s at ``L = 5``, 106 at ``L = 10``, 160 as rank 2). WinCLIP's window passes are exactly that
(``L = 5`` and ``10``, about 90% of its FLOPs), so :func:`class_token_block` and :func:`block_on_flat_tokens` apply the
per-token layers to rank-2 rows (:meth:`~anomalib_clipad.clip.vision.ClipVisionTower.window_class_tokens` uses the
latter only while exporting; eager torch keeps the block's own forward).
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
    # per-token layers on (B * L, width) rows: the same GEMMs in eager torch (bit-identical), faster in OpenVINO
    normed = block.ln_1(tokens.reshape(batch * length, width)).view(batch, length, width)
    weight, bias = attention.in_proj_weight, attention.in_proj_bias
    query = F.linear(normed[:, 0], weight[:width], bias[:width] if bias is not None else None)
    keys_values = F.linear(
        normed.reshape(batch * length, width), weight[width:], bias[width:] if bias is not None else None
    )
    keys, values = keys_values.view(batch, length, 2, heads, width // heads).permute(2, 0, 3, 1, 4)
    query = query.view(batch, 1, heads, width // heads).transpose(1, 2)
    attended = F.scaled_dot_product_attention(query, keys, values).transpose(1, 2).reshape(batch, width)
    class_token = tokens[:, 0] + block.ls_1(attention.out_proj(attended))
    return class_token + block.ls_2(block.mlp(block.ln_2(class_token)))


def block_on_flat_tokens(block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """An open_clip ``ResidualAttentionBlock`` (self-attention, no mask) with its per-token layers on 2-D rows.

    ``ln_1``, the packed input projection, the out-projection, ``ln_2`` and the MLP run on ``(B * L, width)`` rows
    and only the attention itself on ``(B, heads, L, d)``: the same computation as ``block(tokens)``, equal up to
    floating-point rounding (eager torch's ``nn.MultiheadAttention`` fast path rounds its scaled dot product a little
    differently). For exported graphs, where the rank-2 layout runs short sequences faster (see the module notes).

    Args:
        block: an open_clip residual attention block (``nn.MultiheadAttention`` with a packed input projection).
        tokens: the block's input ``(B, L, width)``.

    Returns:
        The block's output ``(B, L, width)``.

    Raises:
        TypeError: the block's attention is not an ``nn.MultiheadAttention`` with a packed input projection.
    """
    attention = _packed_attention(block)
    batch, length, width = tokens.shape
    heads = attention.num_heads
    rows = tokens.reshape(batch * length, width)
    packed = F.linear(block.ln_1(rows), attention.in_proj_weight, attention.in_proj_bias)
    query, keys, values = packed.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    attended = F.scaled_dot_product_attention(query, keys, values).transpose(1, 2).reshape(batch * length, width)
    rows = rows + block.ls_1(attention.out_proj(attended))
    rows = rows + block.ls_2(block.mlp(block.ln_2(rows)))
    return rows.view(batch, length, width)
