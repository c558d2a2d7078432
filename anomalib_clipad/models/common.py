# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Lightning-side helpers shared by every model of anomalib-clipad."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from anomalib.pre_processing import PreProcessor
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torchvision.transforms.v2 import Compose, InterpolationMode, Normalize, Resize

from anomalib_clipad.clip.loading import FROM_CHECKPOINT

logger = logging.getLogger(__name__)

CLIP_MEAN: tuple[float, float, float] = OPENAI_DATASET_MEAN
CLIP_STD: tuple[float, float, float] = OPENAI_DATASET_STD


def clip_transform(image_size: int | tuple[int, int]) -> Compose:
    """Resize (bicubic, antialiased) to the model's input size and normalise with CLIP's mean and std."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return Compose(
        [
            Resize(size, antialias=True, interpolation=InterpolationMode.BICUBIC),
            Normalize(mean=CLIP_MEAN, std=CLIP_STD),
        ]
    )


def clip_pre_processor(image_size: int | tuple[int, int]) -> PreProcessor:
    """Anomalib pre-processor of a CLIP model: :func:`clip_transform` on every batch (training, inference, export)."""
    return PreProcessor(transform=clip_transform(image_size))


def resolve_class_name(explicit: str | None, trainer: Any | None) -> str:
    """The class name used in prompts: the explicit one, else the datamodule's ``category``.

    Args:
        explicit: the model's ``class_name`` argument.
        trainer: the Lightning trainer (its datamodule may have a ``category``, e.g. MVTecAD or Visa).

    Raises:
        ValueError: neither is available (e.g. a ``Folder`` datamodule without ``--model.class_name``).
    """
    if explicit:
        return explicit
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    category = getattr(datamodule, "category", None)
    if category:
        return str(category)
    msg = (
        "No class name for the prompts: pass one with `class_name` (CLI: `--model.class_name bottle`); "
        f"the datamodule {type(datamodule).__name__ if datamodule is not None else '(none)'} has no `category`."
    )
    raise ValueError(msg)


def refuse_other_settings(
    recorded: Mapping[str, Any],
    current: Mapping[str, Any],
    names: Iterable[str],
    what: str,
    alternative: str = "",
) -> None:
    """Refuse a saved state made with other values of settings that shape it or how it is used.

    The one place of this check, for checkpoints (:func:`refuse_other_checkpoint_hparams`) and learned-state files
    (:meth:`~anomalib_clipad.models.learned_state.LearnedState.check_compatible`). A setting that ``recorded`` lacks
    (older files, converted reference files) or holds as ``None``, or that the model does not have, is not checked.

    Args:
        recorded: the settings the saved state was made with.
        current: the model's settings (the names are the Lightning model's arguments, so the CLI hint is right).
        names: the settings to compare (lists and tuples compare alike).
        what: the saved state, for the message (e.g. "This PromptAD checkpoint").
        alternative: another way out, appended to the message (e.g. ", or load it with ...").

    Raises:
        ValueError: settings differ; the message names every one of them (both values) and how to build the model
            to match, all at once.
    """
    differing = []
    for name in names:
        stored, now = recorded.get(name), current.get(name)
        if stored is not None and now is not None and _as_list(stored) != _as_list(now):
            differing.append((name, stored, now))
    if not differing:
        return
    made = ", ".join(f"{name}={stored!r}" for name, stored, _ in differing)
    built = ", ".join(f"{name}={now!r}" for name, _, now in differing)
    flags = " ".join(f"--model.{name} {_cli_value(stored)}" for name, stored, _ in differing)
    settings = "setting" if len(differing) == 1 else "settings"
    msg = (
        f"{what} was made with {made}, but the model was built with {built}. Build the model with the same "
        f"{settings} (CLI: `{flags}`){alternative}."
    )
    raise ValueError(msg)


def refuse_other_checkpoint_hparams(
    checkpoint: dict[str, Any], hparams: Any, names: tuple[str, ...], model_name: str
) -> None:
    """Refuse a checkpoint made with other values of hyper-parameters that shape the weights or how they are used.

    A hyper-parameter the checkpoint does not record (older checkpoints), or records as ``None``, is not checked.

    Args:
        checkpoint: the Lightning checkpoint being loaded (its ``hyper_parameters``).
        hparams: the model's current hyper-parameters.
        names: the hyper-parameters to compare (lists and tuples compare alike).
        model_name: for the message.

    Raises:
        ValueError: one of them differs; the message says how to build the model to match.
    """
    refuse_other_settings(
        checkpoint.get("hyper_parameters", {}),
        hparams,
        names,
        f"This {model_name} checkpoint",
        alternative=f", or load it with `{model_name}.load_from_checkpoint`, which does so",
    )


def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


def _cli_value(value: Any) -> str:
    """How a hyper-parameter value is written on anomalib's command line."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return json.dumps(list(value))
    return str(value)


