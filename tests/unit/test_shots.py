# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Seeded k-shot selection from the train split or a user folder, and the shared Lightning helpers."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from anomalib.data.datasets.image.mvtecad import MVTecADDataset
from PIL import Image

from anomalib_clipad.data.shots import collect_shots, load_reference_folder, normal_sample_indices, select_shot_indices
from anomalib_clipad.models.common import (
    CLIP_MEAN,
    CLIP_STD,
    clip_transform,
    resolve_class_name,
    warn_if_calibrating_on_test,
)


def _write_images(folder: Path, count: int, value: int, size: tuple[int, int] = (40, 50)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pixels = np.full((*size, 3), value + index, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")


def test_selection_is_seeded_distinct_and_sorted() -> None:
    first = select_shot_indices(20, 5, seed=3)
    assert first == select_shot_indices(20, 5, seed=3)
    assert len(set(first)) == 5
    assert first == sorted(first)
    assert all(0 <= index < 20 for index in first)
    assert {tuple(select_shot_indices(20, 5, seed=seed)) for seed in range(10)} != {tuple(first)}


@pytest.mark.parametrize(("available", "k", "message"), [(3, 4, "only 3"), (3, 0, "at least 1"), (0, 1, "only 0")])
def test_selection_rejects_impossible_requests(available: int, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        select_shot_indices(available, k, seed=0)


def test_collect_shots_takes_normal_train_images_through_the_transform(tmp_path: Path) -> None:
    root = tmp_path / "mvtec"
    _write_images(root / "part" / "train" / "good", 6, value=10)
    _write_images(root / "part" / "test" / "good", 2, value=200)
    dataset = MVTecADDataset(root=root, category="part", split="train")
    assert normal_sample_indices(dataset) == list(range(6))
    transform = clip_transform(32)
    shots = collect_shots(dataset, k_shot=2, seed=0, transform=transform)
    assert shots.images.shape == (2, 3, 32, 32)
    assert len(set(shots.paths)) == 2
    assert all("/train/good/" in path for path in shots.paths)
    # the images are CLIP-normalised (anomalib 2.7's WinClip forgets this for its reference images)
    raw = torch.tensor(np.array(Image.open(shots.paths[0])), dtype=torch.float32).permute(2, 0, 1) / 255
    expected = (raw[:, 0, 0] - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(shots.images[0, :, 16, 16], expected, atol=1e-4, rtol=0)
    assert collect_shots(dataset, k_shot=2, seed=0, transform=transform).paths == shots.paths
    with pytest.raises(ValueError, match="only 6"):
        collect_shots(dataset, k_shot=7, seed=0, transform=transform)


def test_reference_folder(tmp_path: Path) -> None:
    _write_images(tmp_path / "refs", 3, value=50)
    shots = load_reference_folder(tmp_path / "refs", k_shot=3, seed=1, transform=None)
    assert shots.images.shape == (3, 3, 40, 50)
    assert shots.paths == sorted(shots.paths)
    with pytest.raises(ValueError, match="only 3"):
        load_reference_folder(tmp_path / "refs", k_shot=4, seed=1, transform=None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_reference_folder(tmp_path / "nothing", k_shot=1, seed=1, transform=None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image"):
        load_reference_folder(tmp_path / "empty", k_shot=1, seed=1, transform=None)


def test_class_name_resolution() -> None:
    assert resolve_class_name("bottle", None) == "bottle"
    trainer = SimpleNamespace(datamodule=SimpleNamespace(category="hazelnut"))
    assert resolve_class_name(None, trainer) == "hazelnut"
    with pytest.raises(ValueError, match=r"--model\.class_name"):
        resolve_class_name(None, SimpleNamespace(datamodule=SimpleNamespace(name="folder")))
    with pytest.raises(ValueError, match=r"--model\.class_name"):
        resolve_class_name(None, None)


def test_calibration_on_the_test_split_is_flagged(caplog: pytest.LogCaptureFixture) -> None:
    from anomalib.data.utils import ValSplitMode

    def trainer(mode: object) -> SimpleNamespace:
        return SimpleNamespace(datamodule=SimpleNamespace(val_split_mode=mode))

    with caplog.at_level(logging.WARNING):
        assert warn_if_calibrating_on_test(trainer(ValSplitMode.SAME_AS_TEST), "PromptAD")
    assert "val_split_mode from_test" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert not warn_if_calibrating_on_test(trainer(ValSplitMode.FROM_TEST), "PromptAD")
        assert not warn_if_calibrating_on_test(trainer(None), "PromptAD")
        assert not warn_if_calibrating_on_test(None, "PromptAD")
    assert not caplog.text
