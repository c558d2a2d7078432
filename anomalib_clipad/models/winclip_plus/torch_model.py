# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""WinCLIP / WinCLIP+ (Jeong et al., CVPR 2023) as a plain PyTorch module.

The forward pass follows the paper's sections:

* **4.1 Compositional prompt ensemble (CPE).** Every template is combined with every normal / anomalous state phrase;
  each class prototype is the mean of the raw text embeddings of its prompts, then L2-normalised.
  ``ascore_0(f) = softmax(<f, [t_normal, t_anomalous]> / tau)[anomalous]`` with ``tau = 0.07`` (eq. 1).
* **4.2 WinCLIP.** Window features ``F^W_ij = f(x ⊙ w_ij)`` (eq. 2): the class token of the ViT run on the tokens of one
  ``k x k`` window only, for small (2x2) and mid (3x3) windows, stride 1. Each window's zero-shot score is spread over
  its patches by harmonic averaging (eq. 3); the per-scale maps and the image-level score are then combined by a
  harmonic mean (multi-scale aggregation).
* **4.3 WinCLIP+.** Three memories of the ``K`` normal reference images: small-window, mid-window and penultimate patch
  features (``R^W_s, R^W_m, R^P``). The association ``M_ij = min_{r in R} (1 - <F_ij, r>) / 2`` (eq. 4) is computed
  per memory (window scores spread to patches by harmonic averaging), ``M^W = (M^P + M^W_s + M^W_m) / 3`` (eq. 5),
  the final map is ``(M̄^W_0 + M^W) / 2`` and the image score ``(ascore_0(f(x)) + max_ij M^W_ij) / 2`` (eq. 6).

The CLIP comes from :func:`~anomalib_clipad.clip.builder.build_clip` (position embeddings resized at load time). All
state needed at inference lives in registered buffers, so checkpoints and exported models carry it: the text
prototypes in a :class:`~anomalib_clipad.components.text_prototypes.TextPrototypes`, the three memories in
:class:`~anomalib_clipad.components.memory.ReferenceMemory` modules (both take the stored sizes when a state dict is
loaded), the window indices in non-persistent buffers. :meth:`WinCLIPPlusModel.set_class` and
:meth:`WinCLIPPlusModel.set_references` fill them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from anomalib.data import InferenceBatch
from torch import nn

from anomalib_clipad.clip.builder import RESIZE_AT_LOAD, build_clip
from anomalib_clipad.clip.vision import validate_images, window_indices
from anomalib_clipad.components import scoring
from anomalib_clipad.components.fusion import aggregate_windows, harmonic_mean
from anomalib_clipad.components.memory import ReferenceMemory
from anomalib_clipad.components.prompts import ANOMALOUS_STATES, NORMAL_STATES, WINCLIP_TEMPLATES
from anomalib_clipad.components.readiness import ModelNotReadyError, require_ready
from anomalib_clipad.components.text_prototypes import TextPrototypes

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "ViT-B-16-plus-240"
DEFAULT_PRETRAINED = "laion400m_e31"
TEMPERATURE = 0.07
"""The temperature ``tau`` of eq. 1 (CLIP's, as in the paper)."""
MODEL_NAME = "WinCLIPPlusModel"
PATCH_MEMORY = "patch"
"""Key of the patch memory ``R^P`` in :attr:`WinCLIPPlusModel.memories` and of the patch features in
:meth:`WinCLIPPlusModel.encode_images`; the window memories and features are ``window_<scale>``."""
IMAGE_KEY = "image"
"""Key of the image embedding ``f(x)`` in :meth:`WinCLIPPlusModel.encode_images`."""


class WinCLIPNotReadyError(ModelNotReadyError):
    """Raised when the model is used before :meth:`WinCLIPPlusModel.set_class` gave it a class name (or references)."""


def window_key(scale: int) -> str:
    """Key of the window memory and window features of one scale (``"window_<scale>"``)."""
    return f"window_{scale}"


