# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""AuxiliaryData: labelled anomalous images with masks of other categories served as training data; leakage guard."""

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from anomalib_clipad.data.auxiliary import (
    AuxiliaryData,
    AuxiliaryDataset,
    AuxiliaryImageBatch,
    DataLeakageError,
    check_no_overlap,
)
from anomalib_clipad.data.synthetic import synthetic_folder_kwargs

LOGGER = "anomalib_clipad.data.auxiliary"
# widget: test/good 2 + 3 defect types x 2; cloth: test/good 2 + 3 defect types x 1
N_WIDGET, N_WIDGET_BAD = 8, 6
N_CLOTH, N_CLOTH_BAD = 5, 3


@pytest.fixture(scope="module")
def aux_root(synthetic_dataset: Callable[..., Path]) -> Path:
    """Two categories in MVTec AD layout, 32 px: widget (objects) and cloth (texture); do not modify (shared)."""
    categories = {"widget": {"n_test_defect": 2}, "cloth": {"kind": "texture", "n_test_defect": 1}}
    return synthetic_dataset(categories, n_train=2, n_test_good=2, image_size=32)


def _datamodule(root: Path, **kwargs) -> AuxiliaryData:
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("train_batch_size", 64)
    datamodule = AuxiliaryData(root=root, **kwargs)
    datamodule.setup()
    return datamodule


def _one_batch(datamodule: AuxiliaryData) -> AuxiliaryImageBatch:
    batches = list(datamodule.train_dataloader())
    assert len(batches) == 1
    return batches[0]


def test_train_loader_serves_anomalous_images_with_masks_of_all_categories(aux_root):
    datamodule = _datamodule(aux_root, seed=0)
    assert datamodule.categories == ["cloth", "widget"]
    assert datamodule.name == "AuxiliaryMVTecAD"
    assert datamodule.category == "all"

    batch = _one_batch(datamodule)
    assert isinstance(batch, AuxiliaryImageBatch)
    assert batch.image.shape == (N_WIDGET + N_CLOTH, 3, 32, 32)
    assert sorted(set(batch.category)) == ["cloth", "widget"]
    assert batch.category.count("cloth") == N_CLOTH
    assert int(batch.gt_label.sum()) == N_WIDGET_BAD + N_CLOTH_BAD
    assert batch.has_mask.dtype == torch.bool
    assert bool(batch.has_mask.all())
    for label, mask, image_path, mask_path, category in zip(
        batch.gt_label, batch.gt_mask, batch.image_path, batch.mask_path, batch.category, strict=True
    ):
        assert f"/{category}/test/" in image_path
        if label:
            assert mask.any()  # a real defect mask ...
            image, mask_file = Path(image_path), Path(mask_path)
            assert mask_file == image.parents[2] / "ground_truth" / image.parent.name / f"{image.stem}_mask.png"
        else:
            assert not mask.any()  # ... and all-zero masks for the normal images of the split
            assert mask_path == ""

    samples = datamodule.train_data.samples
    assert set(samples["split"]) == {"test"}
    assert {"category", "has_mask", "label"} <= set(samples.columns)
    assert len(datamodule.val_data) == len(datamodule.test_data) == 0
    assert len(datamodule.val_dataloader()) == len(datamodule.test_dataloader()) == 0

    # seeded shuffle: the same order twice
    again = _one_batch(_datamodule(aux_root, seed=0))
    assert again.image_path == batch.image_path
    # the batch converts to numpy (visualisation path) without the extra fields
    assert type(batch.to_numpy()).__name__ == "NumpyImageBatch"
    assert batch.items[0].category == batch.category[0]


def test_category_filter_and_options(aux_root):
    datamodule = _datamodule(aux_root, categories=["cloth"])
    assert datamodule.categories == ["cloth"]
    assert datamodule.category == "cloth"
    assert len(datamodule.train_data) == N_CLOTH

    single = _datamodule(aux_root, categories="widget", include_normal=False)
    assert len(single.train_data) == N_WIDGET_BAD
    assert (single.train_data.samples["label_index"] == 1).all()

    full = _datamodule(aux_root, categories=["widget"], split="full")
    assert set(full.train_data.samples["split"]) == {"train", "test"}
    assert len(full.train_data) == N_WIDGET + 2


