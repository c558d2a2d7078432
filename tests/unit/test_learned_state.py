# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The one learned-state file, for every model of the registry, at torch level on tiny random CLIPs.

Each model is built twice from the same seed (so both hold the same frozen CLIP): the original gets its class, its
references where it uses them and learned parameters moved away from their initialisation; its learned state is saved.
A fresh model, not ready to score, reads the file and must give the original's outputs. Files of another backbone,
activation, input size, architecture setting, class (class-specific states), model or version are refused with
messages naming both values. Run with ``-s`` to see each file's size.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from anomalib_clipad.components.readiness import ClassMismatchError, ModelNotReadyError
from anomalib_clipad.models.anomalyclip import AnomalyCLIPModel
from anomalib_clipad.models.learned_state import (
    LearnedState,
    Provenance,
    human_size,
    load_learned_tensors,
    read_learned_state,
)
from anomalib_clipad.registry import MODELS, ModelSpec, Protocol

CLASS, OTHER_CLASS = "bottle", "screw"


def _variants() -> list[Any]:
    """Every model with its few-shot references; models that can also score without references, without them."""
    cases = []
    for spec in MODELS:
        shots = [int(spec.few_shot.get("k_shot", 0))]
        if spec.few_shot and spec.protocol is not Protocol.NORMAL_SHOTS:
            shots.append(0)
        cases.extend(pytest.param((spec, k), id=f"{spec.name}-k{k}") for k in shots)
    return cases


def build(spec: ModelSpec, k_shot: int, **overrides: Any) -> torch.nn.Module:
    """The torch model with the registry's tiny settings (a random CLIP drawn from seed 0)."""
    parameters = inspect.signature(spec.torch_class.__init__).parameters
    arguments = {**spec.tiny, "k_shot": k_shot, **overrides}
    arguments = {name: value for name, value in arguments.items() if name in parameters}
    torch.manual_seed(0)
    return spec.torch_class(**arguments).eval()


def images(spec: ModelSpec, count: int, seed: int) -> torch.Tensor:
    size = spec.tiny["image_size"]
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def is_class_specific(spec: ModelSpec, k_shot: int) -> bool:
    """What a model learns on auxiliary data serves any class, unless it holds references of one (SimCLIP+)."""
    return spec.protocol is not Protocol.AUXILIARY_DATA or k_shot > 0


@torch.no_grad()
def prepare(spec: ModelSpec, model: torch.nn.Module, k_shot: int) -> None:
    """Class, references where the model uses them, and text features, as the Lightning models set them up."""
    model.set_class(CLASS)
    if model.uses_references:
        model.set_references(images(spec, k_shot, seed=1))
    model.update_text_features()


