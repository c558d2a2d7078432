# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Calibrate thresholds from normal images only (``calibration="normal_only"``): a chosen false-alarm rate.

An inspection engineer often has a handful of good parts and no defect image, so the F1-adaptive thresholds of a
held-out split with anomalies (``calibration="held_out"``, the default) cannot be computed. With
``calibration="normal_only"`` every model sets its image and pixel thresholds so that about ``false_alarm_rate`` of
**good** images (of good pixels) are flagged:

* **Which images.** The *held-out normal images* of the target: the normal images of the datamodule's train split
  (``Folder``'s ``normal_dir``, MVTec AD's ``train/good``) that are neither the model's k shots / reference images nor
  its training images, and never an image of the test split (the scored images). Only where there is none, the
  **leave-one-out rule** over the k reference shots applies: each shot is scored against a memory of the *other*
  ``k - 1`` shots (the memory entries of the shot are left out), which needs ``k >= 2``. A leave-one-out score is
  computed against a smaller memory than the scored images meet, so it tends to be higher (fewer false alarms than
  asked); for PromptAD and DevPrompt the prompts were also trained on the shots, which pulls the other way. Where
  there is no held-out normal image, thresholds stored earlier (same class, same rate: from a checkpoint or a
  learned-state file) are reused before leave-one-out is tried; with none of these (no held-out normal image, nothing
  stored, ``k <= 1``) it is an error that says what to pass.
* **The threshold.** The image threshold is the finite-sample ("conformal") ``1 - false_alarm_rate`` quantile of the
  n image scores: the ``ceil((n + 1) (1 - rate))``-th smallest. A good image scored later, exchangeable with the
  calibration images, is flagged (score ``>`` threshold, anomalib's rule) with probability
  ``(n + 1 - k) / (n + 1) <= rate`` on average over calibration sets; the count of false alarms among m such images
  follows a beta-binomial distribution, whatever the model (``benchmarks/false_alarm.py`` measures it). This needs
  ``n >= ceil(1 / rate)`` images (:func:`minimum_normal_images`); with fewer, an error names the count and the fix.
  The pixel threshold is the same quantile of all the pixels of the n anomaly maps.
* **Normalisation** follows the same images: the models with anomalib's min-max normalisation (WinCLIP+, PromptAD,
  DevPrompt) take the minimum and maximum of the normal image scores (and of the normal maps) as their range; the
  raw-score models (AnomalyCLIP, SimCLIP) stay raw.
* **Kept.** The result (:class:`NormalCalibration`, with its source) goes to the learned-state file's ``thresholds``
  and to checkpoints, and is reused where the target has no normal image to calibrate on (e.g. predicting a folder).

