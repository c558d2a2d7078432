# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The results page: our numbers beside the published ones, means over categories, failed jobs, the CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from anomalib_clipad.benchmarks.results_page import (
    MEMORY_HEADER,
    THROUGHPUT_HEADER,
    build_markdown,
    find_config,
    load_published,
    load_results,
    memory_header,
    write_results_page,
)
from anomalib_clipad.cli import main

PUBLISHED = {
    "published": {
        "paper": "Some paper",
        "source": "Table 1",
        "dataset": "MVTecAD",
        "results": [
            {"model": "WinCLIPPlus", "k_shot": 1, "mean": {"image_AUROC": 93.1, "pixel_AUPRO": 87.1}},
            {"model": "WinCLIPPlus", "k_shot": 4, "mean": {"image_AUROC": 95.2}},  # not run: "—" for ours
            {
                "model": "DevPrompt",
                "k_shot": 1,
                "per_category": {"bottle": {"pixel_AUROC": 97.28}, "cable": {"pixel_AUROC": 93.79}},
                "note": "per-category only",
            },
            {"model": "AnomalyCLIP", "mean": {"image_AUROC": 91.5}, "ms_per_image": 120.0},
        ],
    }
}


def _rows() -> list[dict]:
    base = {"dataset": "MVTecAD", "data.class_path": "MVTecAD"}
    return [
        {**base, "model": "WinCLIPPlus", "k_shot": 1, "category": "bottle", "image_AUROC": 0.9512,
         "pixel_AUPRO": 0.80, "seconds_per_image": 0.25},
        {**base, "model": "WinCLIPPlus", "k_shot": 1, "category": "cable", "image_AUROC": 0.9000,
         "pixel_AUPRO": 0.70, "seconds_per_image": 0.35},
        {**base, "model": "DevPrompt", "k_shot": 1, "category": "bottle", "pixel_AUROC": 0.97, "image_AUROC": 0.5,
         "seconds_per_image": 0.1},
        {**base, "model": "DevPrompt", "k_shot": 1, "category": "bottle", "pixel_AUROC": 0.99, "image_AUROC": 0.7,
         "seconds_per_image": 0.3},  # a second run (another seed) of the same category
        {**base, "model": "DevPrompt", "k_shot": 1, "category": "cable", "error": "RuntimeError: boom | bad"},
        {**base, "model": "AnomalyCLIP", "category": "bottle", "image_AUROC": 0.915, "seconds_per_image": 0.1204},
    ]  # fmt: skip


@pytest.fixture
def run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "runs" / "benchmark" / "2026-01-01-00_00_00"
    run_dir.mkdir(parents=True)
    pd.DataFrame(_rows()).to_csv(run_dir / "results.csv", index=False)
    (run_dir / "paper_mvtec.yaml").write_text(yaml.safe_dump({"benchmark": {}, **PUBLISHED}))
    return run_dir


def _line(markdown: str, start: str, after: str | None = None) -> str:
    text = markdown if after is None else markdown[markdown.index(after) :]
    return next(line for line in text.splitlines() if line.startswith(start))


def test_published_section() -> None:
    published = load_published(PUBLISHED)
    assert published.paper == "Some paper"
    assert published.decimals == 1
    winclip = published.find("WinCLIPPlus", "MVTecAD", 1)
    assert winclip is not None
    assert winclip.mean == {"image_AUROC": 93.1, "pixel_AUPRO": 87.1}
    devprompt = published.find("DevPrompt", "MVTecAD", 1)
    assert devprompt is not None
    assert devprompt.mean_is_derived
    assert devprompt.mean["pixel_AUROC"] == pytest.approx((97.28 + 93.79) / 2)
    assert published.find("AnomalyCLIP", "MVTecAD", None).ms_per_image == 120.0
    assert published.find("AnomalyCLIP", "Visa", None) is None
    assert load_published(None).entries == []
    with pytest.raises(ValueError, match="'model'"):
        load_published({"published": {"dataset": "MVTecAD", "results": [{"k_shot": 1}]}})
    with pytest.raises(ValueError, match="no dataset"):
        load_published({"published": {"results": [{"model": "X"}]}})


def test_load_results_fills_the_grouping_columns(tmp_path: Path) -> None:
    # an older CSV: only the flattened configuration names model, data and k_shot
    rows = [
        {"model.class_path": "anomalib_clipad.PromptAD", "model.init_args.k_shot": 2.0,
         "data.class_path": "anomalib.data.Visa", "data.init_args.category": "pcb1", "image_AUROC": 0.8},
        {"model.class_path": "Folder-less", "data.class_path": "Folder", "data.init_args.name": "x",
         "error": "ValueError: no"},
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "r.csv", index=False)
    frame = load_results(tmp_path / "r.csv")
    assert frame["model"].tolist() == ["PromptAD", "Folder-less"]
    assert frame["dataset"].tolist() == ["Visa", "Folder"]
    assert frame["category"].tolist() == ["pcb1", "x"]
    assert frame["k_shot"].tolist()[0] == 2
    assert pd.isna(frame["k_shot"].tolist()[1])
    assert frame["failed"].tolist() == [False, True]


