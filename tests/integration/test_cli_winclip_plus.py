# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""WinCLIPPlus through anomalib's own CLI in subprocesses: test (Folder and MVTecAD, zero- and one-shot), predict on a
folder (from the checkpoint and from the learned-state file) and export.

Tiny (or micro) random-init backbones and 64 px images keep each call to a few seconds; the scores are meaningless, the
point is that the whole anomalib pipeline runs and produces image and pixel metrics and decisions.
"""

import csv
import math
import re
import sys
from pathlib import Path

import pytest
import torch
from cli_runner import anomalib, printed_metrics, run_command, tiny_model_args
from micro import MICRO_BACKBONE

LOADER_ARGS = ["--data.num_workers", "0", "--data.train_batch_size", "4", "--data.eval_batch_size", "4"]


def test_folder_zero_shot(synthetic_category_dir: Path, tmp_path: Path) -> None:
    category = synthetic_category_dir
    output = anomalib(
        [
            "test", *tiny_model_args("WinCLIPPlus", class_name="widget"),
            "--data", "anomalib.data.Folder", "--data.name", "widget", "--data.root", str(category),
            "--data.normal_dir", "train/good", "--data.abnormal_dir", "test/stain", "--data.normal_test_dir",
            "test/good", "--data.mask_dir", "ground_truth/stain", *LOADER_ARGS,
            "--default_root_dir", str(tmp_path / "results"),
        ],
        cwd=tmp_path,
    )  # fmt: skip
    printed_metrics(output)
    assert "reference memory" not in output  # zero-shot: no shots drawn


def _predictions(folder: Path) -> list[tuple[str, float, str]]:
    """The rows of the one ``predictions.csv`` below ``folder``: image name, score, label."""
    (table,) = folder.rglob("predictions.csv")
    return [(Path(row["image_path"]).name, float(row["pred_score"]), row["pred_label"])
            for row in csv.DictReader(table.open())]  # fmt: skip


def test_mvtec_one_shot_then_predict_export_and_load_in_fresh_process(
    synthetic_root: Path, synthetic_category: str, micro_weights: Path, tmp_path: Path
) -> None:
    """A one-shot test with a held-out calibration split; predict on a bare folder from its checkpoint and from its
    learned-state file (the same decisions; a file without thresholds is refused); export and load elsewhere.

    The micro backbone's random weights come from a file, so that the learned-state run sees the same CLIP.
    """
    model_args = [
        "--model", "anomalib_clipad.WinCLIPPlus", "--model.backbone", MICRO_BACKBONE, "--model.image_size", "64",
        "--model.scales", "[2]", "--model.k_shot", "1", "--model.seed", "5", "--model.pretrained", str(micro_weights),
    ]  # fmt: skip
    output = anomalib(
        [
            "test", *model_args, "--data", "anomalib.data.MVTecAD", "--data.root", str(synthetic_root),
            "--data.category", synthetic_category, "--data.val_split_mode", "from_test", "--data.seed", "0",
            *LOADER_ARGS, "--default_root_dir", str(tmp_path / "results"),
        ],
        cwd=tmp_path,
    )  # fmt: skip
    printed_metrics(output)
    chosen = re.search(r"from 1 normal image\(s\) \(seed 5\): \['([^']+)'\]", output.replace("\n", ""))
    assert chosen is not None, output[-3000:]
    assert "/train/good/" in chosen.group(1)
    (checkpoint,) = (tmp_path / "results").rglob("model.ckpt")
    # the learned-state file of the calibrated test holds its thresholds
    (learned_state,) = (tmp_path / "results").rglob("learned_state.pt")
    thresholds = torch.load(learned_state, weights_only=True)["thresholds"]
    assert thresholds["source"] == "held_out"
    assert thresholds["class_name"] == synthetic_category
    assert all(math.isfinite(thresholds[name]) for name in ("image", "pixel"))

    anomalib(
        [
            "export", *model_args, "--export_type", "torch", "--ckpt_path", str(checkpoint),
            "--default_root_dir", str(tmp_path / "export"),
        ],
        cwd=tmp_path,
    )  # fmt: skip
    # predict from the checkpoint on a bare image folder: no train split, no class name, the state comes from the ckpt
    defect_folder = synthetic_root / synthetic_category / "test" / "stain"
    images = sorted(path.name for path in defect_folder.glob("*.png"))
    anomalib(
        [
            "predict", *model_args, "--ckpt_path", str(checkpoint), "--data", str(defect_folder),
            "--default_root_dir", str(tmp_path / "predict"),
        ],
        cwd=tmp_path,
    )  # fmt: skip
    assert len(list((tmp_path / "predict").rglob("*.png"))) == len(images)  # overlays
    # one table of every image's score and decision
    from_checkpoint = _predictions(tmp_path / "predict")
    assert sorted(name for name, *_ in from_checkpoint) == images
    assert all(0.0 <= score <= 1.0 and label in {"0", "1"} for _, score, label in from_checkpoint)

    # ... and from the learned-state file alone: a folder has no validation split, the file's thresholds decide
    anomalib(
        [
            "predict", *model_args, "--model.learned_state", str(learned_state), "--data", str(defect_folder),
            "--default_root_dir", str(tmp_path / "predict_state"),
        ],
        cwd=tmp_path,
    )  # fmt: skip
    from_state = _predictions(tmp_path / "predict_state")
    for (name, score, label), (name_c, score_c, label_c) in zip(from_state, from_checkpoint, strict=True):
        assert (name, label) == (name_c, label_c)
        assert score == pytest.approx(score_c, abs=1e-5)  # normalised with the same stored range
    # the same file without its thresholds: a clear error naming the fixes, instead of Lightning's dataloader error
    content = torch.load(learned_state, weights_only=True)
    content["thresholds"] = None
    uncalibrated = tmp_path / "uncalibrated.pt"
    torch.save(content, uncalibrated)
    refused = anomalib(
        [
            "predict", *model_args, "--model.learned_state", str(uncalibrated), "--data", str(defect_folder),
            "--default_root_dir", str(tmp_path / "refused"),
        ],
        cwd=tmp_path,
        expected_rc=1,
    )  # fmt: skip
    message = " ".join(refused.split())  # the CLI wraps the error's lines
    assert "this model holds no calibrated thresholds" in message
    assert "--ckpt_path <run>/weights/lightning/model.ckpt" in message
    assert "--data.val_split_mode from_test" in message
    assert "MisconfigurationException" not in refused  # not Lightning's "`val_dataloader` must be implemented"

    exported = tmp_path / "export" / "weights" / "torch" / "model.pt"
    assert exported.is_file()

    test_image = next(defect_folder.glob("*.png"))
    script = (
        "import sys, torch\n"
        "from anomalib.data.utils.image import read_image\n"
        "model = torch.load(sys.argv[1], map_location='cpu', weights_only=False)['model'].eval()\n"
        "image = read_image(sys.argv[2], as_tensor=True)[None]\n"
        "with torch.no_grad():\n"
        "    out = model(image)\n"
        "assert out.anomaly_map.shape == (1, 64, 64), out.anomaly_map.shape\n"
        "assert 0 <= float(out.pred_score) <= 1 and out.pred_mask is not None\n"
        "print('K_SHOT', model.model.k_shot, 'PATHS', model.reference_paths)\n"
    )
    loaded = run_command([sys.executable, "-c", script, str(exported), str(test_image)], cwd=tmp_path)
    assert "K_SHOT 1" in loaded
    assert chosen.group(1) in loaded  # the reference path travelled through the checkpoint into the export