@torch.no_grad()
def outputs(model: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    result = model(batch)
    return result.pred_score, result.anomaly_map


@pytest.fixture(scope="module", params=_variants())
def saved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The original model of a case, its outputs on two images, and its learned-state file."""
    spec, k_shot = request.param
    model = build(spec, k_shot)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():  # learned parameters away from the initialisation a fresh model has
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)
    prepare(spec, model, k_shot)
    class_name = CLASS if is_class_specific(spec, k_shot) else None
    provenance = Provenance(training_paths=("aux/a.png",), reference_paths=("train/good/000.png",) if k_shot else ())
    state = LearnedState.from_model(model, spec.name, class_name=class_name, provenance=provenance)
    path = state.save(tmp_path_factory.mktemp("state") / "weights" / "learned_state.pt")
    batch = images(spec, 2, seed=2)
    return {
        "spec": spec,
        "k_shot": k_shot,
        "model": model,
        "state": state,
        "path": path,
        "outputs": outputs(model, batch),
    }


def fresh(saved: dict[str, Any], **overrides: Any) -> torch.nn.Module:
    return build(saved["spec"], saved["k_shot"], **overrides)


# ------------------------------------------------------------------------------------------------ round trip
def test_a_fresh_model_scores_as_the_original_from_the_file(saved: dict[str, Any]) -> None:
    spec, k_shot = saved["spec"], saved["k_shot"]
    model = fresh(saved)
    batch = images(spec, 2, seed=2)
    with pytest.raises(ModelNotReadyError):
        outputs(model, batch)
    state = read_learned_state(saved["path"], model, spec.name, requested_class=CLASS)
    state.apply_to(model)
    if state.class_name is None:  # a class-agnostic state: the target gives the class
        model.set_class(CLASS)
    for expected, actual in zip(saved["outputs"], outputs(model, batch), strict=True):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
    assert state.provenance == saved["state"].provenance
    assert state.class_name == (CLASS if is_class_specific(spec, k_shot) else None)
    assert state.has_references == bool(k_shot)


def test_the_file_is_small_and_written_as_float32(saved: dict[str, Any]) -> None:
    spec, path, model = saved["spec"], saved["path"], saved["model"]
    size = path.stat().st_size
    clip = sum(
        tensor.numel() * tensor.element_size()
        for name, tensor in model.state_dict().items()
        if name.startswith(("vision.", "text."))
    )
    print(f"{spec.name} (k_shot={saved['k_shot']}): {size} bytes ({human_size(size)}; its CLIP: {human_size(clip)})")
    assert size * 50 < clip, f"{size} bytes is not far smaller than the {clip} bytes of the CLIP"
    content = torch.load(path, weights_only=True)
    assert content["format"] == "anomalib_clipad.learned_state"
    assert content["version"] == 1
    assert content["model"] == spec.name
    assert content["backbone"] == spec.tiny["backbone"]
    assert content["image_size"] == spec.tiny["image_size"]
    assert content["quick_gelu"] == model.clip_hparams["quick_gelu"]
    assert content["architecture"] == LearnedState.from_model(model, spec.name, None).architecture
    assert content["thresholds"] is None
    for name, tensor in content["state"].items():
        assert tensor.is_contiguous()
        assert tensor.dtype == torch.float32 or not tensor.is_floating_point(), name
    assert set(content["state"]) == set(model.learned_state_dict())


# ------------------------------------------------------------------------------------------------ refusals
def test_another_backbone_is_refused_naming_both(saved: dict[str, Any], tmp_path: Path) -> None:
    spec = saved["spec"]
    path = replace(saved["state"], backbone="ViT-B-16").save(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="backbone") as error:
        read_learned_state(path, fresh(saved), spec.name)
    for part in ("'ViT-B-16'", repr(spec.tiny["backbone"]), "--model.backbone ViT-B-16"):
        assert part in str(error.value)


def test_another_activation_is_refused_naming_both(saved: dict[str, Any]) -> None:
    recorded = saved["state"].quick_gelu
    other = fresh(saved, quick_gelu=not recorded)
    with pytest.raises(ValueError, match="quick_gelu") as error:
        read_learned_state(saved["path"], other, saved["spec"].name)
    message = str(error.value)
    assert f"quick_gelu={recorded}" in message
    assert f"quick_gelu={not recorded}" in message
    assert f"--model.quick_gelu {str(recorded).lower()}" in message


def test_another_input_size_or_architecture_setting_is_refused(saved: dict[str, Any], tmp_path: Path) -> None:
    spec, state = saved["spec"], saved["state"]
    size = spec.tiny["image_size"]
    with pytest.raises(ValueError, match=rf"image_size={size * 2}.*image_size={size}.*--model\.image_size {size * 2}"):
        replace(state, image_size=size * 2).check_compatible(fresh(saved), spec.name)
    name, value = next((key, item) for key, item in state.architecture.items() if key not in {"backbone", "image_size"})
    changed = [*value, 99] if isinstance(value, list) else f"{value}-other" if isinstance(value, str) else value + 1
    path = replace(state, architecture={**state.architecture, name: changed}).save(tmp_path / "other.pt")
    with pytest.raises(ValueError, match=rf"{name}=.*{name}=.*--model\.{name}"):
        read_learned_state(path, fresh(saved), spec.name)


def test_another_class_is_refused_for_a_class_specific_state(saved: dict[str, Any]) -> None:
    spec = saved["spec"]
    if not is_class_specific(spec, saved["k_shot"]):
        state = read_learned_state(saved["path"], fresh(saved), spec.name, requested_class=OTHER_CLASS)
        assert state.class_name is None  # class-agnostic: serves any class
        return
    with pytest.raises(ClassMismatchError) as error:
        read_learned_state(saved["path"], fresh(saved), spec.name, requested_class=OTHER_CLASS)
    assert f"class {CLASS!r}" in str(error.value)
    assert f"class {OTHER_CLASS!r}" in str(error.value)
    assert isinstance(error.value, ValueError)


def test_another_model_is_refused_naming_both(saved: dict[str, Any]) -> None:
    spec = saved["spec"]
    other = next(item.name for item in MODELS if item.name != spec.name)
    with pytest.raises(ValueError, match=rf"learned state of {spec.name}, not of {other}.*--model {spec.name}"):
        read_learned_state(saved["path"], fresh(saved), other)


def test_a_wrongly_shaped_tensor_is_named(saved: dict[str, Any]) -> None:
    spec, state = saved["spec"], saved["state"]
    name = next(iter(state.state))
    tensor = state.state[name]
    wrong = replace(state, state={**state.state, name: torch.zeros(*tensor.shape[:-1], tensor.shape[-1] + 1)})
    model = fresh(saved)
    with pytest.raises(ValueError, match=rf"{name.replace('.', '[.]')}' has shape"):
        wrong.apply_to(model)
    missing = replace(state, state={key: value for key, value in state.state.items() if key != name})
    with pytest.raises(ValueError, match=rf"missing key '{name.replace('.', '[.]')}'"):
        missing.apply_to(model)
    with pytest.raises(ValueError, match="unexpected key 'extra'"):
        load_learned_tensors(model, {**state.state, "extra": torch.zeros(1)}, ("",), spec.name)


# ------------------------------------------------------------------------------------------------ the file format
@pytest.fixture(scope="module")
def anomalyclip() -> dict[str, Any]:
    spec = next(spec for spec in MODELS if spec.name == "AnomalyCLIP")
    model = build(spec, 0, seed=3)
    model.update_text_features()
    return {"spec": spec, "model": model, "state": LearnedState.from_model(model, spec.name, class_name=None)}


def test_unknown_version_missing_unreadable_and_foreign_files_are_refused(
    anomalyclip: dict[str, Any], tmp_path: Path
) -> None:
    model, state = anomalyclip["model"], anomalyclip["state"]
    content = state.to_content()
    torch.save({**content, "version": 2}, tmp_path / "v2.pt")
    with pytest.raises(ValueError, match=r"version 2.*reads version 1"):
        LearnedState.load(tmp_path / "v2.pt")
    with pytest.raises(ValueError, match=r"version 2.*reads version 1"):
        read_learned_state(tmp_path / "v2.pt", model, "AnomalyCLIP")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_learned_state(tmp_path / "missing.pt", model, "AnomalyCLIP")
    (tmp_path / "text.pt").write_text("not a torch file")
    with pytest.raises(ValueError, match=r"read safely.*weights_only=True"):
        read_learned_state(tmp_path / "text.pt", model, "AnomalyCLIP")
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match=r"neither an anomalib-clipad learned state.*'state_dict'"):
        read_learned_state(tmp_path / "foreign.pt", model, "AnomalyCLIP")
    with pytest.raises(ValueError, match="not an anomalib-clipad learned state"):
        LearnedState.load(tmp_path / "foreign.pt")
    saved = state.save(tmp_path / "ours.pt")
    with pytest.raises(ValueError, match="pass it alone"):
        read_learned_state([saved, saved], model, "AnomalyCLIP")


def test_a_reference_checkpoint_is_checked_by_shapes_only_and_says_so(
    anomalyclip: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source, spec = anomalyclip["model"], anomalyclip["spec"]
    learned = source.learned_state_dict()
    reference = {
        "ctx_pos": learned["normal_context"][None, None],
        "ctx_neg": learned["abnormal_context"][None, None],
        **{f"compound_prompts_text.{index}": prompt for index, prompt in enumerate(source.deep_prompts)},
    }
    torch.save({"prompt_learner": reference}, tmp_path / "epoch_15.pth")
    target = build(spec, 0, seed=4)
    with caplog.at_level(logging.INFO, logger="anomalib_clipad"):
        state = read_learned_state(tmp_path / "epoch_15.pth", target, "AnomalyCLIP")
    assert "records no backbone" in caplog.text
    assert "by its tensor shapes only" in caplog.text
    assert state.backbone is None
    state.apply_to(target)
    torch.testing.assert_close(target.text_prototypes.features, source.text_prototypes.features, rtol=0, atol=1e-6)
    # the same file given to another model names the model it belongs to
    simclip = next(item for item in MODELS if item.name == "SimCLIP")
    with pytest.raises(ValueError, match=r"learned state of AnomalyCLIP, not of SimCLIP.*--model AnomalyCLIP"):
        read_learned_state(tmp_path / "epoch_15.pth", build(simclip, 0), "SimCLIP")


def test_a_state_of_another_shape_is_refused_by_shape_when_settings_are_unknown(
    anomalyclip: dict[str, Any], tmp_path: Path
) -> None:
    spec = anomalyclip["spec"]
    shorter = build(spec, 0, n_ctx=4)
    former = {
        "format": "anomalib_clipad.anomalyclip.prompts",
        "version": 1,
        "prompts": anomalyclip["model"].learned_state_dict(),
        "training_paths": ["aux/a.png"],
    }
    torch.save(former, tmp_path / "prompts.pt")
    state = read_learned_state(tmp_path / "prompts.pt", shorter, "AnomalyCLIP")
    assert state.provenance.training_paths == ("aux/a.png",)
    with pytest.raises(ValueError, match=r"'normal_context' has shape \(12, \d+\), the model expects \(4, \d+\)"):
        state.apply_to(shorter)
    assert isinstance(shorter, AnomalyCLIPModel)


def test_human_size() -> None:
    assert human_size(999) == "999 bytes"
    assert human_size(12_345) == "12.3 kB"
    assert human_size(4_500_000) == "4.5 MB"
    assert human_size(1_700_000_000) == "1.7 GB"