def test_page_puts_ours_beside_the_papers(run: Path) -> None:
    frame = load_results(run / "results.csv")
    markdown = build_markdown(frame, load_published(PUBLISHED), title="T", csv_name="results.csv")
    assert markdown.startswith("# T\n")
    assert "6 jobs, 1 failed" in markdown
    assert "## MVTecAD: WinCLIPPlus" in markdown
    # mean over categories: (95.12 + 90.00) / 2 = 92.56 -> 92.6 (paper 93.1, Δ -0.5); AUPRO 75.0 vs 87.1
    mean_row = _line(markdown, "| 1-shot | 2 / 2 |", after="## MVTecAD: WinCLIPPlus")
    assert "92.6 (paper 93.1, Δ -0.5)" in mean_row
    assert "75.0 (paper 87.1, Δ -12.1)" in mean_row
    assert "300.0" in mean_row  # ms per image: mean of 250 and 350
    # a published setting that was not run
    assert "| 4-shot | 0 / 0 | — (paper 95.2) |" in markdown
    # per category: the CSV's values x 100
    assert _line(markdown, "| bottle |", after="## MVTecAD: WinCLIPPlus").startswith("| bottle | 95.1 |")
    # DevPrompt: the two runs of bottle are averaged (98.0 vs the paper's 97.28 -> 97.3, Δ +0.7), the failed
    # category is counted but left out of the mean, the per-category published value is shown
    devprompt = markdown[markdown.index("## MVTecAD: DevPrompt") :]
    assert "| 1-shot | 1 / 2 |" in devprompt
    assert "per-category values only" in devprompt
    assert "* 1-shot: per-category only" in devprompt
    bottle = _line(devprompt, "| bottle |")
    assert bottle.startswith("| bottle | 2 |")  # the runs column appears when a category ran more than once
    assert "98.0 (paper 97.3, Δ +0.7)" in bottle
    # a model without k_shot, with a published time per image
    assert "| 120.4 (paper 120.0) |" in _line(markdown, "| default | 1 / 1 |")  # other hardware: no difference
    # failed jobs, with the table's pipe escaped
    assert "## Failed jobs" in markdown
    assert "| MVTecAD | DevPrompt | 1-shot | cable | RuntimeError: boom \\| bad |" in markdown


