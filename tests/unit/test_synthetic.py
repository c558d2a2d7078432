# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Tests of the synthetic MVTec-layout dataset generator."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from anomalib_clipad.data.synthetic import (
    DEFECT_TYPES,
    _add_defect,
    _Style,
    generate_synthetic_dataset,
    synthetic_folder_kwargs,
)


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))


@pytest.mark.parametrize("kind", ["object", "texture"])
def test_layout_counts_and_masks(tmp_path: Path, kind: str) -> None:
    category_dir = generate_synthetic_dataset(
        tmp_path, category="thing", kind=kind, n_train=3, n_test_good=2, n_test_defect=2, image_size=48, seed=1
    )
    assert category_dir == tmp_path / "thing"
    files = _files(category_dir)
    assert len([f for f in files if f.startswith("train/good/")]) == 3
    assert len([f for f in files if f.startswith("test/good/")]) == 2
    for defect in DEFECT_TYPES:
        images = [f for f in files if f.startswith(f"test/{defect}/")]
        masks = [f for f in files if f.startswith(f"ground_truth/{defect}/")]
        assert images == [f"test/{defect}/000.png", f"test/{defect}/001.png"]
        assert masks == [f"ground_truth/{defect}/000_mask.png", f"ground_truth/{defect}/001_mask.png"]
        for mask_file in masks:
            mask = cv2.imread(str(category_dir / mask_file), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (48, 48)
            assert mask.dtype == np.uint8
            assert set(np.unique(mask)) == {0, 255}
    image = cv2.imread(str(category_dir / "train/good/000.png"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (48, 48, 3)


def test_deterministic_per_seed(tmp_path: Path) -> None:
    a = generate_synthetic_dataset(tmp_path / "a", n_train=2, n_test_good=1, n_test_defect=1, image_size=40, seed=3)
    b = generate_synthetic_dataset(tmp_path / "b", n_train=2, n_test_good=1, n_test_defect=1, image_size=40, seed=3)
    c = generate_synthetic_dataset(tmp_path / "c", n_train=2, n_test_good=1, n_test_defect=1, image_size=40, seed=4)
    assert _files(a) == _files(b) == _files(c)
    for name in _files(a):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert any((a / name).read_bytes() != (c / name).read_bytes() for name in _files(a))


def test_normal_images_vary_but_look_alike(tmp_path: Path) -> None:
    folder = generate_synthetic_dataset(tmp_path, n_train=4, n_test_good=0, n_test_defect=0, image_size=64)
    images = [cv2.imread(str(p)).astype(np.float32) for p in sorted((folder / "train/good").glob("*.png"))]
    diffs = [np.abs(images[0] - other).mean() for other in images[1:]]
    assert all(d > 0.5 for d in diffs)  # not copies of one image
    assert all(d < 40 for d in diffs)  # but the same kind of object


@pytest.mark.parametrize("kind", ["object", "texture"])
@pytest.mark.parametrize("defect_type", DEFECT_TYPES)
def test_defects_are_drawn_only_inside_their_mask(kind: str, defect_type: str) -> None:
    rng = np.random.default_rng(0)
    style = _Style.sample(rng, kind)
    size = 80
    for _ in range(5):
        image = style.render(rng, size)
        defective, mask = _add_defect(rng, image, defect_type, style.support_mask(size))
        changed = np.abs(defective - image).max(axis=-1) > 0
        assert mask.any()
        assert not (changed & (mask == 0)).any(), "pixels changed outside the mask"
        assert changed[mask > 0].mean() > 0.9, "the mask must cover the visible defect, not empty pixels"
        # the defect is visible: mean absolute change inside the mask is substantial
        assert np.abs(defective - image)[mask > 0].mean() > 0.1


def test_loads_with_anomalib_mvtecad(synthetic_root: Path, synthetic_category: str) -> None:
    from anomalib.data import MVTecAD

    datamodule = MVTecAD(
        root=synthetic_root, category=synthetic_category, num_workers=0, train_batch_size=4, eval_batch_size=4
    )
    datamodule.prepare_data()  # finds the folder: no download
    datamodule.setup()
    assert len(datamodule.train_data) == 4
    assert len(datamodule.test_data) == 4 + 2 * len(DEFECT_TYPES)
    batch = next(iter(datamodule.test_dataloader()))
    assert batch.image.shape[1] == 3
    samples = datamodule.test_data.samples
    abnormal = samples[samples.label_index == 1]
    assert len(abnormal) == 2 * len(DEFECT_TYPES)
    for _, row in abnormal.iterrows():
        assert Path(row.image_path).parent.name == Path(row.mask_path).parent.name
        assert Path(row.mask_path).name == Path(row.image_path).stem + "_mask.png"
    masks = [datamodule.test_data[i].gt_mask for i in range(len(datamodule.test_data))]
    labels = [int(datamodule.test_data[i].gt_label) for i in range(len(datamodule.test_data))]
    for mask, label in zip(masks, labels, strict=True):
        assert bool(mask.any()) == bool(label)


def test_loads_with_anomalib_folder(synthetic_category_dir: Path) -> None:
    from anomalib.data import Folder

    datamodule = Folder(**synthetic_folder_kwargs(synthetic_category_dir), num_workers=0, seed=0)
    datamodule.setup()
    assert len(datamodule.train_data) == 4
    # Folder's default val split takes half of the test set.
    assert len(datamodule.test_data) + len(datamodule.val_data) == 4 + 2 * len(DEFECT_TYPES)
    samples = datamodule.test_data.samples
    for _, row in samples[samples.label_index == 1].iterrows():
        assert Path(row.image_path).parent.name == Path(row.mask_path).parent.name
        assert Path(row.mask_path).stem == Path(row.image_path).stem + "_mask"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown kind"):
        generate_synthetic_dataset(tmp_path, kind="cloud")
    with pytest.raises(ValueError, match="subset"):
        generate_synthetic_dataset(tmp_path, defect_types=("crack",))
    with pytest.raises(ValueError, match="at least 32"):
        generate_synthetic_dataset(tmp_path, image_size=16)
    with pytest.raises(ValueError, match="n_train"):
        generate_synthetic_dataset(tmp_path, n_train=0)
    with pytest.raises(ValueError, match="plain folder name"):
        generate_synthetic_dataset(tmp_path, category="a/b")
    generate_synthetic_dataset(tmp_path, n_train=1, n_test_good=0, n_test_defect=0, image_size=32)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_synthetic_dataset(tmp_path, n_train=1, n_test_good=0, n_test_defect=0, image_size=32)
    again = generate_synthetic_dataset(
        tmp_path, n_train=2, n_test_good=0, n_test_defect=0, image_size=32, overwrite=True
    )
    assert len(_files(again)) == 2
