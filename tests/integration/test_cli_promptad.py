# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""PromptAD through anomalib's own CLI in subprocesses: ``anomalib train`` then ``anomalib test --ckpt_path``.

Tiny random-init backbone and 64 px images; the scores are meaningless, the point is that the prompts really train
(two epochs, one step each, on the one chosen shot) through anomalib's Engine and that the checkpoint reloads.
"""

from pathlib import Path

import pytest
import torch
from cli_runner import anomalib, printed_metrics, tiny_model_args

MODEL_ARGS = tiny_model_args("PromptAD", k_shot=1, epochs=2)


def test_train_then_test_from_checkpoint(synthetic_root: Path, synthetic_category: str, tmp_path: Path) -> None:
    data_args = [
        "--data", "anomalib.data.MVTecAD", "--data.root", str(synthetic_root), "--data.category", synthetic_category,
        "--data.num_workers", "0", "--data.eval_batch_size", "8",
    ]  # fmt: skip
    train_output = anomalib(
        ["train", *MODEL_ARGS, *data_args, "--trainer.accelerator", "cpu",
         "--default_root_dir", str(tmp_path / "train")],
        cwd=tmp_path,
    )  # fmt: skip
    assert "`max_epochs=2` reached" in train_output
    assert "trains on 1 normal shot(s)" in train_output
    trained_metrics = printed_metrics(train_output)

    checkpoints = sorted((tmp_path / "train").rglob("model.ckpt"))
    assert len(checkpoints) == 1
    checkpoint = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 1  # last of the two epochs (0-indexed)
    assert checkpoint["global_step"] == 2  # one optimizer step per epoch: the one shot is one batch
    assert len(checkpoint["clipad_reference_paths"]) == 1
    assert f"{synthetic_category}/train/good" in Path(checkpoint["clipad_reference_paths"][0]).as_posix()
    state = checkpoint["state_dict"]
    assert state["model.memories.3.features"].shape[0] > 0  # the vision memory of the shot
    assert state["model.text_prototypes.image.features"].shape[0] == 2  # trained [normal, anomalous] prototypes

    test_output = anomalib(
        # architecture only: every weight comes from the checkpoint (no tag, file or network needed)
        ["test", *MODEL_ARGS, "--model.pretrained", "checkpoint", *data_args, "--trainer.accelerator", "cpu",
         "--ckpt_path", str(checkpoints[0]), "--default_root_dir", str(tmp_path / "test")],
        cwd=tmp_path,
    )  # fmt: skip
    reloaded_metrics = printed_metrics(test_output)
    for name, value in trained_metrics.items():
        assert reloaded_metrics[name] == pytest.approx(value, abs=1e-6), name
