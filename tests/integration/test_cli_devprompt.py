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
from cli_runner import anomalib, printed_metrics

from anomalib_clipad.data.synthetic import generate_synthetic_dataset

MODEL = "anomalib_clipad.DevPrompt"
MODEL_ARGS = [
    "--model", MODEL,
    "--model.k_shot", "1",
    "--model.backbone", "clipad-tiny-vit-16",
    "--model.pretrained", "null",
    "--model.image_size", "64",
    "--model.epochs", "2",
    "--model.n_synthetic_per_shot", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_dataset(
        root, category="bottle", n_train=3, n_test_good=2, n_test_defect=2, image_size=64, defect_types=("stain",)
    )
    return root


def test_train_then_test_from_checkpoint(dataset: Path, tmp_path: Path) -> None:
    data_args = [
        "--data", "anomalib.data.MVTecAD", "--data.root", str(dataset), "--data.category", "bottle",
        "--data.num_workers", "0", "--data.eval_batch_size", "8",
    ]  # fmt: skip
    results = tmp_path / "results"
    trained = anomalib(["train", *MODEL_ARGS, *data_args, "--default_root_dir", str(results)], cwd=tmp_path)
    assert "`max_epochs=2` reached" in trained
    train_metrics = printed_metrics(trained)

    checkpoints = sorted(results.rglob("model.ckpt"))
    assert len(checkpoints) == 1, checkpoints
    checkpoint = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    assert len(checkpoint["few_shot_paths"]) == 1
    assert "/train/good/" in checkpoint["few_shot_paths"][0]
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