def test_images_without_mask_are_flagged_and_logged(aux_root, tmp_path, caplog):
    root = tmp_path / "data"
    shutil.copytree(aux_root / "cloth", root / "cloth")
    (root / "cloth" / "ground_truth" / "hole" / "000_mask.png").unlink()

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        datamodule = _datamodule(root)
    assert any("1 anomalous images have no mask" in r.getMessage() for r in caplog.records), caplog.text
    assert datamodule.train_data.n_without_mask == 1
    samples = datamodule.train_data.samples
    row = samples[samples["image_path"].str.endswith("hole/000.png")].iloc[0]
    assert row["label_index"] == 1
    assert not row["has_mask"]
    assert row["mask_path"] == ""

    batch = _one_batch(datamodule)
    index = next(i for i, p in enumerate(batch.image_path) if p.endswith("hole/000.png"))
    assert not batch.has_mask[index]
    assert batch.gt_label[index]
    assert not batch.gt_mask[index].any()
    assert int(batch.has_mask.sum()) == N_CLOTH - 1


def test_folder_dataset(aux_root):
    kwargs = synthetic_folder_kwargs(aux_root / "widget")
    datamodule = _datamodule(
        kwargs["root"],
        dataset="folder",
        abnormal_dir=kwargs["abnormal_dir"],
        mask_dir=kwargs["mask_dir"],
        normal_dir=kwargs["normal_test_dir"],
    )
    assert datamodule.dataset == "Folder"
    assert datamodule.categories == ["widget"]
    samples = datamodule.train_data.samples
    assert len(samples) == N_WIDGET
    anomalous = samples[samples["label_index"] == 1]
    assert anomalous["has_mask"].all()
    # equal stems (000.png in every defect folder) get the mask of their own defect folder
    for image_path, mask_path in zip(anomalous["image_path"], anomalous["mask_path"], strict=True):
        assert Path(mask_path).parent.name == Path(image_path).parent.name
    named = _datamodule(kwargs["root"], dataset="Folder", abnormal_dir="test/hole", categories=["bottle"])
    assert named.categories == ["bottle"]
    assert named.train_data.n_without_mask == 2


