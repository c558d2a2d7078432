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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import open_clip
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from open_clip.convert import convert_state_dict
from open_clip.factory import load_state_dict
from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed
from open_clip.pretrained import download_pretrained_from_url, get_pretrained_cfg
from open_clip.transformer import QuickGELU
from torch import nn

logger = logging.getLogger(__name__)

TINY_BACKBONE = "clipad-tiny-vit-16"
"""A tiny CLIP architecture (ViT 240 px, patch 16, width 64, 8 layers; text width 64, 4 layers) for tests and the
offline demo. It has no pretrained weights: use it with ``pretrained=None``."""

FROM_CHECKPOINT = "checkpoint"
"""``pretrained`` value for "build the architecture; the weights come from the checkpoint loaded next"."""

PRETRAINED_ARGUMENT = "--model.pretrained"
"""The command-line option of the models' ``pretrained`` argument, as error messages name it."""

RANDOM_INIT_SEED = 0
"""Seed of a randomly initialised CLIP (``pretrained=None``): the same weights in every run and process."""

TINY_BACKBONE_24 = "clipad-tiny-vit-14-l24"
"""A tiny CLIP with 24 image blocks (ViT 336 px, patch 14, width 32; text width 32, 12 layers): the layer indices of
the ViT-L-14-336 methods (AnomalyCLIP, SimCLIP: 6, 12, 18, 24) run on it in tests. Random init only."""

_CONFIG_DIR = Path(__file__).parent / "model_configs"
_OPENAI_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")


class UnknownBackboneError(ValueError):
    """Raised when a backbone name is not an open_clip model architecture."""


class PretrainedWeightsError(RuntimeError):
    """Raised when CLIP weights cannot be obtained from the given tag or file.

    The message is ``reason`` followed by ``advice``, in which ``{argument}`` stands for the option that sets the
    weights: :data:`PRETRAINED_ARGUMENT` (the Lightning models' ``--model.pretrained``) in ``str(error)``; other
    front ends name their own with :meth:`message` (``anomalib-clipad demo``: ``--pretrained``).

    Args:
        reason: what failed.
        advice: what to do, with ``{argument}`` for the option's name. Defaults to none.
        checkpoint_advice: also say that a trained checkpoint needs no weights (``{argument} checkpoint``).
    """

    def __init__(self, reason: str, advice: str = "", checkpoint_advice: bool = False) -> None:
        self.reason = reason
        self.advice = advice
        self.checkpoint_advice = checkpoint_advice
        super().__init__(self.message())

    def message(self, argument: str = PRETRAINED_ARGUMENT, mention_checkpoint: bool = True) -> str:
        """The message naming ``argument`` as the option that sets the weights.

        Args:
            argument: the option's name, e.g. ``"--pretrained"``.
            mention_checkpoint: include the checkpoint advice (when the error has it).

        Returns:
            The message.
        """
        parts = [self.reason, self.advice.format(argument=argument)]
        if self.checkpoint_advice and mention_checkpoint:
            parts.append(
                f"To test, predict or export a trained checkpoint, pass `{argument} {FROM_CHECKPOINT}`: the checkpoint "
                "holds every weight."
            )
        return " ".join(part for part in parts if part)


def register_model_configs() -> None:
    """Register anomalib-clipad's own open_clip architectures (idempotent)."""
    if TINY_BACKBONE not in open_clip.list_models() or TINY_BACKBONE_24 not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


