# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""DevPrompt: deviation-guided prompt learning for few-normal-shot anomaly detection (Poudineh & Lalonde, 2026).

DevPrompt keeps PromptAD's pipeline and replaces its prompt learner and loss:

* **Backbone** (as PromptAD): VV-CLIP, a frozen CLIP ViT whose dual-path V-V stream (from block ``vv_start_layer``,
  every block by default) gives the patch embeddings ``z_p`` (``ln_post`` + projection of the V-V tokens after the
  last block).
* **Prompts** (paper eq. 2): one learnable context ``C = [c_1 .. c_n]`` shared by a normal and an abnormal prompt with
  fixed, class-aware suffixes: ``T_n = [C; "normal {cls}."]``, ``T_a = [C; "defective {cls}."]``;
  ``e_n = g(T_n)``, ``e_a = g(T_a)`` (eq. 1).
* **Patch-to-prompt alignment** (eq. 3): ``s_n(p) = cos(z_p, e_n)``, ``s_a(p) = cos(z_p, e_a)``.
* **Deviation** (eq. 5, Algorithm 1): the patch score is the abnormal alignment, ``s(p) = s_a(p)``, and
  ``d(p) = |s(p) - mu_r| / sigma_r`` against DevNet's N(0, 1) reference scores; Top-K MIL gives the image's bag
  deviation ``D(x)`` (eq. 6-7); training minimises the deviation loss (eq. 8), see :mod:`.loss`.
* **Anomalous bags** (y = 1; our interpretation, the paper does not say where they come from): synthesised once from
  the k normal shots with anomalib's :class:`~anomalib.data.utils.generators.perlin.PerlinAnomalyGenerator`, a fixed
  bank of ``n_synthetic_per_shot`` images per shot whose features are cached like the shots' own. Each training step
  pairs every shot (y = 0) with one of its synthesised anomalies (y = 1), cycling through the bank, so a batch is
  half normal and half anomalous as in DevNet. ``synthesize_anomalies=False`` trains on the normal bags only.
* **Vision memory** (as PromptAD): original-path patch tokens of the shots after blocks 3 and 8;
  ``M_v = mean_l min_r (1 - cos) / 2``.
