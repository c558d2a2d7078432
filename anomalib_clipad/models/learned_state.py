# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""One small learned-state file for every model: what it scores with, besides the public CLIP weights.

A Lightning checkpoint of our models holds the whole frozen CLIP (0.8 to 1.7 GB), which anyone can download again. A
:class:`LearnedState` holds only what a model learned or set up: learned prompts, adapters and the text features
computed from them, and reference memories of normal images, as the torch model's
:meth:`~anomalib_clipad.models.interface.ClipAnomalyDetector.learned_state_dict` gives them (kilobytes to a few MB). It
records what that state must agree with: the model, backbone, input size, CLIP activation, the settings that shape the
tensors (:meth:`~anomalib_clipad.models.interface.ClipAnomalyDetector.architecture`) and, for a class-specific state
(text prototypes or a memory of one class), the class. It also records what it was fitted on (:class:`Provenance`, for
the leakage guard) and, once calibrated, its thresholds.

The file (``torch.save`` of plain containers and tensors, read with ``torch.load(..., weights_only=True)``)::

    {"format": "anomalib_clipad.learned_state", "version": 1, "model": "PromptAD", "backbone": "ViT-B-16-plus-240",
     "image_size": 240, "quick_gelu": False, "weight_source": "tag:laion400m_e32", "architecture": {...},
     "class_name": "bottle", "state": {name: tensor}, "provenance": {"training_paths": [...],
     "reference_paths": [...], "training_classes": [...]}, "thresholds": None}

:func:`read_learned_state` reads this format and the methods' other formats (the reference code's published files,
our former per-method files) through the converters each method registers in its ``reference_format`` module
(:func:`register_reference_format`). Every model keeps its reference memories under ``memories.`` in its state
(:data:`REFERENCE_PREFIX`), so a state can be written without them (:meth:`LearnedState.from_model`).

Example:
    >>> from anomalib_clipad.models.learned_state import LearnedState, read_learned_state
    >>> state = LearnedState.from_model(torch_model, "PromptAD", class_name="bottle")  # doctest: +SKIP
    >>> path = state.save("results/learned_state.pt")  # doctest: +SKIP
    >>> state = read_learned_state(path, fresh_model, "PromptAD", requested_class="bottle")  # doctest: +SKIP
    >>> state.apply_to(fresh_model)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import pickle
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from anomalib_clipad.components.prompts import prompt_class_name
from anomalib_clipad.components.readiness import ClassMismatchError
from anomalib_clipad.models.common import refuse_other_settings

logger = logging.getLogger(__name__)

__all__ = [
    "LEARNED_STATE_FILE",
    "REFERENCE_PREFIX",
    "ClassMismatchError",
    "LearnedState",
    "Provenance",
    "ReferenceFormat",
    "human_size",
    "learned_shapes",
    "learned_tensors",
    "load_learned_tensors",
    "read_learned_state",
    "register_reference_format",
]

LEARNED_STATE_FILE = Path("weights") / "learned_state.pt"
"""Where training writes the learned state, relative to the run's root folder."""
REFERENCE_PREFIX = "memories."
"""The state entries under this prefix are reference memories of normal images (every model's ``memories``)."""
_TOP_LEVEL_SETTINGS = ("backbone", "image_size", "quick_gelu")
_UNREADABLE = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError)


# ------------------------------------------------------------------------------------------------ the state
@dataclass(frozen=True)
class Provenance:
    """What a learned state was made from.

    Attributes:
        training_paths: the images its parameters were fitted on (auxiliary data, or the normal shots): a model
            scoring with the state alone still refuses a target made of them (the leakage guard).
        reference_paths: the normal reference images of its memory.
        training_classes: the classes of the training images.
    """

    training_paths: tuple[str, ...] = ()
    reference_paths: tuple[str, ...] = ()
    training_classes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, list[str]]:
        """Plain, sorted lists (what the file stores)."""
        return {
            "training_paths": sorted(self.training_paths),
            "reference_paths": list(self.reference_paths),
            "training_classes": sorted(self.training_classes),
        }

    @classmethod
    def from_dict(cls, content: Mapping[str, Any] | None) -> Provenance:
        """The provenance of a file (missing entries are empty)."""
        content = content or {}
        return cls(**{name: tuple(str(item) for item in content.get(name) or ()) for name in cls.__dataclass_fields__})


