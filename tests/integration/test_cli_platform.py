# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""``anomalib-clipad demo | benchmark | generate-data`` in real subprocesses (tiny random-init backbones)."""

import csv
import math
import re
from pathlib import Path

import yaml
from cli_runner import METRIC_NAMES, REPO_ROOT, anomalib_clipad

SAMPLE_BENCHMARK = REPO_ROOT / "configs" / "benchmark" / "patchcore_vs_clipad.yaml"


def test_demo_random_weights(tmp_path: Path) -> None:
    output = anomalib_clipad(
        [
            "demo",
            "--random-weights",
            "--image-size",
            "64",
            "--root",
            "data",
            "--results",
            "results",
        ],
        cwd=tmp_path,
    )
    assert "RANDOMLY INITIALISED" in output
    assert "MEANINGLESS" in output
    # the dataset was generated in the MVTec AD layout
    assert len(list((tmp_path / "data" / "bottle" / "train" / "good").glob("*.png"))) == 8
    assert (tmp_path / "data" / "bottle" / "ground_truth" / "hole" / "000_mask.png").is_file()
    for label, run_dir in (("WinCLIP (zero-shot)", "zero_shot"), ("WinCLIP+ (1-shot)", "1_shot")):
        line = re.search(rf"^{re.escape(label)}: (.*)$", output, flags=re.MULTILINE)
        assert line is not None, output[-3000:]
        values = dict(re.findall(r"(\w+)=([0-9.]+)", line.group(1)))
        assert set(values) == set(METRIC_NAMES), line.group(0)
        assert all(0.0 <= float(value) <= 1.0 for value in values.values())
        # anomalib's visualisations: one image per test sample. The test folder holds 8 good + 3 x 4 defective
        # images; half of each label is the validation split (thresholds), disjoint from the 10 tested ones.
        images = list((tmp_path / "results" / run_dir).rglob("images/**/*.png"))
        assert len(images) == 10, (run_dir, len(images))
        assert list((tmp_path / "results" / run_dir).rglob("model.ckpt"))


def test_demo_offline_without_weights_stops_with_clear_error(tmp_path: Path) -> None:
    output = anomalib_clipad(
        ["demo", "--root", "data", "--results", "results"],
        cwd=tmp_path,
        expected_rc=2,
    )
    assert "error: Could not obtain pretrained weights" in output
    assert "--random-weights" in output
    assert "Traceback" not in output
    assert not (tmp_path / "results").exists()  # stopped before running anything


def test_benchmark_mixed_zero_few_shot_and_failing_job(tmp_path: Path) -> None:
    config = yaml.safe_load(SAMPLE_BENCHMARK.read_text())
    # The sample configuration, made smaller: fewer images, fewer jobs, plus one job that must fail.
    config["synthetic_dataset"].update(n_train=4, n_test_good=3, n_test_defect=1, image_size=64)
    models = {entry["class_path"]: entry for entry in config["benchmark"]["model"]["grid"]}
    patchcore = models["Patchcore"]
    patchcore["init_args"]["coreset_sampling_ratio"] = 0.01
    winclip_zero_shot = models["WinCLIPPlus"]  # short name, resolved through the registration hook
    promptad = models["anomalib_clipad.PromptAD"]  # dotted plugin path (rejected by stock `anomalib benchmark`)
    promptad["init_args"]["epochs"] = 1
    broken = {"class_path": "anomalib_clipad.NoSuchModel"}
    config["benchmark"]["model"]["grid"] = [patchcore, winclip_zero_shot, promptad, broken]
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))

    output = anomalib_clipad(["benchmark", "--config", "bench.yaml"], cwd=tmp_path, expected_rc=1)
    assert "Generated the synthetic dataset" in output
    csv_files = list((tmp_path / "runs" / "benchmark").rglob("results.csv"))
    assert len(csv_files) == 1, output[-3000:]
    with csv_files[0].open() as file:
        rows = list(csv.DictReader(file))
    assert [row["model.class_path"] for row in rows] == [
        "Patchcore",
        "WinCLIPPlus",
        "anomalib_clipad.PromptAD",
        "anomalib_clipad.NoSuchModel",
    ]
    for row in rows[:3]:
        assert not row["error"], row["error"]
        for metric in METRIC_NAMES:
            assert 0.0 <= float(row[metric]) <= 1.0, (row["model.class_path"], metric, row[metric])
    assert rows[0]["model"] == "Patchcore"
    assert rows[1]["model"] == "WinCLIPPlus"
    assert rows[2]["model"] == "PromptAD"
    assert "NoSuchModel" in rows[3]["error"]
    assert math.isnan(float(rows[3]["image_AUROC"] or "nan"))
    assert (tmp_path / "runs" / "pipeline.log").is_file()
