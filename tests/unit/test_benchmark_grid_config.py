# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The benchmark grid takes its list of our models from the registry, and a model entry may set Engine arguments.

``{anomalib_clipad_models: tiny}`` in ``benchmark.model.grid`` stands for one entry per row of
``anomalib_clipad.registry.MODELS`` (two for a model that learns nothing and has reference shots: zero- and few-shot),
with the ``auxiliary_train_data`` beside it as the ``train_data`` of the auxiliary-data models. The CI grid uses it,
so a new registry row enters the grid with no change to the YAML. No job runs here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from anomalib_clipad import registry
from anomalib_clipad.benchmarks.jobs import ClipadBenchmarkJobGenerator
from anomalib_clipad.benchmarks.pipeline import (
    AUXILIARY_TRAIN_DATA_KEY,
    REGISTRY_MODELS_KEY,
    TRAIN_DATA_KEY,
    TRAINER_KEY,
    expand_model_grid,
    instantiate,
    registry_model_entries,
    split_model_entry,
)
from anomalib_clipad.registry import MODELS, Protocol

CI_GRID = Path(__file__).resolve().parents[2] / "configs" / "benchmark" / "ci_tiny_grid.yaml"
AUXILIARY = {"class_path": "anomalib_clipad.data.AuxiliaryData", "init_args": {"dataset": "MVTecAD", "root": "aux"}}
ENTRY = {REGISTRY_MODELS_KEY: "tiny", AUXILIARY_TRAIN_DATA_KEY: AUXILIARY}


def _name(entry: dict) -> str:
    return entry["class_path"].rsplit(".", 1)[-1]


def test_one_entry_per_registry_model() -> None:
    entries = registry_model_entries(ENTRY)
    names = [_name(entry) for entry in entries]
    assert list(dict.fromkeys(names)) == [spec.name for spec in MODELS]  # every model, in the registry's order
    for spec in MODELS:
        mine = [entry for entry in entries if _name(entry) == spec.name]
        expected = [{**spec.tiny, **spec.few_shot}]
        if spec.protocol is Protocol.SET_UP and spec.few_shot:
            expected.insert(0, spec.tiny)  # zero-shot first (WinCLIPPlus 0- and 1-shot)
        assert [entry["init_args"] for entry in mine] == expected, spec.name
        for entry in mine:
            assert (entry.get(TRAIN_DATA_KEY) == AUXILIARY) == (spec.protocol is Protocol.AUXILIARY_DATA)
    assert names.count("WinCLIPPlus") == 2


def test_a_registry_entry_builds_each_model() -> None:
    """The entries resolve like a hand-written ``class_path`` (jsonargparse), to the registry's classes."""
    from anomalib.models import AnomalibModule

    for entry in registry_model_entries(ENTRY)[:2]:  # one build is enough to show the resolution; the rest is data
        model = split_model_entry(entry).model
        assert type(instantiate(model, AnomalibModule, "model")) is registry.get_spec(_name(entry)).lightning_class
    for entry in registry_model_entries(ENTRY):
        assert entry["class_path"] == f"anomalib_clipad.{_name(entry)}"


def test_a_new_registry_row_enters_the_ci_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    benchmark = yaml.safe_load(CI_GRID.read_text())["benchmark"]
    assert {REGISTRY_MODELS_KEY: "tiny"}.items() <= next(
        entry for entry in benchmark["model"]["grid"] if REGISTRY_MODELS_KEY in entry
    ).items()
    names = [_name(entry) for entry in expand_model_grid(benchmark)["model"]["grid"]]
    assert set(registry.MODEL_NAMES) <= set(names)
    assert {"Patchcore", "Padim", "Fastflow", "ReverseDistillation"} <= set(names)  # anomalib's, beside ours

    new_row = dataclasses.replace(MODELS[1], name="PromptADTwin", tiny={"k_shot": 2})
    monkeypatch.setattr(registry, "MODELS", (*MODELS, new_row))
    grown = [_name(entry) for entry in expand_model_grid(benchmark)["model"]["grid"]]
    assert grown == [*names, "PromptADTwin"]


def test_registry_entry_errors() -> None:
    with pytest.raises(ValueError, match="is not one of"):
        registry_model_entries({REGISTRY_MODELS_KEY: "huge"})
    with pytest.raises(ValueError, match="only 'auxiliary_train_data'"):
        registry_model_entries({**ENTRY, "init_args": {}})
    with pytest.raises(ValueError, match="AnomalyCLIP learns on auxiliary data"):
        registry_model_entries({REGISTRY_MODELS_KEY: "tiny"})


def test_a_model_entry_sets_engine_arguments() -> None:
    fastflow = {"class_path": "Fastflow", "init_args": {"pre_trained": False}, TRAINER_KEY: {"max_epochs": 1}}
    args = {"seed": 0, "model": {"grid": [fastflow, "Padim"]}, "data": "MVTecAD"}
    first, second = ClipadBenchmarkJobGenerator("cpu").generate_jobs(args)
    assert first.config["model"] == {"class_path": "Fastflow", "init_args": {"pre_trained": False}}
    assert first.config[TRAINER_KEY] == {"max_epochs": 1}
    assert first.flat_cfg["model.trainer.max_epochs"] == 1  # a column of results.csv
    assert TRAINER_KEY not in second.config
    longer = ClipadBenchmarkJobGenerator("cpu").generate_jobs(
        {**args, "model": {**fastflow, TRAINER_KEY: {"max_epochs": 2}}}
    )
    assert next(iter(longer))._train_key() != first._train_key()  # another number of epochs is another fit
    with pytest.raises(ValueError, match="mapping of Engine arguments"):
        split_model_entry({"class_path": "Padim", TRAINER_KEY: 1})