@dataclass
class LearnedState:
    """Everything a model scores with besides the public CLIP weights, and what it must agree with.

    Args:
        model: the Lightning class name of the model (``"PromptAD"``).
        backbone: the open_clip architecture (``None``: not recorded, e.g. a converted reference file).
        image_size: the input size (``None``: not recorded).
        quick_gelu: whether the CLIP used QuickGELU (``None``: not recorded).
        weight_source: where the CLIP weights came from (``"tag:openai"``, ...; ``None``: not recorded).
        architecture: the torch model's :meth:`architecture` (settings that shape the state), as recorded.
        class_name: the class the state belongs to; ``None`` for a class-agnostic state (AnomalyCLIP's prompts,
            SimCLIP's learned weights without a memory).
        state: name -> tensor, the torch model's :meth:`learned_state_dict`.
        provenance: what the state was made from.
        thresholds: calibrated thresholds (``{"image": ..., "pixel": ..., "source": ...}``); ``None`` when
            uncalibrated.
        origin: what it was read from, for messages and logs (our file, or the kind of a converted file).
    """

    FORMAT: ClassVar[str] = "anomalib_clipad.learned_state"
    VERSION: ClassVar[int] = 1

    model: str
    backbone: str | None
    image_size: int | None
    quick_gelu: bool | None
    weight_source: str | None
    architecture: dict[str, Any]
    class_name: str | None
    state: dict[str, torch.Tensor]
    provenance: Provenance = field(default_factory=Provenance)
    thresholds: dict[str, Any] | None = None
    origin: str = field(default="the learned state", compare=False)

    # ------------------------------------------------------------------------------------------- building
    @classmethod
    def from_model(
        cls,
        torch_model: nn.Module,
        model_name: str,
        class_name: str | None,
        provenance: Provenance | None = None,
        *,
        references: bool = True,
    ) -> LearnedState:
        """The learned state of a torch model.

        Args:
            torch_model: the model (its :meth:`learned_state_dict`, :meth:`architecture` and ``clip_hparams``).
            model_name: its Lightning class name (``"PromptAD"``).
            class_name: the class the state belongs to; ``None`` for a class-agnostic state.
            provenance: what it was made from.
            references: keep the reference memories (``False``: leave them out, e.g. SimCLIP's training output,
                which serves any target and draws its references there).

        Returns:
            The state (tensors detached, on the CPU).
        """
        architecture = _plain(dict(torch_model.architecture()))
        state = {name: tensor.detach().cpu() for name, tensor in torch_model.learned_state_dict().items()}
        provenance = provenance or Provenance()
        if not references:
            state = {name: tensor for name, tensor in state.items() if not name.startswith(REFERENCE_PREFIX)}
            provenance = replace(provenance, reference_paths=())
        hparams = getattr(torch_model, "clip_hparams", {})
        return cls(
            model=model_name,
            backbone=architecture.get("backbone"),
            image_size=architecture.get("image_size"),
            quick_gelu=None if hparams.get("quick_gelu") is None else bool(hparams["quick_gelu"]),
            weight_source=hparams.get("weight_source"),
            architecture=architecture,
            class_name=class_name,
            state=state,
            provenance=provenance,
        )

    @property
    def has_references(self) -> bool:
        """Whether the state holds reference memories."""
        return any(name.startswith(REFERENCE_PREFIX) for name in self.state)

    @property
    def size_bytes(self) -> int:
        """Bytes of the state's tensors (about the file's size)."""
        return sum(tensor.numel() * tensor.element_size() for tensor in self.state.values())

    # ------------------------------------------------------------------------------------------- the file
    def to_content(self) -> dict[str, Any]:
        """What :meth:`save` writes: plain containers and float32 (or integer) contiguous CPU tensors."""
        return {
            "format": self.FORMAT,
            "version": self.VERSION,
            "model": self.model,
            "backbone": self.backbone,
            "image_size": self.image_size,
            "quick_gelu": self.quick_gelu,
            "weight_source": self.weight_source,
            "architecture": _plain(self.architecture),
            "class_name": self.class_name,
            "state": {name: _stored(tensor) for name, tensor in self.state.items()},
            "provenance": self.provenance.to_dict(),
            "thresholds": None if self.thresholds is None else dict(self.thresholds),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the file (parent folders are created).

        Returns:
            The path written.
        """
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.to_content(), path)
        logger.info(
            "%s: learned state written to %s (%s; score with it: `--model.learned_state %s`).",
            self.model,
            path,
            human_size(path.stat().st_size),
            path,
        )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LearnedState:
        """Read a learned-state file of this format (other formats: :func:`read_learned_state`).

        Raises:
            FileNotFoundError: no such file.
            ValueError: unreadable with ``weights_only=True``, another format, or another version.
        """
        path = Path(path).expanduser()
        return cls.from_content(_read(path), repr(str(path)))

    @classmethod
    def is_ours(cls, content: Any) -> bool:
        """Whether loaded file content is of this format (any version)."""
        return isinstance(content, Mapping) and content.get("format") == cls.FORMAT

    @classmethod
    def from_content(cls, content: Any, source: str = "the learned state") -> LearnedState:
        """The state from what ``torch.load`` returned.

        Raises:
            ValueError: another format, another version (both named), or a malformed state.
        """
        if not cls.is_ours(content):
            keys = list(content)[:8] if isinstance(content, Mapping) else type(content).__name__
            msg = f"{source} is not an anomalib-clipad learned state (format {cls.FORMAT!r}); it holds {keys}."
            raise ValueError(msg)
        version = content.get("version")
        if version != cls.VERSION:
            msg = (
                f"{source} is a learned state of version {version!r}; this version of anomalib-clipad reads version "
                f"{cls.VERSION}. Use the anomalib-clipad release that wrote it, or fit the model again."
            )
            raise ValueError(msg)
        state = content.get("state")
        if not isinstance(state, Mapping) or not all(isinstance(value, torch.Tensor) for value in state.values()):
            msg = f"{source} has no 'state' dictionary of tensors."
            raise ValueError(msg)
        return cls(
            model=str(content.get("model")),
            backbone=content.get("backbone"),
            image_size=content.get("image_size"),
            quick_gelu=content.get("quick_gelu"),
            weight_source=content.get("weight_source"),
            architecture=dict(content.get("architecture") or {}),
            class_name=content.get("class_name"),
            state=dict(state),
            provenance=Provenance.from_dict(content.get("provenance")),
            thresholds=content.get("thresholds"),
            origin=f"the learned state {source}",
        )

    # ------------------------------------------------------------------------------------------- use
    def check_compatible(
        self,
        torch_model: nn.Module,
        model_name: str,
        requested_class: str | None = None,
    ) -> None:
        """Refuse a model this state was not made for.

        Checked: the model; the backbone, input size, activation and every recorded :meth:`architecture` setting
        (a setting the state does not record is not checked: a converted reference file is then checked by tensor
        shapes only, when applied); and, for a class-specific state, the class.

        Args:
            torch_model: the model that would score with the state.
            model_name: its Lightning class name.
            requested_class: the class it is asked to score (``None``: not known yet).

        Raises:
            ValueError: another model or setting; the message names both values and the fix.
            ClassMismatchError: a class-specific state and another class.
        """
        if self.model.lower() != model_name.lower():
            msg = (
                f"{_capitalised(self.origin)} is a learned state of {self.model}, not of {model_name}: score with "
                f"`--model {self.model}`, or give a learned state of {model_name}."
            )
            raise ValueError(msg)
        current = {**dict(torch_model.architecture()), "quick_gelu": torch_model.clip_hparams.get("quick_gelu")}
        recorded = {**self.architecture, "backbone": self.backbone, "image_size": self.image_size}
        recorded["quick_gelu"] = self.quick_gelu
        names = [*_TOP_LEVEL_SETTINGS, *(name for name in self.architecture if name not in _TOP_LEVEL_SETTINGS)]
        refuse_other_settings(recorded, current, names, _capitalised(self.origin))
        if self.backbone is None:
            logger.info(
                "%s: %s records no backbone: it is checked against the model by its tensor shapes only.",
                model_name,
                self.origin,
            )
        source = torch_model.clip_hparams.get("weight_source")
        if self.weight_source is not None and source is not None and self.weight_source != source:
            logger.warning(
                "%s: %s was made on CLIP weights %s, this model has %s: scores differ unless these are the same.",
                model_name,
                self.origin,
                self.weight_source,
                source,
            )
        if (
            self.class_name is not None
            and requested_class is not None
            and prompt_class_name(requested_class) != prompt_class_name(self.class_name)
        ):
            msg = (
                f"{_capitalised(self.origin)} belongs to class {self.class_name!r} (its prompts and reference memory "
                f"were made for it), but the model is asked to score class {requested_class!r}. Fit a learned state on "
                f"{requested_class!r} (e.g. `anomalib train ... --data.category {requested_class}`), or score "
                f"{self.class_name!r}."
            )
            raise ClassMismatchError(msg)

    def apply_to(self, torch_model: nn.Module) -> None:
        """Load the tensors into a model, which is then ready to score (its text features restored or recomputed).

        A class-specific state also gives the model its class. Check the model first (:meth:`check_compatible`).

        Raises:
            ValueError: a missing, unexpected or wrongly shaped tensor (the first one is named).
        """
        previous = getattr(torch_model, "class_name", None)
        if self.class_name is not None:
            torch_model.class_name = self.class_name
        try:
            torch_model.load_learned_state_dict(self.state)
        except Exception:
            torch_model.class_name = previous
            raise


def human_size(n_bytes: int) -> str:
    """``"12.3 kB"``, ``"4.5 MB"``: a byte count for logs (powers of 1000)."""
    size = float(n_bytes)
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover (the loop returns)


# ------------------------------------------------------------------------------------------------ torch side
def learned_tensors(module: nn.Module, prefixes: Sequence[str]) -> dict[str, torch.Tensor]:
    """Detached CPU copies of a module's state-dict entries under ``prefixes`` (a torch model's learned state).

    Args:
        module: the torch model.
        prefixes: state-dict name prefixes (a full name, e.g. ``"normal_context"``, matches itself).
    """
    prefixes = tuple(prefixes)
    return {
        name: tensor.detach().cpu().clone() for name, tensor in module.state_dict().items() if name.startswith(prefixes)
    }


def learned_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Name -> shape of a torch model's learned state (what a converted file must match)."""
    return {name: tuple(tensor.shape) for name, tensor in module.learned_state_dict().items()}