The model calls :func:`calibrate_on_normal_images` at the start of every test and prediction
(:meth:`~anomalib_clipad.models.base.ClipModelMixin.prepare_for_scoring`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from anomalib.data.utils.image import read_image

from anomalib_clipad.components.memory import ReferenceMemory
from anomalib_clipad.components.prompts import prompt_class_name

from .thresholds import set_normalization, set_thresholds

logger = logging.getLogger(__name__)

HELD_OUT = "held_out"
"""F1-adaptive thresholds from a held-out split with anomalies (the default where there is one)."""
NORMAL_ONLY = "normal_only"
"""Thresholds from normal images only, at a chosen false-alarm rate (this module)."""
CALIBRATION_MODES = (HELD_OUT, NORMAL_ONLY)
SOURCE = "normal_only"
"""The ``source`` of the thresholds this module computes (in the learned-state file)."""
SCORING_BATCH_SIZE = 16


def check_calibration_arguments(calibration: str, false_alarm_rate: float) -> None:
    """Refuse an unknown ``calibration`` mode or a ``false_alarm_rate`` outside ``(0, 1)``.

    Raises:
        ValueError: naming the accepted values.
    """
    if calibration not in CALIBRATION_MODES:
        msg = f"calibration must be one of {CALIBRATION_MODES}, got {calibration!r}."
        raise ValueError(msg)
    if not 0.0 < float(false_alarm_rate) < 1.0:
        msg = f"false_alarm_rate must be strictly between 0 and 1 (e.g. 0.01 for 1 %), got {false_alarm_rate!r}."
        raise ValueError(msg)


def minimum_normal_images(false_alarm_rate: float) -> int:
    """The fewest normal images whose ``1 - rate`` quantile exists: ``ceil(1 / rate)`` (100 for 1 %)."""
    return math.ceil(1.0 / float(false_alarm_rate) - 1e-9)


def quantile_rank(n_values: int, false_alarm_rate: float) -> int:
    """The 1-based rank of the threshold among ``n_values`` sorted scores: ``ceil((n + 1) (1 - rate))``."""
    return min(n_values, math.ceil((n_values + 1) * (1.0 - float(false_alarm_rate)) - 1e-9))


def normal_quantile(values: torch.Tensor, false_alarm_rate: float) -> float:
    """The finite-sample ``1 - rate`` quantile of ``values``: its :func:`quantile_rank`-th smallest value."""
    flat = values.detach().flatten().float().cpu()
    return float(torch.kthvalue(flat, quantile_rank(flat.numel(), false_alarm_rate)).values)


@dataclass(frozen=True)
class NormalCalibration:
    """Thresholds (and normalisation range) computed from normal images, with their source.

    Attributes:
        image: raw image-score threshold.
        pixel: raw pixel threshold.
        image_range: ``(min, max)`` of the normal image scores (``None``: the model reports raw scores).
        pixel_range: ``(min, max)`` of the normal maps (``None``: raw scores).
        false_alarm_rate: the requested rate.
        method: ``"held_out"`` (held-out normal images) or ``"leave_one_out"`` (the k shots).
        class_name: the class calibrated for (``None``: unknown or class-agnostic).
        paths: the normal images scored.
        source: always ``"normal_only"``.
    """

    image: float
    pixel: float
    image_range: tuple[float, float] | None
    pixel_range: tuple[float, float] | None
    false_alarm_rate: float
    method: str
    class_name: str | None
    paths: tuple[str, ...] = ()
    source: str = field(default=SOURCE)

    def to_dict(self) -> dict[str, Any]:
        """Plain containers (what the learned-state file and the checkpoint store)."""
        content = asdict(self)
        content["paths"] = list(self.paths)
        for name in ("image_range", "pixel_range"):
            content[name] = None if content[name] is None else list(content[name])
        return content

    @classmethod
    def from_dict(cls, content: dict[str, Any] | None) -> NormalCalibration | None:
        """The calibration a file stored (``None``: none, or thresholds of another source)."""
        if not content or content.get("source") != SOURCE:
            return None
        ranges = {
            name: None if content.get(name) is None else (float(content[name][0]), float(content[name][1]))
            for name in ("image_range", "pixel_range")
        }
        return cls(
            image=float(content["image"]),
            pixel=float(content["pixel"]),
            false_alarm_rate=float(content["false_alarm_rate"]),
            method=str(content.get("method")),
            class_name=content.get("class_name"),
            paths=tuple(str(path) for path in content.get("paths") or ()),
            **ranges,
        )

    def belongs_to(self, class_name: str | None) -> bool:
        """Whether these thresholds serve ``class_name`` (a class-agnostic side always does)."""
        if self.class_name is None or class_name is None:
            return True
        return prompt_class_name(self.class_name) == prompt_class_name(class_name)

    def apply_to(self, post_processor: Any) -> None:
        """Set the post-processor's thresholds and, where recorded, its normalisation range."""
        set_thresholds(post_processor, self.image, self.pixel)
        if self.image_range is not None and self.pixel_range is not None:
            set_normalization(post_processor, image=self.image_range, pixel=self.pixel_range)


# ------------------------------------------------------------------------------------------------ the images
def held_out_normal_paths(trainer: Any | None, excluded: set[str]) -> list[str]:
    """The normal images of the target's train split that are not ``excluded`` and not in its test split.

    Args:
        trainer: the trainer (its datamodule is the target; ``None`` or no train split: none).
        excluded: the model's shots / reference images and training images.
    """
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    train_data = getattr(datamodule, "train_data", None)
    samples = getattr(train_data, "samples", None)
    if samples is None or "label_index" not in samples:
        return []
    normal = [str(path) for path, label in zip(samples["image_path"], samples["label_index"], strict=True) if not label]
    scored = _split_paths(getattr(datamodule, "test_data", None))
    overlapping = [path for path in normal if path in scored]
    if overlapping:
        logger.warning(
            "normal_only calibration: %d normal image(s) of the train split are also in the test split; they are not "
            "used (thresholds never come from the scored images).",
            len(overlapping),
        )
    return [path for path in normal if path not in excluded and path not in scored]


def _split_paths(dataset: Any | None) -> set[str]:
    samples = getattr(dataset, "samples", None)
    return set() if samples is None else {str(path) for path in samples["image_path"]}


def read_images(paths: Sequence[str], transform: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[torch.Tensor]:
    """Batches of the images at ``paths`` after the model's transform (what the pre-processor does to a batch)."""
    for start in range(0, len(paths), SCORING_BATCH_SIZE):
        chunk = paths[start : start + SCORING_BATCH_SIZE]
        yield torch.stack([transform(read_image(path, as_tensor=True)) for path in chunk])


@torch.no_grad()
def score_images(torch_model: Any, batches: Iterator[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Raw image scores ``(n,)`` and anomaly maps ``(n, H, W)`` of the batches (on the CPU)."""
    scores, maps = [], []
    for images in batches:
        output = torch_model(images.to(device))
        scores.append(output.pred_score.detach().flatten().cpu())
        maps.append(output.anomaly_map.detach().reshape(len(images), *output.anomaly_map.shape[-2:]).cpu())
    return torch.cat(scores), torch.cat(maps)


@contextmanager
def leaving_out(torch_model: torch.nn.Module, index: int, n_shots: int) -> Iterator[None]:
    """Every reference memory of the model without the entries of shot ``index`` (of ``n_shots``), then restored.

    A memory holds the features of its shots one after the other (``k * N`` rows, in the shots' order).

    Raises:
        ValueError: a memory whose size is not a multiple of ``n_shots``.
    """
    memories = [module for module in torch_model.modules() if isinstance(module, ReferenceMemory)]
    saved = [(memory.features, memory.raw) for memory in memories]
    try:
        for memory in memories:
            if len(memory) % n_shots:
                msg = f"A reference memory of {len(memory)} entries does not hold {n_shots} shots alike."
                raise ValueError(msg)
            per_shot = len(memory) // n_shots
            keep = torch.ones(len(memory), dtype=torch.bool, device=memory.features.device)
            keep[index * per_shot : (index + 1) * per_shot] = False
            memory.features = memory.features[keep]
            if memory.raw is not None:
                memory.raw = memory.raw[keep]
        yield
    finally:
        for memory, (features, raw) in zip(memories, saved, strict=True):
            memory.features = features
            if raw is not None:
                memory.raw = raw


def leave_one_out_scores(
    torch_model: Any,
    shot_paths: Sequence[str],
    transform: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and maps of each of the k shots against a memory of the other ``k - 1`` (the leave-one-out rule)."""
    images = torch.cat(list(read_images(shot_paths, transform)))
    scores, maps = [], []
    for index in range(len(shot_paths)):
        with leaving_out(torch_model, index, len(shot_paths)):
            score, anomaly_map = score_images(torch_model, iter([images[index : index + 1]]), device)
        scores.append(score)
        maps.append(anomaly_map)
    return torch.cat(scores), torch.cat(maps)


# ------------------------------------------------------------------------------------------------ calibrating
def calibrate_on_normal_images(trainer: Any | None, module: Any) -> NormalCalibration:
    """Set the model's thresholds (and normalisation) from normal images of the target (see the module docstring).

    Args:
        trainer: the trainer (its datamodule is the target), or ``None``.
        module: the Lightning model (``hparams.false_alarm_rate``, ``model``, ``pre_processor``, ``post_processor``,
            ``reference_paths``, ``training_paths``, ``raw_scores``, ``normal_calibration``).

    Returns:
        The calibration set (computed now, or the stored one reused).

    Raises:
        ValueError: too few normal images for the requested rate, or none and nothing stored for the class.
    """
    name = type(module).__name__
    rate = float(module.hparams.false_alarm_rate)
    torch_model = module.model
    class_name = torch_model.class_name
    transform = module.pre_processor.transform
    excluded = {*map(str, module.reference_paths), *map(str, module.training_paths)}
    paths = held_out_normal_paths(trainer, excluded)
    shots = list(map(str, module.reference_paths)) if torch_model.references_ready else []
    stored = module.normal_calibration
    was_training = torch_model.training
    torch_model.eval()
    try:
        if paths:
            _require_enough(name, len(paths), rate, "held-out normal images of the target's train split")
            method = "held_out"
            scores, maps = score_images(torch_model, read_images(paths, transform), module.device)
        elif stored is not None and stored.belongs_to(class_name) and math.isclose(stored.false_alarm_rate, rate):
            stored.apply_to(module.post_processor)
            logger.info(
                "%s: no held-out normal image to calibrate on: the stored normal-only thresholds (%s, %d image(s)) "
                "are reused.",
                name,
                stored.method,
                len(stored.paths),
            )
            return stored
        elif len(shots) > 1:  # leave-one-out needs another shot in the memory
            _require_enough(name, len(shots), rate, "reference shots (leave-one-out; no held-out normal image)")
            method, paths = "leave_one_out", shots
            scores, maps = leave_one_out_scores(torch_model, shots, transform, module.device)
        else:
            raise ValueError(_no_normal_images_message(name, trainer, len(shots), rate))
    finally:
        torch_model.train(was_training)
    normalises = not module.raw_scores
    calibration = NormalCalibration(
        image=normal_quantile(scores, rate),
        pixel=normal_quantile(maps, rate),
        image_range=(float(scores.min()), float(scores.max())) if normalises else None,
        pixel_range=(float(maps.min()), float(maps.max())) if normalises else None,
        false_alarm_rate=rate,
        method=method,
        class_name=class_name,
        paths=tuple(paths),
    )
    calibration.apply_to(module.post_processor)
    logger.info(
        "%s: thresholds from %d normal image(s) only (%s) at a false-alarm rate of %g: image %.6g, pixel %.6g.",
        name,
        len(paths),
        "held out from the train split" if method == "held_out" else "leave-one-out over the reference shots",
        rate,
        calibration.image,
        calibration.pixel,
    )
    return calibration


def _require_enough(model_name: str, count: int, rate: float, what: str) -> None:
    needed = minimum_normal_images(rate)
    if count >= needed:
        return
    lowest = _rate_for(count)
    higher_rate = f", or ask for a false-alarm rate of at least {lowest} (`--model.false_alarm_rate {lowest}`)"
    if count <= 1:  # one image serves no rate below 1
        higher_rate = ""
    msg = (
        f"{model_name}: calibration='normal_only' at false_alarm_rate={rate:g} needs at least {needed} normal images "
        f"(ceil(1 / rate)), but there are {count} {what}. Add good images to the train split (e.g. Folder's "
        f"`--data.normal_dir`){higher_rate}."
    )
    raise ValueError(msg)


def _rate_for(count: int) -> str:
    """The smallest rate ``count`` images serve, rounded up to three significant digits."""
    rate = 1.0 / count
    digits = 2 - math.floor(math.log10(rate))
    return f"{math.ceil(rate * 10**digits) / 10**digits:g}"


def _no_normal_images_message(model_name: str, trainer: Any | None, n_shots: int, rate: float) -> str:
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    where = f"{type(datamodule).__name__}'s train split" if datamodule is not None else "no datamodule"
    shots = (
        "its single reference shot cannot be scored against the others (leave-one-out needs k_shot >= 2)"
        if n_shots == 1
        else "it has no reference shots to leave out one by one"
    )
    return (
        f"{model_name}: calibration='normal_only' found no held-out normal image ({where} holds none besides the "
        f"model's shots and training images), {shots}, and no normal-only thresholds were stored for this class and "
        "rate. "
        f"Give at least {minimum_normal_images(rate)} good images in the train split (e.g. Folder's "
        "`--data.normal_dir`), use k_shot >= 2 (leave-one-out), or load a checkpoint / learned-state file calibrated "
        "for this class."
    )
