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

from auxiliary_cli import score_target_both_ways, train_on_auxiliary_data

from anomalib_clipad.clip import TINY_BACKBONE_24

MODEL_ARGS = [
    "--model", "AnomalyCLIP", "--model.backbone", TINY_BACKBONE_24, "--model.image_size", "112",
]  # fmt: skip


def test_train_on_auxiliary_data_then_test_on_another_category(
    two_categories: Path, tiny_clip24_weights: Path, tmp_path: Path
) -> None:
    # (a) train the prompts on the labelled images of alpha
    _, checkpoint, learned_state = train_on_auxiliary_data(MODEL_ARGS, tiny_clip24_weights, two_categories, tmp_path)
    assert learned_state.stat().st_size < 100_000  # the learned prompts only

    # (b) the checkpoint on beta, thresholds from beta's held-out split; (c) the prompts file alone: the same scores
    score_target_both_ways(MODEL_ARGS, tiny_clip24_weights, checkpoint, learned_state, two_categories, tmp_path)