@torch.no_grad()
def load_learned_tensors(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    prefixes: Sequence[str],
    model_name: str,
    optional: Sequence[str] = (),
) -> None:
    """Check a learned state against a torch model's own entries and load it (a model's ``load_learned_state_dict``).

    Parameters must match in shape. Buffers (text prototypes, reference memories) take the stored number of rows (a
    memory holds ``k`` images' features); their other dimensions must match.

    Args:
        module: the torch model.
        state: name -> tensor.
        prefixes: the state-dict name prefixes of the model's learned state.
        model_name: for messages.
        optional: prefixes (among ``prefixes``) of entries a state may leave out as a group, e.g. ``("memories.",)``
            for a state without reference memories; when one entry of a group is there, all must be.

    Raises:
        ValueError: naming the first unexpected, missing or wrongly shaped entry.
    """
    prefixes, optional = tuple(prefixes), tuple(optional)
    current = {name: tensor for name, tensor in module.state_dict(keep_vars=True).items() if name.startswith(prefixes)}
    for name in state:
        if name not in current:
            msg = f"{model_name} learned state: unexpected key {name!r} (this model's keys: {_listed(current)})."
            raise ValueError(msg)
    groups_given = {prefix for prefix in optional if any(name.startswith(prefix) for name in state)}
    for name in current:
        group = next((prefix for prefix in optional if name.startswith(prefix)), None)
        if name not in state and (group is None or group in groups_given):
            msg = f"{model_name} learned state: missing key {name!r} (this model's keys: {_listed(current)})."
            raise ValueError(msg)
    for name, value in state.items():
        expected = current[name]
        same = tuple(value.shape) == tuple(expected.shape)
        if not same and not isinstance(expected, nn.Parameter):
            same = value.ndim == expected.ndim and tuple(value.shape[1:]) == tuple(expected.shape[1:])
        if not same:
            msg = (
                f"{model_name} learned state: {name!r} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(expected.shape)}: it was made with another backbone or architecture setting."
            )
            raise ValueError(msg)
    module.load_state_dict(dict(state), strict=False)


