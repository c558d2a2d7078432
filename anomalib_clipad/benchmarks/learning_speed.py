# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""How long a model takes to get what it scores with, per learning protocol (the registry's ``Protocol``).

* ``SET_UP`` (WinCLIP+): nothing is trained; :func:`set_up_row` times the set-up of a class (``set_class``) and of
  its reference memory (``set_references``) against a plain CLIP ``encode_image`` of the same reference images.
* ``NORMAL_SHOTS`` (PromptAD, DevPrompt) and ``AUXILIARY_DATA`` (AnomalyCLIP, SimCLIP): :func:`training_rows` runs
  ``Trainer.fit`` through Lightning's loop on a generated dataset (k normal shots of a category, or labelled images
  with masks read by :class:`~anomalib_clipad.data.auxiliary.AuxiliaryData`), timed per epoch. The first epoch runs
  the frozen image tower on every training image (the recipes cache its features), so every later epoch is compared
  with the **learnable side alone**: the model's own ``training_step`` on the batches of the first epoch (cached
  features by then), backward and an optimiser step, outside Lightning's loop, timed after each fit epoch so that both
  see the same machine load (the parameters and the optimiser state are put back afterwards: the fit goes on
  unchanged). What an epoch costs beyond that reference is Lightning's loop and reading and pre-processing the images
  (the loader does not know about the cache). The first epoch is also reported against a later one (its one-time
  cost: encoding, and DevPrompt's synthesised anomalies).

Only the interface every model shares is used (the torch model's ``set_class`` / ``set_references`` /
``uses_references``, the Lightning model's ``training_step`` and optimiser); what differs between the protocols is the
training data (:data:`TRAINING_DATA`).
"""

from __future__ import annotations

import copy
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from anomalib_clipad.benchmarks.references import plain_image_forward
from anomalib_clipad.benchmarks.speed_table import Goal, SpeedRow
from anomalib_clipad.benchmarks.timing import EpochTimer, interleaved_times, timed_call
from anomalib_clipad.registry import Protocol

CATEGORY = "bottle"
"""The class every model is set up for, and the category of the generated training data."""
TRAINING_GOAL = Goal("<=", 1.3)
"""An epoch after the first should cost at most this much more than its learnable side (the issues' goal)."""


@dataclass(frozen=True)
class TrainingSettings:
    """What a timed fit runs on.

    Attributes:
        images: labelled training images (``AUXILIARY_DATA``; about half anomalous); the normal shots of
            ``NORMAL_SHOTS`` are the model's ``k_shot``.
        epochs: training epochs (at least 2: the first one encodes the images).
        source_size: side of the generated images on disk, in pixels.
        device: where the fit runs.
    """

    images: int
    epochs: int
    source_size: int
    device: torch.device


# ---------------------------------------------------------------------------------------------------------- set-up
def set_up_row(
    name: str, model: torch.nn.Module, references: torch.Tensor, clip: torch.nn.Module, *, repeats: int
) -> SpeedRow:
    """Time ``set_class`` plus ``set_references`` (where the model uses references) against ``encode_image``.

    Args:
        name: the model's registry name.
        model: the torch model.
        references: pre-processed normal images, as many as the model's ``k_shot``.
        clip: a plain open_clip CLIP of the same architecture and input size.
        repeats: timed interleaved rounds.

    Returns:
        The row (per set-up, not per image).
    """
    device = references.device

    def set_up() -> None:
        model.set_class(CATEGORY)
        if model.uses_references:
            model.set_references(references)

    with torch.no_grad():
        timings = interleaved_times(
            {"set-up": set_up, "plain": lambda: plain_image_forward(clip, references)}, repeats, device
        )
    count = references.shape[0]
    what = f"class + {count} reference image{'s' * (count > 1)}" if model.uses_references else "class"
    return SpeedRow(
        model=name,
        measurement=f"set-up: {what}",
        seconds=timings.median("set-up"),
        reference=f"CLIP encode_image, {count} image{'s' * (count > 1)}",
        reference_seconds=timings.median("plain"),
        wall_ratio=timings.median_wall("set-up") / timings.median_wall("plain"),
        note=f"per set-up, median of {repeats} round(s)",
    )


# ------------------------------------------------------------------------------------------------------- training
def _normal_shots_data(root: Path, module: LightningModule, settings: TrainingSettings) -> tuple[Any, str]:
    """The model's ``k_shot`` normal images of one generated category (the recipe draws them from the train split)."""
    from anomalib.data import MVTecAD

    from anomalib_clipad.data.synthetic import generate_synthetic_dataset

    k_shot = int(module.hparams.get("k_shot") or 1)
    generate_synthetic_dataset(
        root, CATEGORY, n_train=k_shot, n_test_good=1, n_test_defect=1, image_size=settings.source_size, seed=0
    )
    return MVTecAD(root=root, category=CATEGORY, num_workers=0), f"{k_shot} normal shot{'s' * (k_shot > 1)}"


def _auxiliary_data(root: Path, module: LightningModule, settings: TrainingSettings) -> tuple[Any, str]:
    """``images`` labelled images with masks of one generated category, about half of them anomalous."""
    del module
    from anomalib_clipad.data.auxiliary import AuxiliaryData
    from anomalib_clipad.data.synthetic import DEFECT_TYPES, generate_synthetic_dataset

    per_type = (settings.images // 2) // len(DEFECT_TYPES)
    # about half anomalous (each defect type alike); below 6 images one anomalous image, the rest normal
    defect_types, n_defect = (DEFECT_TYPES, per_type) if per_type else (DEFECT_TYPES[:1], 1)
    n_good = max(settings.images - n_defect * len(defect_types), 1)
    generate_synthetic_dataset(
        root,
        CATEGORY,
        n_train=1,
        n_test_good=n_good,
        n_test_defect=n_defect,
        image_size=settings.source_size,
        seed=0,
        defect_types=defect_types,
    )
    batch_size = min(settings.images, 8)
    datamodule = AuxiliaryData(
        dataset="MVTecAD", root=root, categories=[CATEGORY], train_batch_size=batch_size, num_workers=0, seed=0
    )
    return datamodule, f"{n_good + n_defect * len(defect_types)} labelled images, batch {batch_size}"


TRAINING_DATA: dict[Protocol, Callable[[Path, LightningModule, TrainingSettings], tuple[Any, str]]] = {
    Protocol.NORMAL_SHOTS: _normal_shots_data,
    Protocol.AUXILIARY_DATA: _auxiliary_data,
}
"""Per training protocol: ``(folder, model, settings) -> (datamodule, description)`` of the generated training data."""


def _loss(output: Any) -> torch.Tensor:
    return output["loss"] if isinstance(output, dict) else output


class LearnableSide(Callback):
    """Record the batches of the first epoch; after each epoch, replay them through the learnable side alone.

    The replay is the model's ``training_step`` on each recorded (pre-processed) batch, ``backward`` and a step of
    the fit's optimiser, outside Lightning's loop. By then the recipe has cached the frozen features, so the replay
    runs what an epoch must recompute and nothing else. The parameters and the optimiser state are restored after
    each replay, and so are the random number generators. The first replay is a warm-up (not timed), followed at once
    by a timed one.

    Args:
        device: where the fit runs.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.batches: list[Any] = []
        self._recording = True
        self._warm = False

    def on_train_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        del trainer, pl_module, outputs, batch_idx
        if self._recording:
            self.batches.append(batch)

    @property
    def n_images(self) -> int:
        """Images of one epoch (the recorded batches)."""
        return sum(len(batch.image) for batch in self.batches)

    def _replay(self, trainer: Trainer, pl_module: LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        for index, batch in enumerate(self.batches):
            optimizer.zero_grad(set_to_none=True)
            _loss(pl_module.training_step(batch, index)).backward()
            optimizer.step()

    def epoch(self, trainer: Trainer, pl_module: LightningModule) -> tuple[float, float]:
        """One timed replay (after a warm-up the first time); the fit's state is put back afterwards.

        Returns:
            Its seconds on the measurement clock and on the wall clock.
        """
        self._recording = False
        optimizer = trainer.optimizers[0]
        parameters = [parameter for parameter in pl_module.parameters() if parameter.requires_grad]
        saved_parameters = [parameter.detach().clone() for parameter in parameters]
        saved_optimizer = copy.deepcopy(optimizer.state_dict())
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():  # the fit's random draws stay its own
            if not self._warm:
                self._replay(trainer, pl_module)
                self._warm = True
            seconds = timed_call(lambda: self._replay(trainer, pl_module), self.device)
        with torch.no_grad():
            for parameter, saved in zip(parameters, saved_parameters, strict=True):
                parameter.copy_(saved)
        optimizer.load_state_dict(saved_optimizer)
        optimizer.zero_grad(set_to_none=True)
        return seconds


def training_rows(name: str, protocol: Protocol, module: LightningModule, settings: TrainingSettings) -> list[SpeedRow]:
    """``Trainer.fit`` of ``module`` timed per epoch, each epoch followed by one learnable-side replay.

    Args:
        name: the model's registry name.
        protocol: its learning protocol (a key of :data:`TRAINING_DATA`).
        module: the Lightning model, built for ``settings.epochs`` epochs.
        settings: the training data and the device.

    Returns:
        Two rows: an epoch after the first against the learnable side, and the first epoch against a later one.

    Raises:
        ValueError: fewer than 2 epochs.
    """
    if settings.epochs < 2:
        msg = f"Timing training needs at least 2 epochs (the first one encodes the images), got {settings.epochs}."
        raise ValueError(msg)
    replay = LearnableSide(settings.device)
    timer = EpochTimer(settings.device, after_epoch=replay.epoch)
    with tempfile.TemporaryDirectory() as folder:
        datamodule, data = TRAINING_DATA[protocol](Path(folder), module, settings)
        trainer = Trainer(
            max_epochs=settings.epochs,
            accelerator=settings.device.type,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            default_root_dir=folder,
            callbacks=[timer, replay],
        )
        trainer.fit(module, datamodule=datamodule)
    epochs, references = timer.epochs, timer.references
    later, later_wall = epochs.clock["epoch"][1:], epochs.wall["epoch"][1:]
    later_epoch = statistics.median(later)
    note = f"{data}, {len(replay.batches)} step(s) per epoch, {settings.epochs} epochs"
    return [
        SpeedRow(
            model=name,
            measurement="epoch after the first",
            seconds=later_epoch,
            reference="learnable side alone",
            reference_seconds=references.median("reference"),
            wall_ratio=statistics.median(later_wall) / references.median_wall("reference"),
            goal=TRAINING_GOAL,
            note=note,
        ),
        SpeedRow(
            model=name,
            measurement="first epoch (one-time encoding)",
            seconds=epochs.clock["epoch"][0],
            reference="epoch after the first",
            reference_seconds=later_epoch,
            wall_ratio=epochs.wall["epoch"][0] / statistics.median(later_wall),
            note=data,
        ),
    ]
