# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""SimCLIP / SimCLIP+ as an anomalib model: train on auxiliary data, test on another category, reload, prompts file.

One ``Engine.fit`` (2 epochs) on the labelled test split of synthetic category ``widget``
(:class:`~anomalib_clipad.data.auxiliary.AuxiliaryData`), then ``Engine.test`` on the MVTec-layout category ``cloth``
with a held-out calibration split. The tiny 24-layer backbone is randomly initialised once and saved to a file
(conftest's ``tiny_clip24_weights``), so that models built later (from the learned-weights file, without checkpoint)
see the same frozen CLIP. Scores are meaningless; the point is the protocol: what trains, what is encoded, which class
the prompts are for, where SimCLIP+'s reference images come from, and that every way of reloading reproduces the
outputs.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from anomalib_clipad.clip import TINY_BACKBONE_24
from anomalib_clipad.data.shots import collect_shots
from anomalib_clipad.models.common import clip_transform
from anomalib_clipad.models.learned_state import read_learned_state
from anomalib_clipad.models.simclip import SimCLIP

SIZE = 112  # 8 x 8 patch grid
TRAIN, TARGET, OTHER = "widget", "cloth", "gadget"
OPTIONS = {"backbone": TINY_BACKBONE_24, "image_size": SIZE, "logit_scale": 20.0}  # 20: random-init scores off 0/1


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def dataset(synthetic_dataset: Callable[..., Path]) -> Path:
    """widget (objects: the auxiliary training data), cloth (texture: the target), gadget (objects), 48 px."""
    categories = {TRAIN: {}, TARGET: {"kind": "texture"}, OTHER: {}}
    return synthetic_dataset(categories, n_train=3, n_test_good=4, n_test_defect=1, image_size=48)


def target(dataset: Path, category: str = TARGET):
    from anomalib.data import MVTecAD

    return MVTecAD(
        root=dataset, category=category, val_split_mode="from_test", seed=0, num_workers=0, eval_batch_size=16
    )


def new_engine(root: Path):
    from anomalib.engine import Engine

    return Engine(default_root_dir=root, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)


@pytest.fixture(scope="module")
def trained(dataset: Path, tiny_clip24_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Fit on widget (2 epochs), test on cloth; what happened on the way."""
    from anomalib_clipad.data import AuxiliaryData

    root = tmp_path_factory.mktemp("run")
    model = SimCLIP(pretrained=str(tiny_clip24_weights), epochs=2, seed=0, **OPTIONS)
    encoded: list[int] = []
    original = model.model.encode_images

    def counting(images: torch.Tensor) -> dict:
        encoded.append(images.shape[0])
        return original(images)

    model.model.encode_images = counting
    before = {name: parameter.detach().clone() for name, parameter in model.model.named_parameters()}
    records, package_logger = _Records(), logging.getLogger("anomalib_clipad")
    level = package_logger.level
    package_logger.addHandler(records)
    package_logger.setLevel(logging.INFO)
    try:
        engine = new_engine(root)
        engine.fit(model, datamodule=AuxiliaryData(root=dataset, categories=[TRAIN], num_workers=0, train_batch_size=3))
        encoded_in_fit = sum(encoded)
        optimised = [parameter for group in engine.trainer.optimizers[0].param_groups for parameter in group["params"]]
        results = engine.test(model, datamodule=target(dataset))
    finally:
        package_logger.removeHandler(records)
        package_logger.setLevel(level)
    del model.model.encode_images
    checkpoint = root / "simclip.ckpt"
    engine.trainer.save_checkpoint(checkpoint)
    prompts = sorted(root.rglob("weights/learned_state.pt"))
    return {
        "model": model.eval(),
        "engine": engine,
        "results": results,
        "encoded": encoded_in_fit,
        "before": before,
        "optimised": optimised,
        "log": records.messages,
        "checkpoint": checkpoint,
        "prompts": prompts,
        "n_train": len(list((dataset / TRAIN / "test").rglob("*.png"))),
    }


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def outputs(model: SimCLIP, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        result = model.model.eval()(images)
    return result.pred_score, result.anomaly_map


# --------------------------------------------------------------------------------------------------- protocol
def test_trains_on_auxiliary_data_and_tests_another_category(trained: dict) -> None:
    model, results = trained["model"], trained["results"]
    assert len(results) == 1
    assert {"image_AUROC", "pixel_AUROC"} <= set(results[0])
    assert model.training_classes == {TRAIN}
    assert trained["engine"].trainer.current_epoch == 2
    # prompts of the target's class, built with the learned IPT (logged); thresholds from the held-out split
    assert model.model.class_name == TARGET
    assert any(f"set up for class {TARGET!r}" in message for message in trained["log"])
    assert any("thresholds calibrated on" in message for message in trained["log"])
    assert model.post_processor.enable_normalization is False
    # the learned weights alone, next to the run's checkpoint
    assert len(trained["prompts"]) >= 1
    assert trained["prompts"][0].stat().st_size < 200_000


def test_reported_auroc_is_raw_and_thresholds_come_from_the_held_out_split(trained: dict, dataset: Path) -> None:
    from raw_scores import (
        assert_reported_auroc_is_that_of_the_raw_scores,
        assert_thresholds_come_from_the_held_out_split,
    )

    datamodule = target(dataset)
    datamodule.setup()  # the same seeded split as the test run
    assert_reported_auroc_is_that_of_the_raw_scores(trained["model"], datamodule, trained["results"][0])
    assert_thresholds_come_from_the_held_out_split(trained["model"], datamodule)


def test_frozen_image_tower_encodes_each_training_image_once(trained: dict) -> None:
    assert trained["encoded"] == trained["n_train"]  # 2 epochs, each image once
    assert trained["model"].recipe.cache.computed_images == trained["n_train"]


def test_only_the_trainable_parameters_change(trained: dict) -> None:
    model = trained["model"].model
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == set(model.learned_state_dict())  # adapters, IPT, the two projection heads
    assert {id(parameter) for parameter in trained["optimised"]} == {
        id(parameter) for parameter in model.parameters() if parameter.requires_grad
    }
    changed = {
        name for name, parameter in model.named_parameters() if not torch.equal(parameter, trained["before"][name])
    }
    assert changed == trainable


def test_checkpoint_reload_reproduces_the_outputs(trained: dict, dataset: Path, images: torch.Tensor) -> None:
    checkpoint = torch.load(trained["checkpoint"], map_location="cpu", weights_only=False)
    assert checkpoint["prompt_class_name"] == TARGET
    assert checkpoint["clipad_training_classes"] == [TRAIN]
    reloaded = SimCLIP.load_from_checkpoint(trained["checkpoint"])
    assert reloaded.hparams.pretrained == "checkpoint"
    assert reloaded.model.class_name == TARGET
    for expected, actual in zip(outputs(trained["model"], images), outputs(reloaded, images), strict=True):
        torch.testing.assert_close(actual, expected)
    # the CLI's way: architecture only, weights from --ckpt_path; the same numbers on the same target
    fresh = SimCLIP(pretrained="checkpoint", **OPTIONS)
    results = new_engine(trained["checkpoint"].parent / "ckpt").test(
        fresh, datamodule=target(dataset), ckpt_path=trained["checkpoint"]
    )
    assert results[0] == pytest.approx(trained["results"][0])


def test_another_category_rebuilds_the_prompts(trained: dict, dataset: Path, caplog: pytest.LogCaptureFixture) -> None:
    reloaded = SimCLIP.load_from_checkpoint(trained["checkpoint"])
    with caplog.at_level(logging.INFO, logger="anomalib_clipad"):
        new_engine(trained["checkpoint"].parent / "other").test(reloaded, datamodule=target(dataset, OTHER))
    assert f"re-building for class {OTHER!r} (it was set up for {TARGET!r}; learned on: {TRAIN})" in caplog.text
    assert reloaded.model.class_name == OTHER
    expected = reloaded.model.prompt_features(OTHER)
    torch.testing.assert_close(reloaded.model.text_prototypes["layer"].features, expected["layer"])


def test_prompts_file_reproduces_the_outputs_without_checkpoint(
    trained: dict, dataset: Path, tiny_clip24_weights: Path, images: torch.Tensor
) -> None:
    content = torch.load(trained["prompts"][0], weights_only=True)
    assert content["format"] == "anomalib_clipad.learned_state"
    assert content["model"] == "SimCLIP"
    assert content["class_name"] is None  # class-agnostic: no memory, prompts of any target
    assert set(content["state"]) == set(trained["model"].model.learned_state_dict())
    assert content["provenance"]["training_classes"] == [TRAIN]
    model = SimCLIP(pretrained=str(tiny_clip24_weights), learned_state=str(trained["prompts"][0]), **OPTIONS)
    assert model.model.class_name is None  # no class yet: the target gives it
    assert model.training_classes == {TRAIN}
    results = new_engine(trained["checkpoint"].parent / "prompts").test(model, datamodule=target(dataset))
    assert results[0] == pytest.approx(trained["results"][0])
    for expected, actual in zip(outputs(trained["model"], images), outputs(model, images), strict=True):
        torch.testing.assert_close(actual, expected)


def test_reference_weight_files_are_read(trained: dict, tiny_clip24_weights: Path, tmp_path: Path, images) -> None:
    learned = trained["model"].model.learned_state_dict()
    clip = {
        "x_learner_proj.linear.weight": learned["ipt.token_weighting.weight"],
        "x_learner_proj.linear.bias": learned["ipt.token_weighting.bias"],
        "layer_learner_1": learned["ipt.prompt_seed"].reshape(1, 1, -1),
        "layer_learner_1_upProj.0.weight": learned["ipt.prompt_mlp.0.weight"],
        "layer_learner_1_upProj.0.bias": learned["ipt.prompt_mlp.0.bias"],
        "layer_learner_1_upProj.2.weight": learned["ipt.prompt_mlp.2.weight"],
        "layer_learner_1_upProj.2.bias": learned["ipt.prompt_mlp.2.bias"],
        "layer_learner_1_proj.linear.weight": learned["ipt.fusion.weight"],
        "layer_learner_1_proj.linear.bias": learned["ipt.fusion.bias"],
        "visual.proj": learned["vision.proj"],
        "text_projection": learned["text.text_projection"],
    }
    adapters = {
        f"fc.{index}.{kind}": learned[f"adapters.{layer}.{kind}"]
        for index, layer in enumerate((6, 12, 18, 24))
        for kind in ("weight", "bias")
    }
    torch.save({"clip": clip}, tmp_path / "clip.pth")
    torch.save({"trainable_linearlayer": adapters}, tmp_path / "adapters.pth")
    files = [str(tmp_path / "adapters.pth"), str(tmp_path / "clip.pth")]  # any order
    model = SimCLIP(pretrained=str(tiny_clip24_weights), learned_state=files, **OPTIONS)
    model.model.set_class(TARGET)
    for expected, actual in zip(outputs(trained["model"], images), outputs(model, images), strict=True):
        torch.testing.assert_close(actual, expected)
    with pytest.raises(ValueError, match="two files"):
        read_learned_state(tmp_path / "clip.pth", model.model, "SimCLIP")


def test_simclip_plus_draws_its_shot_from_the_target_train_split(
    trained: dict, dataset: Path, tiny_clip24_weights: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = SimCLIP(
        pretrained=str(tiny_clip24_weights), learned_state=str(trained["prompts"][0]), k_shot=1, seed=3, **OPTIONS
    )
    assert model.model.name == "SimCLIP+"
    engine = new_engine(trained["checkpoint"].parent / "plus")
    with caplog.at_level(logging.INFO, logger="anomalib_clipad"):
        results = engine.test(model, datamodule=target(dataset))
    assert 0.0 <= results[0]["image_AUROC"] <= 1.0
    assert len(model.reference_paths) == 1
    assert Path(model.reference_paths[0]).parent == dataset / TARGET / "train" / "good"
    datamodule = target(dataset)
    datamodule.setup()
    again = collect_shots(datamodule.train_data, 1, 3, clip_transform(SIZE))
    assert again.paths == model.reference_paths  # seeded
    assert model.model.references_ready
    assert model.model.class_name == TARGET
    assert "reference memory of class 'cloth' from 1 normal image(s)" in caplog.text
    path = trained["checkpoint"].parent / "plus.ckpt"
    engine.trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=False)["clipad_reference_paths"] == model.reference_paths
    # without a train split, the memory of the class restored from the checkpoint is used; of another class: error
    reloaded = SimCLIP.load_from_checkpoint(path)
    reloaded.prepare_for_scoring(SimpleNamespace(datamodule=None), "predict")
    assert reloaded.model.references_ready
    reloaded.hparams.class_name = OTHER
    with pytest.raises(ValueError, match="train split"):
        reloaded.prepare_for_scoring(SimpleNamespace(datamodule=None), "predict")


# ------------------------------------------------------------------------------------------------- bad input
def test_bad_settings_and_files_give_clear_errors(trained: dict, tiny_clip24_weights: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="k_shot"):
        SimCLIP(k_shot=-1, pretrained=None, **OPTIONS)
    with pytest.raises(ValueError, match="image_score_map"):
        SimCLIP(image_score_map="best", pretrained=None, **OPTIONS)
    with pytest.raises(ValueError, match="epochs"):
        SimCLIP(epochs=0, pretrained=None, **OPTIONS)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SimCLIP(learned_state=str(tmp_path / "missing.pt"), pretrained=None, **OPTIONS).configure_model()

    model = trained["model"].model
    prompts = trained["prompts"][0]
    good = torch.load(prompts, weights_only=True)
    former = {  # the former SimCLIP weights file
        "format": "anomalib_clipad.simclip.weights",
        "version": 1,
        "weights": good["state"],
        "backbone": TINY_BACKBONE_24,
        "feature_layers": [6, 12, 18, 24],
        "image_size": SIZE,
    }
    cases = {
        "shape": {**good, "state": {**good["state"], "ipt.prompt_seed": torch.zeros(1, 9)}},
        "missing": {**good, "state": {k: v for k, v in good["state"].items() if k != "ipt.fusion.bias"}},
        "feature_layers": {**good, "architecture": {**good["architecture"], "feature_layers": [6, 12]}},
        "version 99": {**good, "version": 99},
        "former-shape": {**former, "weights": {**former["weights"], "ipt.prompt_seed": torch.zeros(1, 9)}},
        "former-feature_layers": {**former, "feature_layers": [6, 12]},
        "former-version 99": {**former, "version": 99},
        "AnomalyCLIP": {"format": "anomalib_clipad.anomalyclip.prompts", "version": 1, "prompts": {}},
        "neither": {"state_dict": {"w": torch.zeros(1)}},
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(content, path)
        with pytest.raises(ValueError, match=name.removeprefix("former-")):
            read_learned_state(path, model, "SimCLIP").apply_to(model)
    torch.save(former, tmp_path / "former.pt")
    assert read_learned_state(tmp_path / "former.pt", model, "SimCLIP").state.keys() == good["state"].keys()
    unsafe = tmp_path / "unsafe.pt"
    unsafe.write_bytes(pickle.dumps(SimpleNamespace(a=1)))
    with pytest.raises(ValueError, match="safely"):
        read_learned_state(unsafe, model, "SimCLIP")
    with pytest.raises(ValueError, match="feature_layers"):  # a model of other layers refuses the file
        SimCLIP(
            pretrained=str(tiny_clip24_weights), learned_state=str(prompts), feature_layers=(6, 12), **OPTIONS
        ).configure_model()

    # another architecture in a checkpoint; no class name for the prompts; training data without masks
    fresh = SimCLIP(pretrained=None, **OPTIONS)
    with pytest.raises(ValueError, match="backbone"):
        fresh.on_load_checkpoint({"hyper_parameters": {"backbone": "ViT-L-14-336"}})
    gelu = SimCLIP(pretrained="checkpoint", quick_gelu=False, **OPTIONS)
    with pytest.raises(ValueError, match="quick_gelu"):  # the activation is not in a state dict: refused, not guessed
        gelu.on_load_checkpoint({"hyper_parameters": {"quick_gelu": True}})
    with pytest.raises(ValueError, match="class name"):
        fresh.prepare_for_scoring(SimpleNamespace(datamodule=SimpleNamespace(category=None)), "predict")
    with pytest.raises(ValueError, match="labels or masks"):
        fresh.training_step(SimpleNamespace(gt_mask=None, gt_label=torch.zeros(1), image=torch.zeros(1, 3, SIZE, SIZE)))
    fresh._trainer = None
    batch = SimpleNamespace(image=torch.zeros(2, 3, SIZE, SIZE), category=None)
    with pytest.raises(ValueError, match="no class name"):
        fresh._class_names(batch)
    assert SimCLIP(pretrained=None, class_name="bottle", **OPTIONS)._class_names(batch) == ["bottle", "bottle"]
    assert fresh._class_names(SimpleNamespace(image=batch.image, category=["a", "b"])) == ["a", "b"]
    assert fresh.learning_type.value == "one_class"