def _listed(names: Iterable[str], limit: int = 6) -> str:
    names = list(names)
    shown = ", ".join(repr(name) for name in names[:limit])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > limit else shown


# ------------------------------------------------------------------------------------------------ other formats
@dataclass(frozen=True)
class ReferenceFormat:
    """Another file format a method's learned state is read from (the reference code's files, our former files).

    Args:
        model: the Lightning class name of the method.
        description: what the files are, for messages (e.g. "reference AnomalyCLIP checkpoint ({'prompt_learner':
            ...})").
        recognises: whether the loaded content of one file is of this format.
        convert: the :class:`LearnedState` of the loaded files (``[(source, content), ...]``, all recognised) for a
            torch model (whose shapes tell what the files cannot, e.g. the number of layers). It records what the
            files record; ``origin`` says what was read. Raises ``ValueError`` on incomplete or inconsistent files.
    """

    model: str
    description: str
    recognises: Callable[[Mapping[str, Any]], bool]
    convert: Callable[[Sequence[tuple[str, Mapping[str, Any]]], nn.Module], LearnedState]


_FORMATS: list[ReferenceFormat] = []


def register_reference_format(reference_format: ReferenceFormat) -> ReferenceFormat:
    """Make :func:`read_learned_state` accept a format (called by each method's ``reference_format`` module)."""
    if reference_format not in _FORMATS:
        _FORMATS.append(reference_format)
    return reference_format


