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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.data import InferenceBatch
from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator
from torch import nn

from anomalib_clipad.clip.builder import INTERPOLATE_BICUBIC, block_list, build_clip
from anomalib_clipad.clip.text import ClipTextTower, splice_context
from anomalib_clipad.clip.vision import validate_images
from anomalib_clipad.components.fusion import gaussian_smooth, reciprocal_fusion
from anomalib_clipad.components.memory import LayerMemories
from anomalib_clipad.components.prompts import prompt_class_name
from anomalib_clipad.components.readiness import require_ready
from anomalib_clipad.components.scoring import scaled_sigma, upsample
from anomalib_clipad.components.text_prototypes import TextPrototypes
from anomalib_clipad.models.common import CLIP_MEAN, CLIP_STD
from anomalib_clipad.models.learned_state import REFERENCE_PREFIX, learned_tensors, load_learned_tensors

from .loss import DeviationLoss, deviation_to_probability, patch_deviation, top_k_bag_deviation

BACKBONE = "ViT-B-16-plus-240"
PRETRAINED = "laion400m_e32"
IMAGE_SIZE = 240
NORMAL_SUFFIX = "normal {}"
ANOMALOUS_SUFFIX = "defective {}"
SMOOTHING_SIGMA_AT_400 = 4.0
REFERENCE_MAP_SIZE = 400
LEARNED_PREFIXES = ("prompt_learner.", "text_prototypes.", REFERENCE_PREFIX)
"""The learned state: the shared context and its prompt tokens, the text features, the vision memory."""


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
        generator: random generator of the initialisation (``None``: torch's global one).

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
        generator: torch.Generator | None = None,
    ) -> None:
        """Create the context ``C`` and empty prompt tokens (set by :meth:`set_class`)."""
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
        self.context = nn.Parameter(torch.empty(n_ctx, width).normal_(std=init_std, generator=generator))
        self.register_buffer("tokens", torch.zeros(2, context_length, dtype=torch.long))

    def prompts(self, class_name: str) -> list[str]:
        """The placeholder texts ``[T_n, T_a]`` of a class (``X`` marks a learnable context position)."""
        placeholder = " ".join(["X"] * self.n_ctx)
        return [
            f"{placeholder} {self.normal_suffix.format(class_name)}.",
            f"{placeholder} {self.anomalous_suffix.format(class_name)}.",
        ]

    def set_class(self, text: ClipTextTower, class_name: str) -> None:
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

    Use: :meth:`set_class`, then :meth:`encode_training_images` on the k shots (once; cache the result),
    :meth:`set_references` from those features, :meth:`training_loss` per step, :meth:`update_text_features`
    after training. :meth:`setup` does the first three in one call.

    Args:
        backbone: open_clip architecture (PromptAD's ``ViT-B-16-plus-240``).
        pretrained: open_clip tag, local weight file, ``None`` (random, tests), ``"checkpoint"`` (architecture only)
            or an already built open_clip CLIP of ``backbone`` (see :func:`~anomalib_clipad.clip.builder.build_clip`).
        image_size: input size (the pre-processor resizes to it).
        quick_gelu: QuickGELU activations; ``None``: the weights' default.
        position_embedding: how position embeddings follow another input size (builder modes).
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
        seed: seed of the context initialisation and of the anomaly synthesis.

    Raises:
        ValueError: an invalid hyper-parameter (layer out of range, bad ratio, margin, suffix ...).
    """

    def __init__(
        self,
        backbone: str = BACKBONE,
        pretrained: str | nn.Module | None = PRETRAINED,
        image_size: int = IMAGE_SIZE,
        *,
        quick_gelu: bool | None = None,
        position_embedding: str = INTERPOLATE_BICUBIC,
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
        """Wrap the frozen CLIP towers; create the prompt learner and the loss."""
        super().__init__()
        self.memory_layers = block_list("memory_layers", memory_layers)
        towers = build_clip(
            backbone,
            pretrained,
            image_size=image_size,
            quick_gelu=quick_gelu,
            position_embedding=position_embedding,
            layers={"memory_layers": self.memory_layers, "vv_start_layer": vv_start_layer},
        )
        self.backbone = backbone
        self.vision, self.text = towers.vision, towers.text
        self.clip_hparams = towers.hparams
        self.position_embedding = towers.position_embedding
        if synthesize_anomalies and n_synthetic_per_shot < 1:
            msg = f"n_synthetic_per_shot must be at least 1 when anomalies are synthesised, got {n_synthetic_per_shot}."
            raise ValueError(msg)
        self.vv_start_layer = vv_start_layer
        self.image_size = (image_size, image_size)
        self.prompt_learner = SharedContextPromptLearner(
            self.text.width,
            n_ctx,
            normal_suffix=normal_suffix,
            anomalous_suffix=anomalous_suffix,
            context_length=self.text.context_length,
            generator=torch.Generator().manual_seed(seed),
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
        self.class_name: str | None = None
        # Everything inference needs is a buffer: the checkpoint and the exported graph carry it.
        self.memories = LayerMemories(self.memory_layers, self.vision.width)
        self.text_prototypes = TextPrototypes(self.vision.output_dim)  # [e_n, e_a]
        self.image_encoder_calls = 0

    # ------------------------------------------------------------------ set-up
    @property
    def uses_references(self) -> bool:
        """Always ``True``: the vision-guided map scores against the memory of the k normal shots."""
        return True

    @property
    def references_ready(self) -> bool:
        """Whether the vision memory of every memory layer holds features."""
        return self.memories.is_ready

    @property
    def is_ready(self) -> bool:
        """Whether the vision memory and the text features are there (from training or a checkpoint)."""
        return self.text_prototypes.is_ready and self.references_ready

    def require_ready(self) -> None:
        """Raise :class:`~anomalib_clipad.components.readiness.ModelNotReadyError` naming what is missing.

        Raises:
            ModelNotReadyError: no vision memory or no text features yet.
        """
        require_ready(
            "DevPrompt",
            {"vision memory": self.references_ready, "prompts": self.text_prototypes.is_ready},
            how="train it on k normal shots first (`anomalib train`, or `setup(class_name, shots)`) or load a trained "
            "checkpoint (`--ckpt_path`).",
        )

    def architecture(self) -> dict[str, Any]:
        """Backbone, input size, the context length ``n_ctx``, the memory layers and the position-embedding mode."""
        return {
            "backbone": self.backbone,
            "image_size": self.image_size[0],
            "n_ctx": self.prompt_learner.n_ctx,
            "memory_layers": list(self.memory_layers),
            "position_embedding": self.position_embedding,
        }

    @property
    def text_features(self) -> torch.Tensor:
        """The stored ``[e_n, e_a]`` ``(2, D)``, L2-normalised, used at inference."""
        return self.text_prototypes.features

    def set_class(self, class_name: str, anomaly_states: Sequence[str] | None = None) -> None:
        """Build the two prompts for a dataset category or class name (``metal_nut`` -> "metal nut").

        Args:
            class_name: dataset category or object name used in the prompt suffixes.
            anomaly_states: not supported (DevPrompt's abnormal prompt has one fixed suffix, ``anomalous_suffix``);
                must be ``None``.

        Raises:
            ValueError: empty class name, or anomaly states given.
        """
        if anomaly_states is not None:
            msg = (
                "DevPrompt has no anomalous state phrases: its abnormal prompt is the fixed `anomalous_suffix` "
                f"({self.prompt_learner.anomalous_suffix!r}); got anomaly_states={anomaly_states!r}."
            )
            raise ValueError(msg)
        self.class_name = class_name
        self.prompt_learner.set_class(self.text, prompt_class_name(class_name))

    def encode_images(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """One pass of the frozen VV-CLIP image tower.

        Args:
            images: ``(B, 3, H, W)`` normalised images of the model's input size.

        Returns:
            ``{"memory_<l>": (B, P, width)}`` raw original-path patch tokens of the memory layers and
            ``"patch_embeddings": (B, P, D)``, the L2-normalised patch embeddings ``z_p / ||z_p||`` (``ln_post`` and
            projection of the V-V stream after the last block).

        Raises:
            ValueError: grayscale, wrong rank or wrong size.
        """
        validate_images(images, self.image_size)
        self.image_encoder_calls += 1
        last = self.vision.num_layers
        features = self.vision(
            images, patch_layers=self.memory_layers, vv_start_layer=self.vv_start_layer, vv_layers=(last,)
        )
        output = {f"memory_{layer}": features.patch_tokens[layer] for layer in self.memory_layers}
        output["patch_embeddings"] = F.normalize(self.vision.project(features.vv_tokens[last]), dim=-1)
        return output

    @torch.no_grad()
    def encode_training_images(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of normal training images and, if enabled, of their synthesised anomalies (run once, cache them).

        Args:
            images: ``(k, 3, H, W)`` normalised normal images.

        Returns:
            :meth:`encode_images` of the images plus, when anomalies are synthesised,
            ``"anomalous_patch_embeddings": (k, n_synthetic_per_shot, P, D)``.
        """
        features = self.encode_images(images)
        if self.synthesize_anomalies:
            anomalous, _ = synthesize_anomalies(
                images, self.n_synthetic_per_shot, self.seed, anomaly_source_path=self.anomaly_source_path
            )
            embeddings = [self.encode_images(chunk)["patch_embeddings"] for chunk in anomalous.flatten(0, 1).split(16)]
            features["anomalous_patch_embeddings"] = torch.cat(embeddings).unflatten(0, anomalous.shape[:2])
        return features

    @torch.no_grad()
    def set_references(self, references: torch.Tensor | Mapping[str, torch.Tensor] | None) -> None:
        """Store the vision memories of the k normal shots; ``None`` clears them.

        Args:
            references: ``(k, 3, H, W)`` normalised normal images or their :meth:`encode_images` features.

        Raises:
            ValueError: bad images.
        """
        if references is None:
            self.memories.clear()
            return
        features = self.encode_images(references) if isinstance(references, torch.Tensor) else references
        self.memories.fill(features)

    def setup(self, class_name: str, shots: torch.Tensor) -> dict[str, torch.Tensor]:
        """Build prompts and vision memory from the k shots; return their training features (keep them).

        Args:
            class_name: dataset category or object name used in the prompt suffixes.
            shots: ``(k, 3, H, W)`` normalised normal reference images.

        Returns:
            The :meth:`encode_training_images` features, for :meth:`training_loss`.
        """
        self.set_class(class_name)
        features = self.encode_training_images(shots)
        self.set_references(features)
        self.update_text_features()
        return features

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Check that the checkpoint was made with the same image tower before loading it.

        Raises:
            ValueError: the checkpoint was made with another image tower.
        """
        self.vision.check_state_dict(state_dict, f"{prefix}vision.positional_embedding", f"DevPrompt ({self.backbone})")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ learned state
    def learned_state_dict(self) -> dict[str, torch.Tensor]:
        """The prompt learner (context and the class's prompt tokens), the text features and the vision memory."""
        return learned_tensors(self, LEARNED_PREFIXES)

    def load_learned_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load :meth:`learned_state_dict` output: the model then scores as the one it came from.

        Raises:
            ValueError: naming the first missing, unexpected or wrongly shaped key.
        """
        load_learned_tensors(self, state, LEARNED_PREFIXES, "DevPrompt")

    # ------------------------------------------------------------------ text side
    def prompt_features(self) -> torch.Tensor:
        """L2-normalised ``[e_n, e_a]`` ``(2, D)`` from the current context (differentiable)."""
        return F.normalize(self.prompt_learner(self.text), dim=-1)

    @torch.no_grad()
    def update_text_features(self) -> None:
        """Store the current ``[e_n, e_a]`` in the ``text_features`` buffer used at inference."""
        self.text_prototypes.set(self.prompt_features())

    # ------------------------------------------------------------------ training
    def training_bags(self, features: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The bags of one step: every shot (y = 0) and, if synthesised, one anomaly per shot (y = 1).

        The anomaly of each shot at step ``t`` is its bank entry ``t mod n_synthetic_per_shot``.

        Args:
            features: :meth:`encode_training_images` output (cached).
            step: the global training step.

        Returns:
            Patch embeddings ``(B, P, D)`` and labels ``(B,)``.
        """
        normal = features["patch_embeddings"]
        labels = torch.zeros(normal.shape[0], device=normal.device)
        bank = features.get("anomalous_patch_embeddings")
        if bank is None:
            return normal, labels
        anomalous = bank[:, step % bank.shape[1]]
        return torch.cat([normal, anomalous]), torch.cat([labels, torch.ones_like(labels)])

    def training_loss(self, features: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """Deviation loss with Top-K MIL of one training step (paper eq. 3-8, Algorithm 1).

        Args:
            features: :meth:`encode_training_images` output (cached).
            step: the global training step (chooses the synthesised anomalies of the step).

        Returns:
            Scalar loss, differentiable with respect to the context ``C`` only.
        """
        embeddings, labels = self.training_bags(features, step)
        abnormal_prompt = self.prompt_features()[1]
        patch_scores = embeddings @ abnormal_prompt  # s(p) = s_a(p) = cos(z_p, e_a), eq. 3
        return self.loss(patch_scores, labels)

    # ------------------------------------------------------------------ inference
    def patch_alignment(self, patch_embeddings: torch.Tensor) -> torch.Tensor:
        """Patch-to-prompt alignment ``[s_n(p), s_a(p)]`` ``(B, P, 2)`` with the stored text features (eq. 3)."""
        return patch_embeddings @ self.text_features.T

    def vision_scores(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Vision-guided patch scores ``M_v`` ``(B, P)``: mean over the memory layers of ``min (1 - cos) / 2``."""
        maps = [self.memories[str(layer)].distance(features[f"memory_{layer}"]) for layer in self.memory_layers]
        return torch.stack(maps).mean(dim=0)

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Score a batch of normalised images.

        Args:
            images: ``(B, 3, H, W)`` normalised images of the model's input size.

        Returns:
            ``InferenceBatch`` with ``pred_score`` ``(B,)`` and ``anomaly_map`` ``(B, H, W)``, both in [0, 1].

        Raises:
            ModelNotReadyError: the model has no vision memory or text features yet.
            ValueError: wrong image rank, channels or size.
        """
        self.require_ready()
        features = self.encode_images(images)
        grid_size = self.vision.grid_size(self.image_size)
        vision = self.vision_scores(features).unflatten(1, grid_size)  # (B, rows, cols)
        abnormal_alignment = self.patch_alignment(features["patch_embeddings"])[..., 1]  # s(p) = s_a(p)
        deviation = patch_deviation(abnormal_alignment, self.loss.prior_mean, self.loss.prior_std)
        bag_deviation = top_k_bag_deviation(deviation, self.loss.top_k_ratio)
        pixel = reciprocal_fusion(vision, deviation_to_probability(deviation).unflatten(1, grid_size))
        anomaly_map = upsample(pixel, self.image_size)
        anomaly_map = gaussian_smooth(
            anomaly_map, scaled_sigma(self.smoothing_sigma, REFERENCE_MAP_SIZE, self.image_size)
        )
        max_vision = upsample(vision, self.image_size).flatten(1).amax(dim=1)  # on the upsampled map, as PromptAD
        pred_score = reciprocal_fusion(max_vision, deviation_to_probability(bag_deviation))
        return InferenceBatch(pred_score=pred_score, anomaly_map=anomaly_map)
