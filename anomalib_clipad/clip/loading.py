# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Build an open_clip CLIP model by name, with weights from a pretrained tag, a local file, or random init.

This is the only place of anomalib-clipad that decides where CLIP weights come from. Three sources exist:

* an open_clip **pretrained tag** (``"laion400m_e31"``, ``"openai"``, ...), downloaded into open_clip's cache on first
  use; offline and without a cached copy this fails with :class:`PretrainedWeightsError`, which says how to pass a
  local file instead;
* a **local file** (an open_clip checkpoint, a plain state dict, a ``.safetensors`` file or an OpenAI TorchScript
  archive), loaded with ``weights_only=True``;
* ``None``: random initialisation, only when asked for explicitly. It logs a loud warning since every score is then
  meaningless; tests and the offline demo use it with the tiny architecture :data:`TINY_BACKBONE`;
* :data:`FROM_CHECKPOINT` (``"checkpoint"``): the architecture only, because the weights come from a trained model's
  checkpoint that is loaded next (our models' checkpoints hold every CLIP weight). ``load_from_checkpoint`` of our
  models uses it, so reloading or exporting a trained model never needs the original weights or the network; the
  models refuse to run if no checkpoint was loaded after all.

Example:
    >>> from anomalib_clipad.clip.loading import TINY_BACKBONE, load_clip
    >>> clip = load_clip(TINY_BACKBONE, pretrained=None)  # doctest: +SKIP
    >>> clip = load_clip("ViT-B-16-plus-240", "laion400m_e31")  # doctest: +SKIP
    >>> clip = load_clip("ViT-B-16-plus-240", "/models/vit_b_16_plus_240.pt")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import open_clip
import torch
from open_clip.convert import convert_state_dict
from open_clip.factory import load_state_dict
from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed

logger = logging.getLogger(__name__)

TINY_BACKBONE = "clipad-tiny-vit-16"
"""A tiny CLIP architecture (ViT 240 px, patch 16, width 64, 8 layers; text width 64, 4 layers) for tests and the
offline demo. It has no pretrained weights: use it with ``pretrained=None``."""

FROM_CHECKPOINT = "checkpoint"
"""``pretrained`` value for "build the architecture; the weights come from the checkpoint loaded next"."""

_CONFIG_DIR = Path(__file__).parent / "model_configs"
_OPENAI_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")


class UnknownBackboneError(ValueError):
    """Raised when a backbone name is not an open_clip model architecture."""


class PretrainedWeightsError(RuntimeError):
    """Raised when CLIP weights cannot be obtained from the given tag or file."""


def register_model_configs() -> None:
    """Register anomalib-clipad's own open_clip architectures (idempotent)."""
    if TINY_BACKBONE not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


def _check_backbone(backbone: str) -> None:
    register_model_configs()
    if backbone not in open_clip.list_models():
        similar = [name for name in open_clip.list_models() if backbone.lower()[:5] in name.lower()][:10]
        msg = (
            f"Unknown CLIP backbone {backbone!r}: it is not an open_clip architecture. "
            f"Similar names: {similar or 'none'}. See open_clip.list_models() for all of them."
        )
        raise UnknownBackboneError(msg)


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a local weight file into a plain state dict.

    OpenAI's TorchScript archives are read with ``torch.jit.load`` (TorchScript runs no arbitrary Python code); every
    other file with open_clip's reader and ``weights_only=True`` (it also unwraps ``{"state_dict": ...}`` and strips a
    ``module.`` prefix).
    """
    if _is_torchscript_archive(path):
        return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    return load_state_dict(str(path), device="cpu", weights_only=True)


def _is_openai_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """OpenAI's release carries these extra entries; its models need QuickGELU."""
    return any(key in state_dict for key in _OPENAI_ONLY_KEYS)


