# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""pretrained="checkpoint": trained models reload from their checkpoint alone, and refuse to run without one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from anomalib_clipad import WinCLIPPlus
from anomalib_clipad.clip import FROM_CHECKPOINT, TINY_BACKBONE, PretrainedWeightsError, load_clip
from anomalib_clipad.clip.loading import uses_quick_gelu


def test_architecture_only_is_not_the_loud_random_init(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="anomalib_clipad.clip.loading"):
        clip = load_clip(TINY_BACKBONE, FROM_CHECKPOINT)
    assert "RANDOMLY" not in caplog.text
    assert "checkpoint" in caplog.text
    assert not uses_quick_gelu(clip)
    assert uses_quick_gelu(load_clip(TINY_BACKBONE, FROM_CHECKPOINT, quick_gelu=True))


def tiny_winclip(**kwargs) -> WinCLIPPlus:
    return WinCLIPPlus(class_name="widget", backbone=TINY_BACKBONE, image_size=64, **kwargs)


def test_model_without_its_checkpoint_refuses_to_run() -> None:
    model = tiny_winclip(pretrained=FROM_CHECKPOINT)
    model.configure_model()
    assert model.hparams.quick_gelu is False  # recorded from the built CLIP
    policy = model.checkpoint_policy
    with pytest.raises(PretrainedWeightsError, match="no checkpoint was loaded"):
        policy.on_train_start(None, model)
    for stage in ("validate", "test", "predict"):  # checked first thing before scoring
        with pytest.raises(PretrainedWeightsError, match="no checkpoint was loaded"):
            model.prepare_for_scoring(None, stage)
    model.on_load_checkpoint({"hyper_parameters": dict(model.hparams)})
    policy.check_weights(model)  # restored: no error
    random = tiny_winclip(pretrained=None)
    random.checkpoint_policy.check_weights(random)  # explicit random weights are the user's choice


def test_checkpoint_with_the_other_activation_is_refused() -> None:
    model = tiny_winclip(pretrained=None)
    model.configure_model()
    with pytest.raises(ValueError, match=r"--model\.quick_gelu true"):
        model.on_load_checkpoint({"hyper_parameters": {**model.hparams, "quick_gelu": True}})


def test_load_from_checkpoint_needs_only_the_checkpoint(synthetic_root: Path, tmp_path: Path) -> None:
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

    torch.manual_seed(0)
    model = WinCLIPPlus(k_shot=1, backbone=TINY_BACKBONE, pretrained=None, image_size=64)
    datamodule = MVTecAD(root=synthetic_root, category="widget", num_workers=0, eval_batch_size=16)
    engine = Engine(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False)
    engine.test(model, datamodule=datamodule)
    path = tmp_path / "winclip.ckpt"
    engine.trainer.save_checkpoint(path)

    torch.manual_seed(1)  # a different random init: only the checkpoint can make the outputs equal
    reloaded = WinCLIPPlus.load_from_checkpoint(path).eval()
    assert reloaded.hparams.pretrained == FROM_CHECKPOINT
    reloaded.checkpoint_policy.check_weights(reloaded)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected, actual = model.model.eval()(images), reloaded.model(images)
    torch.testing.assert_close(actual.pred_score, expected.pred_score)
    torch.testing.assert_close(actual.anomaly_map, expected.anomaly_map)
