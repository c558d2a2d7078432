# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The CLIP text tower: prompt-set encoding, learnable context tokens and deep prompt tokens.

* :meth:`ClipTextTower.encode_prompt_set` encodes prompts and averages their **raw** embeddings before one L2
  normalisation (the rule of every method here).
* Learnable context (CoOp): tokenise a placeholder prompt such as ``"X X X X bottle."``, take its token embeddings with
  :meth:`ClipTextTower.embed_tokens`, and :func:`splice_context` puts the learnable vectors in place of the
  placeholders; :meth:`ClipTextTower.forward` encodes from those embeddings (the end-of-text position still comes from
  the tokens).
* Deep prompts (AnomalyCLIP): ``deep_prompts={layer: (n, width)}`` replaces token positions ``1..n`` at the input of
  text block ``layer`` (1-indexed).
* Whole token sequences (SimCLIP's implicit prompt tuning): :meth:`ClipTextTower.final_hidden_states` returns the
  post-``ln_final`` sequence, :meth:`ClipTextTower.project` applies the text projection.

CLIP's text transformer is causal and reads its output at the end-of-text token, so positions after the last
end-of-text token of a batch cannot change any result: :meth:`ClipTextTower.forward` drops them (prompts of about ten
tokens then cost a seventh of the 77-position pass, forward and backward). Towers without a causal mask run in full.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from .loading import get_tokenizer


@lru_cache(maxsize=8)
def _cached_tokenizer(backbone: str):
    return get_tokenizer(backbone)


def splice_context(token_embeddings: torch.Tensor, context: torch.Tensor, start: int = 1) -> torch.Tensor:
    """Replace the token embeddings at positions ``start .. start + n_ctx - 1`` with learnable context vectors.

    Args:
        token_embeddings: ``(N, L, width)`` embeddings of the tokenised placeholder prompts.
        context: ``(n_ctx, width)`` shared by all prompts, or ``(N, n_ctx, width)`` one per prompt.
        start: first position to replace (1 = right after the start-of-text token).

    Returns:
        ``(N, L, width)`` embeddings with the context spliced in (differentiable w.r.t. ``context``).
    """
    n_prompts = token_embeddings.shape[0]
    if context.ndim == 2:
        context = context.unsqueeze(0).expand(n_prompts, -1, -1)
    if context.shape[0] != n_prompts:
        msg = f"Got {context.shape[0]} context sets for {n_prompts} prompts."
        raise ValueError(msg)
    end = start + context.shape[1]
    context = context.to(token_embeddings.dtype)
    return torch.cat([token_embeddings[:, :start], context, token_embeddings[:, end:]], dim=1)


class ClipTextTower(nn.Module):
    """Frozen CLIP text tower with hooks for learnable context and deep prompts.

    It also carries CLIP's ``logit_scale`` (the raw, un-exponentiated parameter), which some methods use.

    Args:
        clip_model: an open_clip ``CLIP`` (or ``CustomTextCLIP`` with an open_clip ``TextTransformer``).
        backbone: the architecture name, used to get the matching tokenizer.

    Raises:
        TypeError: the text tower is not an open_clip transformer with end-of-text (argmax) pooling.
    """

    def __init__(self, clip_model: nn.Module, backbone: str) -> None:
        super().__init__()
        tower = clip_model.text if hasattr(clip_model, "text") else clip_model
        pool_type = getattr(tower, "pool_type", getattr(clip_model, "text_pool_type", "argmax"))
        if pool_type != "argmax" or not hasattr(tower, "token_embedding"):
            msg = f"Only open_clip text transformers with end-of-text (argmax) pooling are supported, got {pool_type}."
            raise TypeError(msg)
        self.backbone = backbone
        self.token_embedding = tower.token_embedding
        self.positional_embedding = tower.positional_embedding
        self.blocks = tower.transformer.resblocks
        self.ln_final = tower.ln_final
        self.text_projection = tower.text_projection
        self.logit_scale = clip_model.logit_scale
        self.register_buffer("attn_mask", tower.attn_mask, persistent=False)
        self.is_causal = _is_causal_mask(tower.attn_mask, self.context_length)

    @property
    def width(self) -> int:
        """Width of the text transformer tokens."""
        return int(self.positional_embedding.shape[1])

    @property
    def context_length(self) -> int:
        """Number of token positions."""
        return int(self.positional_embedding.shape[0])

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Tokenise prompts into ``(N, context_length)`` token ids on the tower's device."""
        if isinstance(texts, str) or not texts:
            msg = "Expected a non-empty list of prompt strings."
            raise ValueError(msg)
        return _cached_tokenizer(self.backbone)(list(texts)).to(self.positional_embedding.device)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(N, L, width)`` of token ids (no position embedding yet)."""
        return self.token_embedding(tokens)

    def forward(
        self,
        tokens: torch.Tensor,
        token_embeddings: torch.Tensor | None = None,
        deep_prompts: dict[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Encode prompts into raw (not normalised) joint-space embeddings.

        Args:
            tokens: ``(N, L)`` token ids; they give the end-of-text position of each prompt.
            token_embeddings: ``(N, L, width)`` embeddings to use instead of ``embed_tokens(tokens)`` (learnable
                context spliced in).
            deep_prompts: ``{layer: (n, width) or (N, n, width)}``: at the input of text block ``layer``
                (1-indexed) positions ``1..n`` are replaced by these vectors.

        Returns:
            ``(N, D)`` text embeddings.
        """
        hidden = self.final_hidden_states(tokens, token_embeddings, deep_prompts)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), self.end_of_text_index(tokens)]
        return self.project(pooled)

    def final_hidden_states(
        self,
        tokens: torch.Tensor,
        token_embeddings: torch.Tensor | None = None,
        deep_prompts: dict[int, torch.Tensor] | None = None,
        *,
        full_length: bool = False,
    ) -> torch.Tensor:
        """The token sequence after ``ln_final``, before pooling and projection (what :meth:`forward` pools).

        Args:
            tokens: ``(N, L)`` token ids.
            token_embeddings: as in :meth:`forward`.
            deep_prompts: as in :meth:`forward`.
            full_length: run all ``L`` positions even in a causal tower, for methods that read every position (SimCLIP's
                implicit prompt tuning weights all 77). By default a causal tower drops the positions after the batch's
                last end-of-text token (:meth:`used_length`), which cannot change the end-of-text feature.

        Returns:
            ``(N, L', width)`` hidden states; ``L' = L`` with ``full_length`` or a non-causal tower, else
            :meth:`used_length`.
        """
        hidden = self.embed_tokens(tokens) if token_embeddings is None else token_embeddings
        length = self.used_length(tokens, deep_prompts) if self.is_causal and not full_length else hidden.shape[1]
        hidden = hidden[:, :length] + self.positional_embedding[:length].to(hidden.dtype)
        attn_mask = self.attn_mask[:length, :length] if self.attn_mask is not None else None
        for layer, block in enumerate(self.blocks, start=1):
            if deep_prompts and layer in deep_prompts:
                hidden = splice_context(hidden, deep_prompts[layer], start=1)
            hidden = block(hidden, attn_mask=attn_mask)
        return self.ln_final(hidden)

    @staticmethod
    def end_of_text_index(tokens: torch.Tensor) -> torch.Tensor:
        """``(N,)`` position of each prompt's end-of-text token (the largest id, as open_clip's pooling assumes)."""
        return tokens.argmax(dim=-1)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Apply the text projection to pooled features ``(..., width)``: ``(..., D)`` joint-space embeddings."""
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(pooled)
        return pooled @ self.text_projection

    def used_length(self, tokens: torch.Tensor, deep_prompts: dict[int, torch.Tensor] | None = None) -> int:
        """Positions a causal pass needs: up to the last end-of-text token of the batch (and any deep prompt).

        Args:
            tokens: ``(N, L)`` token ids (the end-of-text token has the largest id, as open_clip's pooling assumes).
            deep_prompts: the deep prompts of :meth:`forward`; positions ``1..n`` they replace are kept.

        Returns:
            The number of leading positions that determine every output of :meth:`forward`.
        """
        length = int(tokens.argmax(dim=-1).max()) + 1
        for prompts in (deep_prompts or {}).values():
            length = max(length, 1 + int(prompts.shape[-2]))
        return min(length, tokens.shape[1])

    def encode_prompts(self, texts: Sequence[str]) -> torch.Tensor:
        """Raw embeddings ``(N, D)`` of fixed prompts."""
        return self(self.tokenize(texts))

    def encode_prompt_set(self, texts: Sequence[str]) -> torch.Tensor:
        """One ``(D,)`` feature for a set of prompts: the mean of the raw embeddings, then L2-normalised."""
        return F.normalize(self.encode_prompts(texts).mean(dim=0), dim=-1)


def _is_causal_mask(attn_mask: torch.Tensor | None, context_length: int) -> bool:
    """Whether an additive attention mask blocks exactly the future positions (CLIP's causal text mask)."""
    if attn_mask is None or tuple(attn_mask.shape) != (context_length, context_length):
        return False
    future = torch.ones(context_length, context_length, dtype=torch.bool, device=attn_mask.device).triu(1)
    return bool(torch.equal(torch.isneginf(attn_mask), future))
