# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""PyTorch model of SimCLIP (zero-shot) and SimCLIP+ (few-shot).

Deng et al., "SimCLIP: Refining Image-Text Alignment with Simple Prompts for Zero-/Few-shot Anomaly Detection",
ACM MM 2024. Reference code: ChengHaodeng/SimCLIP.

Notation of the paper: ``L`` the feature layers (hierarchies), ``F_l`` the raw patch tokens of image-tower block ``l``,
``T_last,j`` the text tower's final (post-``ln_final``) token sequence of binary prompt ``P_j`` (``j = 0`` normal,
``1`` anomalous), ``sim`` the cosine similarity.

* **MHVA** (eq. 2): one linear adapter ``A_l`` per feature layer maps raw patch tokens (CLS dropped, before
  ``ln_post``) into the joint space: ``F'_l = A_l(F_l)``.
* **Binary prompts** (eq. 3): ``"a photo of a [cls] without defect."`` / ``"a photo of a [cls] with defect."``.
* **IPT** (eq. 4-5, :class:`ImplicitPromptTuning`): token weighting ``W`` (one weight per token position, 77) pools
  ``T_last,j^T W``; the task prompt ``P = MLP(P_s)`` comes from a small learnable ``P_s`` (8 values,
  ``8 -> 256 -> GELU -> width``); the FFN fuses ``[T_last,j^T W, P]`` (a ``2 -> 1`` linear map per channel). As in the
  reference code the result is added to the end-of-text feature before the text projection: the "layer" text
  embedding, used for the maps. The "class" text embedding (key ``"image"`` here: torch.export's code generation
  cannot take the Python keyword ``class`` as a module name), used for the image score, is CLIP's plain end-of-text
  feature through the text projection (the reference's choice; the paper says the image score uses the refined
  prompt: ``refined_image_prompt=True``). Each prompt embedding is L2-normalised, averaged over the prompts of a state
  (one template here) and re-normalised.
