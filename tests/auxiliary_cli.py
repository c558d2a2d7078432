# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The CLI protocol of the models that learn once on auxiliary data (AnomalyCLIP, SimCLIP), shared by their tests.

``anomalib train`` on the labelled test split of one category of conftest's ``two_categories``
(:class:`~anomalib_clipad.data.auxiliary.AuxiliaryData`), then ``anomalib test`` on the other category with a seeded
held-out calibration split, once from the checkpoint (``--model.pretrained checkpoint --ckpt_path``) and once from the
learned-state file the training run wrote (``--model.learned_state``, with the same CLIP weights file). Each step
checks what holds for every such model; the tests check their model's own log lines on the outputs returned.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_runner import anomalib, printed_metrics

TRAIN_CATEGORY, TARGET_CATEGORY = "alpha", "beta"  # the categories of conftest's two_categories


def train_on_auxiliary_data(model_args: list[str], weights: Path, root: Path, tmp_path: Path) -> tuple[str, Path, Path]:
    """Train 2 epochs on ``TRAIN_CATEGORY``'s labelled images.

    Returns:
        The run's output, its checkpoint and its learned-state file, after checking that there is one of each, the
        file next to the checkpoint's folder, the last epoch kept, and exactly ``TRAIN_CATEGORY``'s test split used.
    """
    output = anomalib(
        ["train", *model_args, "--model.pretrained", str(weights), "--model.epochs", "2",
         "--data", "anomalib_clipad.data.AuxiliaryData", "--data.dataset", "MVTecAD",
         "--data.root", str(root), "--data.categories", f"[{TRAIN_CATEGORY}]", "--data.num_workers", "0",
         "--trainer.accelerator", "cpu",
         "--default_root_dir", str(tmp_path / "train")],
        cwd=tmp_path,
    )  # fmt: skip
    assert "`max_epochs=2` reached" in output
    checkpoints = sorted((tmp_path / "train").rglob("model.ckpt"))
    assert len(checkpoints) == 1, checkpoints
    learned_states = sorted((tmp_path / "train").rglob("weights/learned_state.pt"))
    assert len(learned_states) == 1, learned_states
    assert learned_states[0].parent == checkpoints[0].parent.parent  # next to the checkpoint's folder: <run>/weights/
    checkpoint = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 1  # the last of the two epochs (0-indexed): no model selection
    # exactly the training category's labelled test split (normal and anomalous images), nothing of the target
    training_images = (root / TRAIN_CATEGORY / "test").rglob("*.png")
    assert sorted(map(str, checkpoint["clipad_training_paths"])) == sorted(map(str, training_images))
    return output, checkpoints[0], learned_states[0]


def score_target_both_ways(
    model_args: list[str], weights: Path, checkpoint: Path, learned_state: Path, root: Path, tmp_path: Path
) -> tuple[str, str]:
    """Test on ``TARGET_CATEGORY`` from the checkpoint, then from the learned-state file with the same CLIP weights.

    Returns:
        Both runs' outputs, after checking that thresholds came from the target's held-out split and that both ways
        print the same image and pixel metrics.
    """
    target_args = [
        "--data", "MVTecAD", "--data.root", str(root), "--data.category", TARGET_CATEGORY,
        # the held-out calibration half is drawn at random: seeded, so that both runs score the same images
        "--data.val_split_mode", "from_test", "--data.seed", "0", "--data.num_workers", "0",
        "--trainer.accelerator", "cpu",
    ]  # fmt: skip
    # the architecture only: every weight from the checkpoint
    from_checkpoint = anomalib(
        ["test", *model_args, "--model.pretrained", "checkpoint", "--ckpt_path", str(checkpoint),
         *target_args, "--default_root_dir", str(tmp_path / "test_checkpoint")],
        cwd=tmp_path,
    )  # fmt: skip
    assert "thresholds calibrated on" in from_checkpoint
    from_learned_state = anomalib(
        ["test", *model_args, "--model.pretrained", str(weights), "--model.learned_state", str(learned_state),
         *target_args, "--default_root_dir", str(tmp_path / "test_learned_state")],
        cwd=tmp_path,
    )  # fmt: skip
    expected, reloaded = printed_metrics(from_checkpoint), printed_metrics(from_learned_state)
    for name in ("image_AUROC", "pixel_AUROC", "image_F1Score", "pixel_F1Score"):
        assert reloaded[name] == pytest.approx(expected[name], abs=1e-6), name
    return from_checkpoint, from_learned_state