def warn_if_calibrating_on_test(trainer: Any | None, model_name: str) -> bool:
    """Warn when the datamodule validates on its test split (anomalib's ``val_split_mode="same_as_test"``).

    anomalib calibrates thresholds and score normalisation on the validation split; when that is the test split,
    F1 scores are tuned on the very images they score (AUROC does not depend on thresholds). ``MVTecAD`` and ``Visa``
    default to this mode; ``Folder`` does not.

    Args:
        trainer: the Lightning trainer (may be ``None`` or have no datamodule).
        model_name: for the message.

    Returns:
        Whether the warning was logged.
    """
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    mode = getattr(datamodule, "val_split_mode", None)
    if str(getattr(mode, "value", mode)) != "same_as_test":
        return False
    logger.warning(
        "%s: the validation split of %s is its test split (val_split_mode=same_as_test), so thresholds and "
        "normalisation are calibrated on the images that are scored: image/pixel F1 are optimistic (AUROC is not "
        "affected). For a held-out calibration split pass `--data.val_split_mode from_test` (or `from_dir`).",
        model_name,
        type(datamodule).__name__,
    )
    return True


class BuiltOnFirstUse:
    """The ``model`` attribute of our Lightning models: the torch model, built by ``configure_model()`` on first use.

    Building a CLIP loads its weights, which can fail (unknown backbone, unreadable file, weights not available
    offline). anomalib's CLI instantiates models inside jsonargparse, which buries any error raised in ``__init__``
    under "Does not validate against any of the Union subtypes" and a dump of every setting. So ``__init__`` only
    checks its arguments, and the torch model is built where Lightning configures the model (``configure_model``,
    which ``setup``, ``load_from_checkpoint`` and the trainer call), or on first access of ``model`` from Python;
    then our error is the last thing the user reads.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        """Remember the attribute's name."""
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        """The built torch model (building it first if needed)."""
        if instance is None:
            return self
        module = instance._modules.get(self.name)
        if module is None:
            instance.configure_model()
            module = instance._modules[self.name]
        return module


def is_built(module: Any, name: str = "model") -> bool:
    """Whether a Lightning model's torch model was built already (without building it)."""
    return module._modules.get(name) is not None


def load_without_original_weights(load: Any, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:
    """Lightning's ``load_from_checkpoint`` building the CLIP architecture only (weights from the checkpoint).

    Args:
        load: the parent class's bound ``load_from_checkpoint`` (``super().load_from_checkpoint``).
        checkpoint_path: the checkpoint.
        *args: passed on.
        **kwargs: passed on; ``pretrained=...`` builds from a tag or file first anyway.
    """
    kwargs.setdefault("pretrained", FROM_CHECKPOINT)
    return load(checkpoint_path, *args, **kwargs)


def build_torch_model(module: Any, torch_model_class: type, **renamed: str) -> None:
    """Build a Lightning model's torch model from its hyper-parameters, once, and record what the builder decided.

    Every argument of ``torch_model_class`` that is also a hyper-parameter is passed by name (``renamed`` maps a
    torch-model argument to the hyper-parameter that feeds it when the names differ); the CLIP's activation and
    weight source (``clip_hparams``) are then added to the hyper-parameters, so checkpoints record them.

    Args:
        module: the Lightning model (its ``hparams`` and ``model`` slot).
        torch_model_class: the torch model to build.
        **renamed: ``torch_argument="hyper_parameter"`` pairs.
    """
    if module._modules.get("model") is not None:
        return
    hparams = module.hparams
    parameters = inspect.signature(torch_model_class.__init__).parameters
    arguments = {}
    for name in parameters:
        source = renamed.get(name, name)
        if name != "self" and source in hparams:
            value = hparams[source]
            arguments[name] = tuple(value) if isinstance(value, list) else value
    module.model = torch_model_class(**arguments)
    hparams.update(module.model.clip_hparams)
