# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""PyTorch model of PromptAD.

Li et al., "PromptAD: Learning Prompts with only Normal Samples for Few-Shot Anomaly Detection", CVPR 2024.

Pieces:

* **VV-CLIP**: the frozen CLIP image tower with a dual-path V-V attention stream in every block
  (:class:`~anomalib_clipad.clip.vision.ClipVisionTower`, ``vv_start_layer=1``). The class token comes from the
  original path, the patch tokens of the pixel head from the V-V stream (``ln_post`` + projection).
* **Vision-guided detection (VAD)**: memories of the original path's raw patch tokens after blocks 3 and 8 of the k
  normal shots, L2-normalised; ``M_v`` is the mean of the two association maps ``min (1 - cos) / 2`` (eq. 8).
* **Semantic concatenation**: per head, ``N`` learnable normal prompts ``[P_1..P_EN] obj.``; manual anomaly prompts
  ``[P_1..P_EN] <state>.`` for 8 generic and the class-specific anomalous states; ``N x L`` learnable anomaly prompts
  ``[P_1..P_EN][A_1..A_EA] obj.`` (the learnable anomaly tokens stand *before* the class name, as in the reference
  code; the paper describes a suffix). The image head has ``N = 3`` normal prompts, the pixel head ``N = 1``; the
  two heads have disjoint parameters and are trained together.
* **Scores**: image ``S_t = softmax(s <z, [w̄^n, w̄^a]>)[1]`` with the CLS feature and the raw ``logit_scale`` ``s``
  (as the reference; eq. 16); pixel ``M_t`` the same with every V-V patch token. Pixel map
  ``1 / (1 / M_v + 1 / M_t)`` on the patch grid (eq. 17), upsampled bilinearly and Gaussian-smoothed (sigma = 4 at
  400 px, scaled with the output size); image score ``1 / (1 / max M_v + 1 / S_t)`` (eq. 18), with ``max M_v``
  taken on the upsampled map as the reference does.

