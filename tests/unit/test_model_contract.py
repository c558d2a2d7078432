# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The one contract every registered model keeps, checked the same way for each row of the registry.

Build tiny; set the class; set the reference shots where the model has them; forward shapes and value ranges; a
checkpoint round trip gives identical outputs; a learned-state round trip gives identical outputs; another class (where
the learned state belongs to one) and another backbone are refused; the torch model traces for export. A sixth method
is checked here as soon as it has its registry row.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning
import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.models import AnomalibModule

from anomalib_clipad.clip import TINY_BACKBONE, TINY_BACKBONE_24
from anomalib_clipad.models.checkpoint_policy import ClassMismatchError
from anomalib_clipad.models.interface import ClipAnomalyDetector
from anomalib_clipad.models.learned_state import LearnedState
from anomalib_clipad.registry import MODELS, ModelSpec

CLASS = "widget"
OTHER_CLASS = "gadget"
SPECS = [pytest.param(spec, id=spec.name) for spec in MODELS]


def _trainer(root: Path, datamodule: object) -> SimpleNamespace:
    """The few trainer attributes the scoring preparation reads (no Lightning loop needed)."""
    return SimpleNamespace(datamodule=datamodule, is_global_zero=True, default_root_dir=str(root))


@pytest.fixture(scope="module")
def target(synthetic_root: Path) -> MVTecAD:
    datamodule = MVTecAD(root=synthetic_root, category=CLASS, num_workers=0)
    datamodule.setup()
    return datamodule


def _build(spec: ModelSpec, **overrides: object) -> AnomalibModule:
    """A tiny model of ``spec`` (random CLIP weights: the same for every build, so that two builds compare)."""
    torch.manual_seed(0)
    model = spec.build_tiny(**spec.few_shot, **overrides)
    model.configure_model()
    model.eval()
    return model


def _images(model: AnomalibModule, count: int = 2) -> torch.Tensor:
    size = model.hparams.image_size
    return model.pre_processor.transform(torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(0)))


def _set_up(spec: ModelSpec, target: MVTecAD, root: Path, **overrides: object) -> AnomalibModule:
    """A tiny model of ``spec`` set up for the target's class, with its shots (k=1) where it has them."""
    model = _build(spec, **overrides)
    if model.model.uses_references and not model.draws_references:
        # the models whose memory holds their training shots: fill it from the first normal train image
        shots = target.train_data.samples.iloc[:1]
        images = torch.stack([model.pre_processor.transform(target.train_data[0].image)])
        model.set_class(CLASS)
        with torch.no_grad():
            model.use_shots_as_references(list(map(str, shots["image_path"])), model.model.encode_images(images))
    model.prepare_for_scoring(_trainer(root, target), "predict")
    return model