def check_backbone(backbone: str) -> None:
    """Raise :class:`UnknownBackboneError` unless ``backbone`` is an open_clip architecture (a cheap look-up)."""
    _check_backbone(backbone)


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
    """Read a local weight file into a plain state dict, safely.

    OpenAI's TorchScript archives are read with ``torch.jit.load`` (TorchScript runs no arbitrary Python code); every
    other file with open_clip's reader and ``weights_only=True`` (it also unwraps ``{"state_dict": ...}`` and strips a
    ``module.`` prefix).

    Raises:
        PretrainedWeightsError: the file is none of those formats (corrupt, truncated, or not a weight file). The
            message never suggests loading it with ``weights_only=False``, which can run arbitrary code.
    """
    try:
        if _is_torchscript_archive(path):
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        state_dict = load_state_dict(str(path), device="cpu", weights_only=True)
    except Exception as error:  # a corrupt file raises any of many types (UnpicklingError, IndexError, EOFError, ...)
        msg = (
            f"{str(path)!r} is not a CLIP weight file that can be read safely: it is neither a PyTorch state dict or "
            "checkpoint readable with weights_only=True, nor a .safetensors file, nor an OpenAI TorchScript archive "
            "(it may be corrupt or truncated, or another kind of file). anomalib-clipad never loads weight files "
            "with weights_only=False, since that can run arbitrary code."
        )
        raise PretrainedWeightsError(msg) from error
    if not isinstance(state_dict, dict) or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        msg = f"{str(path)!r} holds no state dict of tensors (found {type(state_dict).__name__})."
        raise PretrainedWeightsError(msg)
    return state_dict


def _is_openai_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """OpenAI's original release carries these extra entries; its models need QuickGELU."""
    return any(key in state_dict for key in _OPENAI_ONLY_KEYS)


def weight_file_provenance(path: Path, state_dict: dict[str, torch.Tensor]) -> str | None:
    """``"openai"`` when a weight file is recognisably OpenAI's CLIP, else ``None`` (unknown).

    Recognised: OpenAI's own release (TorchScript or state dict with its extra keys) and open_clip's conversion of it,
    which has open_clip's key layout but a file name with ``openai`` or a folder ending in ``.openai`` (open_clip 3.3
    downloads it as ``models--timm--vit_large_patch14_clip_336.openai/snapshots/<hash>/open_clip_pytorch_model.bin``).
    """
    if _is_openai_state_dict(state_dict) or "openai" in path.name.lower():
        return "openai"
    if any(part.lower().endswith(".openai") for part in path.parent.parts):  # the hub folder of an openai tag
        return "openai"
    return None


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


def tag_uses_quick_gelu(backbone: str, tag: str) -> bool:
    """Whether open_clip's pretrained weights ``tag`` of ``backbone`` were trained with QuickGELU (OpenAI's)."""
    return bool(get_pretrained_cfg(backbone, tag).get("quick_gelu", False))


def backbone_default_quick_gelu(backbone: str) -> bool:
    """The activation a backbone's weights need when no tag says it: QuickGELU if every pretrained tag of it does.

    ``ViT-L-14-336`` (only OpenAI weights exist) gives ``True``; ``ViT-B-16-plus-240`` (LAION only) and architectures
    without pretrained weights give ``False``.
    """
    _check_backbone(backbone)
    tags = open_clip.list_pretrained_tags_by_model(backbone)
    return bool(tags) and all(tag_uses_quick_gelu(backbone, tag) for tag in tags)


def resolve_pretrained_download(backbone: str, tag: str) -> tuple[str, str]:
    """Where the weights of an open_clip tag are downloaded from: ``("hf_hub", repo)`` or ``("url", url)``.

    open_clip prefers its Hugging Face hub entry. Some entries name the hub repository of *another* tag of the same
    backbone: open_clip 3.3 maps ``ViT-B-16-plus-240`` / ``laion400m_e32`` to ``timm/...laion400m_e31/``, so asking for
    e32 would silently give e31's weights. Then the release URL the tag lists is used instead; without one, the tag is
    refused.

    Raises:
        PretrainedWeightsError: the tag's hub entry names another tag and it has no release URL.
    """
    config = get_pretrained_cfg(backbone, tag)
    hub, url = config.get("hf_hub", ""), config.get("url", "")
    if hub:
        repository = hub.rstrip("/").split("/")[1] if "/" in hub.rstrip("/") else hub.rstrip("/")
        named_tag = repository.rsplit(".", 1)[-1] if "." in repository else None
        known_tags = open_clip.list_pretrained_tags_by_model(backbone)
        if named_tag is None or named_tag == tag or named_tag not in known_tags:
            return "hf_hub", hub
        if url:
            logger.info(
                "open_clip maps %s/%s to the hub weights of %s; downloading the tag's own release file %s instead.",
                backbone,
                tag,
                named_tag,
                url,
            )
            return "url", url
        msg = (
            f"open_clip's entry for {backbone!r} / {tag!r} points to the weights of {named_tag!r} and lists no other "
            "source: refusing to load other weights than the tag names. Download the right file and pass its path."
        )
        raise PretrainedWeightsError(msg)
    if url:
        return "url", url
    msg = f"open_clip lists no download source for {backbone!r} / {tag!r}."
    raise PretrainedWeightsError(msg)