def _reference_formats() -> list[ReferenceFormat]:
    """Every registered format, after importing the ``reference_format`` module of every model of the registry."""
    from anomalib_clipad.registry import MODELS

    for spec in MODELS:
        name = f"{spec.module}.reference_format"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    return list(_FORMATS)


def read_learned_state(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    torch_model: nn.Module,
    model_name: str,
    requested_class: str | None = None,
) -> LearnedState:
    """Read a learned state for a model, in our format or in one of its method's other formats, and check it.

    Args:
        paths: one file, or several files that together make a state in another format (SimCLIP's reference pair).
        torch_model: the model that will score with it (converters read its shapes; the state is checked against it).
        model_name: the model's Lightning class name.
        requested_class: the class the model is to score, when known (a class-specific state of another is refused).

    Returns:
        The state, compatible with the model: :meth:`LearnedState.apply_to` loads it.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: unreadable with ``weights_only=True``, unknown format (a format of another model is named),
            unknown version, an incomplete set of files, or a state the model cannot use (see
            :meth:`LearnedState.check_compatible`).
        ClassMismatchError: a class-specific state of another class.
    """
    files = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not files:
        msg = f"No learned-state file given for {model_name}."
        raise ValueError(msg)
    contents = [(repr(str(Path(path).expanduser())), _read(Path(path).expanduser())) for path in files]
    for source, content in contents:
        if not isinstance(content, Mapping):
            msg = f"{source} holds a {type(content).__name__}, not a learned state of {model_name}."
            raise ValueError(msg)
    ours = [source for source, content in contents if LearnedState.is_ours(content)]
    if ours and len(contents) > 1:
        msg = f"{ours[0]} is a complete anomalib-clipad learned state: pass it alone."
        raise ValueError(msg)
    if ours:
        state = LearnedState.from_content(contents[0][1], ours[0])
    else:
        formats = _reference_formats()
        own = [item for item in formats if item.model.lower() == model_name.lower()]
        match = next((item for item in own if all(item.recognises(content) for _, content in contents)), None)
        if match is None:
            raise ValueError(_unknown_format_message(contents, model_name, own, formats))
        state = match.convert(contents, torch_model)
        logger.info("%s: read %s.", model_name, state.origin)
    state.check_compatible(torch_model, model_name, requested_class)
    return state


def _unknown_format_message(
    contents: Sequence[tuple[str, Mapping[str, Any]]],
    model_name: str,
    own: Sequence[ReferenceFormat],
    formats: Sequence[ReferenceFormat],
) -> str:
    for source, content in contents:
        other = next((item for item in formats if item not in own and item.recognises(content)), None)
        if other is not None:
            return (
                f"{source} is a {other.description}, a learned state of {other.model}, not of {model_name}: score with "
                f"`--model {other.model}`."
            )
    source, content = next(
        ((source, content) for source, content in contents if not any(item.recognises(content) for item in own)),
        contents[0],
    )
    accepted = "; ".join(item.description for item in own) or "none"
    return (
        f"{source} is neither an anomalib-clipad learned state ({LearnedState.FORMAT!r}) nor a file of the other "
        f"formats {model_name} reads ({accepted}); its keys: {list(content)[:8]}."
    )


# ------------------------------------------------------------------------------------------------ helpers
def _read(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` with clear errors."""
    if not path.is_file():
        msg = f"The learned-state file {str(path)!r} does not exist."
        raise FileNotFoundError(msg)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE as error:
        first_line = str(error).splitlines()[0][:300] if str(error) else ""
        msg = (
            f"{str(path)!r} is not a learned-state file that can be read safely (torch.load with weights_only=True): "
            f"{type(error).__name__}: {first_line}"
        )
        raise ValueError(msg) from error


def _stored(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU contiguous copy, float32 if floating point (integer tensors, e.g. token ids, keep their type)."""
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.is_floating_point() else tensor).contiguous().clone()


def _plain(value: Any) -> Any:
    """Lists for tuples, recursively (what the file stores and compares)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]