def test_bad_inputs_raise_clear_errors(aux_root, tmp_path):
    with pytest.raises(ValueError, match="Unknown auxiliary dataset 'DAGM'"):
        AuxiliaryData(dataset="DAGM", root=aux_root)
    with pytest.raises(ValueError, match="Unknown auxiliary split"):
        AuxiliaryData(root=aux_root, split="validation")
    with pytest.raises(ValueError, match=r"Unknown MVTecAD category \['bottle'\].*Available: \['cloth', 'widget'\]"):
        _datamodule(aux_root, categories=["widget", "bottle"])
    with pytest.raises(ValueError, match="no anomalous image"):
        _datamodule(aux_root, split="train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _datamodule(tmp_path / "missing")
    with pytest.raises(ValueError, match="needs abnormal_dir"):
        AuxiliaryData(dataset="Folder", root=aux_root)
    with pytest.raises(ValueError, match="Folder arguments"):
        AuxiliaryData(dataset="Visa", root=aux_root, abnormal_dir="x")
    empty = tmp_path / "empty"
    (empty / "widget" / "test" / "good").mkdir(parents=True)
    with pytest.raises(ValueError, match="auxiliary set is empty"):
        _datamodule(empty)
    with pytest.raises(ValueError, match="No MVTecAD category"):
        _datamodule(tmp_path)


def test_visa_layout_is_read_from_visa_pytorch(aux_root, tmp_path):
    shutil.copytree(aux_root / "widget", tmp_path / "visa_pytorch" / "candle")
    datamodule = _datamodule(tmp_path, dataset="Visa")
    assert datamodule.categories == ["candle"]
    assert datamodule.name == "AuxiliaryVisa"
    assert datamodule.train_data.samples["has_mask"].all()
    datamodule.prepare_data()  # the category is on disk: nothing to download


def test_cli_parses_the_datamodule(aux_root):
    from anomalib.data import AnomalibDataModule
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_subclass_arguments(AnomalibDataModule, "data", required=False, fail_untyped=False)
    args = ["--data", "anomalib_clipad.data.auxiliary.AuxiliaryData", "--data.dataset", "Visa"]
    args += ["--data.root", str(aux_root), "--data.categories", "[candle, pcb1]", "--data.num_workers", "0"]
    datamodule = parser.instantiate_classes(parser.parse_args(args)).data
    assert isinstance(datamodule, AuxiliaryData)
    assert datamodule.dataset == "Visa"
    assert datamodule.requested_categories == ["candle", "pcb1"]
    assert datamodule.train_batch_size == 8


def test_engine_fit_trains_on_it_without_validation(aux_root, tmp_path):
    from anomalib import LearningType
    from anomalib.engine import Engine
    from anomalib.models import AnomalibModule
    from anomalib.post_processing import PostProcessor

    class Recorder(AnomalibModule):
        def __init__(self) -> None:
            super().__init__(pre_processor=False, post_processor=PostProcessor(), evaluator=False, visualizer=False)
            self.model = torch.nn.Linear(3, 1)
            self.train_batches: list[AuxiliaryImageBatch] = []
            self.val_batches = 0

        @property
        def trainer_arguments(self) -> dict:
            return {"max_epochs": 1}

        @property
        def learning_type(self) -> LearningType:
            return LearningType.ONE_CLASS

        def training_step(self, batch, *args, **kwargs):
            self.train_batches.append(batch)
            return self.model(batch.image.mean((2, 3))).square().mean()

        def validation_step(self, batch, *args, **kwargs):
            self.val_batches += 1

        def configure_optimizers(self):
            return torch.optim.SGD(self.model.parameters(), lr=0.1)

    model = Recorder()
    datamodule = AuxiliaryData(root=aux_root, num_workers=0, train_batch_size=16)
    engine = Engine(default_root_dir=tmp_path, logger=False, accelerator="cpu", devices=1, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    assert len(model.train_batches) == 1
    assert isinstance(model.train_batches[0], AuxiliaryImageBatch)
    assert len(model.train_batches[0].category) == N_WIDGET + N_CLOTH
    assert model.val_batches == 0
    assert engine.test(model, datamodule=datamodule) == []


# ----------------------------------------------------------------------------------------------------------------
# Leakage guard
# ----------------------------------------------------------------------------------------------------------------


def test_overlap_with_the_target_test_set_is_refused(aux_root):
    from anomalib.data import MVTecAD

    target = MVTecAD(root=aux_root, category="widget", num_workers=0)
    with pytest.raises(DataLeakageError, match=rf"{N_WIDGET} of the {N_WIDGET + N_CLOTH} .*same files"):
        _datamodule(aux_root).check_no_overlap(target)
    _datamodule(aux_root, categories=["cloth"]).check_no_overlap(target)  # other category: fine
    assert issubclass(DataLeakageError, ValueError)


def test_overlap_through_relative_paths_symlinks_and_hard_links(aux_root, tmp_path, monkeypatch):
    datamodule = _datamodule(aux_root, categories=["widget"])
    train_paths = list(datamodule.train_data.samples["image_path"])
    one = Path(train_paths[0])

    monkeypatch.chdir(one.parent)
    with pytest.raises(DataLeakageError, match="1 of the"):
        check_no_overlap(datamodule.train_data, [f"../{one.parent.name}/{one.name}"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataLeakageError, match="1 of the"):
        check_no_overlap(train_paths, os.path.relpath(one, tmp_path))

    link = tmp_path / "linked_dataset"
    link.symlink_to(aux_root / "widget", target_is_directory=True)
    via_link = [str(p) for p in (link / "test").rglob("*.png")]
    with pytest.raises(DataLeakageError, match=f"{N_WIDGET} of the {N_WIDGET}"):
        check_no_overlap(datamodule, via_link)
    file_link = tmp_path / "one.png"
    file_link.symlink_to(one)
    with pytest.raises(DataLeakageError):
        check_no_overlap([str(file_link)], train_paths)

    hard = tmp_path / "hard.png"
    os.link(one, hard)
    with pytest.raises(DataLeakageError):
        check_no_overlap(datamodule.train_data, [hard])

    copied = tmp_path / "copy.png"
    shutil.copyfile(one, copied)
    check_no_overlap(datamodule.train_data, [copied])  # a copy is another file ...
    with pytest.raises(DataLeakageError):
        check_no_overlap(datamodule.train_data, [copied], compare_content=True)  # ... unless contents are compared

    check_no_overlap(datamodule.train_data, [tmp_path / "nothing.png"])
    check_no_overlap(AuxiliaryDataset(), train_paths)
    with pytest.raises(TypeError, match="Cannot read image paths"):
        check_no_overlap(3, train_paths)
