# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""DevPrompt through anomalib's own CLI in subprocesses: `anomalib train` on one shot, then `anomalib test --ckpt_path`.

A tiny random-init backbone and 64 px images keep each call to a few seconds; the scores are meaningless, the point is
that the whole pipeline runs (shot selection, Perlin bags, Lightning's training loop, calibration, test, checkpoint)
and that the checkpoint reproduces the trained model.
"""

from pathlib import Path

import pytest
import torch
from cli_runner import anomalib, printed_metrics, tiny_model_args

MODEL_ARGS = tiny_model_args("DevPrompt", k_shot=1, epochs=2, n_synthetic_per_shot=2)


def test_train_then_test_from_checkpoint(bottle_root: Path, tmp_path: Path) -> None:
    data_args = [
        "--data", "anomalib.data.MVTecAD", "--data.root", str(bottle_root), "--data.category", "bottle",
        "--data.num_workers", "0", "--data.eval_batch_size", "8",
    ]  # fmt: skip
    results = tmp_path / "results"
    trained = anomalib(["train", *MODEL_ARGS, *data_args, "--default_root_dir", str(results)], cwd=tmp_path)
    assert "`max_epochs=2` reached" in trained
    train_metrics = printed_metrics(trained)

    checkpoints = sorted(results.rglob("model.ckpt"))
    assert len(checkpoints) == 1, checkpoints
    checkpoint = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    assert len(checkpoint["clipad_reference_paths"]) == 1
    assert "/train/good/" in checkpoint["clipad_reference_paths"][0]
    assert checkpoint["prompt_class_name"] == "bottle"
    assert checkpoint["state_dict"]["model.memories.3.features"].shape == (16, 64)  # one shot x 4x4 patches at 64 px
    assert checkpoint["hyper_parameters"]["synthesize_anomalies"] is True

    tested = anomalib(
        ["test", *MODEL_ARGS, *data_args, "--ckpt_path", str(checkpoints[0]),
         "--default_root_dir", str(tmp_path / "tested")],
        cwd=tmp_path,
    )  # fmt: skip
    assert printed_metrics(tested) == pytest.approx(
        train_metrics, abs=1e-6
    )  # the checkpoint reproduces the trained model
