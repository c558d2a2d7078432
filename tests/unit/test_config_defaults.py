# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""configs/<model>.yaml run as given on a small machine: real datamodule arguments, few workers, a seeded split."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MODEL_CONFIGS = ["winclip_plus", "promptad", "devprompt", "simclip", "anomalyclip"]
MAX_WORKERS = 2  # a laptop or a small CI runner has two cores; DataLoader warns above its suggested maximum


def _data(name: str) -> dict:
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()).get("data")
    assert data is not None, f"{name}.yaml has no data section"
    return data


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_data_section_names_real_arguments_of_its_datamodule(name: str) -> None:
    data = _data(name)
    module_name, class_name = data["class_path"].rsplit(".", 1)
    parameters = inspect.signature(getattr(importlib.import_module(module_name), class_name).__init__).parameters
    unknown = set(data["init_args"]) - set(parameters)
    assert not unknown, f"{name}.yaml gives {class_name} arguments it does not take: {sorted(unknown)}"


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_data_section_starts_few_workers_and_is_seeded(name: str) -> None:
    init_args = _data(name)["init_args"]
    assert "num_workers" in init_args, f"{name}.yaml leaves num_workers at the datamodule's 8"
    assert 0 <= init_args["num_workers"] <= MAX_WORKERS, (name, init_args["num_workers"])
    assert isinstance(init_args.get("seed"), int), f"{name}.yaml has no data.seed (unseeded split or shuffle)"
