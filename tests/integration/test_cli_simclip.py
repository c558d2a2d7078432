# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""SimCLIP through anomalib's own CLI in subprocesses: train on auxiliary data, then test zero-shot elsewhere.

Three calls: ``anomalib train`` on the labelled test split of category ``alpha``
(:class:`~anomalib_clipad.data.auxiliary.AuxiliaryData`), then ``anomalib test`` on category ``beta`` with a held-out
calibration split, once from the checkpoint (``--ckpt_path``, the prompts re-built for ``beta`` with a log line) and
once from the small learned-weights file the training run wrote (``--model.learned_state``).
The tiny 24-layer backbone is
randomly initialised once and saved to a file (conftest's ``tiny_clip24_weights``), so that training and the
learned-weights run see the same frozen CLIP (``--model.pretrained null`` would draw new weights in each process); the
checkpoint carries them itself (``--model.pretrained checkpoint``). ``logit_scale`` 20 keeps the random-init scores
off 0 and 1 (with the default 100 most of them saturate and tie), so that equal AUROCs mean equal scores. Scores are
meaningless; the point is that the whole pipeline runs through the real CLI and that both ways of testing give the
same numbers.
"""

from pathlib import Path

import pytest
import torch
from cli_runner import anomalib, printed_metrics

from anomalib_clipad.clip import TINY_BACKBONE_24

COMMON_MODEL_ARGS = [
    "--model", "SimCLIP", "--model.backbone", TINY_BACKBONE_24, "--model.image_size", "112",
    "--model.logit_scale", "20",
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

    # (a) train the adapters, IPT and projections on the labelled images of alpha
    trained = anomalib(
        ["train", *COMMON_MODEL_ARGS, "--model.pretrained", str(tiny_clip24_weights), "--model.epochs", "2",
         "--data", "anomalib_clipad.data.AuxiliaryData", "--data.dataset", "MVTecAD",
         "--data.root", str(two_categories), "--data.categories", f"[{TRAIN_CATEGORY}]", "--data.num_workers", "0",
         "--trainer.accelerator", "cpu",
         "--default_root_dir", str(tmp_path / "train")],
        cwd=tmp_path,
    )  # fmt: skip
    assert "`max_epochs=2` reached" in trained
    n_training_images = len(list((two_categories / TRAIN_CATEGORY / "test").rglob("*.png")))
    # the frozen image tower ran once per training image over both epochs (features cached)
    assert f"the frozen image tower encoded {n_training_images} training images" in trained
    assert "SimCLIP: learned state written to" in trained
    checkpoints = sorted((tmp_path / "train").rglob("model.ckpt"))
    assert len(checkpoints) == 1, checkpoints
    prompts = sorted((tmp_path / "train").rglob("weights/learned_state.pt"))
    assert len(prompts) == 1, prompts
    assert prompts[0].parent == checkpoints[0].parent.parent  # next to the checkpoint's folder: <run>/weights/
    learned = torch.load(prompts[0], map_location="cpu", weights_only=True)
    assert learned["format"] == "anomalib_clipad.learned_state"
    assert learned["provenance"]["training_classes"] == [TRAIN_CATEGORY]
    assert learned["backbone"] == TINY_BACKBONE_24
    assert prompts[0].stat().st_size < checkpoints[0].stat().st_size / 4  # the learned weights only, no CLIP
    checkpoint = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 1  # the last of the two epochs (0-indexed): no model selection
    assert checkpoint["clipad_training_classes"] == [TRAIN_CATEGORY]
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
    # no class is stored with the training state: the target's class is set up with the learned IPT and adapters
    assert f"set up for class '{TARGET_CATEGORY}' (learned on: {TRAIN_CATEGORY})" in from_checkpoint
    assert "thresholds calibrated on" in from_checkpoint
    checkpoint_metrics = printed_metrics(from_checkpoint)

    # (c) the same CLIP weights and the learned-weights file alone: the same scores
    from_prompts = anomalib(
        ["test", *COMMON_MODEL_ARGS, "--model.pretrained", str(tiny_clip24_weights),
         "--model.learned_state", str(prompts[0]),
         *target_args, "--default_root_dir", str(tmp_path / "test_prompts")],
        cwd=tmp_path,
    )  # fmt: skip
    assert f"set up for class '{TARGET_CATEGORY}' (learned on: {TRAIN_CATEGORY})" in from_prompts
    prompts_metrics = printed_metrics(from_prompts)
    for name in ("image_AUROC", "pixel_AUROC", "image_F1Score", "pixel_F1Score"):
        assert prompts_metrics[name] == pytest.approx(checkpoint_metrics[name], abs=1e-6), name
