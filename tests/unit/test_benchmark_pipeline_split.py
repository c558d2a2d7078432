# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""``anomalib-clipad benchmark`` never calibrates on the scored images unless a configuration asks for it.

MVTecAD and Visa default to ``val_split_mode="same_as_test"`` (the validation split is the test split), so
thresholds and normalisation would be fitted on the images that are scored. The pipeline gives such a datamodule
``from_test`` when the configuration does not set the split, and warns when it sets the scored-images split itself.
"""

import logging
from pathlib import Path

import pytest
from anomalib.data import AnomalibDataModule
from anomalib.data.utils import ValSplitMode

from anomalib_clipad.benchmarks.jobs import ClipadBenchmarkJobGenerator
from anomalib_clipad.benchmarks.pipeline import held_out_calibration, instantiate

MVTEC = {"class_path": "MVTecAD", "init_args": {"root": "datasets/MVTecAD", "category": "bottle", "num_workers": 0}}
SCORED_IMAGES = ValSplitMode.SAME_AS_TEST.value


@pytest.mark.parametrize(
    "data",
    [MVTEC, "MVTecAD", "anomalib.data.Visa", {"class_path": "anomalib.data.MVTecAD", "init_args": None}],
    ids=["MVTecAD-init_args", "MVTecAD-short", "Visa-dotted", "init_args-null"],
)
def test_a_scored_images_default_becomes_from_test(data: object) -> None:
    split = held_out_calibration(data)
    assert split.config["init_args"]["val_split_mode"] == "from_test"
    assert split.level == logging.INFO
    assert "from_test" in split.message
    datamodule = instantiate(split.config, AnomalibDataModule, "data")
    assert datamodule.val_split_mode == ValSplitMode.FROM_TEST
    assert datamodule.val_split_ratio == 0.5  # the datamodule's own default: half of each test label calibrates
    if isinstance(data, dict) and data["init_args"]:
        assert split.config["init_args"]["category"] == "bottle"  # the other arguments are kept
        assert "val_split_mode" not in data["init_args"]  # the job's configuration is not modified in place


def test_an_explicit_scored_images_split_is_kept_with_a_warning() -> None:
    data = {**MVTEC, "init_args": {**MVTEC["init_args"], "val_split_mode": SCORED_IMAGES}}
    split = held_out_calibration(data)
    assert split.config == data
    assert split.level == logging.WARNING
    assert "calibrated on the scored images" in split.message
    assert instantiate(split.config, AnomalibDataModule, "data").val_split_mode == ValSplitMode.SAME_AS_TEST


@pytest.mark.parametrize(
    "data",
    [
        {**MVTEC, "init_args": {**MVTEC["init_args"], "val_split_mode": "from_test", "val_split_ratio": 0.3}},
        {**MVTEC, "init_args": {**MVTEC["init_args"], "val_split_mode": "none"}},
        {"class_path": "Folder", "init_args": {"name": "x", "root": "x", "normal_dir": "good"}},  # from_test already
        "NoSuchDataModule",  # left for the job to report
        42,
    ],
    ids=["explicit-from_test", "explicit-none", "Folder-default", "unknown-class", "not-a-config"],
)
def test_other_configurations_are_left_alone(data: object) -> None:
    split = held_out_calibration(data)
    assert split.config == data
    assert split.message is None


def test_generated_jobs_use_the_held_out_split(capsys: pytest.CaptureFixture[str]) -> None:
    folder = {"class_path": "Folder", "init_args": {"name": "x", "root": str(Path("x")), "normal_dir": "good"}}
    args = {"seed": 0, "model": {"class_path": {"grid": ["Patchcore", "Padim"]}}, "data": {"grid": [MVTEC, folder]}}
    jobs = list(ClipadBenchmarkJobGenerator("cpu").generate_jobs(args))
    assert len(jobs) == 4
    for job in jobs:
        if job.config["data"]["class_path"] == "MVTecAD":
            assert job.config["data"]["init_args"]["val_split_mode"] == "from_test"
            assert job.flat_cfg["data.init_args.val_split_mode"] == "from_test"  # a column of results.csv
        else:
            assert "val_split_mode" not in job.config["data"]["init_args"]
    assert capsys.readouterr().out.count("val_split_mode from_test instead of") == 1  # said once, not per job