def test_write_results_page_and_cli(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert find_config(run / "results.csv") == run / "paper_mvtec.yaml"
    markdown, image = write_results_page(run / "results.csv", out_dir=tmp_path / "docs")
    assert markdown == tmp_path / "docs" / "paper_mvtec.md"
    assert image.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "![our means per model, setting and metric](paper_mvtec.png)" in markdown.read_text()
    assert "Published numbers: Some paper (Table 1)" in markdown.read_text()

    out = tmp_path / "cli"
    assert main(["results", "--csv", str(run / "results.csv"), "--out", str(out), "--name", "page"]) == 0
    assert "Wrote" in capsys.readouterr().out
    assert (out / "page.md").read_text() == markdown.read_text().replace("paper_mvtec.png", "page.png").replace(
        "# Benchmark results: paper_mvtec", "# Benchmark results: page"
    )
    assert (out / "page.png").is_file()
    assert main(["results", "--csv", str(tmp_path / "missing.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["results", "--csv", str(run / "results.csv"), "--config", str(tmp_path / "none.yaml")]) == 2


def test_page_without_a_configuration(tmp_path: Path) -> None:
    pd.DataFrame(_rows()[:2]).to_csv(tmp_path / "results.csv", index=False)
    markdown, image = write_results_page(tmp_path / "results.csv", out_dir=tmp_path / "docs")
    assert markdown.name == "results.md"
    assert image.name == "results.png"
    text = markdown.read_text()
    assert "Published numbers" not in text
    assert "(paper" not in text
    assert "| 1-shot | 2 / 2 | 92.6 |" in text


def _resource_rows(sources: tuple[str, str]) -> list[dict]:
    base = {"dataset": "MVTecAD", "model": "Padim", "image_AUROC": 0.8, "seconds_per_image": 0.01}
    return [
        {**base, "category": "bottle", "images_per_second": 40.0, "peak_memory_MiB": 100.4,
         "peak_memory_source": sources[0]},
        {**base, "category": "carpet", "images_per_second": 60.0, "peak_memory_MiB": 300.0,
         "peak_memory_source": sources[1]},
        {**base, "category": "cable", "error": "RuntimeError: out of memory", "peak_memory_source": None},
    ]  # fmt: skip


def _page(rows: list[dict], tmp_path: Path) -> str:
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    frame = load_results(tmp_path / "results.csv")
    return build_markdown(frame, load_published(None), title="T", csv_name="results.csv")


def test_throughput_and_peak_memory_columns(tmp_path: Path) -> None:
    markdown = _page(_resource_rows(("rss_peak_increase", "rss_peak_increase")), tmp_path)
    header = f"| {THROUGHPUT_HEADER} | {MEMORY_HEADER} (RSS increase) |"
    assert markdown.count(header) == 2  # the means and the per-category table say how memory was measured
    assert _line(markdown, "| default | 2 / 3 |").endswith("| 50.0 | 200 |")  # means over the successful categories
    assert _line(markdown, "| bottle |").endswith("| 10.0 | 40.0 | 100 |")  # ms / image, images / s, MiB
    assert _line(markdown, "| carpet |").endswith("| 60.0 | 300 |")
    assert "`peak_memory_MiB`" in markdown  # the page's text explains the columns

    cuda = _page(_resource_rows(("cuda_max_memory_allocated",) * 2), tmp_path)
    assert f"| {MEMORY_HEADER} (CUDA allocated) |" in cuda
    mixed = _page(_resource_rows(("cuda_max_memory_allocated", "rss_peak_increase")), tmp_path)
    assert f"| {MEMORY_HEADER} (mixed) |" in mixed


def test_an_older_csv_has_empty_resource_cells(tmp_path: Path) -> None:
    rows = [{key: value for key, value in row.items() if not key.startswith(("images", "peak"))}
            for row in _resource_rows(("", ""))]  # fmt: skip
    markdown = _page(rows, tmp_path)
    assert memory_header(load_results(tmp_path / "results.csv")) == MEMORY_HEADER
    assert _line(markdown, "| bottle |").endswith("| 10.0 | — | — |")


def _deployed_rows() -> list[dict]:
    base = {"dataset": "MVTecAD", "model": "Padim", "peak_memory_source": "rss_peak_increase"}
    torch_row = {**base, "deploy": "torch", "runtime": "torch", "precision": "f32"}
    int8 = {**base, "deploy": "openvino:int8_ptq", "runtime": "openvino", "precision": "int8_ptq"}
    return [
        {**torch_row, "category": "bottle", "image_AUROC": 0.90, "seconds_per_image": 0.020, "images_per_second": 40.0,
         "peak_memory_MiB": 300.0},
        {**int8, "category": "bottle", "image_AUROC": 0.88, "seconds_per_image": 0.005, "images_per_second": 150.0,
         "peak_memory_MiB": 80.0},
        {**torch_row, "category": "carpet", "image_AUROC": 0.70, "seconds_per_image": 0.030, "images_per_second": 30.0,
         "peak_memory_MiB": 310.0},
        {**int8, "category": "carpet", "error": "RuntimeError: openvino:int8_ptq of Padim: no"},
    ]  # fmt: skip


def test_deployed_rows_side_by_side(tmp_path: Path) -> None:
    markdown = _page(_deployed_rows(), tmp_path)
    assert "4 rows, one per job and deployment, 1 failed" in markdown
    assert "`openvino <precision>` row is the same fitted and calibrated model" in markdown
    header = f"| category | deployment | image_AUROC | ms / image | {THROUGHPUT_HEADER} | {MEMORY_HEADER} (RSS"
    assert header in markdown
    per_category = markdown[markdown.index("default, per category:") : markdown.index("## Failed")].splitlines()
    rows = [line for line in per_category if line.startswith("| ") and "category" not in line]
    assert rows == [  # a category's rows together, torch first, each with its own numbers
        "| bottle | torch f32 | 90.0 | 20.0 | 40.0 | 300 |",
        "| bottle | openvino int8_ptq | 88.0 | 5.0 | 150.0 | 80 |",
        "| carpet | torch f32 | 70.0 | 30.0 | 30.0 | 310 |",
    ]
    assert "| default | torch f32 | 2 / 2 | 80.0 | 25.0 | 35.0 | 305 |" in markdown  # means per deployment
    assert "| default | openvino int8_ptq | 1 / 2 | 88.0 | 5.0 | 150.0 | 80 |" in markdown
    failed = "| MVTecAD | Padim | default | carpet | openvino int8_ptq | RuntimeError: openvino:int8_ptq of Padim: no |"
    assert failed in markdown

    torch_only = _page([row for row in _deployed_rows() if row["deploy"] == "torch"], tmp_path)
    assert "deployment" not in torch_only  # a torch-only run: the page as before
    assert "| bottle | 90.0 | 20.0 | 40.0 | 300 |" in torch_only
    assert load_results(tmp_path / "results.csv")["deployment"].tolist() == ["torch f32", "torch f32"]


def test_heat_map_rows_per_deployment(tmp_path: Path) -> None:
    pd.DataFrame(_deployed_rows()).to_csv(tmp_path / "results.csv", index=False)
    markdown, image = write_results_page(tmp_path / "results.csv", out_dir=tmp_path / "docs")
    assert image.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "## MVTecAD: Padim" in markdown.read_text()
