# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""configs/<model>.yaml name real arguments of their class and state its defaults (the papers' settings)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# where a config deliberately differs from the class default (none today)
INTENDED_DIFFERENCES: dict[str, set[str]] = {}


def _normalise(value: object) -> object:
    return list(value) if isinstance(value, list | tuple) else value


@pytest.mark.parametrize("name", ["winclip_plus", "promptad", "devprompt"])
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
