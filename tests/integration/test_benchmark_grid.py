# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The CI version of the paper grids: ``anomalib-clipad benchmark`` on ``configs/benchmark/ci_tiny_grid.yaml``, then
the results page of its CSV; and a tiny grid with deployment rows (torch beside the OpenVINO IR).

One subprocess runs the whole grid (two generated categories; anomalib's Patchcore, Padim, Fastflow and
ReverseDistillation, and every model of the registry: WinCLIPPlus 0/1-shot, PromptAD, DevPrompt, AnomalyCLIP and
SimCLIP trained once on a third generated dataset), on tiny random-init backbones: it checks the pipeline (the
registry entry, ``train_data``, ``trainer``, the metrics on every model's output shapes, the progress lines, the time
per image, the throughput and the peak memory), not accuracy. The results page is then written in-process, and every
number of its per-category tables is checked against the CSV.

The deployment grid (``deploy: [torch, openvino:f32]``) runs in-process, to keep its cost to the two exports:
anomalib's Padim and DevPrompt on a one-block random-init CLIP (the dynamo ONNX export of DevPrompt on the registry's
eight-block tiny CLIP costs about 24 s of CPU alone), one generated category. Each OpenVINO f32 row must give the torch
row's metrics within a tolerance, and the results page must show both rows of each model and category, each with its
own numbers.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cli_runner import REPO_ROOT, anomalib_clipad

from anomalib_clipad.benchmarks.pipeline import expand_model_grid
from anomalib_clipad.benchmarks.results_page import MEMORY_HEADER, THROUGHPUT_HEADER, TIME_HEADER
from anomalib_clipad.cli import main
from anomalib_clipad.registry import MODEL_NAMES

CONFIG = REPO_ROOT / "configs" / "benchmark" / "ci_tiny_grid.yaml"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _expected_jobs(config: dict) -> list[tuple[str, float | None, str]]:
    """``(model class, k_shot, category)`` of every job, in the pipeline's order (model entries, then data)."""
    benchmark = expand_model_grid(config["benchmark"])
    jobs = []
    for entry in benchmark["model"]["grid"]:
        for data in benchmark["data"]["grid"]:
            k_shot = (entry.get("init_args") or {}).get("k_shot")
            jobs.append((entry["class_path"].rsplit(".", 1)[-1], k_shot, data["init_args"]["category"]))
    return jobs


def _per_category_tables(markdown: str, key_columns: int = 1) -> dict[tuple[str, str], dict[str, dict[str, str]]]:
    """``(model, setting) -> row key -> column -> cell`` of the page's per-category tables.

    The row key is the first ``key_columns`` cells joined by a space: the category, or ``"bottle openvino f32"`` with
    the deployment column.
    """
    tables: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
    model = setting = None
    header: list[str] | None = None
    for line in markdown.splitlines():
        if line.startswith("## "):
            model, setting = line.split(": ", 1)[-1], None
        elif line.endswith(", per category:"):
            setting, header = line.removesuffix(", per category:"), None
        elif line.startswith("| ") and setting is not None:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            else:
                key = " ".join(cells[:key_columns])
                tables.setdefault((model, setting), {})[key] = dict(zip(header, cells, strict=True))
    return tables


