# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""What a new user hit on the first day: wrong training data, several mismatching settings, a missing train split."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from anomalib.data import MVTecAD
from anomalib.engine import Engine

from anomalib_clipad.models.common import refuse_other_settings
from anomalib_clipad.registry import MODELS, Protocol, get_spec

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
