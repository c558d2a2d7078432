# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Reproducible k-shot selection of normal reference images.

Few-shot methods see exactly ``k`` normal images. They are drawn from the datamodule's **train** split (never the
test split) by a seeded sampler without duplicates, or taken from a folder the user gives. The chosen file paths are
returned so that models can log them and store them in their checkpoints.

Example:
    >>> from anomalib_clipad.data.shots import select_shot_indices
    >>> select_shot_indices(n_available=10, k_shot=3, seed=0)  # doctest: +SKIP
    [1, 4, 9]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anomalib_clipad.data.image_files import read_image_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Shots:
    """The k reference images of a few-shot model.

    Attributes:
        images: ``(k, 3, H, W)`` images after the model's transform (resized and CLIP-normalised).
        paths: the image files, in the order of ``images``.
    """

    images: torch.Tensor
    paths: list[str]


def select_shot_indices(n_available: int, k_shot: int, seed: int) -> list[int]:
    """Draw ``k_shot`` distinct indices out of ``n_available``, reproducibly.

    Args:
        n_available: number of candidate images.
        k_shot: number of images to draw.
        seed: seed of the sampler; the same seed always gives the same indices.

    Returns:
        ``k_shot`` distinct indices in ascending order.

    Raises:
        ValueError: ``k_shot < 1`` or ``k_shot > n_available``.
    """
    if k_shot < 1:
        msg = f"k_shot must be at least 1 for few-shot reference images, got {k_shot}."
        raise ValueError(msg)
    if k_shot > n_available:
        msg = f"k_shot={k_shot} normal reference images were asked for, but only {n_available} are available."
        raise ValueError(msg)
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_available, generator=generator)[:k_shot].tolist())


def normal_sample_indices(dataset: torch.utils.data.Dataset) -> list[int]:
    """Positions of the normal (label 0) samples of an anomalib image dataset.

    Raises:
        TypeError: the dataset has no anomalib ``samples`` table.
    """
    samples = getattr(dataset, "samples", None)
    if samples is None or "label_index" not in samples:
        msg = f"Expected an anomalib dataset with a `samples` table, got {type(dataset).__name__}."
        raise TypeError(msg)
    return [position for position, label in enumerate(samples["label_index"].tolist()) if int(label) == 0]


def choose_normal_shots(dataset: torch.utils.data.Dataset, k_shot: int, seed: int) -> list[int]:
    """Positions of ``k_shot`` normal samples of an anomalib dataset: seeded, no duplicates, in dataset order.

    Raises:
        ValueError: fewer normal images in the dataset than ``k_shot`` (or ``k_shot`` below 1).
        TypeError: the dataset has no anomalib ``samples`` table.
    """
    normal = normal_sample_indices(dataset)
    try:
        return [normal[index] for index in select_shot_indices(len(normal), k_shot, seed)]
    except ValueError as error:
        msg = f"{error} (normal images in the train split of {type(dataset).__name__})."
        raise ValueError(msg) from error


def _read(paths: list[str], transform: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
    images = []
    for path in paths:
        image = read_image_file(path)
        images.append(transform(image) if transform is not None else image)
    return torch.stack(images)


def collect_shots(
    dataset: torch.utils.data.Dataset,
    k_shot: int,
    seed: int,
    transform: Callable[[torch.Tensor], torch.Tensor] | None,
) -> Shots:
    """Choose ``k_shot`` normal images of a train dataset and read them through ``transform``.

    Args:
        dataset: an anomalib image dataset (the datamodule's ``train_data``).
        k_shot: number of reference images.
        seed: seed of the selection.
        transform: the model's pre-processing transform (resize + CLIP normalisation), applied to each ``[0, 1]`` RGB
            image; ``None`` keeps the raw images.

    Returns:
        The chosen :class:`Shots`.

    Raises:
        ValueError: not enough normal images in the dataset.
        UnreadableImageError: a chosen image file is truncated or corrupt (the error names it).
    """
    chosen = choose_normal_shots(dataset, k_shot, seed)
    paths = [str(dataset.samples["image_path"].iloc[i]) for i in chosen]
    return Shots(images=_read(paths, transform), paths=paths)


def load_reference_folder(
    folder: str | Path,
    k_shot: int,
    seed: int,
    transform: Callable[[torch.Tensor], torch.Tensor] | None,
) -> Shots:
    """Choose ``k_shot`` images of a user folder of normal reference images and read them through ``transform``.

    Raises:
        FileNotFoundError: the folder does not exist or holds no image.
        ValueError: fewer than ``k_shot`` images in the folder.
        UnreadableImageError: a chosen image file is truncated or corrupt (the error names it).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        msg = f"Reference image folder {str(folder)!r} does not exist."
        raise FileNotFoundError(msg)
    files = sorted(str(path) for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        msg = f"Reference image folder {str(folder)!r} holds no image ({', '.join(IMAGE_SUFFIXES)})."
        raise FileNotFoundError(msg)
    try:
        paths = [files[i] for i in select_shot_indices(len(files), k_shot, seed)]
    except ValueError as error:
        msg = f"{error} (images in {str(folder)!r})"
        raise ValueError(msg) from error
    return Shots(images=_read(paths, transform), paths=paths)


def draw_reference_shots(
    trainer: Any | None,
    k_shot: int,
    seed: int,
    transform: Callable[[torch.Tensor], torch.Tensor] | None,
    folder: str | Path | None = None,
) -> Shots | None:
    """The ``k_shot`` normal reference images of a target: from ``folder`` if given, else its train split (seeded).

    The one way WinCLIP+ and SimCLIP+ draw the memory of the target they score.

    Args:
        trainer: the trainer whose datamodule is the target (may be ``None``).
        k_shot: number of reference images.
        seed: seed of the selection.
        transform: the model's pre-processing transform.
        folder: a folder of normal reference images to draw from instead of the train split.

    Returns:
        The chosen :class:`Shots`, or ``None`` when there is no folder and the datamodule has no train split.

    Raises:
        FileNotFoundError: ``folder`` does not exist or holds no image.
        ValueError: fewer normal images than ``k_shot``.
    """
    if folder is not None:
        return load_reference_folder(folder, k_shot, seed, transform)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    train_data = getattr(datamodule, "train_data", None)
    if train_data is None:
        return None
    return collect_shots(train_data, k_shot, seed, transform)