Everything inference needs (CLIP weights, both memories, the two heads' text prototypes, the learned contexts) is a
parameter or buffer, so Lightning checkpoints and exports carry it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from anomalib.data import InferenceBatch
from torch import nn

from anomalib_clipad.clip.builder import INTERPOLATE_BICUBIC, block_list, build_clip
from anomalib_clipad.clip.text import splice_context
from anomalib_clipad.clip.vision import validate_images
from anomalib_clipad.components.fusion import gaussian_smooth, reciprocal_fusion
from anomalib_clipad.components.losses import (
    explicit_anomaly_margin_loss,
    prompt_alignment_loss,
    prompt_contrastive_loss,
    prototype,
)
from anomalib_clipad.components.memory import LayerMemories
from anomalib_clipad.components.prompts import (
    class_specific_anomalous_states,
    generic_anomalous_states,
    prompt_class_name,
)
from anomalib_clipad.components.readiness import require_ready
from anomalib_clipad.components.scoring import anomaly_probability, scaled_sigma, upsample
from anomalib_clipad.components.text_prototypes import TextPrototypes
from anomalib_clipad.models.learned_state import REFERENCE_PREFIX, learned_tensors, load_learned_tensors

logger = logging.getLogger(__name__)

BACKBONE = "ViT-B-16-plus-240"
PRETRAINED = "laion400m_e32"
PLACEHOLDER = "X"
HEADS = ("image", "pixel")
REFERENCE_MAP_SIZE = 400
"""PromptAD smooths its pixel maps with sigma = 4 at 400 x 400; sigma is scaled with the output size."""
MEMORY_TAPS = ("block_output", "reference")
LEARNED_PREFIXES = ("prompt_learners.", "text_prototypes.", REFERENCE_PREFIX)
"""The learned state: both heads' contexts and text prototypes, and the vision memories."""


def resolve_anomaly_states(category: str, anomaly_states: Sequence[str] | None = None) -> list[str]:
    """The anomalous states of the manual anomaly prompts of a category.

    The 8 generic states are always used. The class-specific part is, in order of preference: the user's
    ``anomaly_states``; the built-in defect list of an MVTec AD or VisA category; nothing (generic states only,
    with a warning) for other categories.

    Args:
        category: dataset category or class name (``"bottle"``, ``"metal_nut"``).
        anomaly_states: user states with a ``{}`` placeholder for the class name, e.g. ``["{} with scratch"]``.

    Returns:
        The state templates, generic first.

    Raises:
        ValueError: a user state has no ``{}`` placeholder, or is empty.
    """
    states = generic_anomalous_states()
    if anomaly_states is not None:
        user_states = [anomaly_states] if isinstance(anomaly_states, str) else list(anomaly_states)
        for state in user_states:
            if not isinstance(state, str) or "{}" not in state or not state.replace("{}", "").strip():
                msg = (
                    f"Each anomalous state needs a '{{}}' placeholder for the class name and some words, got {state!r} "
                    "(example: '{} with scratch')."
                )
                raise ValueError(msg)
        return states + user_states
    specific = class_specific_anomalous_states(category)
    if specific is None:
        logger.warning(
            "PromptAD has no class-specific anomalous states for %r; using the %d generic states only. Pass your "
            "own with `anomaly_states` (e.g. ['{} with scratch', '{} with crack']).",
            category,
            len(states),
        )
        return states
    return states + specific


class PromptLearner(nn.Module):
    """Learnable prompts of one PromptAD head (semantic concatenation).

    Args:
        width: width of the text transformer tokens.
        n_normal_prompts: ``N``, number of learnable normal prompts.
        n_ctx: ``E_N``, learnable tokens per normal prompt.
        n_learned_anomaly_prompts: ``L``, number of learnable anomaly token sets.
        n_ctx_anomaly: ``E_A``, learnable tokens per anomaly set.
        generator: random generator of the N(0, 0.02) initialisation (``None``: torch's global one).

    Attributes:
        normal_context: ``(N, E_N, width)`` parameter, initialised N(0, 0.02).
        anomaly_context: ``(L, E_A, width)`` parameter, initialised N(0, 0.02).
    """

    def __init__(  # noqa: PLR0917
        self,
        width: int,
        n_normal_prompts: int,
        n_ctx: int,
        n_learned_anomaly_prompts: int,
        n_ctx_anomaly: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("n_normal_prompts", n_normal_prompts),
            ("n_ctx", n_ctx),
            ("n_learned_anomaly_prompts", n_learned_anomaly_prompts),
            ("n_ctx_anomaly", n_ctx_anomaly),
        ):
            if value < 1:
                msg = f"{name} must be at least 1, got {value}."
                raise ValueError(msg)
        normal = torch.empty(n_normal_prompts, n_ctx, width).normal_(std=0.02, generator=generator)
        anomaly = torch.empty(n_learned_anomaly_prompts, n_ctx_anomaly, width).normal_(std=0.02, generator=generator)
        self.normal_context = nn.Parameter(normal)
        self.anomaly_context = nn.Parameter(anomaly)
        self.prompts: dict[str, list[str]] = {}

    @property
    def n_normal_prompts(self) -> int:
        """``N``."""
        return self.normal_context.shape[0]

    @property
    def n_learned_anomaly_prompts(self) -> int:
        """``L``."""
        return self.anomaly_context.shape[0]

    def build_prompts(self, class_name: str, states: Sequence[str]) -> dict[str, list[str]]:
        """Placeholder prompt strings of the three prompt groups (``X`` marks a learnable token).

        Returns:
            ``{"normal": N, "manual": N x M, "learned": N x L}`` strings, in the order :meth:`contexts` uses.
        """
        prefix = " ".join([PLACEHOLDER] * self.normal_context.shape[1])
        anomaly = " ".join([PLACEHOLDER] * self.anomaly_context.shape[1])
        n_prompts, n_learned = self.n_normal_prompts, self.n_learned_anomaly_prompts
        return {
            "normal": [f"{prefix} {class_name}."] * n_prompts,
            "manual": [f"{prefix} {state.format(class_name)}." for state in states for _ in range(n_prompts)],
            "learned": [f"{prefix} {anomaly} {class_name}."] * (n_prompts * n_learned),
        }

    def contexts(self, n_states: int) -> dict[str, torch.Tensor]:
        """Learnable vectors of every prompt, matching :meth:`build_prompts`.

        Manual prompt ``s * N + i`` carries normal context ``i``; learned prompt ``i * L + j`` carries normal context
        ``i`` followed by anomaly context ``j`` (every combination once).
        """
        normal = self.normal_context
        n_learned = self.n_learned_anomaly_prompts
        learned = torch.cat(
            [
                normal.repeat_interleave(n_learned, dim=0),
                self.anomaly_context.repeat(self.n_normal_prompts, 1, 1),
            ],
            dim=1,
        )
        return {"normal": normal, "manual": normal.repeat(n_states, 1, 1), "learned": learned}


class PromptADModel(nn.Module):
    """PromptAD: VV-CLIP, vision memory, and an image and a pixel prompt head.

    Args:
        backbone: open_clip architecture (paper: ``ViT-B-16-plus-240``).
        pretrained: open_clip tag, local weight file, ``None`` (random, tests), ``"checkpoint"`` (architecture only)
            or an already built open_clip CLIP of ``backbone`` (see :func:`~anomalib_clipad.clip.builder.build_clip`).
        quick_gelu: QuickGELU activations; ``None``: the weights' default.
        k_shot: number of normal reference images.
        image_size: input size (square) the model is set up for.
        n_ctx: ``E_N``, learnable normal prefix tokens.
        n_normal_prompts_image: ``N`` of the image head.
        n_normal_prompts_pixel: ``N`` of the pixel head.
        n_learned_anomaly_prompts: ``L``, learnable anomaly prompts per normal prompt.
        n_ctx_anomaly: ``E_A``, tokens per learnable anomaly prompt.
        memory_layers: original-path blocks (1-indexed) whose patch tokens form the vision memories.
        memory_tap: where the memory tokens of layer ``l`` are read: ``"block_output"`` (the output of block ``l``:
            the paper's definition, our default) or ``"reference"`` (inside block ``l + 1``, after its attention
            residual: what the official code's aliased forward hooks read, to reproduce its published numbers).
        alignment_weight: ``λ`` of the alignment loss.
        eam_margin: margin of the explicit anomaly margin loss.
        sigma: Gaussian sigma of the pixel map at :data:`REFERENCE_MAP_SIZE` px (scaled with the output size).
        seed: seed of the prompt initialisation (``None``: torch's global random state).
        position_embedding: how position embeddings follow another input size (builder modes; PromptAD's reference
            uses the backbone's own 240 px, where no mode changes anything).

    Raises:
        ValueError: invalid sizes or layers.
    """

    def __init__(  # noqa: PLR0917 (anomalib-style hyper-parameters)
        self,
        backbone: str = BACKBONE,
        pretrained: str | nn.Module | None = PRETRAINED,
        quick_gelu: bool | None = None,
        k_shot: int = 1,
        image_size: int = 240,
        n_ctx: int = 4,
        n_normal_prompts_image: int = 3,
        n_normal_prompts_pixel: int = 1,
        n_learned_anomaly_prompts: int = 4,
        n_ctx_anomaly: int = 1,
        memory_layers: Sequence[int] = (3, 8),
        alignment_weight: float = 0.001,
        eam_margin: float = 0.0,
        sigma: float = 4.0,
        seed: int | None = None,
        memory_tap: str = "block_output",
        position_embedding: str = INTERPOLATE_BICUBIC,
    ) -> None:
        super().__init__()
        if k_shot < 1:
            msg = f"PromptAD needs at least one normal shot, got k_shot={k_shot}."
            raise ValueError(msg)
        memory_layers = block_list("memory_layers", memory_layers)
        if memory_tap not in MEMORY_TAPS:
            msg = f"memory_tap must be one of {MEMORY_TAPS}, got {memory_tap!r}."
            raise ValueError(msg)
        towers = build_clip(
            backbone,
            pretrained,
            image_size=image_size,
            quick_gelu=quick_gelu,
            position_embedding=position_embedding,
            layers={"memory_layers": memory_layers},
        )
        self.backbone = backbone
        self.vision, self.text = towers.vision, towers.text
        self.clip_hparams = towers.hparams
        self.position_embedding = towers.position_embedding
        if memory_tap == "reference" and max(memory_layers) >= self.vision.num_layers:
            msg = (
                "memory_tap='reference' reads layer l inside block l + 1: memory_layers must be below "
                f"{self.vision.num_layers}, got {list(memory_layers)}."
            )
            raise ValueError(msg)
        self.memory_tap = memory_tap
        self.image_size = int(image_size)
        self.k_shot = int(k_shot)
        self.memory_layers = memory_layers
        self.alignment_weight = float(alignment_weight)
        self.eam_margin = float(eam_margin)
        self.sigma = float(sigma)
        self.grid_size = self.vision.grid_size((self.image_size, self.image_size))
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.prompt_learners = nn.ModuleDict(
            {
                "image": PromptLearner(
                    self.text.width,
                    n_normal_prompts_image,
                    n_ctx,
                    n_learned_anomaly_prompts,
                    n_ctx_anomaly,
                    generator,
                ),
                "pixel": PromptLearner(
                    self.text.width,
                    n_normal_prompts_pixel,
                    n_ctx,
                    n_learned_anomaly_prompts,
                    n_ctx_anomaly,
                    generator,
                ),
            },
        )
        # vision memories of the memory layers and each head's [w̄^n, w̄^a]: empty until trained or loaded
        self.memories = LayerMemories(self.memory_layers, self.vision.width)
        self.text_prototypes = nn.ModuleDict({head: TextPrototypes(self.vision.output_dim) for head in HEADS})
        self.class_name: str | None = None
        self.states: list[str] = []
        self._prompt_tokens: dict[str, dict[str, torch.Tensor]] = {}

    # ------------------------------------------------------------------------------------------------- prompts
    def set_class(self, class_name: str, anomaly_states: Sequence[str] | None = None) -> None:
        """Build the prompts of both heads for a class.

        Args:
            class_name: dataset category or class name (mapped with
                :func:`~anomalib_clipad.components.prompts.prompt_class_name`, e.g. ``metal_nut`` -> "metal nut").
            anomaly_states: the user's class-specific anomalous states (see :func:`resolve_anomaly_states`).

        Raises:
            ValueError: empty class name or invalid states.
        """
        if not isinstance(class_name, str) or not class_name.strip():
            msg = "PromptAD needs a class name for its prompts (e.g. 'bottle'); pass `class_name`."
            raise ValueError(msg)
        self.class_name = class_name
        self.states = resolve_anomaly_states(class_name, anomaly_states)
        name = prompt_class_name(class_name)
        self._prompt_tokens = {}
        for head, learner in self.prompt_learners.items():
            learner.prompts = learner.build_prompts(name, self.states)
            self._prompt_tokens[head] = {group: self.text.tokenize(texts) for group, texts in learner.prompts.items()}

    def prompt_tokens(self) -> torch.Tensor:
        """Token ids ``(P, context_length)`` of every prompt of both heads, in :meth:`prompt_features` order.

        Learnable positions hold placeholder tokens (their embeddings are replaced by the contexts).

        Raises:
            RuntimeError: :meth:`set_class` was not called.
        """
        if not self._prompt_tokens:
            msg = "PromptAD's prompts are not built yet: call `set_class(class_name)` first."
            raise RuntimeError(msg)
        return torch.cat([tokens for head in self.prompt_learners for tokens in self._prompt_tokens[head].values()])

    def prompt_features(self) -> dict[str, dict[str, torch.Tensor]]:
        """Raw text features of every prompt of both heads, in one text-encoder pass (differentiable).

        Returns:
            ``{head: {"normal": (N, D), "manual": (N x M, D), "learned": (N x L, D)}}``.

        Raises:
            RuntimeError: :meth:`set_class` was not called.
        """
        if not self._prompt_tokens:
            msg = "PromptAD's prompts are not built yet: call `set_class(class_name)` first."
            raise RuntimeError(msg)
        device = self.text.positional_embedding.device
        tokens, embeddings, sizes = [], [], []
        for head, learner in self.prompt_learners.items():
            contexts = learner.contexts(len(self.states))
            for group, stored_tokens in self._prompt_tokens[head].items():
                group_tokens = stored_tokens.to(device)
                tokens.append(group_tokens)
                embeddings.append(splice_context(self.text.embed_tokens(group_tokens), contexts[group], start=1))
                sizes.append(group_tokens.shape[0])
        features = self.text(torch.cat(tokens), token_embeddings=torch.cat(embeddings)).split(sizes)
        output: dict[str, dict[str, torch.Tensor]] = {}
        index = 0
        for head in self.prompt_learners:
            output[head] = {}
            for group in self._prompt_tokens[head]:
                output[head][group] = features[index]
                index += 1
        return output

    @torch.no_grad()
    def update_text_features(self, prompts: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
        """Store each head's normal and anomaly prototypes (eq. 14) for inference.

        Args:
            prompts: output of :meth:`prompt_features` at the current parameters (computed here if ``None``).
        """
        prompts = self.prompt_features() if prompts is None else prompts
        for head, groups in prompts.items():
            anomaly = torch.cat([groups["manual"], groups["learned"]])
            self.text_prototypes[head].set(torch.stack([prototype(groups["normal"]), prototype(anomaly)]))

    # --------------------------------------------------------------------------------------------------- vision
    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """One pass of the frozen VV-CLIP image tower.

        Args:
            images: ``(B, 3, H, W)`` CLIP-normalised images of the model's input size.

        Returns:
            ``{"class_token": (B, D), "vv_tokens": (B, N, D)`` (projected), ``"memory_<l>": (B, N, width)}`` (raw).

        Raises:
            ValueError: grayscale, wrong rank or wrong size.
        """
        validate_images(images, (self.image_size, self.image_size))
        last = self.vision.num_layers
        if self.memory_tap == "reference":
            inside = tuple(layer + 1 for layer in self.memory_layers)
            features = self.vision(images, vv_start_layer=1, vv_layers=(last,), attention_layers=inside)
            memories = {layer: features.attention_tokens[layer + 1] for layer in self.memory_layers}
        else:
            features = self.vision(images, patch_layers=self.memory_layers, vv_start_layer=1, vv_layers=(last,))
            memories = {layer: features.patch_tokens[layer] for layer in self.memory_layers}
        output = {"class_token": features.class_token, "vv_tokens": self.vision.project(features.vv_tokens[last])}
        for layer, tokens in memories.items():
            output[f"memory_{layer}"] = tokens
        return output

    @torch.no_grad()
    def set_references(self, references: torch.Tensor | Mapping[str, torch.Tensor] | None) -> None:
        """Store the vision memories of the k normal shots; ``None`` clears them.

        Args:
            references: ``(k, 3, H, W)`` CLIP-normalised normal images or their :meth:`encode_images` features.

        Raises:
            ValueError: the number of shots differs from ``k_shot``, or bad images.
        """
        if references is None:
            self.memories.clear()
            return
        features = self.encode_images(references) if isinstance(references, torch.Tensor) else references
        for layer in self.memory_layers:
            shots = features[f"memory_{layer}"]
            if shots.shape[0] != self.k_shot:
                msg = f"PromptAD was set up for k_shot={self.k_shot} reference images, got {shots.shape[0]}."
                raise ValueError(msg)
            self.memories[str(layer)].fill(shots)

    # --------------------------------------------------------------------------------------------------- losses
    def losses(
        self,
        features: dict[str, torch.Tensor],
        prompts: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training losses of both heads on (cached) features of normal images.

        Image head: the CLS features; pixel head: every V-V patch token. Per head
        ``L = L_clip + L_eam + λ L_align`` (eq. 12, 13, 15); the total is the sum of the two heads (disjoint
        parameters, so this equals two separate runs).

        Args:
            features: :meth:`encode_images` output of the normal training images.
            prompts: :meth:`prompt_features` output (computed here, with gradients, if ``None``).

        Returns:
            ``{"loss", "<head>_ce", "<head>_eam", "<head>_align" (without λ), "<head>_loss"}``.
        """
        prompts = self.prompt_features() if prompts is None else prompts
        visual = {"image": features["class_token"], "pixel": features["vv_tokens"].reshape(-1, self.vision.output_dim)}
        scale = self.text.logit_scale.detach()
        output: dict[str, torch.Tensor] = {}
        total = 0.0
        for head in HEADS:
            normal, manual, learned = prompts[head]["normal"], prompts[head]["manual"], prompts[head]["learned"]
            anomaly = torch.cat([manual, learned])
            ce = prompt_contrastive_loss(visual[head], normal, anomaly, scale)
            eam = explicit_anomaly_margin_loss(visual[head], normal, anomaly, self.eam_margin)
            align = prompt_alignment_loss(manual, learned)
            loss = ce + eam + self.alignment_weight * align
            output.update({f"{head}_ce": ce, f"{head}_eam": eam, f"{head}_align": align, f"{head}_loss": loss})
            total = total + loss
        output["loss"] = total
        return output

    # ---------------------------------------------------------------------------------------------------- scores
    def textual_scores(self, features: torch.Tensor, head: str) -> torch.Tensor:
        """``softmax(s <f, [w̄^n, w̄^a]>)[anomalous]`` with the raw ``logit_scale`` ``s`` (eq. 16)."""
        return anomaly_probability(features, self.text_prototypes[head].features, self.text.logit_scale)

    def visual_map(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Vision-guided map ``M_v`` ``(B, 1, rows, cols)``: mean over memory layers of ``min (1 - cos) / 2``."""
        maps = [self.memories[str(layer)].distance(features[f"memory_{layer}"]) for layer in self.memory_layers]
        return torch.stack(maps).mean(dim=0).reshape(-1, 1, *self.grid_size)

    def scores(
        self,
        features: dict[str, torch.Tensor],
        output_size: tuple[int, int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """All of PromptAD's scores from image features.

        Args:
            features: from :meth:`encode_images`.
            output_size: size of the returned map (default: the input size).

        Returns:
            ``textual_score (B,)``, ``visual_map``, ``textual_map``, ``fused_map`` ``(B, 1, rows, cols)``,
            ``anomaly_map (B, H, W)`` and ``pred_score (B,)``.
        """
        size = tuple(output_size) if output_size is not None else (self.image_size, self.image_size)
        textual_score = self.textual_scores(features["class_token"], "image")
        visual_map = self.visual_map(features)
        textual_map = self.textual_scores(features["vv_tokens"], "pixel").reshape(-1, 1, *self.grid_size)
        fused_map = reciprocal_fusion(textual_map, visual_map)
        sigma = scaled_sigma(self.sigma, REFERENCE_MAP_SIZE, size)
        anomaly_map = gaussian_smooth(upsample(fused_map, size), sigma).squeeze(1)
        max_visual = upsample(visual_map, size).flatten(1).amax(dim=1)
        return {
            "textual_score": textual_score,
            "visual_map": visual_map,
            "textual_map": textual_map,
            "fused_map": fused_map,
            "anomaly_map": anomaly_map,
            "pred_score": reciprocal_fusion(max_visual, textual_score),
        }

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Score a batch: ``pred_score (B,)`` and ``anomaly_map (B, H, W)`` at the input size.

        Raises:
            ModelNotReadyError: the model has not been trained / given its memories yet.
            ValueError: bad input images.
        """
        self.require_ready()
        scores = self.scores(self.encode_images(images))
        return InferenceBatch(pred_score=scores["pred_score"], anomaly_map=scores["anomaly_map"])

    @property
    def uses_references(self) -> bool:
        """Always ``True``: PromptAD's vision-guided map scores against the memories of the k normal shots."""
        return True

    @property
    def references_ready(self) -> bool:
        """Whether the vision memory of every memory layer holds features."""
        return self.memories.is_ready

    @property
    def is_ready(self) -> bool:
        """Whether the vision memories and both heads' text prototypes are there (trained or loaded)."""
        return self.references_ready and all(prototypes.is_ready for prototypes in self.text_prototypes.values())

    def require_ready(self) -> None:
        """Raise :class:`~anomalib_clipad.components.readiness.ModelNotReadyError` before training or loading."""
        require_ready(
            "PromptAD",
            {
                "vision memory": self.references_ready,
                "text prototypes": all(prototypes.is_ready for prototypes in self.text_prototypes.values()),
            },
            how="train it on k normal shots first (`anomalib train`/`Engine.fit`) or load a trained checkpoint "
            "(`--ckpt_path`).",
        )

    def architecture(self) -> dict[str, Any]:
        """Backbone, input size, the prompt sizes of both heads, and the memories' layers, tap, shots and positions."""
        image, pixel = self.prompt_learners["image"], self.prompt_learners["pixel"]
        return {
            "backbone": self.backbone,
            "image_size": self.image_size,
            "n_ctx": int(image.normal_context.shape[1]),
            "n_normal_prompts_image": image.n_normal_prompts,
            "n_normal_prompts_pixel": pixel.n_normal_prompts,
            "n_learned_anomaly_prompts": image.n_learned_anomaly_prompts,
            "n_ctx_anomaly": int(image.anomaly_context.shape[1]),
            "memory_layers": list(self.memory_layers),
            "memory_tap": self.memory_tap,
            "k_shot": self.k_shot,
            "position_embedding": self.position_embedding,
        }

    # ------------------------------------------------------------------------------------------ learned state
    def learned_state_dict(self) -> dict[str, torch.Tensor]:
        """The learned contexts of both heads, their text prototypes and the vision memories (detached, on the CPU)."""
        return learned_tensors(self, LEARNED_PREFIXES)

    def load_learned_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load :meth:`learned_state_dict` output: the model then scores as the one it came from.

        The text prototypes are restored, not recomputed (the prompts of the class need not be built to score).

        Raises:
            ValueError: naming the first missing, unexpected or wrongly shaped key.
        """
        load_learned_tensors(self, state, LEARNED_PREFIXES, "PromptAD")

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Check that a checkpoint was made with the same image tower before loading it."""
        self.vision.check_state_dict(state_dict, f"{prefix}vision.positional_embedding", f"PromptAD ({self.backbone})")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
