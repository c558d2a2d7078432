# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""What a new user hit on the first day: wrong training data, several mismatching settings, a missing train split."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from anomalib.data import Folder, MVTecAD
from anomalib.engine import Engine

from anomalib_clipad.models.common import refuse_other_settings
from anomalib_clipad.registry import MODELS, Protocol, get_spec
from anomalib_clipad.training.evaluation import ComputableMetricsEvaluator

AUXILIARY = [pytest.param(spec, id=spec.name) for spec in MODELS if spec.protocol is Protocol.AUXILIARY_DATA]


@pytest.mark.parametrize("spec", AUXILIARY)
def test_auxiliary_models_refuse_normal_only_training_data(spec, synthetic_root: Path, tmp_path: Path) -> None:
    """anomalib's plain MVTecAD train split (normal images, empty masks) stops before training, naming AuxiliaryData."""
    model = spec.build_tiny()
    datamodule = MVTecAD(root=synthetic_root, category="widget", num_workers=0)
    engine = Engine(default_root_dir=tmp_path, logger=False, accelerator="cpu", devices=1)
    with pytest.raises(ValueError, match=r"no anomalous one.*anomalib_clipad\.data\.AuxiliaryData"):
        engine.fit(model, datamodule=datamodule)
    assert not model.training_paths  # not one step was taken


def test_every_mismatching_setting_is_reported_at_once() -> None:
    with pytest.raises(ValueError, match="backbone") as raised:
        refuse_other_settings(
            {"backbone": "ViT-B-16", "image_size": 224, "memory_layers": [3, 8]},
            {"backbone": "ViT-B-32", "image_size": 240, "memory_layers": [3, 8]},
            ("backbone", "image_size", "memory_layers"),
            "This PromptAD checkpoint",
        )
    message = str(raised.value)
    assert "backbone='ViT-B-16', image_size=224" in message
    assert "backbone='ViT-B-32', image_size=240" in message
    assert "--model.backbone ViT-B-16 --model.image_size 224" in message
    assert "memory_layers" not in message


def test_simclip_plus_without_a_train_split_says_what_is_missing(tmp_path: Path) -> None:
    model = get_spec("SimCLIP").build_tiny(k_shot=1)
    model.configure_model()
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(category="widget"), is_global_zero=True, default_root_dir=tmp_path
    )
    with pytest.raises(ValueError, match="has no train split") as raised:
        model.prepare_for_scoring(trainer, "predict")
    assert "none has none" not in str(raised.value)
    assert "k_shot=1" in str(raised.value)


def test_calibration_refuses_a_validation_split_that_shares_images_with_the_scored_split(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A validation split overlapping the test split is not used: thresholds fall back to 0.5, with a warning."""
    import logging

    import pandas as pd

    from anomalib_clipad.training.calibration import PROBABILITY_THRESHOLD, calibrate_on_target
    from anomalib_clipad.training.thresholds import RawScorePostProcessor, get_thresholds

    class Split(SimpleNamespace):
        def __len__(self) -> int:
            return len(self.samples)

    shared = "/data/test/hole/000.png"
    datamodule = SimpleNamespace(
        val_split_mode="from_dir",
        val_data=Split(samples=pd.DataFrame({"image_path": [shared, "/data/val/good/000.png"]})),
        test_data=Split(samples=pd.DataFrame({"image_path": [shared, "/data/test/good/001.png"]})),
        val_dataloader=lambda: pytest.fail("the overlapping validation split was scored"),
        seed=0,
    )
    model = SimpleNamespace(post_processor=RawScorePostProcessor())
    with caplog.at_level(logging.WARNING, logger="anomalib_clipad.training.calibration"):
        calibrate_on_target(SimpleNamespace(datamodule=datamodule), model)
    assert get_thresholds(model.post_processor) == {"image": PROBABILITY_THRESHOLD, "pixel": PROBABILITY_THRESHOLD}
    assert "no validation split disjoint from its test split" in caplog.text


def test_a_dataset_without_masks_leaves_the_pixel_metrics_out_and_says_so_once(
    synthetic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``Folder`` without masks: no torchmetrics "compute before update" warning, one line names the metrics."""
    datamodule = Folder(
        name="widget",
        root=synthetic_root / "widget",
        normal_dir="train/good",
        abnormal_dir="test/hole",
        normal_test_dir="test/good",
        val_split_mode="from_test",
        val_split_ratio=0.5,
        train_batch_size=4,
        eval_batch_size=4,
        num_workers=0,
        seed=0,
    )
    model = get_spec("WinCLIPPlus").build_tiny(k_shot=1, class_name="widget")
    engine = Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        results = engine.test(model, datamodule=datamodule)
    before_update = [str(w.message) for w in caught if "called before the ``update``" in str(w.message)]
    assert before_update == []
    assert set(results[0]) == {"image_AUROC", "image_F1Score"}
    said = [record.getMessage() for record in caplog.records if "metrics left out" in record.getMessage()]
    assert len(said) == 1, said
    assert "pixel_AUROC" in said[0]
    assert "pixel_F1Score" in said[0]
    assert "no test batch had gt_mask;" in said[0]


@pytest.mark.parametrize("spec", [pytest.param(spec, id=spec.name) for spec in MODELS])
def test_every_model_leaves_out_metrics_no_batch_fed(spec) -> None:
    """The evaluator comes from the shared base: every model leaves out the metrics its data cannot feed."""
    assert isinstance(spec.lightning_class.configure_evaluator(), ComputableMetricsEvaluator)
