# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""AnomalyCLIP through anomalib's ``Engine`` in-process: the auxiliary-data protocol and its guarantees.

One fit (tiny random 24-layer backbone at 112 px, 2 epochs) on the labelled test split of category ``alpha``
(:class:`~anomalib_clipad.data.auxiliary.AuxiliaryData`), then tests on category ``beta``. Checked:

* the reported image and pixel AUROC are those of the raw scores of the target's test images (no normalisation with
  the training data's statistics);
* thresholds come from the target's held-out validation split (``from_test``), or are the probability 0.5 with a
  warning when the target validates on its test split;
* the leakage guard refuses a target whose test images were training images;
* the frozen image tower runs once per training image over the two epochs; only the prompts learn;
* clear errors for an auxiliary set without anomalies and for prompts files of another shape or format;
* a feature cache without memory (``cache_max_bytes=0``) spills to disk and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from raw_scores import (
    assert_reported_auroc_is_that_of_the_raw_scores,
    assert_thresholds_come_from_the_held_out_split,
    raw_outputs,
)
from torchmetrics.functional.classification import binary_auroc

from anomalib_clipad import AnomalyCLIP
from anomalib_clipad.data import AuxiliaryData, DataLeakageError
from anomalib_clipad.models.learned_state import LearnedState, learned_shapes, read_learned_state
from anomalib_clipad.registry import get_spec

TRAIN_CATEGORY, TARGET_CATEGORY = "alpha", "beta"  # the categories of conftest's two_categories
IMAGE_SIZE = 112
CALIBRATION_LOGGER = "anomalib_clipad.training.calibration"
CACHE_LOGGER = "anomalib_clipad.training.feature_cache"


# ------------------------------------------------------------------------------------------------------ helpers
class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def captured_logs(name: str) -> Iterator[list[str]]:
    """Messages of logger ``name`` (INFO and above) while the block runs (usable in module-scoped fixtures)."""
    logger, handler = logging.getLogger(name), _Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def tiny_model(**kwargs: Any) -> AnomalyCLIP:
    """AnomalyCLIP with the registry's tiny settings at 112 px, 2 epochs (the CLIP is drawn from torch's seed 0)."""
    torch.manual_seed(0)
    return get_spec("AnomalyCLIP").build_tiny(image_size=IMAGE_SIZE, epochs=2, **kwargs)


def engine(root: Path) -> Engine:
    return Engine(default_root_dir=root, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)


def auxiliary(root: Path, **kwargs: Any) -> AuxiliaryData:
    kwargs.setdefault("categories", [TRAIN_CATEGORY])
    return AuxiliaryData(dataset="MVTecAD", root=root, num_workers=0, seed=0, **kwargs)


def target(root: Path, category: str = TARGET_CATEGORY, **kwargs: Any) -> MVTecAD:
    return MVTecAD(root=root, category=category, num_workers=0, eval_batch_size=32, seed=0, **kwargs)


# ----------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def trained(two_categories: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The one fit on alpha, with the encoder's calls counted and the torch model's state before and after."""
    model = tiny_model()
    torch_model = model.model  # built now, so that its encoder can be wrapped and its state recorded
    before = {name: value.clone() for name, value in torch_model.state_dict().items()}
    encoded: list[int] = []
    encode = torch_model.encode_images

    def counting_encode(images: torch.Tensor) -> dict[str, torch.Tensor]:
        encoded.append(images.shape[0])
        return encode(images)

    torch_model.encode_images = counting_encode
    datamodule = auxiliary(two_categories)
    root = tmp_path_factory.mktemp("fit")
    fit_engine = engine(root)
    try:
        fit_engine.fit(model, datamodule=datamodule)
    finally:
        del torch_model.encode_images
    return {
        "model": model,
        "engine": fit_engine,
        "datamodule": datamodule,
        "before": before,
        "encoded": encoded,
        "root": root,
    }


