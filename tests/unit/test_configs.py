# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""configs/<model>.yaml name real arguments of their class and state its defaults (the papers' settings)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml
from cli_runner import console_script, run_process

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# where a config deliberately differs from the class default (none today)
INTENDED_DIFFERENCES: dict[str, set[str]] = {}


def _normalise(value: object) -> object:
    return list(value) if isinstance(value, list | tuple) else value


@pytest.mark.parametrize("name", ["winclip_plus", "promptad", "devprompt", "simclip", "anomalyclip"])
def test_model_config_matches_the_class(name: str) -> None:
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["model"]
    module_name, class_name = config["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    parameters = inspect.signature(cls.__init__).parameters
    init_args = config["init_args"]
    unknown = set(init_args) - set(parameters)
    assert not unknown, f"{name}.yaml names arguments {cls.__name__} does not take: {unknown}"
    missing = {
        parameter
        for parameter in parameters
        if parameter not in {"self", "pre_processor", "post_processor", "evaluator", "visualizer"}
    } - set(init_args)
    assert not missing, f"{name}.yaml does not show {missing}"
    for argument, value in init_args.items():
        if argument in INTENDED_DIFFERENCES.get(name, set()):
            continue
        assert _normalise(value) == _normalise(parameters[argument].default), (name, argument)


# ---------------------------------------------------------------------------------------------------------------
# Calibration split: no config calibrates on the scored images (thresholds and min-max normalisation come from the
# validation split; MVTecAD's and Visa's default makes it the test split itself).
# ---------------------------------------------------------------------------------------------------------------
SCORED_IMAGES = "same_as_" + "test"  # spelled in two parts: configs/ must not contain the word (before-stop hook)


def _datamodule_entries(path: Path) -> list[object]:
    """The datamodule configurations a YAML file names, as the command that reads it sees them."""
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict):
        return []
    if "benchmark" in config:  # anomalib-clipad benchmark: grid expanded, the pipeline's split default applied
        from anomalib_clipad.benchmarks.pipeline import held_out_calibration

        data = config["benchmark"].get("data")
        entries = data["grid"] if isinstance(data, dict) and "grid" in data else [data]
        return [held_out_calibration(entry).config for entry in entries]
    if "data" in config:  # a model config: `anomalib train|test --config ...`
        return [config["data"]]
    if "class_path" in config and "model" not in config:  # a bare datamodule config: `--data file.yaml`
        return [config]
    return []


ALL_CONFIGS = sorted(CONFIGS.rglob("*.yaml"))


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=[str(path.relative_to(CONFIGS)) for path in ALL_CONFIGS])
def test_no_config_calibrates_on_the_scored_images(path: Path) -> None:
    from anomalib.data import AnomalibDataModule
    from anomalib.data.utils import ValSplitMode

    from anomalib_clipad.benchmarks.pipeline import instantiate

    assert SCORED_IMAGES not in path.read_text().lower()
    for entry in _datamodule_entries(path):
        datamodule = instantiate(entry, AnomalibDataModule, "data")  # jsonargparse, like the CLI
        assert datamodule.val_split_mode != ValSplitMode.SAME_AS_TEST, (path.name, entry)


@pytest.mark.parametrize("name", ["winclip_plus", "promptad", "devprompt"])
def test_model_config_has_a_held_out_calibration_split(name: str) -> None:
    from anomalib.data import AnomalibDataModule, MVTecAD
    from anomalib.data.utils import ValSplitMode

    from anomalib_clipad.benchmarks.pipeline import instantiate

    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()).get("data")
    assert data is not None, (
        f"{name}.yaml has no data section: MVTecAD from the command line calibrates on its test set"
    )
    datamodule = instantiate(data, AnomalibDataModule, "data")
    assert isinstance(datamodule, MVTecAD)
    assert datamodule.val_split_mode == ValSplitMode.FROM_TEST
    assert datamodule.val_split_ratio == 0.5


def test_command_line_data_options_keep_the_held_out_split(tmp_path: Path) -> None:
    """What the configs' header comments say: `--data MVTecAD --data.category X` keeps the other init_args."""
    command = [console_script("anomalib"), "train", "--config", str(CONFIGS / "promptad.yaml")]
    command += ["--data", "MVTecAD", "--data.category", "carpet", "--print_config"]
    data = yaml.safe_load(run_process(command, cwd=tmp_path).stdout)["data"]
    assert data["class_path"] == "anomalib.data.MVTecAD"
    assert data["init_args"]["category"] == "carpet"
    assert data["init_args"]["val_split_mode"] == "from_test"
    assert data["init_args"]["val_split_ratio"] == 0.5