def test_ci_grid_and_results_page(tmp_path: Path) -> None:
    config = yaml.safe_load(CONFIG.read_text())
    shutil.copy(CONFIG, tmp_path / CONFIG.name)
    expected = _expected_jobs(config)
    models = {model for model, _, _ in expected}
    assert {"Patchcore", "Padim", "Fastflow", "ReverseDistillation", *MODEL_NAMES} <= models

    output = anomalib_clipad(["benchmark", "--config", CONFIG.name], cwd=tmp_path)

    # progress: one line per job when it starts, with the elapsed time, and its time per image when it ends
    for index, (model, _, category) in enumerate(expected, start=1):
        assert re.search(rf"^job {index} of {len(expected)}: {model} .*{category} \(elapsed \d+:\d\d:\d\d\)$",
                         output, flags=re.MULTILINE), (index, output[-3000:])  # fmt: skip
    done = r"^job \d+ of \d+ done in .* s per image \(\d+ test images\), [0-9.]+ images/s, peak memory \d+ MiB \(\w+\)$"
    assert len(re.findall(done, output, re.MULTILINE)) == len(expected)

    csv_files = list((tmp_path / "runs" / "benchmark").rglob("results.csv"))
    assert len(csv_files) == 1, output[-3000:]
    assert (csv_files[0].parent / CONFIG.name).read_text() == CONFIG.read_text()  # the copy for the results page
    frame = pd.read_csv(csv_files[0])
    assert len(frame) == len(expected)
    assert "error" not in frame.columns or frame["error"].isna().all(), frame.get("error")
    for row, (model, k_shot, category) in zip(frame.to_dict("records"), expected, strict=True):
        assert (row["model"], row["category"], row["dataset"]) == (model, category, "MVTecAD")
        if k_shot is not None:
            assert row["k_shot"] == k_shot
        for metric in config["metrics"]:
            assert 0.0 <= row[metric] <= 1.0, (model, category, metric, row[metric])
        assert row["seconds_per_image"] > 0.0
        assert row["n_test_images"] > 0
        assert math.isfinite(row["images_per_second"])
        assert row["images_per_second"] > 0.0
        assert math.isfinite(row["peak_memory_MiB"])
        assert row["peak_memory_MiB"] > 0.0  # what the job added to the process (each job builds its model)
        assert row["peak_memory_source"] == "rss_peak_increase"  # accelerator: cpu, on Linux
    # trained once on train_data, reused for the second category
    cross = frame[frame["model.train_data.class_path"].notna()]
    assert len(cross) >= 2
    for _, rows in cross.groupby("model", sort=False):
        assert rows["fit_reused"].tolist() == [False] + [True] * (len(rows) - 1)

    # the results page of that CSV (its configuration copy found beside it)
    assert main(["results", "--csv", str(csv_files[0]), "--out", str(tmp_path / "docs")]) == 0
    markdown_path = tmp_path / "docs" / f"{CONFIG.stem}.md"
    image_path = tmp_path / "docs" / f"{CONFIG.stem}.png"
    assert image_path.read_bytes().startswith(PNG_SIGNATURE)
    markdown = markdown_path.read_text()
    assert f"![our means per model, setting and metric]({image_path.name})" in markdown
    tables = _per_category_tables(markdown)
    for row in frame.to_dict("records"):
        setting = "default" if pd.isna(row["k_shot"]) else f"{int(row['k_shot'])}-shot"
        cells = tables[row["model"], setting][row["category"]]
        for metric in config["metrics"]:
            assert cells[metric] == f"{100 * row[metric]:.1f}", (row["model"], setting, metric, cells[metric])
        assert cells[TIME_HEADER] == f"{1000 * row['seconds_per_image']:.1f}"
        assert cells[THROUGHPUT_HEADER] == f"{row['images_per_second']:.1f}"
        assert cells[f"{MEMORY_HEADER} (RSS increase)"] == f"{row['peak_memory_MiB']:.0f}"
    # the mean over categories of one group equals the mean of the CSV rows
    zero_shot = frame[(frame["model"] == "WinCLIPPlus") & (frame["k_shot"] == 0)]
    mean = 100 * zero_shot["image_AUROC"].mean()
    summary = re.search(r"^\| 0-shot \| 2 / 2 \| ([0-9.]+) \|", markdown, flags=re.MULTILINE)
    assert summary is not None
    assert math.isclose(float(summary.group(1)), round(mean, 1), abs_tol=1e-9)


# A one-block CLIP (the registry's tiny one has eight): DevPrompt's ONNX graph has 196 nodes on it (284 on two
# blocks), and its OpenVINO export took about 9 s of CPU here, 24 s on the eight-block one.
ONE_BLOCK_CLIP = "clipad-test-vit-16-l1"
ONE_BLOCK_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 240, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
# Torch and the f32 IR agree to about 1e-6 on scores and maps (docs/export.md): the metrics may differ only where a
# score or a pixel sits on a threshold or ties another.
METRIC_TOLERANCE = 1e-3