* **Scores** (probabilities in [0, 1]): a deviation is a |z|-score under the Gaussian prior, turned into the two-sided
  confidence ``P(d) = erf(d / sqrt(2))``. Pixel map ``1 / (1 / M_v + 1 / P(d(p)))`` on the patch grid, upsampled
  bilinearly and Gaussian-smoothed (sigma 4 at 400 px, scaled with the input size); image score
  ``1 / (1 / max M_v + 1 / P(D(x)))`` (PromptAD's reciprocal fusion).

Only the context ``C`` is trainable. The image encoder runs once per shot and once per synthesised anomaly (at
setup); every training step runs the text encoder on the two prompts and a matrix product on cached features.

Paper: https://arxiv.org/abs/2601.15453
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.data import InferenceBatch
from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator
from torch import nn

from anomalib_clipad.clip.loading import load_clip
from anomalib_clipad.clip.text import ClipTextTower, splice_context
from anomalib_clipad.clip.vision import ClipVisionTower, validate_images
from anomalib_clipad.components.fusion import gaussian_smooth, reciprocal_fusion, upsample
from anomalib_clipad.components.memory import associate, build_memory
from anomalib_clipad.models.common import CLIP_MEAN, CLIP_STD

from .loss import DeviationLoss, deviation_to_probability, patch_deviation, top_k_bag_deviation

BACKBONE = "ViT-B-16-plus-240"
PRETRAINED = "laion400m_e32"
IMAGE_SIZE = 240
NORMAL_SUFFIX = "normal {}"
ANOMALOUS_SUFFIX = "defective {}"
SMOOTHING_SIGMA_AT_400 = 4.0
ENCODER_CHUNK = 16


class SharedContextPromptLearner(nn.Module):
    """Normal and abnormal prompts sharing one learnable context (paper eq. 2).

    ``T_n = [C; suffix_n]`` and ``T_a = [C; suffix_a]``: the prompts are tokenised from placeholders
    (``"X X X X normal bottle."``) and the placeholders' embeddings are replaced by ``C`` (CoOp-style splice).

    Args:
        width: token width of the text tower.
        n_ctx: number of learnable context vectors (PromptAD's 4).
        normal_suffix: fixed normal suffix, ``{}`` standing for the class name.
        anomalous_suffix: fixed abnormal suffix, ``{}`` standing for the class name.
        context_length: token positions of the text tower.
        init_std: standard deviation of the context's N(0, std^2) initialisation (PromptAD's 0.02).

    Raises:
        ValueError: a suffix has no ``{}`` placeholder, or ``n_ctx < 1``.
    """

    def __init__(
        self,
        width: int,
        n_ctx: int = 4,
        *,
        normal_suffix: str = NORMAL_SUFFIX,
        anomalous_suffix: str = ANOMALOUS_SUFFIX,
        context_length: int = 77,
        init_std: float = 0.02,
    ) -> None:
        """Create the context ``C`` and empty prompt tokens (set by :meth:`set_class_name`)."""
        super().__init__()
        if n_ctx < 1:
            msg = f"DevPrompt needs at least one learnable context vector, got n_ctx={n_ctx}."
            raise ValueError(msg)
        for name, suffix in (("normal_suffix", normal_suffix), ("anomalous_suffix", anomalous_suffix)):
            if suffix.count("{}") != 1:
                msg = f"{name} must contain the class-name placeholder '{{}}' exactly once, got {suffix!r}."
                raise ValueError(msg)
        self.n_ctx = n_ctx
        self.normal_suffix = normal_suffix
        self.anomalous_suffix = anomalous_suffix
        self.context = nn.Parameter(torch.randn(n_ctx, width) * init_std)
        self.register_buffer("tokens", torch.zeros(2, context_length, dtype=torch.long))

    def prompts(self, class_name: str) -> list[str]:
        """The placeholder texts ``[T_n, T_a]`` of a class (``X`` marks a learnable context position)."""
        placeholder = " ".join(["X"] * self.n_ctx)
        return [
            f"{placeholder} {self.normal_suffix.format(class_name)}.",
            f"{placeholder} {self.anomalous_suffix.format(class_name)}.",
        ]

    def set_class_name(self, text: ClipTextTower, class_name: str) -> None:
        """Tokenise the two prompts of ``class_name`` into the ``tokens`` buffer."""
        self.tokens = text.tokenize(self.prompts(class_name)).to(self.tokens.device)

    def forward(self, text: ClipTextTower) -> torch.Tensor:
        """Raw text embeddings ``(2, D)`` of ``[T_n, T_a]`` (normalise before taking cosines)."""
        embeddings = splice_context(text.embed_tokens(self.tokens), self.context, start=1)
        return text(self.tokens, token_embeddings=embeddings)


def synthesize_anomalies(
    images: torch.Tensor,
    n_per_image: int,
    seed: int,
    *,
    anomaly_source_path: str | Path | None = None,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    max_attempts: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthesise anomalous images from normal ones with anomalib's Perlin-noise anomaly generator.

    The normalised images are brought back to ``[0, 1]`` pixels, each gets ``n_per_image`` Perlin anomalies (noise
    textures, or textures from ``anomaly_source_path`` as in DRAEM), and the results are normalised again. The
    generation is seeded (the global RNG is left untouched) and runs on the CPU, so it is reproducible on any device.

    Args:
        images: ``(k, 3, H, W)`` normalised normal images.
        n_per_image: anomalies per image.
        seed: seed of the generation.
        anomaly_source_path: optional folder of texture images (e.g. DTD); ``None`` uses Perlin noise textures.
        mean: per-channel mean of the images' normalisation.
        std: per-channel standard deviation of the images' normalisation.
        max_attempts: regenerations allowed for an image whose anomaly mask came out empty.

    Returns:
        ``(k, n_per_image, 3, H, W)`` normalised anomalous images and their ``(k, n_per_image, H, W)`` masks.

    Raises:
        ValueError: ``n_per_image < 1`` or images not ``(k, 3, H, W)``.
        RuntimeError: an image got no anomaly in ``max_attempts`` tries.
    """
    if n_per_image < 1:
        msg = f"n_synthetic_per_shot must be at least 1 when anomalies are synthesised, got {n_per_image}."
        raise ValueError(msg)
    validate_images(images)
    device, dtype = images.device, images.dtype
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    pixels = (images.detach().float().cpu() * std_t + mean_t).clamp(0, 1)
    repeated = pixels.repeat_interleave(n_per_image, dim=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Built inside the seeded scope: its constructor draws a random solarisation threshold.
        generator = PerlinAnomalyGenerator(anomaly_source_path=anomaly_source_path, probability=1.0)
        anomalous, masks = generator(repeated)
        for _ in range(max_attempts):
            empty = (masks.flatten(1).amax(dim=1) == 0).nonzero().flatten()
            if empty.numel() == 0:
                break
            anomalous[empty], masks[empty] = generator(repeated[empty])
    if (masks.flatten(1).amax(dim=1) == 0).any():
        msg = f"The Perlin generator produced an empty anomaly mask {max_attempts + 1} times in a row."
        raise RuntimeError(msg)
    anomalous = ((anomalous.clamp(0, 1) - mean_t) / std_t).to(device=device, dtype=dtype)
    k, _, height, width = images.shape
    return anomalous.view(k, n_per_image, 3, height, width), masks.view(k, n_per_image, height, width).to(device)


class DevPromptModel(nn.Module):
    """DevPrompt's torch model: frozen VV-CLIP, shared-context prompts, deviation scoring and vision memory.

    Call :meth:`setup` with the class name and the k normal shots before training or inference.

    Args:
        backbone: open_clip architecture name.
        pretrained: open_clip pretrained tag, local weight file, or ``None`` (random weights, tests only).
        image_size: input size (the pre-processor resizes to it).
        n_ctx: learnable context vectors shared by both prompts.
        normal_suffix: fixed normal suffix (``{}`` = class name).
        anomalous_suffix: fixed abnormal suffix (``{}`` = class name).
        memory_layers: blocks (1-indexed) whose original-path patch tokens form the vision memory.
        vv_start_layer: first block with a V-V path (1 = all blocks, as PromptAD).
        top_k_ratio: K of the Top-K MIL as a fraction of the patches.
        deviation_margin: the confidence margin a of the deviation loss.
        deviation_weight: the deviation coefficient lambda of the normal term.
        n_reference_samples: reference scores drawn from N(0, 1) per training step.
        synthesize_anomalies: synthesise anomalous bags from the shots (otherwise train on normal bags only).
        n_synthetic_per_shot: synthesised anomalies per shot (fixed bank, generated once).
        anomaly_source_path: optional texture folder for the Perlin generator (``None``: noise textures).
        smoothing_sigma: Gaussian sigma of the map at 400 px (scaled to the input size).
        seed: seed of the anomaly synthesis.

    Raises:
        ValueError: an invalid hyper-parameter (layer out of range, bad ratio, margin, suffix ...).
    """

    def __init__(
        self,
        backbone: str = BACKBONE,
        pretrained: str | Path | None = PRETRAINED,
        image_size: int = IMAGE_SIZE,
        *,
        n_ctx: int = 4,
        normal_suffix: str = NORMAL_SUFFIX,
        anomalous_suffix: str = ANOMALOUS_SUFFIX,
        memory_layers: Sequence[int] = (3, 8),
        vv_start_layer: int = 1,
        top_k_ratio: float = 0.1,
        deviation_margin: float = 5.0,
        deviation_weight: float = 1.0,
        n_reference_samples: int = 5000,
        synthesize_anomalies: bool = True,
        n_synthetic_per_shot: int = 10,
        anomaly_source_path: str | Path | None = None,
        smoothing_sigma: float = SMOOTHING_SIGMA_AT_400,
        seed: int = 0,
    ) -> None:
        """Build the frozen CLIP towers, the prompt learner and the loss."""
        super().__init__()
        clip = load_clip(backbone, pretrained)
        self.backbone = backbone
        self.vision = ClipVisionTower(clip.visual)
        self.text = ClipTextTower(clip, backbone)
        for parameter in [*self.vision.parameters(), *self.text.parameters()]:
            parameter.requires_grad_(False)
        self.memory_layers = tuple(int(layer) for layer in memory_layers)
        self.vv_start_layer = vv_start_layer
        for layer in (*self.memory_layers, vv_start_layer):
            if not 1 <= layer <= self.vision.num_layers:
                msg = f"Layer {layer} does not exist: {backbone} has image blocks 1..{self.vision.num_layers}."
                raise ValueError(msg)
        if synthesize_anomalies and n_synthetic_per_shot < 1:
            msg = f"n_synthetic_per_shot must be at least 1 when anomalies are synthesised, got {n_synthetic_per_shot}."
            raise ValueError(msg)
        self.image_size = (image_size, image_size)
        self.prompt_learner = SharedContextPromptLearner(
            self.text.width,
            n_ctx,
            normal_suffix=normal_suffix,
            anomalous_suffix=anomalous_suffix,
            context_length=self.text.context_length,
        )
        self.loss = DeviationLoss(
            margin=deviation_margin,
            normal_weight=deviation_weight,
            top_k_ratio=top_k_ratio,
            n_reference_samples=n_reference_samples,
        )
        self.synthesize_anomalies = synthesize_anomalies
        self.n_synthetic_per_shot = n_synthetic_per_shot
        self.anomaly_source_path = anomaly_source_path
        self.smoothing_sigma = smoothing_sigma
        self.seed = seed

        # Inference state: in the checkpoint and the exported graph.
        for layer in self.memory_layers:
            self.register_buffer(f"memory_{layer}", torch.empty(0, self.vision.width))
        self.register_buffer("text_features", torch.zeros(2, self.vision.output_dim))
        # Training cache: cosine-ready patch embeddings of the shots and of their synthesised anomalies.
        self.register_buffer("normal_patch_embeddings", torch.empty(0), persistent=False)
        self.register_buffer("anomalous_patch_embeddings", torch.empty(0), persistent=False)
        self.image_encoder_calls = 0

    # ------------------------------------------------------------------ set-up
    @property
    def is_setup(self) -> bool:
        """Whether the vision memory has been built."""
        return getattr(self, f"memory_{self.memory_layers[0]}").shape[0] > 0

    def encode_images(self, images: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor, tuple[int, int]]:
        """One pass of the image tower.

        Returns:
            Original-path patch tokens of the memory layers (``layer -> (B, P, width)``), L2-normalised patch
            embeddings ``z_p / ||z_p||`` of the V-V stream ``(B, P, D)``, and the patch grid size.
        """
        self.image_encoder_calls += 1
        last = self.vision.num_layers
        features = self.vision(
            images, patch_layers=self.memory_layers, vv_start_layer=self.vv_start_layer, vv_layers=(last,)
        )
        patch_embeddings = F.normalize(self.vision.project(features.vv_tokens[last]), dim=-1)
        return features.patch_tokens, patch_embeddings, features.grid_size

    def _encode_in_chunks(self, images: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        tokens: dict[int, list[torch.Tensor]] = {layer: [] for layer in self.memory_layers}
        embeddings = []
        for chunk in images.split(ENCODER_CHUNK):
            chunk_tokens, chunk_embeddings, _ = self.encode_images(chunk)
            for layer in self.memory_layers:
                tokens[layer].append(chunk_tokens[layer])
            embeddings.append(chunk_embeddings)
        return {layer: torch.cat(parts) for layer, parts in tokens.items()}, torch.cat(embeddings)

    @torch.no_grad()
    def setup(self, class_name: str, shots: torch.Tensor) -> None:
        """Tokenise the prompts, build the vision memory and cache the training features.

        Args:
            class_name: object name used in the prompt suffixes (e.g. ``"metal nut"``).
            shots: ``(k, 3, H, W)`` normalised normal reference images.

        Raises:
            ValueError: bad images (rank, channels, size) or an empty class name.
        """
        if not class_name or not class_name.strip():
            msg = "DevPrompt needs a non-empty class name for its prompts."
            raise ValueError(msg)
        validate_images(shots, self.image_size)
        self.prompt_learner.set_class_name(self.text, class_name)
        tokens, embeddings = self._encode_in_chunks(shots)
        for layer in self.memory_layers:
            setattr(self, f"memory_{layer}", build_memory(tokens[layer]))
        self.normal_patch_embeddings = embeddings
        if self.synthesize_anomalies:
            anomalous, _ = synthesize_anomalies(
                shots, self.n_synthetic_per_shot, self.seed, anomaly_source_path=self.anomaly_source_path
            )
            _, anomalous_embeddings = self._encode_in_chunks(anomalous.flatten(0, 1))
            self.anomalous_patch_embeddings = anomalous_embeddings.unflatten(0, anomalous.shape[:2])
        else:
            self.anomalous_patch_embeddings = torch.empty(0, device=shots.device)
        self.update_text_features()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Give the memory buffers the stored shapes (their size depends on k and the input size) before loading."""
        for layer in self.memory_layers:
            stored = state_dict.get(f"{prefix}memory_{layer}")
            if stored is not None:
                current = getattr(self, f"memory_{layer}")
                setattr(self, f"memory_{layer}", torch.empty_like(stored, device=current.device, dtype=current.dtype))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True) -> DevPromptModel:
        """Switch mode; entering eval mode refreshes the stored text features from the learned context."""
        super().train(mode)
        if not mode and self.is_setup:
            self.update_text_features()
        return self

    # ------------------------------------------------------------------ text side
    def prompt_features(self) -> torch.Tensor:
        """L2-normalised ``[e_n, e_a]`` ``(2, D)`` from the current context (differentiable)."""
        return F.normalize(self.prompt_learner(self.text), dim=-1)

    @torch.no_grad()
    def update_text_features(self) -> None:
        """Store the current ``[e_n, e_a]`` in the ``text_features`` buffer used at inference."""
        self.text_features = self.prompt_features().detach().to(self.text_features.dtype)

    # ------------------------------------------------------------------ training
    def training_bags(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached bags of one step: every shot (y = 0) and, if synthesised, one anomaly per shot (y = 1).

        The anomaly of shot ``i`` at step ``t`` is bank entry ``t mod n_synthetic_per_shot``.

        Returns:
            Patch embeddings ``(B, P, D)`` and labels ``(B,)``.

        Raises:
            RuntimeError: :meth:`setup` has not run.
        """
        if self.normal_patch_embeddings.numel() == 0:
            msg = "DevPrompt has no cached training features: call setup(class_name, shots) first."
            raise RuntimeError(msg)
        normal = self.normal_patch_embeddings
        labels = torch.zeros(normal.shape[0], device=normal.device)
        if self.anomalous_patch_embeddings.numel() == 0:
            return normal, labels
        anomalous = self.anomalous_patch_embeddings[:, step % self.anomalous_patch_embeddings.shape[1]]
        return torch.cat([normal, anomalous]), torch.cat([labels, torch.ones_like(labels)])

    def training_loss(self, step: int) -> torch.Tensor:
        """Deviation loss with Top-K MIL of one training step (paper eq. 3-8, Algorithm 1).

        Args:
            step: the global step (chooses the synthesised anomalies of this step).

        Returns:
            Scalar loss, differentiable with respect to the context ``C`` only.
        """
        embeddings, labels = self.training_bags(step)
        abnormal_prompt = self.prompt_features()[1]
        patch_scores = embeddings @ abnormal_prompt  # s(p) = s_a(p) = cos(z_p, e_a), eq. 3
        return self.loss(patch_scores, labels)

    # ------------------------------------------------------------------ inference
    def patch_alignment(self, patch_embeddings: torch.Tensor) -> torch.Tensor:
        """Patch-to-prompt alignment ``[s_n(p), s_a(p)]`` ``(B, P, 2)`` with the stored text features (eq. 3)."""
        return patch_embeddings @ self.text_features.T

    def vision_scores(self, patch_tokens: dict[int, torch.Tensor]) -> torch.Tensor:
        """Vision-guided patch scores ``M_v`` ``(B, P)``: mean over the memory layers of ``min (1 - cos) / 2``."""
        maps = [associate(patch_tokens[layer], getattr(self, f"memory_{layer}")) for layer in self.memory_layers]
        return torch.stack(maps).mean(dim=0)

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Score a batch of normalised images.

        Args:
            images: ``(B, 3, H, W)`` normalised images of the model's input size.

        Returns:
            ``InferenceBatch`` with ``pred_score`` ``(B,)`` and ``anomaly_map`` ``(B, H, W)``, both in [0, 1].

        Raises:
            RuntimeError: :meth:`setup` has not run.
            ValueError: wrong image rank, channels or size.
        """
        if not self.is_setup:
            msg = "DevPrompt has no vision memory or prompts: call setup(class_name, shots) (anomalib does on fit)."
            raise RuntimeError(msg)
        validate_images(images, self.image_size)
        patch_tokens, patch_embeddings, grid_size = self.encode_images(images)
        vision = self.vision_scores(patch_tokens)
        abnormal_alignment = self.patch_alignment(patch_embeddings)[..., 1]  # s(p) = s_a(p)
        deviation = patch_deviation(abnormal_alignment, self.loss.prior_mean, self.loss.prior_std)
        bag_deviation = top_k_bag_deviation(deviation, self.loss.top_k_ratio)
        pixel = reciprocal_fusion(vision, deviation_to_probability(deviation))
        image = reciprocal_fusion(vision.amax(dim=1), deviation_to_probability(bag_deviation))
        anomaly_map = upsample(pixel.unflatten(1, grid_size), images.shape[-2:])
        anomaly_map = gaussian_smooth(anomaly_map, self.smoothing_sigma * images.shape[-1] / 400.0)
        return InferenceBatch(pred_score=image, anomaly_map=anomaly_map)