* **Zero-shot scores**: image ``softmax(100 sim(CLS, [t_n, t_a]))[1]``; per layer the map of eq. 6,
  ``softmax(100 sim(F'_l, [t_n, t_a]))[1]``, with the logits upsampled bilinearly (``align_corners=True``) to the input
  size before the softmax. The maps of the layers are **averaged** (the paper and reference sum them; the mean is the
  sum divided by ``|L|`` and stays a probability), then Gaussian-smoothed (sigma 7 at 518 px, scaled with the size).
* **SimCLIP+** (eq. 7, Algorithm 1): a memory gallery ``M_l`` of the raw patch tokens of the ``k`` normal shots per
  layer. ``M_v = mean_l min_{f in M_l} (1 - sim(F_l, f)) / 2`` (the paper sums). Prior-aware optimisation on **every**
  layer (the reference code weights all layers by the last layer's similarities): with ``f_l`` the nearest memory
  feature of each patch and ``D_l = (1 + sim(F_l, f_l)) / 2``, ``M'_l = M_l,zero(F_l) - D_l * M_l,zero(f_l)`` on the
  patch grid; ``M_zero^prior = clamp(mean_l M'_l, 0, 1)`` (the reference clips the sum to ``[0, |L|]``), upsampled
  (``align_corners=True``) and smoothed like the zero-shot map. ``M_v`` is upsampled the same way, not smoothed (as
  the reference). Final map ``(M_zero^prior + M_v) / 2``: proportional to the reference's
  ``sum_l M'_l + sum_l M_v,l`` and in ``[0, 1]``.
* **SimCLIP+ image score**: ``(S_zero + max(final map)) / 2`` per image. The reference averages the CLS probability
  with ``max(zero-shot map + M_v)`` min-max normalised over the class's whole test set; we use no statistics over test
  images, and the paper's few-shot map (``image_score_map="final"``; ``"unrevised"`` takes the reference's map
  without the prior-aware revision, ``(zero-shot map + M_v) / 2``).

Trainable (paper, Sec. 3.2 "Notes", and the reference ``train.py``): the adapters, IPT (``W``, ``P_s``, the MLP, the
FFN) and "the projection head of both two branches", i.e. CLIP's image projection ``visual.proj`` and text projection
``text_projection`` (``train_projections``). Every other CLIP weight is frozen. Loss (reference ``train.py``; the
paper names the terms only): ``1.3 * CE(100 sim(CLS, [t_n, t_a]), label) + 0.08 * sum_l (focal(p_l, mask) +
dice(p_l[anomalous], mask))`` with ``p_l`` the softmax of the upsampled per-layer logits.

The frozen image side is computed once per image (:meth:`SimCLIPModel.encode_images`: the class token after
``ln_post`` but before the trainable projection, and the raw patch tokens of the feature layers); the text side of a
class is one 77-position pass whose hidden states are cached (:meth:`SimCLIPModel.set_class`), so a training step
costs the adapters, IPT and two projections.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.data import InferenceBatch
from torch import nn

from anomalib_clipad.clip.builder import RESIZE_AT_LOAD, block_list, build_clip
from anomalib_clipad.clip.vision import validate_images
from anomalib_clipad.components.fusion import gaussian_smooth
from anomalib_clipad.components.losses import dice_loss, focal_loss
from anomalib_clipad.components.memory import ReferenceMemory
from anomalib_clipad.components.readiness import require_ready
from anomalib_clipad.components.scoring import anomaly_probability, scaled_sigma, upsample
from anomalib_clipad.components.text_prototypes import TextPrototypes
from anomalib_clipad.models.learned_state import REFERENCE_PREFIX, learned_tensors, load_learned_tensors

BACKBONE = "ViT-L-14-336"
PRETRAINED = "openai"
IMAGE_SIZE = 518
FEATURE_LAYERS = (6, 12, 18, 24)
REFERENCE_MAP_SIZE = 518
"""SimCLIP smooths its maps with sigma = 7 at 518 x 518; sigma is scaled with the output size."""
NORMAL_PROMPTS = ("a photo of a {} without defect.",)
ANOMALOUS_PROMPTS = ("a photo of a {} with defect.",)
IMAGE_SCORE_MAPS = ("final", "unrevised")
TEXT_HEADS = ("image", "layer")
LEARNABLE_PREFIXES = ("adapters.", "ipt.", "vision.proj", "text.text_projection")


def check_arguments(k_shot: int, image_score_map: str) -> None:
    """Refuse a negative ``k_shot`` or an unknown ``image_score_map`` (cheap: the Lightning model checks early too).

    Raises:
        ValueError: naming the argument and the values it takes.
    """
    if k_shot < 0:
        msg = f"k_shot must be 0 (zero-shot SimCLIP) or positive (SimCLIP+), got {k_shot}."
        raise ValueError(msg)
    if image_score_map not in IMAGE_SCORE_MAPS:
        msg = f"image_score_map must be one of {IMAGE_SCORE_MAPS}, got {image_score_map!r}."
        raise ValueError(msg)


def binary_prompts(class_name: str) -> dict[str, list[str]]:
    """SimCLIP's binary prompts (eq. 3) of a class: ``{"normal": [...], "anomalous": [...]}``.

    The class name is used as given (the reference writes the dataset's folder name, e.g. ``"metal_nut"``).

    Raises:
        ValueError: empty class name.
    """
    if not isinstance(class_name, str) or not class_name.strip():
        msg = "SimCLIP needs a class name for its prompts (e.g. 'bottle'); got an empty one. Pass `class_name`."
        raise ValueError(msg)
    return {
        "normal": [template.format(class_name) for template in NORMAL_PROMPTS],
        "anomalous": [template.format(class_name) for template in ANOMALOUS_PROMPTS],
    }


def _state_prototypes(embeddings: torch.Tensor, n_normal: int) -> torch.Tensor:
    """``(2, D)``: per state, the mean of the L2-normalised prompt embeddings, re-normalised (the reference's form).

    Args:
        embeddings: ``(n, D)`` prompt embeddings, the ``n_normal`` normal ones first.
        n_normal: number of normal prompts.
    """
    normal, anomalous = F.normalize(embeddings, dim=-1).split([n_normal, embeddings.shape[0] - n_normal])
    return F.normalize(torch.stack([normal.mean(dim=0), anomalous.mean(dim=0)]), dim=-1)


def _uniform_init(linear: nn.Linear) -> nn.Linear:
    """The reference's ``ConstrainLinear`` initialisation: weight and bias ~ U(0, 1) (no constraint afterwards)."""
    nn.init.uniform_(linear.weight, 0.0, 1.0)
    nn.init.uniform_(linear.bias, 0.0, 1.0)
    return linear


class ImplicitPromptTuning(nn.Module):
    """Implicit prompt tuning ``L_theta`` (paper eq. 4-5), in the reference code's form.

    ``refined_j = T_last,j[eot] + FFN([T_last,j^T W, P])`` with ``P = MLP(P_s)``; the caller applies the text
    projection.

    Initialisation as the reference: ``W`` and the FFN ~ U(0, 1) (weights and biases; the paper says each weight
    ``w^i`` lies in ``[0, 1]``, which holds at initialisation only, the reference does not constrain it in training),
    ``P_s`` Xavier-uniform (drawn for the reference's ``(1, 1, prompt_size)`` shape), the MLP PyTorch's default.

    Args:
        context_length: number of token positions ``N`` of the text tower (77).
        width: width ``C_last`` of the text tower.
        prompt_size: size of ``P_s`` (8).
        hidden_size: hidden width of the MLP (256).

    Attributes:
        token_weighting: ``Linear(N -> 1)``: the weights ``W = {w^i}`` (and a bias) pooling ``T_last^T W``.
        prompt_seed: ``P_s``, ``(1, prompt_size)``.
        prompt_mlp: ``MLP``: ``prompt_size -> hidden_size -> GELU -> width``.
        fusion: the FFN of eq. 5, ``Linear(2 -> 1)`` over ``[T_last^T W, P]`` per channel.
    """

    def __init__(self, context_length: int, width: int, prompt_size: int = 8, hidden_size: int = 256) -> None:
        super().__init__()
        if prompt_size < 1 or hidden_size < 1:
            msg = f"prompt_size and hidden_size must be positive, got {prompt_size} and {hidden_size}."
            raise ValueError(msg)
        self.token_weighting = _uniform_init(nn.Linear(context_length, 1))
        seed = nn.init.xavier_uniform_(torch.empty(1, 1, prompt_size)).reshape(1, prompt_size)
        self.prompt_seed = nn.Parameter(seed)
        self.prompt_mlp = nn.Sequential(nn.Linear(prompt_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, width))
        self.fusion = _uniform_init(nn.Linear(2, 1))

    @property
    def context_length(self) -> int:
        """Number of token positions ``N`` the token weighting expects."""
        return int(self.token_weighting.in_features)

    def task_prompt(self) -> torch.Tensor:
        """``P = MLP(P_s)`` (eq. 4), shape ``(width,)``."""
        return self.prompt_mlp(self.prompt_seed)[0]

    def forward(self, hidden: torch.Tensor, end_of_text: torch.Tensor) -> torch.Tensor:
        """Refine prompt features.

        Args:
            hidden: ``(n, N, width)`` final token sequences ``T_last`` (after ``ln_final``), all ``N`` positions.
            end_of_text: ``(n,)`` end-of-text position of each prompt.

        Returns:
            ``(n, width)`` refined features before the text projection.

        Raises:
            ValueError: the sequences do not have ``N`` positions.
        """
        if hidden.shape[1] != self.context_length:
            msg = f"IPT weights {self.context_length} token positions, got sequences of {hidden.shape[1]}."
            raise ValueError(msg)
        pooled = self.token_weighting(hidden.transpose(1, 2)).squeeze(-1)  # T^T W: (n, width)
        prompt = self.task_prompt().expand_as(pooled)  # P: (n, width)
        fused = self.fusion(torch.stack([pooled, prompt], dim=-1)).squeeze(-1)  # FFN([T^T W, P])
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), end_of_text] + fused


class SimCLIPModel(nn.Module):
    """SimCLIP (``k_shot=0``) and SimCLIP+ (``k_shot >= 1``): MHVA, IPT and, for SimCLIP+, the memory gallery.

    Args:
        backbone: open_clip architecture (``"ViT-L-14-336"``).
        pretrained: open_clip tag (``"openai"``), local weight file, ``None`` (random, tests only) or ``"checkpoint"``.
        image_size: square input size (518); position embeddings are resized once at load (bicubic, antialiased),
            as the reference does.
        feature_layers: image-tower blocks (1-indexed) read by the adapters and the memory gallery (6, 12, 18, 24).
        quick_gelu: QuickGELU activations (``True``: the OpenAI CLIP the paper names was trained so) or GELU
            (``False``: what the reference code actually runs on the OpenAI weights at 518 px, and what its published
            adapters and projections were trained with; use it to evaluate those weights). ``None`` (default): the
            weights' own, QuickGELU for ``ViT-L-14-336`` / ``openai``.
        k_shot: number of normal reference images; 0 is zero-shot SimCLIP, ``k >= 1`` SimCLIP+ (needs
            :meth:`set_references` before inference).
        prompt_size: size of IPT's ``P_s`` (8).
        prompt_hidden_size: hidden width of IPT's MLP (256).
        logit_scale: scale of the cosine similarities before every softmax (100).
        train_projections: train CLIP's image and text projections with the adapters and IPT (the paper; ``False``
            keeps them frozen).
        classification_weight: weight of the image cross-entropy in the loss (1.3, reference ``train.py``).
        segmentation_weight: weight of the summed focal and dice terms (0.08, reference ``train.py``).
        focal_gamma: focusing parameter of the focal loss (2).
        sigma: Gaussian sigma of the maps at :data:`REFERENCE_MAP_SIZE` px (7; scaled with the output size).
        image_score_map: SimCLIP+ map whose maximum enters the image score: ``"final"`` (the paper's few-shot map) or
            ``"unrevised"`` (zero-shot map without the prior-aware revision plus ``M_v``, as the reference).
        refined_image_prompt: score images against the IPT-refined prompts (the paper's wording) instead of the plain
            prompts (the reference code; default).
        seed: seed of the initialisation of the adapters and IPT (``None``: torch's global random state).

    Raises:
        ValueError: invalid layers, sizes or options.
        UnknownBackboneError, PretrainedWeightsError: from :func:`~anomalib_clipad.clip.builder.build_clip`.
    """

    def __init__(  # noqa: PLR0917 (anomalib-style hyper-parameters)
        self,
        backbone: str = BACKBONE,
        pretrained: str | os.PathLike | None = PRETRAINED,
        image_size: int = IMAGE_SIZE,
        feature_layers: Sequence[int] = FEATURE_LAYERS,
        quick_gelu: bool | None = None,
        k_shot: int = 0,
        prompt_size: int = 8,
        prompt_hidden_size: int = 256,
        logit_scale: float = 100.0,
        train_projections: bool = True,
        classification_weight: float = 1.3,
        segmentation_weight: float = 0.08,
        focal_gamma: float = 2.0,
        sigma: float = 7.0,
        image_score_map: str = "final",
        refined_image_prompt: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        layers = block_list("feature_layers", feature_layers)
        check_arguments(k_shot, image_score_map)
        towers = build_clip(
            backbone,
            pretrained,
            image_size=image_size,
            quick_gelu=quick_gelu,
            position_embedding=RESIZE_AT_LOAD,
            layers={"feature_layers": layers},
        )
        self.vision, self.text = towers.vision, towers.text
        self.clip_hparams = towers.hparams
        self.backbone = backbone
        self.image_size = int(image_size)
        self.grid_size = self.vision.grid_size((self.image_size, self.image_size))
        self.feature_layers = layers
        self.k_shot = int(k_shot)
        self.logit_scale = float(logit_scale)
        self.train_projections = bool(train_projections)
        self.classification_weight = float(classification_weight)
        self.segmentation_weight = float(segmentation_weight)
        self.focal_gamma = float(focal_gamma)
        self.sigma = float(sigma)
        self.image_score_map = image_score_map
        self.refined_image_prompt = bool(refined_image_prompt)

        for parameter in self.vision.parameters():
            parameter.requires_grad_(False)
        for parameter in self.text.parameters():
            parameter.requires_grad_(False)
        self.vision.proj.requires_grad_(self.train_projections)
        self.text.text_projection.requires_grad_(self.train_projections)

        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.adapters = nn.ModuleDict(
                {str(layer): nn.Linear(self.vision.width, self.vision.output_dim) for layer in layers},
            )
            self.ipt = ImplicitPromptTuning(self.text.context_length, self.text.width, prompt_size, prompt_hidden_size)

        dim = self.vision.output_dim
        self.text_prototypes = nn.ModuleDict({head: TextPrototypes(dim) for head in TEXT_HEADS})
        self.memories = nn.ModuleDict(
            {str(layer): ReferenceMemory(self.vision.width, keep_raw=True) for layer in layers},
        )
        self.class_name: str | None = None
        self._prompt_cache: dict[str, tuple[torch.Tensor, torch.Tensor, int]] = {}

    @property
    def name(self) -> str:
        """``"SimCLIP+"`` with a memory gallery (``k_shot >= 1``), else ``"SimCLIP"``."""
        return "SimCLIP+" if self.k_shot else "SimCLIP"

    # ----------------------------------------------------------------------------------------------------- text
    def set_class(self, class_name: str, anomaly_states: Sequence[str] | None = None) -> None:
        """Set the class of the prompts used at inference and compute its text prototypes.

        Args:
            class_name: the class name written in the binary prompts (eq. 3).
            anomaly_states: not supported (SimCLIP's anomalous prompt is the fixed "with defect" one); must be
                ``None``.

        Raises:
            ValueError: empty class name, or anomaly states given.
        """
        if anomaly_states is not None:
            msg = (
                f"SimCLIP's binary prompts are fixed ({ANOMALOUS_PROMPTS[0]!r}): it takes no anomalous state phrases; "
                f"got anomaly_states={anomaly_states!r}."
            )
            raise ValueError(msg)
        binary_prompts(class_name)
        self.class_name = class_name
        self.update_text_features()

    @torch.no_grad()
    def prompt_states(self, class_name: str) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The frozen text tower's pass over a class's binary prompts, computed once per class (and device, dtype).

        Returns:
            ``T_last`` ``(n, 77, width)`` (all positions, after ``ln_final``), the end-of-text positions ``(n,)``, and
            the number of normal prompts (they come first).

        Raises:
            ValueError: empty class name.
        """
        cached = self._prompt_cache.get(class_name)
        reference = self.text.positional_embedding
        if cached is None or cached[0].device != reference.device or cached[0].dtype != reference.dtype:
            prompts = binary_prompts(class_name)
            tokens = self.text.tokenize([*prompts["normal"], *prompts["anomalous"]])
            hidden = self.text.final_hidden_states(tokens, full_length=True)
            cached = (hidden, self.text.end_of_text_index(tokens), len(prompts["normal"]))
            self._prompt_cache[class_name] = cached
        return cached

    def prompt_features(self, class_name: str | None = None) -> dict[str, torch.Tensor]:
        """Text prototypes ``[t_n, t_a]`` of a class at the current parameters (differentiable: IPT, text projection).

        Args:
            class_name: the class of the prompts (default: the one of :meth:`set_class`).

        Returns:
            ``{"image": (2, D), "layer": (2, D)}``, L2-normalised: "image" (the paper's class embedding) from the plain
            end-of-text features (image score), "layer" from the IPT-refined ones (maps).

        Raises:
            ModelNotReadyError: no class name given or set.
        """
        if class_name is None:
            require_ready(self.name, {"class name": self.class_name is not None}, "call `set_class(name)` first.")
            class_name = self.class_name
        hidden, end_of_text, n_normal = self.prompt_states(class_name)
        plain = hidden[torch.arange(hidden.shape[0], device=hidden.device), end_of_text]
        embeddings = {
            "image": self.text.project(plain),
            "layer": self.text.project(self.ipt(hidden, end_of_text)),
        }
        return {head: _state_prototypes(features, n_normal) for head, features in embeddings.items()}

    def batch_prompt_features(self, class_names: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """Per-image text prototypes ``{"image": (B, 2, D), "layer": (B, 2, D)}`` for class-aware training batches.

        Each distinct class is encoded once.
        """
        names = [class_names] if isinstance(class_names, str) else list(class_names)
        unique = list(dict.fromkeys(names))
        per_class = [self.prompt_features(name) for name in unique]
        index = torch.tensor([unique.index(name) for name in names], device=self.text.positional_embedding.device)
        return {head: torch.stack([features[head] for features in per_class])[index] for head in TEXT_HEADS}

    @torch.no_grad()
    def update_text_features(self, features: Mapping[str, torch.Tensor] | None = None) -> None:
        """Store the text prototypes inference scores against (after training, or after loading learned weights).

        Args:
            features: :meth:`prompt_features` output (computed for the set class if ``None``).

        Raises:
            ModelNotReadyError: no class name was set.
        """
        features = self.prompt_features() if features is None else features
        for head in TEXT_HEADS:
            self.text_prototypes[head].set(features[head])

    def _image_prototypes(self, text: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return text["layer"] if self.refined_image_prompt else text["image"]

    def similarity_logits(self, features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """``logit_scale * sim(features, [t_n, t_a])``.

        Args:
            features: ``(B, D)`` or ``(B, N, D)``.
            prototypes: ``(2, D)`` for every image, or ``(B, 2, D)`` one pair per image.

        Returns:
            ``(B, 2)`` or ``(B, N, 2)`` logits.
        """
        features = F.normalize(features, dim=-1)
        if prototypes.ndim == 3 and features.ndim == 2:
            return self.logit_scale * torch.einsum("bd,bkd->bk", features, prototypes)
        return self.logit_scale * features @ prototypes.transpose(-1, -2)

    # --------------------------------------------------------------------------------------------------- vision
    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """One pass of the frozen image tower (cache it per training image; nothing here is trained).

        Args:
            images: ``(B, 3, H, W)`` CLIP-normalised images of the model's input size.

        Returns:
            ``{"class_token": (B, width)}``: the class token after ``ln_post``, before the (trainable) image projection;
            ``{"patch_tokens_<l>": (B, N, width)}``: raw patch tokens (CLS dropped, before ``ln_post``) of each feature
            layer ``l``.

        Raises:
            TypeError, ValueError: not a float tensor, wrong rank, not 3 channels (e.g. grayscale), or wrong size.
        """
        validate_images(images, (self.image_size, self.image_size))
        hidden, _ = self.vision.embed(images)
        hidden = self.vision.ln_pre(hidden)
        output: dict[str, torch.Tensor] = {}
        for layer, block in enumerate(self.vision.blocks, start=1):
            hidden = block(hidden)
            if layer in self.feature_layers:
                output[f"patch_tokens_{layer}"] = hidden[:, 1:]
        output["class_token"] = self.vision.ln_post(hidden[:, 0])
        return output

    def image_embedding(self, class_token: torch.Tensor) -> torch.Tensor:
        """CLIP's image embedding ``(B, D)``: the ``ln_post``-ed class token through the image projection."""
        return class_token @ self.vision.proj

    def adapt(self, layer: int, tokens: torch.Tensor) -> torch.Tensor:
        """MHVA (eq. 2): ``F'_l = A_l(F_l)``, raw tokens ``(..., width)`` -> joint space ``(..., D)``."""
        return self.adapters[str(layer)](tokens)

    def layer_logits(self, layer: int, tokens: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """``logit_scale * sim(A_l(tokens), [t_n, t_a])``: ``(B, N, 2)`` logits of raw tokens ``(B, N, width)``.

        ``prototypes`` is ``(2, D)``, or ``(B, 2, D)`` per image.
        """
        return self.similarity_logits(self.adapt(layer, tokens), prototypes)

    def _grid(self, values: torch.Tensor) -> torch.Tensor:
        """``(B, N, C)`` patch values -> ``(B, C, rows, columns)``."""
        return values.transpose(1, 2).reshape(values.shape[0], values.shape[2], *self.grid_size)

    def layer_maps(
        self,
        features: Mapping[str, torch.Tensor],
        prototypes: torch.Tensor,
        size: tuple[int, int],
    ) -> dict[int, torch.Tensor]:
        """Per-layer class probabilities ``(B, 2, H, W)``: logits upsampled (``align_corners=True``), then softmax.

        Channel 1 is ``M_l,zero`` of eq. 6 at pixel resolution.
        """
        return {
            layer: upsample(
                self._grid(self.layer_logits(layer, features[f"patch_tokens_{layer}"], prototypes)),
                size,
                align_corners=True,
            ).softmax(dim=1)
            for layer in self.feature_layers
        }

    # --------------------------------------------------------------------------------------------------- memory
    @torch.no_grad()
    def set_references(self, references: torch.Tensor | Mapping[str, torch.Tensor] | None) -> None:
        """Fill the memory gallery ``M_l`` of every feature layer with the raw patch tokens of the ``k`` normal shots.

        Args:
            references: ``(k, 3, H, W)`` images, or their :meth:`encode_images` features; ``None`` empties the
                gallery.

        Raises:
            ValueError: the model is zero-shot (``k_shot=0``), no shots, or another number than ``k_shot``.
        """
        if references is None:
            for memory in self.memories.values():
                memory.clear()
            return
        shots = references
        if not self.k_shot:
            msg = "This SimCLIP model is zero-shot (k_shot=0): build it with k_shot >= 1 for SimCLIP+'s memory."
            raise ValueError(msg)
        n_shots = int(shots.shape[0] if isinstance(shots, torch.Tensor) else shots["class_token"].shape[0])
        if n_shots != self.k_shot:
            got = "no reference images" if not n_shots else f"{n_shots}"
            msg = f"{self.name} was set up for k_shot={self.k_shot} normal reference images, got {got}."
            raise ValueError(msg)
        features = self.encode_images(shots) if isinstance(shots, torch.Tensor) else shots
        for layer in self.feature_layers:
            self.memories[str(layer)].fill(features[f"patch_tokens_{layer}"])

    @property
    def uses_references(self) -> bool:
        """Whether scoring uses the memory gallery of normal shots (SimCLIP+, ``k_shot >= 1``)."""
        return self.k_shot > 0

    @property
    def references_ready(self) -> bool:
        """Whether every layer's memory gallery holds features."""
        return all(memory.is_ready for memory in self.memories.values())

    def prior_aware_maps(
        self, features: Mapping[str, torch.Tensor], prototypes: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """SimCLIP+'s patch-grid maps: eq. 7 and Algorithm 1, each layer with its own nearest neighbours.

        Args:
            features: :meth:`encode_images` output of the query images.
            prototypes: the "layer" text prototypes ``(2, D)``.

        Returns:
            ``(B, rows, columns)`` maps: ``"visual"`` ``M_v = mean_l min (1 - sim) / 2``; ``"prior"``
            ``M_zero^prior = clamp(mean_l M'_l, 0, 1)``; ``"zero_grid"`` ``mean_l M_l,zero`` (softmax on the grid);
            and per layer ``"revised_<l>"`` ``M'_l = M_l,zero(F_l) - D_l * M_l,zero(f_l)`` and ``"similarity_<l>"``
            ``D_l = (1 + sim(F_l, f_l)) / 2``.
        """
        output: dict[str, torch.Tensor] = {}
        visual, revised, zero = [], [], []
        for layer in self.feature_layers:
            tokens = features[f"patch_tokens_{layer}"]
            memory = self.memories[str(layer)]
            distance, index = memory.nearest(tokens)  # min (1 - sim) / 2 and the nearest f_l
            nearest_tokens = memory.raw[index]  # (B, N, width)
            similarity = 1.0 - distance  # D_l = (1 + sim(F_l, f_l)) / 2
            zero_shot = self.layer_logits(layer, tokens, prototypes).softmax(dim=-1)[..., 1]  # M_l,zero(F_l)
            pseudo_normal = similarity * self.layer_logits(layer, nearest_tokens, prototypes).softmax(dim=-1)[..., 1]
            revised_layer = zero_shot - pseudo_normal  # M'_l
            visual.append(distance)
            revised.append(revised_layer)
            zero.append(zero_shot)
            output[f"revised_{layer}"] = revised_layer.reshape(-1, *self.grid_size)
            output[f"similarity_{layer}"] = similarity.reshape(-1, *self.grid_size)
        output["visual"] = torch.stack(visual).mean(dim=0).reshape(-1, *self.grid_size)
        output["prior"] = torch.stack(revised).mean(dim=0).clamp(0.0, 1.0).reshape(-1, *self.grid_size)
        output["zero_grid"] = torch.stack(zero).mean(dim=0).reshape(-1, *self.grid_size)
        return output

    # --------------------------------------------------------------------------------------------------- losses
    def losses(
        self,
        features: Mapping[str, torch.Tensor],
        labels: torch.Tensor,
        masks: torch.Tensor,
        *,
        class_names: str | Sequence[str] | None = None,
        has_mask: torch.Tensor | None = None,
        text: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training losses on (cached) features of labelled images (the auxiliary-data protocol).

        ``loss = w_cls * CE(logit_scale * sim(CLS, [t_n, t_a]), label) + w_seg * sum_l (focal(p_l, mask) +
        dice(p_l[anomalous], mask))``, ``p_l`` the per-layer class probabilities of :meth:`layer_maps` at the masks'
        size; the prompts of each image are those of its class.

        Args:
            features: :meth:`encode_images` output.
            labels: ``(B,)`` image labels, 1 = anomalous.
            masks: ``(B, H, W)`` or ``(B, 1, H, W)`` ground-truth masks (binarised at 0.5).
            class_names: the class of each image (one name for all); ``None``: the class of :meth:`set_class`.
            has_mask: ``(B,)`` bool, whether an image's mask is ground truth; images without one train the image
                loss only (``None``: all have one).
            text: text prototypes with gradients, ``{"image", "layer"}`` of shape ``(2, D)`` or ``(B, 2, D)``
                (computed here from ``class_names`` if ``None``).

        Returns:
            ``{"loss", "classification", "segmentation", "focal", "dice", "focal_<l>", "dice_<l>"}`` (unweighted
            terms; ``focal`` and ``dice`` summed over layers; the segmentation terms are 0 when no image has a mask).

        Raises:
            ValueError: labels, masks, class names or ``has_mask`` do not match the batch.
            ModelNotReadyError: no class name given or set.
        """
        class_token = features["class_token"]
        batch = class_token.shape[0]
        labels = torch.as_tensor(labels, device=class_token.device).reshape(-1).long()
        masks = masks.to(class_token.device)
        masks = masks.squeeze(1) if masks.ndim == 4 and masks.shape[1] == 1 else masks
        has_mask = torch.ones(batch, dtype=torch.bool) if has_mask is None else torch.as_tensor(has_mask).bool()
        has_mask = has_mask.reshape(-1).to(class_token.device)
        names = [class_names] * batch if isinstance(class_names, str) else class_names
        if (
            labels.shape[0] != batch
            or masks.ndim != 3
            or masks.shape[0] != batch
            or has_mask.shape[0] != batch
            or (names is not None and len(names) != batch)
        ):
            msg = (
                f"Expected {batch} labels, masks (B, H, W), has_mask flags and class names for {batch} images; "
                f"got labels {tuple(labels.shape)}, masks {tuple(masks.shape)}, has_mask {tuple(has_mask.shape)} and "
                f"{'no class names' if names is None else f'{len(names)} class names'}."
            )
            raise ValueError(msg)
        if text is None:
            text = self.prompt_features() if names is None else self.batch_prompt_features(names)
        target = (masks > 0.5).long()
        image_logits = self.similarity_logits(self.image_embedding(class_token), self._image_prototypes(text))
        output: dict[str, torch.Tensor] = {"classification": F.cross_entropy(image_logits, labels)}
        layer_text = text["layer"][has_mask] if text["layer"].ndim == 3 else text["layer"]
        masked = {key: value[has_mask] for key, value in features.items()}
        focal_total = dice_total = class_token.new_zeros(())
        for layer, probabilities in self.layer_maps(masked, layer_text, tuple(target.shape[-2:])).items():
            if probabilities.shape[0]:
                focal = focal_loss(probabilities, target[has_mask], gamma=self.focal_gamma)
                dice = dice_loss(probabilities[:, 1], target[has_mask])
            else:
                focal = dice = probabilities.sum()  # no image with a mask: zero, still part of the graph
            output[f"focal_{layer}"], output[f"dice_{layer}"] = focal, dice
            focal_total, dice_total = focal_total + focal, dice_total + dice
        output["focal"], output["dice"] = focal_total, dice_total
        output["segmentation"] = focal_total + dice_total
        output["loss"] = self.classification_weight * output["classification"]
        output["loss"] = output["loss"] + self.segmentation_weight * output["segmentation"]
        return output

    # ---------------------------------------------------------------------------------------------------- scores
    def scores(
        self,
        features: Mapping[str, torch.Tensor],
        output_size: tuple[int, int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every score of SimCLIP (and, with a memory gallery, SimCLIP+) from image features.

        Args:
            features: :meth:`encode_images` output.
            output_size: size of the returned maps (default: the input size).

        Returns:
            ``image_score (B,)`` (zero-shot ``S_zero``), ``zero_shot_map (B, H, W)``; with a memory also
            ``visual_map``, ``prior_map`` ``(B, H, W)`` and the grid maps of :meth:`prior_aware_maps`; and
            ``anomaly_map (B, H, W)``, ``pred_score (B,)``. All in ``[0, 1]``.
        """
        size = tuple(output_size) if output_size is not None else (self.image_size, self.image_size)
        text = {head: prototypes.features for head, prototypes in self.text_prototypes.items()}
        sigma = scaled_sigma(self.sigma, REFERENCE_MAP_SIZE, size)
        image_score = anomaly_probability(
            self.image_embedding(features["class_token"]),
            self._image_prototypes(text),
            self.logit_scale,
        )
        layer_maps = self.layer_maps(features, text["layer"], size)
        zero_shot = torch.stack([maps[:, 1] for maps in layer_maps.values()]).mean(dim=0)
        output = {"image_score": image_score, "zero_shot_map": gaussian_smooth(zero_shot, sigma)}
        if not self.k_shot:
            output["anomaly_map"], output["pred_score"] = output["zero_shot_map"], image_score
            return output
        grids = self.prior_aware_maps(features, text["layer"])
        output.update(grids)
        output["prior_map"] = gaussian_smooth(upsample(grids["prior"], size, align_corners=True), sigma)
        output["visual_map"] = upsample(grids["visual"], size, align_corners=True)
        output["anomaly_map"] = (output["prior_map"] + output["visual_map"]) / 2
        image_map = output["anomaly_map"]
        if self.image_score_map == "unrevised":
            image_map = (output["zero_shot_map"] + output["visual_map"]) / 2
        output["pred_score"] = (image_score + image_map.flatten(1).amax(dim=1)) / 2
        return output

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Score a batch: ``pred_score (B,)`` and ``anomaly_map (B, H, W)`` at the input size, both in ``[0, 1]``.

        Raises:
            ModelNotReadyError: no text prototypes (no class name set, or nothing trained / loaded), or SimCLIP+
                without its memory gallery.
            TypeError, ValueError: bad input images.
        """
        self.require_ready()
        scores = self.scores(self.encode_images(images))
        return InferenceBatch(pred_score=scores["pred_score"], anomaly_map=scores["anomaly_map"])

    def _readiness(self) -> dict[str, bool]:
        parts = {"text prototypes": all(prototypes.is_ready for prototypes in self.text_prototypes.values())}
        if self.uses_references:
            parts["reference memory"] = self.references_ready
        return parts

    @property
    def is_ready(self) -> bool:
        """Whether the text prototypes and, for SimCLIP+, the memory gallery are there."""
        return all(self._readiness().values())

    def require_ready(self) -> None:
        """Raise :class:`~anomalib_clipad.components.readiness.ModelNotReadyError` naming what is missing.

        Raises:
            ModelNotReadyError: no text prototypes (no class name set, or nothing trained / loaded), or SimCLIP+
                without its memory gallery.
        """
        require_ready(
            self.name,
            self._readiness(),
            "set the class name (`set_class`), load or train the learned weights, and for SimCLIP+ fill the "
            "memory from the k normal shots (`set_references`); a trained checkpoint (`--ckpt_path`) has all of them.",
        )

    def architecture(self) -> dict[str, Any]:
        """Backbone, input size, the feature layers (one adapter each) and IPT's sizes."""
        return {
            "backbone": self.backbone,
            "image_size": self.image_size,
            "feature_layers": list(self.feature_layers),
            "prompt_size": int(self.ipt.prompt_seed.shape[1]),
            "prompt_hidden_size": int(self.ipt.prompt_mlp[0].out_features),
        }

    # ------------------------------------------------------------------------------------------ learned state
    def learned_state_dict(self) -> dict[str, torch.Tensor]:
        """The learned weights: adapters, IPT, CLIP's image and text projections, and SimCLIP+'s memory when filled.

        The projections are included whether or not they are trained, so a state always says everything that differs
        from the pretrained CLIP. The text prototypes are recomputed from these for the class set when loaded.
        Detached copies on the CPU.
        """
        prefixes = (*LEARNABLE_PREFIXES, REFERENCE_PREFIX) if self.references_ready else LEARNABLE_PREFIXES
        return learned_tensors(self, prefixes)

    @torch.no_grad()
    def load_learned_state_dict(
        self,
        state: Mapping[str, torch.Tensor],
        update_text_features: bool = True,
    ) -> None:
        """Load :meth:`learned_state_dict` output (or a converted reference or former file).

        Args:
            state: name -> tensor, the keys of :meth:`learned_state_dict`; the memory (``memories.*``) is optional
                (without it, the model's own memory, if any, is kept: it holds frozen-CLIP features only).
            update_text_features: recompute the stored text prototypes for the set class (cleared when no class is
                set, so inference cannot use prototypes of other weights).

        Raises:
            ValueError: naming the first missing, unexpected or wrongly shaped key (another backbone or feature
                layers).
        """
        memory = state.get(f"{REFERENCE_PREFIX}{self.feature_layers[0]}.features")
        n_patches = self.grid_size[0] * self.grid_size[1]
        if memory is not None and memory.shape[0] != self.k_shot * n_patches:
            stored = memory.shape[0] // n_patches
            msg = (
                f"The learned state holds a memory of {stored} reference image(s), but this model has "
                f"k_shot={self.k_shot}: build it with k_shot={stored} (CLI: `--model.k_shot {stored}`)."
            )
            raise ValueError(msg)
        load_learned_tensors(self, state, (*LEARNABLE_PREFIXES, REFERENCE_PREFIX), self.name, (REFERENCE_PREFIX,))
        if not update_text_features:
            return
        if self.class_name is not None:
            self.update_text_features()
        else:
            for prototypes in self.text_prototypes.values():
                prototypes.features = prototypes.features[:0]

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Check that a checkpoint was made with the same image tower before loading it."""
        self.vision.check_state_dict(state_dict, f"{prefix}vision.positional_embedding", f"SimCLIP ({self.backbone})")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