def _deploy_grid(root: str) -> dict:
    pre_processor = {
        "class_path": "anomalib.pre_processing.PreProcessor",
        "init_args": {"transform": {"class_path": "torchvision.transforms.v2.Resize", "init_args": {"size": [64, 64]}}},
    }
    padim = {"backbone": "resnet18", "pre_trained": False, "layers": ["layer1", "layer2"]}
    devprompt = {
        "backbone": ONE_BLOCK_CLIP, "pretrained": None, "image_size": 64, "k_shot": 1, "epochs": 1,
        "n_synthetic_per_shot": 1, "memory_layers": [1],
    }  # fmt: skip
    data = {
        "root": root, "category": "bottle", "train_batch_size": 4, "eval_batch_size": 4, "num_workers": 0, "seed": 0,
        "val_split_mode": "from_test", "val_split_ratio": 0.5,
    }  # fmt: skip
    return {
        "synthetic_dataset": {"root": root, "category": "bottle", "kind": "object", "n_train": 4, "n_test_good": 4,
                              "n_test_defect": 1, "image_size": 64, "seed": 0},
        "accelerator": "cpu",
        "deploy": ["torch", "openvino:f32"],
        "benchmark": {
            "seed": 42,
            "model": {"grid": [{"class_path": "Padim", "init_args": {**padim, "pre_processor": pre_processor}},
                               {"class_path": "anomalib_clipad.DevPrompt", "init_args": devprompt}]},
            "data": {"class_path": "MVTecAD", "init_args": data},
        },
    }  # fmt: skip


def test_deployed_rows_beside_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import open_clip

    from anomalib_clipad.clip.loading import register_model_configs

    register_model_configs()
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / f"{ONE_BLOCK_CLIP}.json").write_text(json.dumps(ONE_BLOCK_CONFIG))
    open_clip.add_model_config(tmp_path / "clip")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("anomalib.utils.logging.redirect_logs", lambda log_file: None)  # keep pytest's log handlers
    (tmp_path / "deploy.yaml").write_text(yaml.safe_dump(_deploy_grid("datasets/deploy")))

    assert main(["benchmark", "--config", "deploy.yaml"]) == 0
    output = capsys.readouterr().out
    for index in (1, 2):  # Padim, DevPrompt
        assert re.search(rf"^job {index} of 2 done in ", output, re.MULTILINE), output[-3000:]
        assert re.search(rf"^job {index} of 2 openvino:f32 done in .* images/s, peak memory \d+ MiB", output, re.M)

    (csv_path,) = (tmp_path / "runs" / "benchmark").rglob("results.csv")
    frame = pd.read_csv(csv_path)
    assert "error" not in frame.columns or frame["error"].isna().all(), frame.get("error")
    assert list(zip(frame["model"], frame["deploy"], strict=True)) == [
        ("Padim", "torch"), ("Padim", "openvino:f32"), ("DevPrompt", "torch"), ("DevPrompt", "openvino:f32"),
    ]  # fmt: skip
    assert frame["precision"].tolist() == ["f32"] * 4
    for model, rows in frame.groupby("model", sort=False):
        torch_row, deployed = rows.iloc[0], rows.iloc[1]
        for metric in ("image_AUROC", "image_AP", "image_F1Score", "pixel_AUROC", "pixel_AUPRO", "pixel_F1Score"):
            assert math.isclose(deployed[metric], torch_row[metric], abs_tol=METRIC_TOLERANCE), (model, metric)
        assert deployed["n_test_images"] == torch_row["n_test_images"] > 0  # the same test images
        assert deployed["inference_precision"] == "f32"  # read back from the compiled IR
        assert deployed["export_duration"] > 0.0
        assert deployed["seconds_per_image"] > 0.0
        assert deployed["images_per_second"] > 0.0
        assert math.isfinite(deployed["peak_memory_MiB"])
        assert deployed["peak_memory_source"] == "rss_peak_increase"

    assert main(["results", "--csv", str(csv_path), "--out", str(tmp_path / "docs")]) == 0
    markdown = (tmp_path / "docs" / "deploy.md").read_text()
    tables = _per_category_tables(markdown, key_columns=2)  # category, deployment: "bottle openvino f32"
    for row in frame.to_dict("records"):
        setting = "default" if pd.isna(row["k_shot"]) else f"{int(row['k_shot'])}-shot"
        label = "torch f32" if row["deploy"] == "torch" else "openvino f32"
        cells = tables[row["model"], setting][f"bottle {label}"]  # both rows of a category, side by side
        assert cells["image_AUROC"] == f"{100 * row['image_AUROC']:.1f}"
        assert cells[TIME_HEADER] == f"{1000 * row['seconds_per_image']:.1f}"
        assert cells[THROUGHPUT_HEADER] == f"{row['images_per_second']:.1f}"
        assert cells[f"{MEMORY_HEADER} (RSS increase)"] == f"{row['peak_memory_MiB']:.0f}"
    assert re.search(r"^\| default \| openvino f32 \| 1 / 1 \|", markdown, flags=re.MULTILINE)  # Padim's means