class _DropRandomInitWarning(logging.Filter):
    """Drops open_clip's random-init warning (we say it ourselves) and its INFO chatter on the root logger.

    The warning is "No pretrained weights loaded ... initialized randomly"; the chatter "Loaded built-in ... model
    config." and similar, about seven lines per model build.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from_open_clip = f"{os.sep}open_clip{os.sep}" in record.pathname
        if from_open_clip and record.levelno < logging.WARNING:
            return False
        return "initialized randomly" not in record.getMessage()


@contextmanager
def _quiet_random_init() -> Iterator[None]:
    root = logging.getLogger()
    drop = _DropRandomInitWarning()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _create_architecture(backbone: str, quick_gelu: bool, image_size: int | None, seed: int | None = None) -> nn.Module:
    """The architecture with random weights, without open_clip's warning about them (callers say what they mean).

    Args:
        backbone: open_clip architecture name.
        quick_gelu: build with QuickGELU.
        image_size: input size of the vision tower (``None``: the backbone's).
        seed: seed of the initial weights, drawn from a forked random stream (the caller's is left as it was);
            ``None``: from the caller's stream (weights that are replaced next anyway).
    """
    kwargs = {"force_image_size": image_size} if image_size is not None else {}
    with _quiet_random_init(), torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        return open_clip.create_model(backbone, pretrained=None, force_quick_gelu=quick_gelu, **kwargs)


def _warn_activation_mismatch(source: str, quick_gelu: bool, weights_need_quick_gelu: bool | None) -> None:
    if weights_need_quick_gelu is None or weights_need_quick_gelu == quick_gelu:
        return
    needed, chosen = ("QuickGELU", "GELU") if weights_need_quick_gelu else ("GELU", "QuickGELU")
    logger.warning(
        "The CLIP weights %s were trained with %s, but the model is built with %s (quick_gelu=%s): every feature "
        "differs from the weights' own. Pass quick_gelu=%s (CLI: --model.quick_gelu %s) unless this is intended.",
        source,
        needed,
        chosen,
        quick_gelu,
        weights_need_quick_gelu,
        str(weights_need_quick_gelu).lower(),
    )


def load_clip(
    backbone: str,
    pretrained: str | os.PathLike | None,
    quick_gelu: bool | None = None,
    image_size: int | None = None,
    seed: int = RANDOM_INIT_SEED,
) -> open_clip.model.CLIP:
    """Build a frozen CLIP model in eval mode.

    Args:
        backbone: open_clip architecture name, e.g. ``"ViT-B-16-plus-240"`` or :data:`TINY_BACKBONE`.
        pretrained: an open_clip pretrained tag, a path to a local weight file, ``None`` for random weights, or
            :data:`FROM_CHECKPOINT` for the architecture only (weights from a checkpoint loaded afterwards).
        quick_gelu: build with QuickGELU activations (what OpenAI's CLIPs were trained with) or plain GELU. This
            argument decides; ``None`` takes the default of the weights: the tag's (``openai``: QuickGELU), a local
            file's recognisable provenance (:func:`weight_file_provenance`), else the backbone's
            (:func:`backbone_default_quick_gelu`: QuickGELU for OpenAI-only backbones such as ``ViT-L-14-336``). A
            warning is logged when an explicit value contradicts the tag or the file's provenance.
        image_size: build the vision tower for this input size. Position embeddings of pretrained weights are then
            resized once at load time (open_clip's ``resize_pos_embed``: bicubic, antialiased).
        seed: seed of the random weights of ``pretrained=None``: every build gives the same CLIP, whatever the
            caller's random state (which is left as it was). Defaults to :data:`RANDOM_INIT_SEED`.

    Returns:
        The CLIP model, in eval mode with ``requires_grad`` off for every parameter.

    Raises:
        UnknownBackboneError: ``backbone`` is not an open_clip architecture.
        PretrainedWeightsError: the tag is unknown for this backbone, the file is missing or unreadable, or the
            weights cannot be downloaded (e.g. offline: this fails at once, without the hub's retries).
    """
    _check_backbone(backbone)
    if pretrained is None or pretrained == FROM_CHECKPOINT:
        activation = backbone_default_quick_gelu(backbone) if quick_gelu is None else bool(quick_gelu)
        if pretrained is None:
            logger.warning(
                "CLIP backbone %s is RANDOMLY INITIALISED (pretrained=None): anomaly scores are meaningless. "
                "Use this for tests and smoke runs only.",
                backbone,
            )
        else:
            logger.info(
                "CLIP backbone %s: architecture only; its weights come from the checkpoint loaded next.", backbone
            )
        model = _create_architecture(backbone, activation, image_size, seed=seed if pretrained is None else None)
    elif _is_path_like(pretrained):
        model = _load_weight_file(backbone, Path(pretrained).expanduser(), quick_gelu, image_size)
    else:
        model = _load_tag(backbone, str(pretrained), quick_gelu, image_size)
    model.eval()
    model.requires_grad_(False)
    return model


def _load_weight_file(backbone: str, path: Path, quick_gelu: bool | None, image_size: int | None) -> nn.Module:
    if not path.is_file():
        msg = f"CLIP weight file {str(path)!r} for backbone {backbone!r} does not exist."
        raise PretrainedWeightsError(msg)
    state_dict = _read_state_dict(path)
    is_openai = weight_file_provenance(path, state_dict) == "openai"
    if quick_gelu is None:
        activation = True if is_openai else backbone_default_quick_gelu(backbone)
    else:
        activation = bool(quick_gelu)
        _warn_activation_mismatch(repr(str(path)) + " (OpenAI CLIP)", activation, True if is_openai else None)
    model = _create_architecture(backbone, activation, image_size)
    try:
        _apply_state_dict(model, state_dict)
    except (RuntimeError, KeyError, ValueError, AssertionError) as error:  # open_clip's resizers assert shapes
        detail = str(error).splitlines()[0][:500]
        msg = (
            f"The weights in {str(path)!r} do not fit CLIP backbone {backbone!r} ({detail}). Pass the backbone the "
            "file was made for, or the file of this backbone."
        )
        raise PretrainedWeightsError(msg) from error
    return model


def _summary(text: str, limit: int = 300) -> str:
    """``text`` on one line, cut after its last whole sentence within ``limit`` characters (never mid-sentence)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text.rstrip(".")
    end = text.rfind(". ", 0, limit)
    if end > 0:
        return text[:end]
    space = text.rfind(" ", 0, limit)
    return text[: space if space > 0 else limit] + " ..."


def _describe(error: BaseException) -> str:
    """``Type: message`` of an error, its message summarised (:func:`_summary`); ``Type`` alone without one."""
    detail = _summary(str(error))
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def _download_error(backbone: str, tag: str, source: str, why: str) -> PretrainedWeightsError:
    reason = f"Could not obtain pretrained weights {tag!r} for CLIP backbone {backbone!r} from {source}: {why}."
    advice = (
        "They are downloaded once, with network access, and cached afterwards. Offline, download the weight file "
        f"elsewhere and pass its path: `{{argument}} /path/to/{backbone}.pt`."
    )
    return PretrainedWeightsError(reason, advice, checkpoint_advice=True)


def _hub_files(repository: str) -> tuple[str, list[str]]:
    """open_clip's reading of a hub entry: ``(repo_id, [file names it tries, safetensors first])``."""
    repo_id, filename = os.path.split(repository)
    filename = filename or HF_WEIGHTS_NAME
    safe = [HF_SAFE_WEIGHTS_NAME] if filename == HF_WEIGHTS_NAME else []
    return repo_id, [*safe, filename]


def _hub_unavailable(repository: str) -> str | None:
    """Why the weights of a hub entry cannot be had now, or ``None`` (cached, or the hub answers).

    When nothing is cached, the hub is asked once, without retries: offline, huggingface_hub would otherwise retry
    each file five times with back-off (about 45 s and 40 log lines) before failing.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError

    repo_id, files = _hub_files(repository)
    if any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in files):
        return None
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set and they are not in the Hugging Face cache"
    try:
        with _quiet_download():
            get_hf_file_metadata(hf_hub_url(repo_id, files[-1]), timeout=10)
    except HfHubHTTPError:  # the hub answered (e.g. 404 for one file name): let open_clip try
        return None
    except Exception as error:  # no connection, DNS failure, timeout, proxy error, ...
        return f"the Hugging Face hub cannot be reached ({_describe(error)})"
    return None


class _DropDownloadError(logging.Filter):
    """Drops open_clip's "Failed to download weights" error record: the error we raise says it with advice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (f"{os.sep}open_clip{os.sep}" in record.pathname and "Failed to download" in record.getMessage())


@contextmanager
def _quiet_download() -> Iterator[None]:
    """No hub warnings (retries, HEAD failures) and no open_clip download error record while downloading."""
    from anomalib_clipad.export import quiet_loggers

    root = logging.getLogger()
    drop = _DropDownloadError()
    root.addFilter(drop)
    try:
        with quiet_loggers({"huggingface_hub": logging.ERROR}):
            yield
    finally:
        root.removeFilter(drop)


def _load_tag(backbone: str, tag: str, quick_gelu: bool | None, image_size: int | None) -> nn.Module:
    known_tags = open_clip.list_pretrained_tags_by_model(backbone)
    if tag not in known_tags:
        msg = (
            f"Unknown pretrained tag {tag!r} for CLIP backbone {backbone!r}, and no file of that name exists. "
            f"Known tags: {known_tags or 'none'}. Pass a tag or the path of a local weight file."
        )
        raise PretrainedWeightsError(msg)
    needs_quick_gelu = tag_uses_quick_gelu(backbone, tag)
    if quick_gelu is None:
        activation = needs_quick_gelu
    else:
        activation = bool(quick_gelu)
        _warn_activation_mismatch(f"{backbone}/{tag}", activation, needs_quick_gelu)
    kind, source = resolve_pretrained_download(backbone, tag)
    unavailable = _hub_unavailable(source) if kind == "hf_hub" else None
    if unavailable is not None:
        raise _download_error(backbone, tag, source, unavailable)
    try:
        with _quiet_download():
            if kind == "url":
                weight_file = download_pretrained_from_url(source)
            else:
                kwargs = {"force_image_size": image_size} if image_size is not None else {}
                with _quiet_random_init():
                    return open_clip.create_model(backbone, pretrained=tag, force_quick_gelu=activation, **kwargs)
    except Exception as error:  # network, hub and cache errors of several libraries
        raise _download_error(backbone, tag, source, _describe(error)) from error
    return _load_weight_file(backbone, Path(weight_file), activation, image_size)


def uses_quick_gelu(model: torch.nn.Module) -> bool:
    """Whether a CLIP model was built with QuickGELU activations (OpenAI weights); a state dict does not record it."""
    return any(isinstance(module, QuickGELU) for module in model.modules())


def set_quick_gelu(model: torch.nn.Module, enabled: bool) -> int:
    """Switch every transformer MLP activation of a built CLIP to QuickGELU (``True``) or GELU (``False``) in place.

    The activations hold no weights, so a model built with the other one becomes exactly the model built with this
    one (reloading a checkpoint whose record says which activation its weights need).

    Returns:
        The number of activations replaced.
    """
    replaced = 0
    for module in model.modules():
        mlp = getattr(module, "mlp", None)
        if not isinstance(mlp, nn.Sequential) or "gelu" not in mlp._modules:
            continue
        current = mlp._modules["gelu"]
        if isinstance(current, QuickGELU) != enabled:
            mlp._modules["gelu"] = QuickGELU() if enabled else nn.GELU()
            replaced += 1
    return replaced


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
