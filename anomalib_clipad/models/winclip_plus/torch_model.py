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
loaded), the window indices in non-persistent buffers. :meth:`WinCLIPPlusModel.setup` fills them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from anomalib_clipad.models.learned_state import REFERENCE_PREFIX, learned_tensors, load_learned_tensors

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "ViT-B-16-plus-240"
DEFAULT_PRETRAINED = "laion400m_e31"
TEMPERATURE = 0.07
"""The temperature ``tau`` of eq. 1 (CLIP's, as in the paper)."""
MODEL_NAME = "WinCLIPPlusModel"
PATCH_MEMORY = "patch"
"""Key of the patch memory ``R^P`` in :attr:`WinCLIPPlusModel.memories`; the window memories are ``window_<scale>``."""


class WinCLIPNotReadyError(ModelNotReadyError):
    """Raised when the model is used before :meth:`WinCLIPPlusModel.setup` gave it a class name (or references)."""


@dataclass
class WinCLIPFeatures:
    """The features of a batch that WinCLIP / WinCLIP+ score.

    Attributes:
        image: ``(B, D)`` image embedding ``f(x)`` (projected class token).
        windows: one ``(B, n_windows, D)`` tensor of window embeddings ``F^W`` per scale.
        patches: ``(B, N, width)`` penultimate patch features ``F^P`` (last block's patch tokens after ``ln_post``,
            i.e. the feature map right before CLIP's pooling/projection).
        grid_size: ``(rows, columns)`` of the patch grid, ``N = rows * columns``.
    """

    image: torch.Tensor
    windows: list[torch.Tensor]
    patches: torch.Tensor
    grid_size: tuple[int, int]


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
            class in :meth:`setup`.
        include_image_score_in_map: include the image-level score in the harmonic multi-scale aggregation of the
            zero-shot map (paper §4.2, "(c) image-scale feature"). Set ``False`` for windows only.

    Attributes:
        vision: the frozen image tower.
        text: the frozen text tower.
        clip_hparams: what the CLIP builder decided (``quick_gelu``, ``weight_source``), for the Lightning model's
            hyper-parameters.
        prototypes: ``[t_normal, t_anomalous]`` (buffer ``prototypes.features``), empty until :meth:`setup_text`.
        memories: the reference memories ``R^P`` (key ``"patch"``) and ``R^W`` of each scale (``"window_<scale>"``),
            empty until :meth:`setup_references`.

    Raises:
        UnknownBackboneError: ``backbone`` is not an open_clip architecture.
        PretrainedWeightsError: the weights cannot be loaded.
        ValueError: invalid scales or image size.
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
    ) -> None:
        super().__init__()
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

        for scale in self.scales:  # window masks w_ij of each scale, as patch indices (n_windows, k * k)
            self.register_buffer(f"window_indices_{scale}", window_indices(self.grid_size, scale), persistent=False)
        # Filled by setup(); empty until then (loading a state dict gives them the stored sizes).
        embed_dim = self.vision.output_dim
        self.prototypes = TextPrototypes(embed_dim)  # [t_normal, t_anomalous]
        self.memories = nn.ModuleDict({PATCH_MEMORY: ReferenceMemory(self.vision.width)})  # R^P
        for scale in self.scales:
            self.memories[f"window_{scale}"] = ReferenceMemory(embed_dim)  # R^W_s, R^W_m

    # ------------------------------------------------------------------------------------------------ set-up
    @torch.no_grad()
    def setup(
        self,
        class_name: str | None = None,
        reference_images: torch.Tensor | None = None,
        task_specific_states: Sequence[str] | None = None,
    ) -> None:
        """Build the text prototypes of a class and, for WinCLIP+, the reference memories.

        Args:
            class_name: the object name used in prompts (e.g. ``"bottle"``). Needed on the first call; later calls
                may leave it out to only change the references.
            reference_images: ``(K, 3, H, W)`` CLIP-normalised normal images, or ``None`` for zero-shot (clears any
                memory).
            task_specific_states: extra anomalous state phrases for this class (``{}`` = class name), e.g.
                ``["{} with broken large"]``, added to the generic ones.

        Raises:
            WinCLIPNotReadyError: no class name was ever given.
            ValueError: invalid reference images (wrong shape, grayscale, none).
        """
        if class_name is not None:
            self.setup_text(class_name, task_specific_states)
        else:
            self._require_ready(
                {"text prototypes": self.prototypes.is_ready},
                "give setup a class name (e.g. class_name='bottle') to build its prompts.",
            )
        self.setup_references(reference_images)

    @torch.no_grad()
    def setup_text(self, class_name: str, task_specific_states: Sequence[str] | None = None) -> None:
        """Compute ``[t_normal, t_anomalous]`` with the compositional prompt ensemble (§4.1).

        Args:
            class_name: the object name used in prompts (e.g. ``"bottle"``).
            task_specific_states: extra anomalous state phrases for this class (``{}`` = class name).

        Raises:
            WinCLIPNotReadyError: empty class name.
        """
        if not class_name or not class_name.strip():
            msg = "A non-empty class name is needed for WinCLIP's prompts (e.g. 'bottle')."
            raise WinCLIPNotReadyError(msg)
        anomalous_states = [*self.anomalous_states, *(task_specific_states or [])]
        normal_prompts = compositional_prompts(class_name, self.normal_states, self.templates)
        anomalous_prompts = compositional_prompts(class_name, anomalous_states, self.templates)
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
    def setup_references(self, reference_images: torch.Tensor | None, batch_size: int = 8) -> None:
        """Fill the memories ``R^W_s, R^W_m, R^P`` from ``K`` normal images (§4.3); ``None`` clears them.

        Args:
            reference_images: ``(K, 3, H, W)`` CLIP-normalised normal images, or ``None`` for zero-shot.
            batch_size: images encoded at once.

        Raises:
            WinCLIPNotReadyError: no text prototypes yet (the image checks need them).
            ValueError: invalid reference images (wrong shape, grayscale, none).
        """
        if reference_images is None:
            for memory in self.memories.values():
                memory.clear()
            return
        self._validate(reference_images)
        if reference_images.shape[0] < 1:
            msg = "Expected at least one reference image for WinCLIP+."
            raise ValueError(msg)
        chunks = [self.encode(chunk) for chunk in reference_images.split(batch_size)]
        self.memories[PATCH_MEMORY].fill(torch.cat([chunk.patches for chunk in chunks]))
        for index, scale in enumerate(self.scales):
            self.memories[f"window_{scale}"].fill(torch.cat([chunk.windows[index] for chunk in chunks]))

    # ---------------------------------------------------------------------------------------------- features
    def encode(self, images: torch.Tensor) -> WinCLIPFeatures:
        """Image embedding, window embeddings of every scale (eq. 2) and penultimate patch features, in one pass."""
        last_layer = self.vision.num_layers
        features = self.vision(
            images,
            patch_layers=(last_layer,),
            windows=[self.window_indices(scale) for scale in self.scales],
        )
        return WinCLIPFeatures(
            image=features.class_token,
            windows=features.window_tokens,
            patches=self.vision.ln_post(features.patch_tokens[last_layer]),
            grid_size=features.grid_size,
        )

    # ------------------------------------------------------------------------------------------------ scores
    def anomaly_probability(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``ascore_0``: ``softmax(<f, [t_n, t_a]> / tau)[anomalous]`` for embeddings ``(..., D)`` (eq. 1)."""
        return scoring.anomaly_probability(embeddings, self.text_prototypes, 1 / self.temperature)

    def zero_shot_map(self, features: WinCLIPFeatures, image_score: torch.Tensor) -> torch.Tensor:
        """WinCLIP's zero-shot map ``(B, N)`` (§4.2).

        Per scale, the window scores are harmonically averaged over the windows covering each patch (eq. 3); the
        scales (and the image-level score) are then combined by a harmonic mean.
        """
        n_patches = features.grid_size[0] * features.grid_size[1]
        maps = [
            aggregate_windows(self.anomaly_probability(windows), self.window_indices(scale), n_patches, "harmonic")
            for scale, windows in zip(self.scales, features.windows, strict=True)
        ]
        if self.include_image_score_in_map:
            maps.append(image_score[:, None].expand(-1, n_patches))
        return harmonic_mean(torch.stack(maps), dim=0)

    def few_shot_map(self, features: WinCLIPFeatures) -> torch.Tensor:
        """WinCLIP+'s vision-based map ``M^W`` ``(B, N)`` (eq. 4-5).

        The mean of the patch, small- and mid-window associations; window associations are spread to patches by
        harmonic averaging.
        """
        self._require_ready(
            {"reference memory": self.is_few_shot},
            "call setup(class_name, reference_images) with K >= 1 normal images (the Lightning model does so when "
            "k_shot > 0).",
        )
        n_patches = features.grid_size[0] * features.grid_size[1]
        maps = [self.memories[PATCH_MEMORY].distance(features.patches)]
        for scale, windows in zip(self.scales, features.windows, strict=True):
            window_scores = self.memories[f"window_{scale}"].distance(windows)
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
            WinCLIPNotReadyError: :meth:`setup` has not been called with a class name.
            ValueError: wrong image shape (grayscale, other size).
        """
        self._validate(images)
        features = self.encode(images)
        image_score = self.anomaly_probability(features.image)
        anomaly_map = self.zero_shot_map(features, image_score)
        if self.is_few_shot:
            vision_map = self.few_shot_map(features)
            anomaly_map = (anomaly_map + vision_map) / 2
            image_score = (image_score + vision_map.amax(dim=-1)) / 2  # eq. 6
        anomaly_map = scoring.upsample(anomaly_map.reshape(-1, *features.grid_size), images.shape[-2:])
        return InferenceBatch(pred_score=image_score, anomaly_map=anomaly_map)

    # --------------------------------------------------------------------------------------------- helpers
    def window_indices(self, scale: int) -> torch.Tensor:
        """Patch indices ``(n_windows, scale ** 2)`` of the windows of one scale."""
        return getattr(self, f"window_indices_{scale}")

    def window_memory(self, scale: int) -> torch.Tensor:
        """The normalised reference memory ``R^W`` of the windows of one scale ``(K * n_windows, D)``."""
        return self.memories[f"window_{scale}"].features

    @property
    def patch_memory(self) -> torch.Tensor:
        """The normalised patch memory ``R^P`` ``(K * N, width)``; ``(0, width)`` for zero-shot."""
        return self.memories[PATCH_MEMORY].features

    @property
    def text_prototypes(self) -> torch.Tensor:
        """``[t_normal, t_anomalous]`` ``(2, D)``; ``(0, D)`` before :meth:`setup_text`."""
        return self.prototypes.features

    @property
    def is_ready(self) -> bool:
        """Whether the text prototypes are set (by :meth:`setup` or a loaded state dict), so inference can run."""
        return self.prototypes.is_ready

    @property
    def is_few_shot(self) -> bool:
        """Whether reference memories are set (WinCLIP+)."""
        return self.memories[PATCH_MEMORY].is_ready

    @property
    def k_shot(self) -> int:
        """Number of reference images in the memories (0 for zero-shot WinCLIP)."""
        return self.patch_memory.shape[0] // (self.grid_size[0] * self.grid_size[1])

    # ------------------------------------------------------------------------------------------ learned state
    def architecture(self) -> dict[str, Any]:
        """Backbone, input size and window scales (they shape the window memories)."""
        return {"backbone": self.backbone, "image_size": self.image_size, "scales": list(self.scales)}

    def learned_state_dict(self) -> dict[str, torch.Tensor]:
        """The text prototypes of the class and, for WinCLIP+, the window and patch memories (detached, on the CPU)."""
        prefixes = ("prototypes.", REFERENCE_PREFIX) if self.is_few_shot else ("prototypes.",)
        return learned_tensors(self, prefixes)

    def load_learned_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load :meth:`learned_state_dict` output; a state without memories makes the model zero-shot WinCLIP.

        Raises:
            ValueError: naming the first missing, unexpected or wrongly shaped key.
        """
        load_learned_tensors(self, state, ("prototypes.", REFERENCE_PREFIX), MODEL_NAME, (REFERENCE_PREFIX,))
        if not any(name.startswith(REFERENCE_PREFIX) for name in state):
            self.setup_references(None)

    @staticmethod
    def _require_ready(parts: dict[str, bool], how: str) -> None:
        """:func:`~anomalib_clipad.components.readiness.require_ready`, raising :class:`WinCLIPNotReadyError`."""
        try:
            require_ready(MODEL_NAME, parts, how)
        except ModelNotReadyError as error:
            raise WinCLIPNotReadyError(str(error)) from None

    def _validate(self, images: torch.Tensor) -> None:
        self._require_ready(
            {"text prototypes": self.prototypes.is_ready},
            "call setup(class_name=...) first (the Lightning model does so from `class_name` or the datamodule's "
            "category).",
        )
        validate_images(images, (self.image_size, self.image_size))
