# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""DevPrompt through anomalib's own CLI in subprocesses: `anomalib train` on one shot, then `anomalib test --ckpt_path`.

A tiny random-init backbone and 64 px images keep each call to a few seconds; the scores are meaningless, the point is
that the whole pipeline runs (shot selection, Perlin bags, Lightning's training loop, calibration, test, checkpoint)
and that the checkpoint reproduces the trained model.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from anomalib_clipad.data.synthetic import generate_synthetic_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]
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
METRIC = re.compile(r"(image_AUROC|pixel_AUROC|image_F1Score|pixel_F1Score)\s*│\s*([0-9.eE+-]+)")


def _anomalib() -> str:
    script = Path(sys.executable).with_name("anomalib")
    return str(script) if script.exists() else "anomalib"


def _run(arguments: list[str], cwd: Path) -> str:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(arguments, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def _metrics(output: str) -> dict[str, float]:
    metrics = {name: float(value) for name, value in METRIC.findall(output)}
    assert {"image_AUROC", "pixel_AUROC", "image_F1Score", "pixel_F1Score"} <= set(metrics), output[-3000:]
    assert all(0.0 <= value <= 1.0 for value in metrics.values()), metrics
    return metrics


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
    trained = _run([_anomalib(), "train", *MODEL_ARGS, *data_args, "--default_root_dir", str(results)], cwd=tmp_path)
    assert "`max_epochs=2` reached" in trained
    train_metrics = _metrics(trained)

    checkpoints = sorted(results.rglob("model.ckpt"))
    assert len(checkpoints) == 1, checkpoints
    checkpoint = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    assert len(checkpoint["few_shot_paths"]) == 1
    assert "/train/good/" in checkpoint["few_shot_paths"][0]
    assert checkpoint["devprompt_class_name"] == "bottle"
    assert checkpoint["state_dict"]["model.memory_3"].shape == (16, 64)  # one shot x 4x4 patches at 64 px
    assert checkpoint["hyper_parameters"]["synthesize_anomalies"] is True

    tested = _run(
        [_anomalib(), "test", *MODEL_ARGS, *data_args, "--ckpt_path", str(checkpoints[0]),
         "--default_root_dir", str(tmp_path / "tested")],
        cwd=tmp_path,
    )  # fmt: skip
    assert _metrics(tested) == pytest.approx(train_metrics, abs=1e-6)  # the checkpoint reproduces the trained model