def _checkpoint(model: AnomalibModule, path: Path) -> Path:
    """What a trainer writes: the state dict, the hyper-parameters and the model's own records."""
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def _outputs(model: AnomalibModule, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        batch = model.model(images)
    return batch.pred_score, batch.anomaly_map


def _assert_same_outputs(first: AnomalibModule, second: AnomalibModule) -> None:
    images = _images(first)
    for expected, actual in zip(_outputs(first, images), _outputs(second, images), strict=True):
        # the same computation on the same inputs, after a save/load of float32 tensors: equal up to rounding
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_registry_covers_the_package() -> None:
    import anomalib_clipad
    import anomalib_clipad.models as models

    assert list(anomalib_clipad.__all__) == [spec.name for spec in MODELS]
    assert list(models.__all__) == [spec.name for spec in MODELS]
    tiny_backbones = {spec.tiny["backbone"] for spec in MODELS}
    assert tiny_backbones <= {TINY_BACKBONE, TINY_BACKBONE_24}  # the registry's names are the clip layer's


@pytest.mark.parametrize("spec", SPECS)
def test_direct_anomalib_subclass_with_the_shared_surface(spec: ModelSpec) -> None:
    from anomalib.models import get_model

    from anomalib_clipad.models.base import ClipModelMixin

    cls = spec.lightning_class
    assert AnomalibModule in cls.__bases__  # anomalib's get_model sees direct subclasses only
    assert issubclass(cls, ClipModelMixin)
    assert type(get_model(spec.name, **spec.tiny)) is cls
    shared = (
        "load_from_checkpoint",
        "configure_pre_processor",
        "configure_post_processor",
        "configure_evaluator",
        "validation_step",
        "configure_callbacks",
        "on_save_checkpoint",
        "on_load_checkpoint",
        "trainer_arguments",
        "learning_type",
    )
    restated = [name for name in shared if name in vars(cls)]
    assert not restated, f"{spec.name} re-states {restated}: the shared base provides them"


@pytest.mark.parametrize("spec", SPECS)
def test_forward_shapes_and_ranges(spec: ModelSpec, target: MVTecAD, tmp_path: Path) -> None:
    model = _set_up(spec, target, tmp_path)
    assert isinstance(model.model, ClipAnomalyDetector)
    assert model.model.is_ready
    assert model.model.class_name == CLASS
    images = _images(model, 3)
    score, anomaly_map = _outputs(model, images)
    size = model.hparams.image_size
    assert score.shape == (3,)
    assert anomaly_map.shape[0] == 3
    assert anomaly_map.shape[-2:] == (size, size)
    assert torch.isfinite(score).all()
    assert torch.isfinite(anomaly_map).all()
    if model.raw_scores:
        assert score.min() >= 0
        assert score.max() <= 1


@pytest.mark.parametrize("spec", SPECS)
def test_checkpoint_round_trip(spec: ModelSpec, target: MVTecAD, tmp_path: Path) -> None:
    model = _set_up(spec, target, tmp_path)
    reloaded = spec.lightning_class.load_from_checkpoint(_checkpoint(model, tmp_path / "model.ckpt"))
    reloaded.eval()
    assert reloaded.model.class_name == CLASS
    assert reloaded.reference_paths == model.reference_paths
    reloaded.prepare_for_scoring(_trainer(tmp_path, target), "predict")
    _assert_same_outputs(model, reloaded)


@pytest.mark.parametrize("spec", SPECS)
def test_learned_state_round_trip(spec: ModelSpec, target: MVTecAD, tmp_path: Path) -> None:
    model = _set_up(spec, target, tmp_path)
    path = model.write_learned_state(_trainer(tmp_path, target))
    assert path is not None
    assert path.is_file()
    clip_bytes = sum(tensor.numel() * tensor.element_size() for tensor in model.model.state_dict().values())
    print(f"{spec.name}: learned-state file {path.stat().st_size} bytes (tiny CLIP state dict: {clip_bytes} bytes)")
    assert path.stat().st_size < clip_bytes / 2
    restored = _build(spec, learned_state=str(path))
    assert restored.model.class_name == (CLASS if restored.needs_class_name else None)  # class-agnostic states
    assert restored.reference_paths == model.reference_paths
    # scoring needs no train split: the memory comes from the file
    restored.prepare_for_scoring(_trainer(tmp_path, SimpleNamespace(category=CLASS)), "predict")
    assert restored.model.class_name == CLASS
    _assert_same_outputs(model, restored)
    # a checkpoint of a model built from the file holds the state: it loads after the file has moved
    checkpoint = _checkpoint(restored, tmp_path / "from_file.ckpt")
    path.rename(tmp_path / "moved.pt")
    _assert_same_outputs(model, spec.lightning_class.load_from_checkpoint(checkpoint).eval())


@pytest.mark.parametrize("spec", SPECS)
def test_another_class(spec: ModelSpec, target: MVTecAD, tmp_path: Path) -> None:
    model = _set_up(spec, target, tmp_path)
    other = _trainer(tmp_path, SimpleNamespace(category=OTHER_CLASS, train_data=target.train_data))
    if model.learns_per_class:
        with pytest.raises(ClassMismatchError, match=f"{CLASS}.*{OTHER_CLASS}|{OTHER_CLASS}.*{CLASS}"):
            model.prepare_for_scoring(other, "predict")
    else:
        model.prepare_for_scoring(other, "predict")  # re-built for the other class, with a log line
        assert model.model.class_name == OTHER_CLASS
        assert model.model.is_ready


@pytest.mark.parametrize("spec", SPECS)
def test_another_backbone_or_activation_refused(spec: ModelSpec, target: MVTecAD, tmp_path: Path) -> None:
    model = _set_up(spec, target, tmp_path)
    state = model.learned_state()
    for field, value in (("backbone", "ViT-B-16"), ("quick_gelu", not state.quick_gelu)):
        changed = LearnedState(**{**vars(state), field: value})
        path = changed.save(tmp_path / f"{field}.pt")
        with pytest.raises(ValueError, match=str(value)) as error:
            _build(spec, learned_state=str(path))
        assert str(getattr(state, field)) in str(error.value)  # the message names both


@pytest.mark.parametrize("spec", SPECS)
def test_torch_model_traces_for_export(spec: ModelSpec, target: MVTecAD, tmp_path: Path) -> None:
    model = _set_up(spec, target, tmp_path)
    images = _images(model, 1)
    exported = torch.export.export(model.model, (images,), strict=False)
    expected = _outputs(model, images)
    with torch.no_grad():
        actual = exported.module()(images)
    torch.testing.assert_close(actual.pred_score, expected[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(actual.anomaly_map, expected[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec", SPECS)
def test_leakage_guard_holds_after_a_reload(spec: ModelSpec, target: MVTecAD, tmp_path: Path) -> None:
    """A model whose state was fitted on the target's test images refuses that target, from a checkpoint or a file."""
    from anomalib_clipad.data.auxiliary import DataLeakageError

    model = _set_up(spec, target, tmp_path)
    model.training_paths = {str(path) for path in target.test_data.samples["image_path"][:2]}
    learned = model.write_learned_state(_trainer(tmp_path, target))
    checkpoint = _checkpoint(model, tmp_path / "leaky.ckpt")
    for reloaded in (spec.lightning_class.load_from_checkpoint(checkpoint), _build(spec, learned_state=str(learned))):
        with pytest.raises(DataLeakageError):
            reloaded.prepare_for_scoring(_trainer(tmp_path, target), "test")


@pytest.mark.parametrize("spec", SPECS)
def test_calibrated_thresholds_travel_with_the_learned_state_to_an_export(
    spec: ModelSpec, target: MVTecAD, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Thresholds calibrated on a held-out split are stored in the file; a model built from it exports with them."""
    import logging

    from anomalib_clipad.training.thresholds import get_thresholds, set_normalization, set_thresholds

    model = _set_up(spec, target, tmp_path)
    with caplog.at_level(logging.WARNING, logger="anomalib_clipad.models.base"):
        assert model.warn_if_uncalibrated()  # nothing calibrated yet: an export says so
    assert "exported with uncalibrated thresholds" in caplog.text
    set_thresholds(model.post_processor, 0.25, 0.75)  # what a held-out calibration leaves
    if model.post_processor.enable_normalization:
        set_normalization(model.post_processor, (0.1, 0.9), (0.2, 0.8))
    path = model.write_learned_state(_trainer(tmp_path, target))
    assert LearnedState.load(path).thresholds["source"] == "held_out"
    restored = _build(spec, learned_state=str(path))
    assert get_thresholds(restored.post_processor) == pytest.approx({"image": 0.25, "pixel": 0.75})
    if restored.post_processor.enable_normalization:
        assert float(restored.post_processor.pixel_max) == pytest.approx(0.8)
    assert not restored.warn_if_uncalibrated()
