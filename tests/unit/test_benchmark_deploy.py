# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Deployment rows of the benchmark: the ``--deploy`` flag, the ``deploy`` configuration key, their errors.

``anomalib-clipad benchmark --deploy openvino:<precision>`` and ``deploy: [...]`` (top level of the configuration, or
in a model entry) give each job one row per deployment, the torch row first. No model is exported here (the
integration test ``test_benchmark_grid.py::test_deployed_rows_beside_torch`` does that): these tests read names,
configurations and splits only.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from anomalib_clipad.benchmarks import jobs
from anomalib_clipad.benchmarks.deploy import (
    TORCH_F32,
    calibration_datamodule,
    parse_deployment,
    parse_deployments,
    torch_precision,
)
from anomalib_clipad.benchmarks.jobs import ClipadBenchmarkJob, ClipadBenchmarkJobGenerator
from anomalib_clipad.benchmarks.pipeline import run_deployments, split_model_entry, summary_table
from anomalib_clipad.cli import _build_parser, main
from anomalib_clipad.precision import Precision

CHOICES = "torch, openvino:f32, openvino:bf16, openvino:fp16, openvino:int8, openvino:int8_ptq, openvino:int8_acq"


@pytest.mark.parametrize(
    ("text", "name", "label"),
    [
        ("torch", "torch", "torch f32"),
        ("torch:f32", "torch", "torch f32"),
        ("openvino:f32", "openvino:f32", "openvino f32"),
        ("openvino:INT8_PTQ", "openvino:int8_ptq", "openvino int8_ptq"),  # anomalib's --compression_type names
        (" OpenVINO:int8-acq ", "openvino:int8_acq", "openvino int8_acq"),
        ("openvino:FP16", "openvino:fp16", "openvino fp16"),
    ],
)
def test_deployment_names(text: str, name: str, label: str) -> None:
    deployment = parse_deployment(text)
    assert (deployment.name, deployment.label) == (name, label)
    assert parse_deployment(deployment.name) == deployment  # the CSV's name reads back


@pytest.mark.parametrize("text", ["openvino", "openvino:", "openvino:f33", "onnx:f32", "torch:int8", "", "int8"])
def test_a_bad_deployment_lists_the_choices(text: str) -> None:
    with pytest.raises(ValueError, match="Unknown deployment") as error:
        parse_deployment(text)
    assert CHOICES in str(error.value)
    assert "INT8_PTQ" in str(error.value)


def test_the_torch_row_comes_first_once() -> None:
    assert parse_deployments(None) == [TORCH_F32]
    assert [d.name for d in parse_deployments("openvino:int8")] == ["torch", "openvino:int8"]
    names = [d.name for d in parse_deployments(["openvino:INT8", "torch", "openvino:int8", "openvino:f32"])]
    assert names == ["torch", "openvino:int8", "openvino:f32"]
    with pytest.raises(ValueError, match="deploy must be a deployment name or a list"):
        parse_deployments({"openvino": "f32"})
    with pytest.raises(ValueError, match="is not a deployment name"):
        parse_deployments([8])


def test_torch_precision_follows_the_trainer() -> None:
    assert torch_precision({}) == "f32"
    assert torch_precision({"precision": "32-true"}) == "f32"
    assert torch_precision({"precision": "bf16-mixed"}) == "bf16-mixed"


