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

import torch
from auxiliary_cli import TARGET_CATEGORY, TRAIN_CATEGORY, score_target_both_ways, train_on_auxiliary_data

from anomalib_clipad.clip import TINY_BACKBONE_24

MODEL_ARGS = [
    "--model", "SimCLIP", "--model.backbone", TINY_BACKBONE_24, "--model.image_size", "112",
    "--model.logit_scale", "20",
]  # fmt: skip


def test_train_on_auxiliary_data_then_test_on_another_category(
    two_categories: Path, tiny_clip24_weights: Path, tmp_path: Path
) -> None:
    # (a) train the adapters, IPT and projections on the labelled images of alpha
    trained, checkpoint, learned_state = train_on_auxiliary_data(
        MODEL_ARGS, tiny_clip24_weights, two_categories, tmp_path
    )
    n_training_images = len(list((two_categories / TRAIN_CATEGORY / "test").rglob("*.png")))
    # the frozen image tower ran once per training image over both epochs (features cached)
    assert f"the frozen image tower encoded {n_training_images} training images" in trained
    assert "SimCLIP: learned state written to" in trained
    learned = torch.load(learned_state, map_location="cpu", weights_only=True)
    assert learned["format"] == "anomalib_clipad.learned_state"
    assert learned["provenance"]["training_classes"] == [TRAIN_CATEGORY]
    assert learned["backbone"] == TINY_BACKBONE_24
    assert learned_state.stat().st_size < checkpoint.stat().st_size / 4  # the learned weights only, no CLIP
    assert torch.load(checkpoint, map_location="cpu", weights_only=False)["clipad_training_classes"] == [TRAIN_CATEGORY]

    # (b) the checkpoint on beta, thresholds from beta's held-out split; (c) the learned-weights file alone: the same
    # scores. No class is stored with the training state: the target's class is set up with the learned IPT and
    # adapters, both ways.
    outputs = score_target_both_ways(
        MODEL_ARGS, tiny_clip24_weights, checkpoint, learned_state, two_categories, tmp_path
    )
    for output in outputs:
        assert f"set up for class '{TARGET_CATEGORY}' (learned on: {TRAIN_CATEGORY})" in output