def compositional_prompts(class_name: str, states: Sequence[str], templates: Sequence[str]) -> list[str]:
    """All ``template x state`` prompts of one class (paper §4.1, CPE).

    Args:
        class_name: the object name put in each state phrase, e.g. ``"metal nut"``.
        states: state phrases with ``{}`` for the class name, e.g. ``"{} with flaw"``.
        templates: templates with ``{}`` for the state phrase, e.g. ``"a photo of a {}."``.

    Returns:
        ``len(states) * len(templates)`` prompts.
    """
    return [template.format(state.format(class_name)) for state in states for template in templates]


class WinCLIPPlusModel(nn.Module):
    """WinCLIP (``k_shot = 0``) and WinCLIP+ (``k_shot > 0``) on a frozen open_clip CLIP.

    Args:
        backbone: open_clip architecture, e.g. ``"ViT-B-16-plus-240"`` (the paper's) or ``TINY_BACKBONE``.
        pretrained: open_clip pretrained tag, path to a local weight file, ``None`` for random weights (tests),
            ``"checkpoint"`` for the architecture only (weights from a state dict loaded next), or an already built
            open_clip CLIP of ``backbone`` built at ``image_size`` (see
            :func:`~anomalib_clipad.clip.builder.build_clip`).
        quick_gelu: QuickGELU activations; ``None`` decides from the weights (OpenAI: yes).
        scales: window sizes in patches; the paper uses small (2) and mid (3) windows.
        image_size: side of the square input in pixels (a multiple of the patch size); position embeddings are
            resized at load time when it differs from the backbone's.
        temperature: ``tau`` of eq. 1.
        templates: prompt templates (default: the paper's 22).
        normal_states: normal state phrases (default: the paper's 7).
        anomalous_states: generic anomalous state phrases (default: the paper's 4); task-specific ones are added per
            class in :meth:`set_class`.
        include_image_score_in_map: include the image-level score in the harmonic multi-scale aggregation of the
            zero-shot map (paper §4.2, "(c) image-scale feature"). Set ``False`` for windows only.
        k_shot: number of reference images the model is built for: ``0`` for WinCLIP, ``K > 0`` for WinCLIP+
            (:meth:`set_references` then takes exactly ``K`` images and scoring needs them); ``None`` (default):
            decided by the references given, WinCLIP+ once :meth:`set_references` filled the memories.

    Attributes:
        vision: the frozen image tower.
        text: the frozen text tower.
        clip_hparams: what the CLIP builder decided (``quick_gelu``, ``weight_source``), for the Lightning model's
            hyper-parameters.
        class_name: the class of the prompts (:meth:`set_class`), ``None`` before.
        prototypes: ``[t_normal, t_anomalous]`` (buffer ``prototypes.features``), empty until :meth:`set_class`.
        memories: the reference memories ``R^P`` (key ``"patch"``) and ``R^W`` of each scale (``"window_<scale>"``),
            empty until :meth:`set_references`.

    Raises:
        UnknownBackboneError: ``backbone`` is not an open_clip architecture.
        PretrainedWeightsError: the weights cannot be loaded.
        ValueError: invalid scales, image size or ``k_shot``.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        pretrained: str | os.PathLike | nn.Module | None = DEFAULT_PRETRAINED,
        *,
        quick_gelu: bool | None = None,
        scales: Sequence[int] = (2, 3),
        image_size: int = 240,
        temperature: float = TEMPERATURE,
        templates: Sequence[str] = WINCLIP_TEMPLATES,
        normal_states: Sequence[str] = NORMAL_STATES,
        anomalous_states: Sequence[str] = ANOMALOUS_STATES,
        include_image_score_in_map: bool = True,
        k_shot: int | None = None,
    ) -> None:
        super().__init__()
        if k_shot is not None and k_shot < 0:
            msg = f"k_shot must be 0 (zero-shot WinCLIP) or positive (WinCLIP+), got {k_shot}."
            raise ValueError(msg)
        scales = tuple(int(scale) for scale in scales)
        if not scales or len(set(scales)) != len(scales) or min(scales) < 1:
            msg = f"scales must be distinct positive window sizes (in patches), got {scales}."
            raise ValueError(msg)
        if not templates or not normal_states or not anomalous_states:
            msg = "templates, normal_states and anomalous_states must not be empty."
            raise ValueError(msg)
        towers = build_clip(
            backbone, pretrained, image_size=image_size, quick_gelu=quick_gelu, position_embedding=RESIZE_AT_LOAD
        )
        self.vision = towers.vision
        self.text = towers.text
        self.clip_hparams = towers.hparams

        self.backbone = backbone
        self.scales = scales
        self.image_size = int(image_size)
        self.temperature = float(temperature)
        self.templates = tuple(templates)
        self.normal_states = tuple(normal_states)
        self.anomalous_states = tuple(anomalous_states)
        self.include_image_score_in_map = include_image_score_in_map
        self.grid_size = self.vision.grid_size((self.image_size, self.image_size))
        self.class_name: str | None = None
        self.configured_k_shot = None if k_shot is None else int(k_shot)

        for scale in self.scales:  # window masks w_ij of each scale, as patch indices (n_windows, k * k)
            self.register_buffer(f"window_indices_{scale}", window_indices(self.grid_size, scale), persistent=False)
        # Filled by set_class() and set_references(); empty until then (a loaded state dict gives the stored sizes).
        embed_dim = self.vision.output_dim
        self.prototypes = TextPrototypes(embed_dim)  # [t_normal, t_anomalous]
        self.memories = nn.ModuleDict({PATCH_MEMORY: ReferenceMemory(self.vision.width)})  # R^P
        for scale in self.scales:
            self.memories[window_key(scale)] = ReferenceMemory(embed_dim)  # R^W_s, R^W_m

    # ------------------------------------------------------------------------------------------------ set-up
    @torch.no_grad()
    def set_class(self, class_name: str, anomaly_states: Sequence[str] | None = None) -> None:
        """Compute ``[t_normal, t_anomalous]`` with the compositional prompt ensemble (§4.1).

        Args:
            class_name: the object name used in prompts (e.g. ``"bottle"``).
            anomaly_states: extra anomalous state phrases for this class (``{}`` = class name), e.g.
                ``["{} with broken large"]``, added to the generic ones.

        Raises:
            WinCLIPNotReadyError: empty class name.
        """
        if not class_name or not class_name.strip():
            msg = "A non-empty class name is needed for WinCLIP's prompts (e.g. 'bottle')."
            raise WinCLIPNotReadyError(msg)
        all_anomalous_states = [*self.anomalous_states, *(anomaly_states or [])]
        normal_prompts = compositional_prompts(class_name, self.normal_states, self.templates)
        anomalous_prompts = compositional_prompts(class_name, all_anomalous_states, self.templates)
        prototypes = torch.stack(
            [
                self.text.encode_prompt_set(normal_prompts),
                self.text.encode_prompt_set(anomalous_prompts),
            ]
        )
        self.prototypes.set(prototypes)
        self.class_name = class_name
        logger.info(
            "WinCLIP prompts for %r: %d normal, %d anomalous.", class_name, len(normal_prompts), len(anomalous_prompts)
        )

    @torch.no_grad()
    def set_references(
        self,
        references: torch.Tensor | Mapping[str, torch.Tensor] | None,
        batch_size: int = 8,
    ) -> None:
        """Fill the memories ``R^W_s, R^W_m, R^P`` from ``K`` normal images (§4.3); ``None`` clears them (WinCLIP).

        Args:
            references: ``(K, 3, H, W)`` CLIP-normalised normal images or their :meth:`encode_images` features, or
                ``None`` for zero-shot.
            batch_size: images encoded at once.

        Raises:
            ValueError: invalid reference images (wrong shape, grayscale, none), or another number of images than the
                ``k_shot`` the model was built for.
        """
        if references is None:
            for memory in self.memories.values():
                memory.clear()
            return
        if isinstance(references, torch.Tensor):
            validate_images(references, (self.image_size, self.image_size))
            if references.shape[0] < 1:
                msg = "Expected at least one reference image for WinCLIP+."
                raise ValueError(msg)
            chunks = [self.encode_images(chunk) for chunk in references.split(batch_size)]
            features = {key: torch.cat([chunk[key] for chunk in chunks]) for key in self.memories}
        else:
            features = references
        n_references = features[PATCH_MEMORY].shape[0]
        if n_references < 1:
            msg = "Expected at least one reference image for WinCLIP+."
            raise ValueError(msg)
        if self.configured_k_shot is not None and n_references != self.configured_k_shot:
            msg = (
                f"This WinCLIP model was built for k_shot={self.configured_k_shot} reference images, got "
                f"{n_references}."
            )
            raise ValueError(msg)
        for key, memory in self.memories.items():
            memory.fill(features[key])

    @torch.no_grad()
    def update_text_features(self) -> None:
        """Nothing to do: WinCLIP learns nothing; :meth:`set_class` computes its text prototypes."""

    # ---------------------------------------------------------------------------------------------- features
    def encode_images(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image embedding, window embeddings of every scale (eq. 2) and penultimate patch features, in one pass.

        Args:
            images: ``(B, 3, image_size, image_size)`` CLIP-normalised images.

        Returns:
            ``{"image": (B, D)}`` the image embedding ``f(x)`` (projected class token); ``{"window_<scale>":
            (B, n_windows, D)}`` the window embeddings ``F^W`` of each scale; ``{"patch": (B, N, width)}`` the
            penultimate patch features ``F^P`` (last block's patch tokens after ``ln_post``, i.e. the feature map
            right before CLIP's pooling/projection), ``N`` the patches of :attr:`grid_size`.

        Raises:
            ValueError: wrong image shape (grayscale, other size).
        """
        validate_images(images, (self.image_size, self.image_size))
        last_layer = self.vision.num_layers
        features = self.vision(
            images,
            patch_layers=(last_layer,),
            windows=[self.window_indices(scale) for scale in self.scales],
        )
        output = {IMAGE_KEY: features.class_token}
        for scale, windows in zip(self.scales, features.window_tokens, strict=True):
            output[window_key(scale)] = windows
        output[PATCH_MEMORY] = self.vision.ln_post(features.patch_tokens[last_layer])
        return output

    # ------------------------------------------------------------------------------------------------ scores
    def anomaly_probability(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``ascore_0``: ``softmax(<f, [t_n, t_a]> / tau)[anomalous]`` for embeddings ``(..., D)`` (eq. 1)."""
        return scoring.anomaly_probability(embeddings, self.text_prototypes, 1 / self.temperature)

    def zero_shot_map(self, features: Mapping[str, torch.Tensor], image_score: torch.Tensor) -> torch.Tensor:
        """WinCLIP's zero-shot map ``(B, N)`` (§4.2) from :meth:`encode_images` features.

        Per scale, the window scores are harmonically averaged over the windows covering each patch (eq. 3); the
        scales (and the image-level score) are then combined by a harmonic mean.
        """
        n_patches = self.grid_size[0] * self.grid_size[1]
        maps = [
            aggregate_windows(
                self.anomaly_probability(features[window_key(scale)]), self.window_indices(scale), n_patches, "harmonic"
            )
            for scale in self.scales
        ]
        if self.include_image_score_in_map:
            maps.append(image_score[:, None].expand(-1, n_patches))
        return harmonic_mean(torch.stack(maps), dim=0)

    def few_shot_map(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """WinCLIP+'s vision-based map ``M^W`` ``(B, N)`` (eq. 4-5) from :meth:`encode_images` features.

        The mean of the patch, small- and mid-window associations; window associations are spread to patches by
        harmonic averaging.
        """
        self._require_ready(
            {"reference memory": self.references_ready},
            "call set_references(reference_images) with K >= 1 normal images (the Lightning model does so when "
            "k_shot > 0).",
        )
        n_patches = self.grid_size[0] * self.grid_size[1]
        maps = [self.memories[PATCH_MEMORY].distance(features[PATCH_MEMORY])]
        for scale in self.scales:
            window_scores = self.memories[window_key(scale)].distance(features[window_key(scale)])
            maps.append(aggregate_windows(window_scores, self.window_indices(scale), n_patches, "harmonic"))
        return torch.stack(maps).mean(dim=0)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Score a batch of CLIP-normalised images.

        Args:
            images: ``(B, 3, image_size, image_size)``.

        Returns:
            ``InferenceBatch`` with ``pred_score`` ``(B,)`` and ``anomaly_map`` ``(B, image_size, image_size)``, both
            anomaly probabilities in ``[0, 1]``.

        Raises:
            WinCLIPNotReadyError: :meth:`set_class` has not been called.
            ValueError: wrong image shape (grayscale, other size).
        """
        self.require_ready()
        features = self.encode_images(images)
        image_score = self.anomaly_probability(features[IMAGE_KEY])
        anomaly_map = self.zero_shot_map(features, image_score)
        if self.references_ready:
            vision_map = self.few_shot_map(features)
            anomaly_map = (anomaly_map + vision_map) / 2
            image_score = (image_score + vision_map.amax(dim=-1)) / 2  # eq. 6
        anomaly_map = scoring.upsample(anomaly_map.reshape(-1, *self.grid_size), images.shape[-2:])
        return InferenceBatch(pred_score=image_score, anomaly_map=anomaly_map)

    # --------------------------------------------------------------------------------------------- helpers
    def window_indices(self, scale: int) -> torch.Tensor:
        """Patch indices ``(n_windows, scale ** 2)`` of the windows of one scale."""
        return getattr(self, f"window_indices_{scale}")

    def window_memory(self, scale: int) -> torch.Tensor:
        """The normalised reference memory ``R^W`` of the windows of one scale ``(K * n_windows, D)``."""
        return self.memories[window_key(scale)].features

    @property
    def patch_memory(self) -> torch.Tensor:
        """The normalised patch memory ``R^P`` ``(K * N, width)``; ``(0, width)`` for zero-shot."""
        return self.memories[PATCH_MEMORY].features

    @property
    def text_prototypes(self) -> torch.Tensor:
        """``[t_normal, t_anomalous]`` ``(2, D)``; ``(0, D)`` before :meth:`set_class`."""
        return self.prototypes.features

    @property
    def uses_references(self) -> bool:
        """Whether scoring uses reference memories (WinCLIP+): ``k_shot > 0``.

        For a model built without ``k_shot``, whether :meth:`set_references` filled the memories.
        """
        if self.configured_k_shot is None:
            return self.references_ready
        return self.configured_k_shot > 0

    @property
    def references_ready(self) -> bool:
        """Whether reference memories are set (WinCLIP+)."""
        return self.memories[PATCH_MEMORY].is_ready

    @property
    def is_ready(self) -> bool:
        """Whether the text prototypes (and, for WinCLIP+, the memories) are set, by set-up or a loaded state dict."""
        return self.prototypes.is_ready and (self.references_ready or not self.uses_references)

    @property
    def k_shot(self) -> int:
        """Number of reference images: the ``k_shot`` the model was built for, else those in the memories."""
        if self.configured_k_shot is not None:
            return self.configured_k_shot
        return self.patch_memory.shape[0] // (self.grid_size[0] * self.grid_size[1])

    def require_ready(self) -> None:
        """Raise :class:`WinCLIPNotReadyError` when the text prototypes or (WinCLIP+) the memories are missing."""
        self._require_ready(
            {"text prototypes": self.prototypes.is_ready},
            "call set_class(class_name) first (the Lightning model does so from `class_name` or the datamodule's "
            "category).",
        )
        if self.uses_references:
            self._require_ready(
                {"reference memory": self.references_ready},
                f"call set_references(reference_images) with {self.k_shot} normal images (the Lightning model does "
                "so when k_shot > 0).",
            )

    def architecture(self) -> dict[str, Any]:
        """Backbone, input size, window scales and the number of reference images (they shape the memories)."""
        return {
            "backbone": self.backbone,
            "image_size": self.image_size,
            "scales": list(self.scales),
            "k_shot": self.k_shot,
        }

    @staticmethod
    def _require_ready(parts: dict[str, bool], how: str) -> None:
        """:func:`~anomalib_clipad.components.readiness.require_ready`, raising :class:`WinCLIPNotReadyError`."""
        try:
            require_ready(MODEL_NAME, parts, how)
        except ModelNotReadyError as error:
            raise WinCLIPNotReadyError(str(error)) from None