def _apply_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a state dict the way open_clip loads checkpoints (format conversion, position-embedding resize)."""
    state_dict = {key: value for key, value in state_dict.items() if key not in _OPENAI_ONLY_KEYS}
    state_dict = convert_state_dict(model, state_dict)
    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = convert_to_custom_text_state_dict(state_dict)
    if "logit_scale" in state_dict and model.logit_scale.ndim != state_dict["logit_scale"].ndim:
        state_dict["logit_scale"] = state_dict["logit_scale"].reshape(model.logit_scale.shape)
    resize_pos_embed(state_dict, model)
    resize_text_pos_embed(state_dict, model)
    model.load_state_dict(state_dict, strict=True)


def load_clip(
    backbone: str,
    pretrained: str | os.PathLike | None,
    quick_gelu: bool | None = None,
    image_size: int | None = None,
) -> open_clip.model.CLIP:
    """Build a frozen CLIP model in eval mode.

    Args:
        backbone: open_clip architecture name, e.g. ``"ViT-B-16-plus-240"`` or :data:`TINY_BACKBONE`.
        pretrained: an open_clip pretrained tag, a path to a local weight file, ``None`` for random weights, or
            :data:`FROM_CHECKPOINT` for the architecture only (weights from a checkpoint loaded afterwards).
        quick_gelu: use QuickGELU activations. ``None`` decides automatically: ``True`` for the ``openai`` tag and for
            OpenAI checkpoints given as local files (their features are wrong with plain GELU), else the
            architecture's default.
        image_size: build the vision tower for this input size. Position embeddings of pretrained weights are then
            resized once at load time (open_clip's ``resize_pos_embed``: bicubic, antialiased).

    Returns:
        The CLIP model, in eval mode with ``requires_grad`` off for every parameter.

    Raises:
        UnknownBackboneError: ``backbone`` is not an open_clip architecture.
        PretrainedWeightsError: the tag is unknown for this backbone, the file is missing or unreadable, or the
            weights cannot be downloaded (e.g. offline).
    """
    _check_backbone(backbone)
    kwargs: dict = {}
    if image_size is not None:
        kwargs["force_image_size"] = image_size

    if pretrained is None:
        logger.warning(
            "CLIP backbone %s is RANDOMLY INITIALISED (pretrained=None): anomaly scores are meaningless. "
            "Use this for tests and smoke runs only.",
            backbone,
        )
        model = open_clip.create_model(backbone, pretrained=None, force_quick_gelu=bool(quick_gelu), **kwargs)
    elif pretrained == FROM_CHECKPOINT:
        logger.info("CLIP backbone %s: architecture only, its weights come from the checkpoint loaded next.", backbone)
        model = open_clip.create_model(backbone, pretrained=None, force_quick_gelu=bool(quick_gelu), **kwargs)
    elif _is_path_like(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            msg = f"CLIP weight file {str(path)!r} for backbone {backbone!r} does not exist."
            raise PretrainedWeightsError(msg)
        try:
            state_dict = _read_state_dict(path)
            if quick_gelu is None:
                quick_gelu = _is_openai_state_dict(state_dict)
            model = open_clip.create_model(backbone, pretrained=None, force_quick_gelu=quick_gelu, **kwargs)
            _apply_state_dict(model, state_dict)
        except Exception as error:  # corrupt files raise many different exception types
            msg = (
                f"Could not load CLIP weights for backbone {backbone!r} from {str(path)!r}: {error}. "
                "Expected an open_clip checkpoint or state dict of that architecture (.pt/.pth/.bin/.safetensors) "
                "or an OpenAI TorchScript archive."
            )
            raise PretrainedWeightsError(msg) from error
    else:
        tag = str(pretrained)
        known_tags = open_clip.list_pretrained_tags_by_model(backbone)
        if tag not in known_tags:
            msg = (
                f"Unknown pretrained tag {tag!r} for CLIP backbone {backbone!r}, and no file of that name exists. "
                f"Known tags: {known_tags or 'none'}. Pass a tag or the path of a local weight file."
            )
            raise PretrainedWeightsError(msg)
        if quick_gelu is None:
            quick_gelu = tag == "openai"
        try:
            model = open_clip.create_model(backbone, pretrained=tag, force_quick_gelu=quick_gelu, **kwargs)
        except Exception as error:  # network, hub and cache errors of several libraries
            msg = (
                f"Could not obtain pretrained weights {tag!r} for CLIP backbone {backbone!r}: {error}. "
                "This needs network access to download them once (they are cached afterwards). Offline, download "
                "the weight file elsewhere and pass its path instead, e.g. "
                f"`--model.pretrained /path/to/{backbone}.pt`. To test, predict or export a trained checkpoint, "
                f"pass `--model.pretrained {FROM_CHECKPOINT}`: the checkpoint holds every weight."
            )
            raise PretrainedWeightsError(msg) from error

    model.eval()
    model.requires_grad_(False)
    return model


def uses_quick_gelu(model: torch.nn.Module) -> bool:
    """Whether a CLIP model was built with QuickGELU activations (OpenAI weights); a state dict does not record it."""
    return any(isinstance(module, open_clip.transformer.QuickGELU) for module in model.modules())


def _is_path_like(pretrained: str | os.PathLike) -> bool:
    """Whether ``pretrained`` names a file rather than a tag."""
    if isinstance(pretrained, os.PathLike):
        return True
    text = str(pretrained)
    return os.sep in text or text.startswith((".", "~")) or Path(text).suffix in {".pt", ".pth", ".bin", ".safetensors"}


def get_tokenizer(backbone: str) -> open_clip.tokenizer.SimpleTokenizer:
    """Return the open_clip tokenizer of a backbone (the BPE vocabulary ships with open_clip, no download)."""
    _check_backbone(backbone)
    return open_clip.get_tokenizer(backbone)