# ----------------------------------------------------------------------------------------------------- the CLI flag
def test_the_deploy_flag(capsys: pytest.CaptureFixture[str]) -> None:
    parser = _build_parser()
    args = parser.parse_args(["benchmark", "--config", "c.yaml", "--deploy", "openvino:INT8_PTQ", "openvino:f32"])
    assert args.deploy == ["openvino:int8_ptq", "openvino:f32"]
    args = parser.parse_args(["benchmark", "--config", "c.yaml", "--deploy", "torch", "--deploy", "openvino:int8"])
    assert args.deploy == ["torch", "openvino:int8"]
    assert parser.parse_args(["benchmark", "--config", "c.yaml"]).deploy is None  # the configuration's list
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["benchmark", "--config", "c.yaml", "--deploy", "openvino:int4"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "argument --deploy: Unknown deployment 'openvino:int4'" in error
    assert CHOICES in error


def _config(tmp_path: Path, **top: Any) -> Path:
    entry = {"class_path": "Padim", "init_args": {"backbone": "resnet18"}}
    config = {"accelerator": "cpu", **top, "benchmark": {"seed": 0, "model": {"grid": [entry]}, "data": "MVTecAD"}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_flag_replaces_the_configuration_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict] = []

    def run_config(self: Any, config: dict, run_dir: Path | None = None) -> bool:
        del self, run_dir
        seen.append(config)
        return True

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(jobs.ClipadBenchmark, "run_config", run_config)  # no job runs
    monkeypatch.setattr("anomalib.utils.logging.redirect_logs", lambda log_file: None)
    path = _config(tmp_path, deploy=["torch", "openvino:f32"])
    assert main(["benchmark", "--config", str(path)]) == 0
    assert main(["benchmark", "--config", str(path), "--deploy", "openvino:INT8"]) == 0
    assert [config["deploy"] for config in seen] == [["torch", "openvino:f32"], ["openvino:int8"]]


def test_a_bad_configuration_key_stops_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for value, where in [("openvino:f64", "deploy: "), ({"precision": "int8"}, "deploy must be")]:
        path = _config(tmp_path, deploy=value)
        assert main(["benchmark", "--config", str(path)]) == 2  # before any job, dataset or log file
        error = capsys.readouterr().err
        assert where in error
        assert CHOICES in error
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------- the configuration key
def test_a_model_entry_sets_its_own_deployments() -> None:
    padim = {"class_path": "Padim", "deploy": ["openvino:INT8_PTQ"]}
    entry = split_model_entry(padim)
    assert entry.model == {"class_path": "Padim"}
    assert entry.deploy == ["torch", "openvino:int8_ptq"]
    assert split_model_entry({"class_path": "Padim"}).deploy is None  # the run's
    with pytest.raises(ValueError, match="deploy of the model entry Padim: Unknown deployment 'openvino:int3'"):
        split_model_entry({"class_path": "Padim", "deploy": "openvino:int3"})
    config = {"deploy": "openvino:f32", "benchmark": {"model": {"grid": [padim, "WinClip"]}}}
    assert run_deployments(config) == ["torch", "openvino:f32"]
    config["benchmark"]["model"]["grid"].append({"class_path": "Patchcore", "deploy": ["tensorrt:int8"]})
    with pytest.raises(ValueError, match="model entry Patchcore"):
        run_deployments(config)

    args = {"seed": 0, "model": {"grid": [padim, {"class_path": "Patchcore"}]}, "data": "MVTecAD"}
    first, second = ClipadBenchmarkJobGenerator("cpu", deploy=["openvino:f32"]).generate_jobs(args)
    assert first.deploy == ["torch", "openvino:int8_ptq"]  # the entry's own list wins
    assert second.deploy == ["torch", "openvino:f32"]  # the run's
    assert first.config["model"] == {"class_path": "Padim"}
    copy = pickle.loads(pickle.dumps(first))  # sent to another process with several GPUs
    assert [d.label for d in copy.deployments] == ["torch f32", "openvino int8_ptq"]


def test_rows_of_all_jobs_are_collected() -> None:
    table = ClipadBenchmarkJob.collect([[{"deploy": "torch"}, {"deploy": "openvino:f32"}], {"deploy": "torch"}])
    assert table["deploy"].tolist() == ["torch", "openvino:f32", "torch"]
    rows = pd.DataFrame([{"model": "Padim", "deploy": "torch"}, {"model": "Padim", "deploy": "openvino:int8"}])
    assert "openvino:int8" in summary_table(rows)
    assert "deploy" not in summary_table(rows.iloc[:1])  # torch rows only: no column


# -------------------------------------------------------------------------------------- calibration of quantisation
class _Data:
    """The parts of a set-up datamodule that :func:`calibration_datamodule` reads."""

    def __init__(self, val: list[str] | None, test: list[str]) -> None:
        self.val_data = None if val is None else _Dataset(val)
        self.test_data = _Dataset(test)

    def val_dataloader(self) -> str:
        return "val loader"

    def test_dataloader(self) -> str:
        return "test loader"


class _Dataset:
    def __init__(self, paths: list[str]) -> None:
        self.samples = pd.DataFrame({"image_path": paths})

    def __len__(self) -> int:
        return len(self.samples)


def test_quantisation_calibrates_on_the_validation_split_only() -> None:
    data = _Data(val=["good/0.png", "bad/0.png"], test=["good/1.png", "bad/1.png"])
    assert calibration_datamodule(data, Precision.INT8) is None  # weights only: no data
    for precision in (Precision.INT8_PTQ, Precision.INT8_ACQ):
        calibration = calibration_datamodule(data, precision)
        assert calibration.val_dataloader() == "val loader"
        assert calibration.test_dataloader() == "val loader"  # int8_acq validates on test_dataloader()
        assert data.test_dataloader() == "test loader"  # the job's datamodule is unchanged
    shared = _Data(val=["good/0.png", "bad/1.png"], test=["good/1.png", "bad/1.png"])
    with pytest.raises(ValueError, match="shares 1 images with the scored test split"):
        calibration_datamodule(shared, Precision.INT8_PTQ)
    with pytest.raises(ValueError, match="has none"):
        calibration_datamodule(_Data(val=None, test=["good/1.png"]), Precision.INT8_ACQ)
