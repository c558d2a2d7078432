# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The CI version of the paper grids: ``anomalib-clipad benchmark`` on ``configs/benchmark/ci_tiny_grid.yaml``, then
the results page of its CSV.

One subprocess runs the whole grid (two generated categories; anomalib's Patchcore, Padim, Fastflow and
ReverseDistillation, and every model of the registry: WinCLIPPlus 0/1-shot, PromptAD, DevPrompt, AnomalyCLIP and
SimCLIP trained once on a third generated dataset), on tiny random-init backbones: it checks the pipeline (the
registry entry, ``train_data``, ``trainer``, the metrics on every model's output shapes, the progress lines, the time
per image, the throughput and the peak memory), not accuracy. The results page is then written in-process, and every
number of its per-category tables is checked against the CSV.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pandas as pd
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


def _per_category_tables(markdown: str) -> dict[tuple[str, str], dict[str, dict[str, str]]]:
    """``(model, setting) -> category -> column -> cell`` of the page's per-category tables."""
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
                tables.setdefault((model, setting), {})[cells[0]] = dict(zip(header, cells, strict=True))
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
