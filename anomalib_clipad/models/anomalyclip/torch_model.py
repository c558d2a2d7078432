# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""PyTorch model of AnomalyCLIP.

Zhou et al., "AnomalyCLIP: Object-agnostic Prompt Learning for Zero-shot Anomaly Detection", ICLR 2024.

Pieces (paper Sec. 3; the defaults are the published setting):

* **Object-agnostic text prompts** (Sec. 3.2): ``g_n = [V_1]..[V_E] object.`` and
  ``g_a = [W_1]..[W_E] damaged object.`` with ``E = 12`` learnable word embeddings per prompt (separate for the two
  prompts, initialised N(0, 0.02)). Text features ``[t_n, t_a]`` are the two prompt embeddings, each L2-normalised.
* **Refinement of the textual space** (Sec. 3.3, eq. 3): deep prompts ``q_m`` of ``Q = 4`` learnable tokens replace
  token positions ``1..4`` at the input of text layers ``m = 2..9``; each layer has its own tokens and discards what
  the previous layer produced at those positions.
* **DPAM** (refinement of the local visual space): the frozen image tower runs a dual path from layer 6 to 24 whose
  second stream uses V-V self-attention (q = k = v, no MLP; :mod:`anomalib_clipad.clip.attention`). Patch features of
  every feature layer come from that stream, then ``ln_post`` and the projection. The global feature is the
  original path's class token.
* **Scores**: ``P(g, f) = softmax(<f, [t_n, t_a]> / 0.07)`` (eq. 1, cosine similarity). Image score
  ``P(g_a, f_i)``; per feature layer the patch probabilities ``S_n, S_a`` are upsampled bilinearly to the input size
  and combined as ``(1 - S_n + S_a) / 2``; the map is the mean over feature layers, Gaussian-smoothed (sigma 4 at
  518 px, scaled with the output size).
* **Glocal loss** (eq. 2): ``L = CE(global logits, label) + λ Σ_layers [Focal([S_n, S_a], S) + Dice(S_a, S) +
  Dice(S_n, 1 - S)]`` with ``λ = 4``, focal gamma 2, on the maps upsampled to the mask size.

Where we follow the reference code (zqhang/AnomalyCLIP) or depart from it:

* the global feature is the original path's final class token times ``proj`` **without** ``ln_post``, as the
  reference (its issue #14); ``ClipVisionTower.class_token`` would apply ``ln_post``;
* the reference casts the deep prompts to float16 before splicing them in; we keep them in float32 (the parity test
  allows for the difference);
* the reference **sums** the maps of the feature layers; we **average** them so the map stays a probability in
  ``[0, 1]`` with several layers (identical with the default single layer 24);
* with feature layers ``(6, 12, 18, 24)`` every layer uses its own V-V tokens (the reference appended the stream
  without copying it before its fix, so all four equalled layer 24).

The frozen image side (:meth:`AnomalyCLIPModel.encode_images`) has no gradient and can be cached once per training
image; only the prompt parameters learn. Inference scores against text features stored in a buffer
(:meth:`AnomalyCLIPModel.update_text_features`), so checkpoints and exports carry them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.data import InferenceBatch
from torch import nn

from anomalib_clipad.clip.builder import INTERPOLATE_BILINEAR, block_list, build_clip
from anomalib_clipad.clip.text import splice_context
from anomalib_clipad.clip.vision import validate_images
from anomalib_clipad.components.fusion import gaussian_smooth
from anomalib_clipad.components.losses import dice_loss, focal_loss
from anomalib_clipad.components.readiness import require_ready
from anomalib_clipad.components.scoring import scaled_sigma, upsample
from anomalib_clipad.components.text_prototypes import TextPrototypes
from anomalib_clipad.models.learned_state import learned_tensors, load_learned_tensors

MODEL_NAME = "AnomalyCLIP"
PLACEHOLDER = "X"
NORMAL_PROMPT = "object."
ABNORMAL_PROMPT = "damaged object."
REFERENCE_MAP_SIZE = 518
"""AnomalyCLIP smooths its maps with sigma = 4 at 518 x 518; sigma is scaled with the output size."""
GLOBAL_KEY = "global_features"
PATCH_KEY = "patch_features_{layer}"
LEARNED_PREFIXES = ("normal_context", "abnormal_context", "deep_prompts.")
"""The learned state: the two object-agnostic contexts and the deep text prompts."""


class AnomalyCLIPModel(nn.Module):
    """AnomalyCLIP: object-agnostic prompts, deep text prompts and DPAM on a frozen CLIP.

    Args:
        backbone: open_clip architecture name.
        pretrained: open_clip pretrained tag, path of a local weight file, ``None`` (random weights, tests only),
            ``"checkpoint"`` (architecture only; weights from the checkpoint loaded next) or an already built open_clip
            CLIP of ``backbone``. See :func:`~anomalib_clipad.clip.builder.build_clip`.
        image_size: side of the square input in pixels (position embeddings are interpolated bilinearly in the
            forward pass, as the reference does: 24 x 24 -> 37 x 37 at 518 px).
        quick_gelu: QuickGELU (``True``) or GELU (``False``); ``None`` takes the weights' default (QuickGELU for the
            OpenAI-only ``ViT-L-14-336``).
        n_ctx: ``E``, learnable word embeddings per prompt.
        deep_prompt_length: ``Q``, learnable tokens replacing positions ``1..Q`` in the deep text layers.
        deep_prompt_depth: the last text layer with deep prompts; layers ``2..deep_prompt_depth`` (1-indexed) get
            them (the reference's ``depth = 9``: 8 sets of tokens).
        dpam_start_layer: first image-tower block (1-indexed) with the V-V (DPAM) path; ``None`` for none (patch
            features then come from the original path, the paper's Q-K ablation).
        feature_layers: image-tower blocks (1-indexed) whose patch features give maps (``M`` in eq. 2).
        local_loss_weight: ``λ`` of eq. 2.
        temperature: ``τ`` of eq. 1.
        focal_gamma: the focal loss's focusing parameter gamma.
        sigma: Gaussian sigma of the map at :data:`REFERENCE_MAP_SIZE` px (scaled with the output size).
        seed: seed of the N(0, 0.02) prompt initialisation (``None``: torch's global random state).

    Raises:
        ValueError: invalid sizes or layers (a feature layer before the DPAM start, a layer the tower lacks).
        UnknownBackboneError, PretrainedWeightsError: from :func:`~anomalib_clipad.clip.builder.build_clip`.
    """

    def __init__(  # noqa: PLR0917 (anomalib-style hyper-parameters)
        self,
        backbone: str = "ViT-L-14-336",
        pretrained: str | os.PathLike | nn.Module | None = "openai",
        image_size: int = 518,
        quick_gelu: bool | None = None,
        n_ctx: int = 12,
        deep_prompt_length: int = 4,
        deep_prompt_depth: int = 9,
        dpam_start_layer: int | None = 6,
        feature_layers: Sequence[int] = (24,),
        local_loss_weight: float = 4.0,
        temperature: float = 0.07,
        focal_gamma: float = 2.0,
        sigma: float = 4.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        feature_layers = block_list("feature_layers", feature_layers)
        for name, value in (("n_ctx", n_ctx), ("deep_prompt_length", deep_prompt_length)):
            if value < 1:
                msg = f"{name} must be at least 1, got {value}."
                raise ValueError(msg)
        if deep_prompt_depth < 1:
            msg = f"deep_prompt_depth must be at least 1 (1: no deep prompts), got {deep_prompt_depth}."
            raise ValueError(msg)
        if temperature <= 0:
            msg = f"temperature must be positive, got {temperature}."
            raise ValueError(msg)
        if dpam_start_layer is not None and min(feature_layers) < dpam_start_layer:
            msg = (
                f"The patch features of feature_layers {list(feature_layers)} come from the DPAM (V-V) stream, which "
                f"starts at dpam_start_layer={dpam_start_layer}: use layers >= {dpam_start_layer} or an earlier start."
            )
            raise ValueError(msg)
        towers = build_clip(
            backbone,
            pretrained,
            image_size=image_size,
            quick_gelu=quick_gelu,
            position_embedding=INTERPOLATE_BILINEAR,
            layers={"feature_layers": feature_layers, "dpam_start_layer": dpam_start_layer},
        )
        self.vision = towers.vision
        self.text = towers.text
        self.clip_hparams = towers.hparams
        for parameter in [*self.vision.parameters(), *self.text.parameters()]:
            parameter.requires_grad_(False)
        self.vision.check_layers(feature_layers, dpam_start_layer)
        if deep_prompt_depth > len(self.text.blocks):
            n_layers = len(self.text.blocks)
            msg = f"deep_prompt_depth {deep_prompt_depth} exceeds the {n_layers} text layers of {backbone}."
            raise ValueError(msg)
        self.backbone = backbone
        self.image_size = int(image_size)
        self.dpam_start_layer = None if dpam_start_layer is None else int(dpam_start_layer)
        self.feature_layers = feature_layers
        self.deep_prompt_length = int(deep_prompt_length)
        self.local_loss_weight = float(local_loss_weight)
        self.temperature = float(temperature)
        self.focal_gamma = float(focal_gamma)
        self.sigma = float(sigma)
        self.grid_size = self.vision.grid_size((self.image_size, self.image_size))

        # Object-agnostic prompts (Sec. 3.2) and deep text prompts (eq. 3), initialised N(0, 0.02) like the reference.
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        width = self.text.width

        def init(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(*shape).normal_(std=0.02, generator=generator))

        self.normal_context = init(n_ctx, width)
        self.abnormal_context = init(n_ctx, width)
        self.deep_prompts = nn.ParameterList([init(deep_prompt_length, width) for _ in range(deep_prompt_depth - 1)])
        prefix = " ".join([PLACEHOLDER] * n_ctx)
        self.prompts = (f"{prefix} {NORMAL_PROMPT}", f"{prefix} {ABNORMAL_PROMPT}")
        if n_ctx + 5 > self.text.context_length:  # start, n_ctx, "damaged object .", end
            msg = f"n_ctx={n_ctx} leaves no room for the prompt words in {self.text.context_length} text positions."
            raise ValueError(msg)
        tokens = self.text.tokenize(list(self.prompts))
        end_of_text = int(tokens.argmax(dim=-1).min())
        if deep_prompt_length >= end_of_text:
            msg = (
                f"deep_prompt_length={deep_prompt_length} would overwrite the end-of-text token (position "
                f"{end_of_text}) of the prompts; use at most {end_of_text - 1}."
            )
            raise ValueError(msg)
        self.register_buffer("prompt_tokens", tokens, persistent=False)
        self.text_prototypes = TextPrototypes(self.vision.output_dim)
        self.class_name: str | None = None

    # ------------------------------------------------------------------------------------------------- properties
    @property
    def n_ctx(self) -> int:
        """``E``, learnable word embeddings per prompt."""
        return int(self.normal_context.shape[0])

    @property
    def deep_prompt_layers(self) -> tuple[int, ...]:
        """Text layers (1-indexed) at whose input the deep prompts replace positions ``1..Q``."""
        return tuple(range(2, 2 + len(self.deep_prompts)))

    @property
    def is_ready(self) -> bool:
        """Whether inference text features are stored (after training, loading prompts or a checkpoint)."""
        return self.text_prototypes.is_ready

    @property
    def uses_references(self) -> bool:
        """Always ``False``: AnomalyCLIP scores zero-shot, without reference images."""
        return False

    @property
    def references_ready(self) -> bool:
        """Always ``False``: AnomalyCLIP has no reference memory."""
        return False

    def require_ready(self) -> None:
        """Raise :class:`~anomalib_clipad.components.readiness.ModelNotReadyError` when no text features are stored.

        Raises:
            ModelNotReadyError: no text features stored yet.
        """
        require_ready(
            MODEL_NAME,
            {"text features": self.is_ready},
            how=(
                "train its prompts on an auxiliary dataset with masks (`anomalib train`/`Engine.fit`), load a learned "
                "state (`read_learned_state`, also the reference's checkpoints), or load a trained checkpoint "
                "(`--ckpt_path`)."
            ),
        )

    def architecture(self) -> dict[str, Any]:
        """Backbone, input size, the prompt shapes (``n_ctx``, deep prompts) and the feature layers."""
        return {
            "backbone": self.backbone,
            "image_size": self.image_size,
            "n_ctx": self.n_ctx,
            "deep_prompt_length": self.deep_prompt_length,
            "deep_prompt_depth": len(self.deep_prompts) + 1,
            "feature_layers": list(self.feature_layers),
        }

    # ------------------------------------------------------------------------------------------------- set-up
    def set_class(self, class_name: str, anomaly_states: Sequence[str] | None = None) -> None:
        """Record the class (AnomalyCLIP's prompts are object-agnostic: the class changes nothing it scores with).

        Args:
            class_name: the class of the images to score.
            anomaly_states: not supported (the abnormal prompt is the learned ``"damaged object."``); must be
                ``None``.

        Raises:
            ValueError: empty class name, or anomaly states given.
        """
        if not isinstance(class_name, str) or not class_name.strip():
            msg = "set_class needs a non-empty class name (e.g. 'bottle')."
            raise ValueError(msg)
        if anomaly_states is not None:
            msg = (
                "AnomalyCLIP's prompts are object-agnostic and learned (no anomalous state phrases); got "
                f"anomaly_states={anomaly_states!r}."
            )
            raise ValueError(msg)
        self.class_name = class_name

    def set_references(self, references: torch.Tensor | Mapping[str, torch.Tensor] | None) -> None:
        """AnomalyCLIP has no reference memory: ``None`` (nothing to clear) is accepted, references are refused.

        Raises:
            ValueError: references given.
        """
        if references is not None:
            msg = (
                "AnomalyCLIP scores zero-shot and has no reference memory: it takes no normal reference images "
                "(check `uses_references` before calling set_references)."
            )
            raise ValueError(msg)

    # ---------------------------------------------------------------------------------------------------- text
    def text_features(self) -> torch.Tensor:
        """``[t_n, t_a]`` ``(2, D)``, L2-normalised, differentiable with respect to the prompt parameters."""
        token_embeddings = self.text.embed_tokens(self.prompt_tokens)
        context = torch.stack([self.normal_context, self.abnormal_context])
        token_embeddings = splice_context(token_embeddings, context, start=1)
        deep_prompts = dict(zip(self.deep_prompt_layers, self.deep_prompts, strict=True))
        features = self.text(self.prompt_tokens, token_embeddings=token_embeddings, deep_prompts=deep_prompts)
        return F.normalize(features, dim=-1)

    @torch.no_grad()
    def update_text_features(self) -> None:
        """Store the current prompts' text features for inference (call after training or loading prompts)."""
        self.text_prototypes.set(self.text_features())

    # -------------------------------------------------------------------------------------------------- vision
    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """One pass of the frozen image tower: everything scores and losses need (cache it once per image).

        Args:
            images: ``(B, 3, H, W)`` CLIP-normalised images of the model's input size.

        Returns:
            ``{"global_features": (B, D), "patch_features_<l>": (B, N, D) for each feature layer l}``: the
            original-path class token @ ``proj`` (no ``ln_post``, as the reference) and the V-V stream's patch tokens
            after block ``l`` with ``ln_post`` and ``proj``; not normalised.

        Raises:
            TypeError: not a floating-point tensor.
            ValueError: wrong rank, not 3 channels (e.g. grayscale) or not the model's input size.
        """
        validate_images(images, (self.image_size, self.image_size))
        if self.dpam_start_layer is None:
            features = self.vision(images, patch_layers=self.feature_layers)
            patch_tokens = features.patch_tokens
        else:
            features = self.vision(images, vv_start_layer=self.dpam_start_layer, vv_layers=self.feature_layers)
            patch_tokens = features.vv_tokens
        global_features = features.final_class_token
        global_features = global_features @ self.vision.proj if self.vision.proj is not None else global_features
        output = {GLOBAL_KEY: global_features}
        for layer in self.feature_layers:
            output[PATCH_KEY.format(layer=layer)] = self.vision.project(patch_tokens[layer])
        return output

    # -------------------------------------------------------------------------------------------------- scores
    def global_logits(self, features: Mapping[str, torch.Tensor], text_features: torch.Tensor) -> torch.Tensor:
        """``<f_i, [t_n, t_a]> / τ`` ``(B, 2)`` of the global features (cosine similarity)."""
        return F.normalize(features[GLOBAL_KEY], dim=-1) @ text_features.T / self.temperature

    def patch_probabilities(
        self,
        features: Mapping[str, torch.Tensor],
        text_features: torch.Tensor,
        output_size: tuple[int, int] | None = None,
    ) -> dict[int, torch.Tensor]:
        """``U_p([S_n, S_a])`` per feature layer: ``(B, 2, H, W)`` patch probabilities upsampled bilinearly.

        Args:
            features: from :meth:`encode_images`.
            text_features: ``(2, D)`` L2-normalised ``[t_n, t_a]``.
            output_size: ``(H, W)`` of the maps (default: the input size).

        Returns:
            Layer -> probabilities; channel 0 normal, 1 anomalous (they sum to 1).
        """
        size = tuple(output_size) if output_size is not None else (self.image_size, self.image_size)
        maps = {}
        for layer in self.feature_layers:
            patches = F.normalize(features[PATCH_KEY.format(layer=layer)], dim=-1)
            probabilities = (patches @ text_features.T / self.temperature).softmax(dim=-1)  # (B, N, 2)
            probabilities = probabilities.transpose(1, 2).reshape(-1, 2, *self.grid_size)
            maps[layer] = upsample(probabilities, size)
        return maps

    def scores(
        self,
        features: Mapping[str, torch.Tensor],
        text_features: torch.Tensor | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Image scores and anomaly maps from image features.

        Args:
            features: from :meth:`encode_images`.
            text_features: ``(2, D)`` L2-normalised text features (default: the stored ones).
            output_size: ``(H, W)`` of the map (default: the input size).

        Returns:
            ``pred_score (B,)`` = ``P(g_a, f_i)``; ``layer_maps (L, B, H, W)`` = ``(1 - U_p(S_n) + U_p(S_a)) / 2`` per
            feature layer; ``anomaly_map (B, H, W)`` = their mean, Gaussian-smoothed. All in ``[0, 1]``.
        """
        text_features = self.text_prototypes.features if text_features is None else text_features
        size = tuple(output_size) if output_size is not None else (self.image_size, self.image_size)
        pred_score = self.global_logits(features, text_features).softmax(dim=-1)[:, 1]
        probabilities = self.patch_probabilities(features, text_features, size)
        layer_maps = torch.stack([(maps[:, 1] + 1 - maps[:, 0]) / 2 for maps in probabilities.values()])
        sigma = scaled_sigma(self.sigma, REFERENCE_MAP_SIZE, size)
        anomaly_map = gaussian_smooth(layer_maps.mean(dim=0), sigma)
        return {"pred_score": pred_score, "layer_maps": layer_maps, "anomaly_map": anomaly_map}

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Score a batch: ``pred_score (B,)`` and ``anomaly_map (B, H, W)`` at the input size, both in ``[0, 1]``.

        Raises:
            ModelNotReadyError: no text features stored yet.
            TypeError, ValueError: bad input images.
        """
        self.require_ready()
        scores = self.scores(self.encode_images(images))
        return InferenceBatch(pred_score=scores["pred_score"], anomaly_map=scores["anomaly_map"])

    # -------------------------------------------------------------------------------------------------- losses
    def losses(
        self,
        features: Mapping[str, torch.Tensor],
        labels: torch.Tensor,
        masks: torch.Tensor,
        text_features: torch.Tensor | None = None,
        has_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The glocal loss (eq. 2) of a batch of (cached) image features.

        Args:
            features: :meth:`encode_images` output of the batch.
            labels: ``(B,)`` image labels, 1 anomalous, 0 normal.
            masks: ``(B, H, W)`` or ``(B, 1, H, W)`` ground-truth masks (binarised at 0.5, as the reference); the
                maps are upsampled to their size.
            text_features: ``(2, D)`` normalised text features with gradients (computed here if ``None``).
            has_mask: ``(B,)`` booleans, ``False`` for anomalous images without a ground-truth mask: they train the
                image loss only (as the reference's author advises for mask-less data). ``None``: all have masks.

        Returns:
            ``loss`` = ``image_loss + λ local_loss``; ``image_loss`` the cross-entropy of the global logits;
            ``local_loss`` the sum over feature layers of focal + dice(S_a, S) + dice(S_n, 1 - S), without ``λ``.

        Raises:
            ValueError: labels or masks do not match the batch.
        """
        text_features = self.text_features() if text_features is None else text_features
        global_features = features[GLOBAL_KEY]
        batch = global_features.shape[0]
        labels = torch.as_tensor(labels, device=global_features.device).reshape(-1).long()
        if labels.shape[0] != batch:
            msg = f"Got {labels.shape[0]} labels for {batch} images."
            raise ValueError(msg)
        if masks is None:
            msg = "AnomalyCLIP's local loss needs ground-truth masks (zeros for normal images)."
            raise ValueError(msg)
        masks = masks.to(global_features.device)
        masks = masks.squeeze(1) if masks.ndim == 4 and masks.shape[1] == 1 else masks
        if masks.ndim != 3 or masks.shape[0] != batch:
            msg = f"Expected masks of shape (B, H, W) for {batch} images, got {tuple(masks.shape)}."
            raise ValueError(msg)
        masks = (masks > 0.5).to(global_features.dtype)

        image_loss = F.cross_entropy(self.global_logits(features, text_features), labels)
        local_loss = global_features.new_zeros(())
        if has_mask is not None:
            keep = torch.as_tensor(has_mask, device=global_features.device).reshape(-1).bool()
            if not bool(keep.any()):
                return {"loss": image_loss, "image_loss": image_loss, "local_loss": local_loss}
            features = {name: value[keep] for name, value in features.items()}
            masks = masks[keep]
        for maps in self.patch_probabilities(features, text_features, tuple(masks.shape[-2:])).values():
            local_loss = local_loss + focal_loss(maps, masks, gamma=self.focal_gamma)
            local_loss = local_loss + dice_loss(maps[:, 1], masks) + dice_loss(maps[:, 0], 1 - masks)
        loss = image_loss + self.local_loss_weight * local_loss
        return {"loss": loss, "image_loss": image_loss, "local_loss": local_loss}

    # ------------------------------------------------------------------------------------------ learned state
    def learned_state_dict(self) -> dict[str, torch.Tensor]:
        """The prompt parameters (the whole trained state: a few tens of kB), detached copies on the CPU.

        Keys: ``normal_context`` ``(E, width)``, ``abnormal_context`` ``(E, width)``, ``deep_prompts.<i>``
        ``(Q, width)`` for text layer ``i + 2``. The text features are recomputed from them when loaded.
        """
        return learned_tensors(self, LEARNED_PREFIXES)

    def load_learned_state_dict(self, state: Mapping[str, torch.Tensor], update_text_features: bool = True) -> None:
        """Load prompt parameters (:meth:`learned_state_dict` output, or a converted reference checkpoint).

        Args:
            state: name -> tensor, exactly the keys of :meth:`learned_state_dict`.
            update_text_features: also store the prompts' text features for inference.

        Raises:
            ValueError: naming the first missing, unexpected or wrongly shaped key.
        """
        load_learned_tensors(self, state, LEARNED_PREFIXES, MODEL_NAME)
        if update_text_features:
            self.update_text_features()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Check that a checkpoint was made with the same image tower before loading it."""
        self.vision.check_state_dict(
            state_dict,
            f"{prefix}vision.positional_embedding",
            f"{MODEL_NAME} ({self.backbone})",
        )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
