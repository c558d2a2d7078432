# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""AnomalyCLIP through anomalib's own CLI in subprocesses: train on auxiliary data, then test zero-shot elsewhere.

Three calls (each about 10-15 s): ``anomalib train`` on the labelled test split of category ``alpha``
(:class:`~anomalib_clipad.data.auxiliary.AuxiliaryData`), then ``anomalib test`` on category ``beta`` with a held-out
calibration split, once from the checkpoint (``--ckpt_path``) and once from the small prompts file the training run
wrote (``--model.learned_state``).
The tiny 24-layer backbone is randomly initialised once and saved to a file (conftest's
``tiny_clip24_weights``), so that training and the prompts run see the same CLIP weights (``--model.pretrained null``
would draw new ones in each process); the checkpoint carries them itself (``--model.pretrained checkpoint``). Scores
are meaningless; the point is that the whole pipeline runs and that both ways of testing give the same numbers.
"""

from pathlib import Path

import pytest
import torch
from cli_runner import anomalib, printed_metrics

from anomalib_clipad.clip import TINY_BACKBONE_24

COMMON_MODEL_ARGS = [
    "--model", "AnomalyCLIP", "--model.backbone", TINY_BACKBONE_24, "--model.image_size", "112",
]  # fmt: skip
TRAIN_CATEGORY, TARGET_CATEGORY = "alpha", "beta"  # the categories of conftest's two_categories


def test_train_on_auxiliary_data_then_test_on_another_category(
    two_categories: Path, tiny_clip24_weights: Path, tmp_path: Path
) -> None:
    target_args = [
        "--data", "MVTecAD", "--data.root", str(two_categories), "--data.category", TARGET_CATEGORY,
        # the held-out calibration half is drawn at random: seeded, so that both runs score the same images
        "--data.val_split_mode", "from_test", "--data.seed", "0", "--data.num_workers", "0",
        "--trainer.accelerator", "cpu",
    ]  # fmt: skip

    # (a) train the prompts on the labelled images of alpha
    trained = anomalib(
        ["train", *COMMON_MODEL_ARGS, "--model.pretrained", str(tiny_clip24_weights), "--model.epochs", "2",
         "--data", "anomalib_clipad.data.AuxiliaryData", "--data.dataset", "MVTecAD",
         "--data.root", str(two_categories), "--data.categories", f"[{TRAIN_CATEGORY}]", "--data.num_workers", "0",
         "--trainer.accelerator", "cpu",
         "--default_root_dir", str(tmp_path / "train")],
        cwd=tmp_path,
    )  # fmt: skip
    assert "`max_epochs=2` reached" in trained
    checkpoints = sorted((tmp_path / "train").rglob("model.ckpt"))
    assert len(checkpoints) == 1, checkpoints
    prompts = sorted((tmp_path / "train").rglob("weights/learned_state.pt"))
    assert len(prompts) == 1, prompts
    assert prompts[0].parent == checkpoints[0].parent.parent  # next to the checkpoint's folder: <run>/weights/
    assert prompts[0].stat().st_size < 100_000  # the learned prompts only
    checkpoint = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 1  # the last of the two epochs (0-indexed): no model selection
    training_paths = checkpoint["clipad_training_paths"]
    # exactly alpha's labelled test split (normal and anomalous images), nothing of beta
    alpha_images = (two_categories / TRAIN_CATEGORY / "test").rglob("*.png")
    assert sorted(map(str, training_paths)) == sorted(map(str, alpha_images))

    # (b) the checkpoint (architecture only, every weight from it) on beta, thresholds from beta's held-out split
    from_checkpoint = anomalib(
        ["test", *COMMON_MODEL_ARGS, "--model.pretrained", "checkpoint", "--ckpt_path", str(checkpoints[0]),
         *target_args, "--default_root_dir", str(tmp_path / "test_checkpoint")],
        cwd=tmp_path,
    )  # fmt: skip
    assert "thresholds calibrated on" in from_checkpoint
    checkpoint_metrics = printed_metrics(from_checkpoint)

    # (c) the same CLIP weights and the prompts file alone: the same scores
    from_prompts = anomalib(
        ["test", *COMMON_MODEL_ARGS, "--model.pretrained", str(tiny_clip24_weights),
         "--model.learned_state", str(prompts[0]),
         *target_args, "--default_root_dir", str(tmp_path / "test_prompts")],
        cwd=tmp_path,
    )  # fmt: skip
    prompts_metrics = printed_metrics(from_prompts)
    for name in ("image_AUROC", "pixel_AUROC", "image_F1Score", "pixel_F1Score"):
        assert prompts_metrics[name] == pytest.approx(checkpoint_metrics[name], abs=1e-6), name