@pytest.fixture(scope="module")
def tested(trained: dict[str, Any], two_categories: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``Engine.test`` on beta with a held-out calibration half (``from_test``)."""
    model, datamodule = trained["model"], target(two_categories, val_split_mode="from_test")
    with captured_logs(CALIBRATION_LOGGER) as messages:
        results = engine(tmp_path_factory.mktemp("test")).test(model, datamodule=datamodule)
    return {"results": results[0], "datamodule": datamodule, "messages": messages}


# -------------------------------------------------------------------------------------------------------- tests
def test_reported_auroc_is_that_of_the_raw_scores(trained: dict[str, Any], tested: dict[str, Any]) -> None:
    assert_reported_auroc_is_that_of_the_raw_scores(trained["model"], tested["datamodule"], tested["results"])


def test_thresholds_come_from_the_targets_held_out_split(trained: dict[str, Any], tested: dict[str, Any]) -> None:
    model, datamodule = trained["model"], tested["datamodule"]
    assert_thresholds_come_from_the_held_out_split(model, datamodule)
    validation_paths = set(map(str, datamodule.val_data.samples["image_path"]))
    assert any(
        f"thresholds calibrated on {len(validation_paths)} held-out validation images of the target" in message
        for message in tested["messages"]
    ), tested["messages"]


def test_same_as_test_uses_the_probability_threshold_with_a_warning(
    trained: dict[str, Any],
    tested: dict[str, Any],
    two_categories: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    del tested  # runs after the calibrated test: the fixed threshold replaces the calibrated one
    model = trained["model"]
    datamodule = target(two_categories, val_split_mode="same_as_test")
    with caplog.at_level(logging.WARNING, logger=CALIBRATION_LOGGER):
        results = engine(tmp_path).test(model, datamodule=datamodule)
    assert float(model.post_processor.image_threshold) == 0.5
    assert float(model.post_processor.pixel_threshold) == 0.5
    warnings = [r.getMessage() for r in caplog.records if r.name == CALIBRATION_LOGGER and r.levelno >= logging.WARNING]
    assert any("thresholds are not calibrated" in message for message in warnings), caplog.text
    assert any("--data.val_split_mode from_test" in message for message in warnings), caplog.text
    raw = raw_outputs(model, datamodule.test_dataloader())  # AUROC is still that of the raw scores
    assert results[0]["image_AUROC"] == pytest.approx(float(binary_auroc(raw["pred_score"], raw["gt_label"].int())))


def test_leakage_guard_refuses_testing_on_training_images(
    trained: dict[str, Any], two_categories: Path, tmp_path: Path
) -> None:
    leaking = target(two_categories, category=TRAIN_CATEGORY, val_split_mode="from_test")
    with pytest.raises(DataLeakageError, match="Data leakage") as error:
        engine(tmp_path).test(trained["model"], datamodule=leaking)
    assert f"{TRAIN_CATEGORY}/test/" in str(error.value)


def test_leakage_guard_holds_for_a_model_scoring_from_the_prompts_file_alone(
    trained: dict[str, Any], two_categories: Path, tmp_path: Path
) -> None:
    """The learned-state file records the training images: no checkpoint is needed for the guard to hold."""
    prompts_file = sorted(trained["root"].rglob("weights/learned_state.pt"))[0]
    from_file = tiny_model(learned_state=str(prompts_file))
    leaking = target(two_categories, category=TRAIN_CATEGORY, val_split_mode="from_test")
    with pytest.raises(DataLeakageError, match="Data leakage"):
        engine(tmp_path).test(from_file, datamodule=leaking)


def test_frozen_encoder_runs_once_per_training_image(trained: dict[str, Any]) -> None:
    model, n_images = trained["model"], len(trained["datamodule"].train_data)
    assert trained["engine"].trainer.current_epoch == 2  # both epochs ran
    assert sum(trained["encoded"]) == n_images  # the wrapped encoder, over the whole fit
    stats = model.recipe.cache.stats
    assert stats["computed_images"] == n_images
    assert stats["misses"] == n_images  # first epoch
    assert stats["hits"] == n_images  # second epoch: every image from the cache
    assert stats["compute_calls"] == len(trained["encoded"])


def test_only_prompts_change_and_clip_weights_stay_bit_identical(trained: dict[str, Any]) -> None:
    torch_model, before = trained["model"].model, trained["before"]
    after = torch_model.state_dict()
    assert set(after) == set(before)
    prompts = set(torch_model.learned_state_dict())
    assert len(prompts) == 2 + 8  # two contexts, deep prompts of text layers 2-9
    trainable = {name for name, parameter in torch_model.named_parameters() if parameter.requires_grad}
    assert trainable == prompts
    changed = {name for name in after if not torch.equal(after[name], before[name])}
    # the prompts learnt; the stored text features are recomputed from them; nothing else moved
    assert prompts <= changed
    assert changed - prompts <= {name for name in after if name.startswith("text_prototypes.")}
    clip = {name for name in after if name.startswith(("vision.", "text."))}
    assert clip
    assert not clip & changed
    assert torch_model.is_ready
    text = torch_model.text_features().detach()
    torch.testing.assert_close(torch_model.text_prototypes.features, text, rtol=0, atol=1e-6)


def test_training_writes_the_learned_state_file(trained: dict[str, Any]) -> None:
    files = sorted(trained["root"].rglob("weights/learned_state.pt"))
    assert len(files) == 1, files
    torch_model = trained["model"].model
    saved = read_learned_state(files[0], torch_model, "AnomalyCLIP")
    assert saved.class_name is None  # object-agnostic prompts: any target
    assert saved.provenance.training_paths == tuple(sorted(trained["model"].training_paths))
    for name, value in torch_model.learned_state_dict().items():
        torch.testing.assert_close(saved.state[name], value, rtol=0, atol=0)


def test_auxiliary_set_without_anomalies_is_a_clear_error(two_categories: Path, tmp_path: Path) -> None:
    normal_only = auxiliary(two_categories, split="train")  # train splits hold normal images only
    with pytest.raises(ValueError, match="holds no anomalous image"):
        engine(tmp_path).fit(tiny_model(), datamodule=normal_only)


def _prompts_of_another_shape(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """A former prompts file (it records no settings: the shapes are checked) with n_ctx 8 instead of 12."""
    prompts = {name: torch.zeros(shape) for name, shape in shapes.items()}
    prompts["normal_context"] = torch.zeros(8, shapes["normal_context"][1])
    torch.save({"format": "anomalib_clipad.anomalyclip.prompts", "version": 1, "prompts": prompts}, path)


def _state_of_another_setting(path: Path, model: Any) -> None:
    state = LearnedState.from_model(model, "AnomalyCLIP", class_name=None)
    state.architecture["n_ctx"] = 8
    state.save(path)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda path, model: _prompts_of_another_shape(path, learned_shapes(model)), r"'normal_context' has shape"),
        (_state_of_another_setting, r"n_ctx=8, but the model was built with n_ctx=12.*--model\.n_ctx 8"),
        (
            lambda path, model: torch.save({"state_dict": {"weight": torch.zeros(3)}}, path),
            "neither an anomalib-clipad learned state",
        ),
        (
            lambda path, model: torch.save(
                {"prompt_learner": {"ctx_pos": torch.zeros(1, 1, *learned_shapes(model)["normal_context"])}}, path
            ),
            "missing key 'ctx_neg'",
        ),
        (lambda path, model: path.write_text("not a torch file"), "can be read safely"),
    ],
    ids=["other-shape", "other-setting", "other-format", "reference-incomplete", "not-torch"],
)
def test_prompts_file_of_another_shape_or_format_is_a_clear_error(
    trained: dict[str, Any],
    two_categories: Path,
    tmp_path: Path,
    write: Callable[[Path, Any], Any],
    message: str,
) -> None:
    path = tmp_path / "prompts.pt"
    write(path, trained["model"].model)
    model = tiny_model(learned_state=str(path))
    with pytest.raises(ValueError, match=message):  # raised where the model is built: anomalib test's setup
        engine(tmp_path / "run").test(model, datamodule=target(two_categories, val_split_mode="from_test"))


def test_missing_learned_state_file_is_refused_where_the_model_is_built(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tiny_model(learned_state=str(tmp_path / "missing.pt")).configure_model()


def test_cache_without_memory_spills_to_disk_and_says_so(
    two_categories: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = tiny_model(cache_max_bytes=0, cache_dir=str(tmp_path / "cache"))
    datamodule = auxiliary(two_categories)
    with caplog.at_level(logging.WARNING, logger=CACHE_LOGGER):
        engine(tmp_path / "run").fit(model, datamodule=datamodule)
    n_images = len(datamodule.train_data)
    stats = model.recipe.cache.stats
    assert stats["computed_images"] == n_images  # still encoded once per image ...
    assert stats["disk_hits"] == n_images  # ... the second epoch read every entry back from disk
    assert any(
        "memory limit of 0 B is reached" in r.getMessage() and "written to" in r.getMessage()
        for r in caplog.records
        if r.name == CACHE_LOGGER
    ), caplog.text
    assert not any((tmp_path / "cache").iterdir())  # the spill folder is removed when training ends
