# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Every torch model of the registry speaks the one vocabulary of :class:`ClipAnomalyDetector`.

Each model is built tiny (the registry's tiny backbone and size, random weights) at the torch level and taken through
set-up with the interface's names only: class, text side, references where it uses them, scoring.
"""

import inspect

import pytest
import torch

from anomalib_clipad.components.readiness import ModelNotReadyError
from anomalib_clipad.models.interface import ClipAnomalyDetector
from anomalib_clipad.registry import MODELS, ModelSpec

CLASS_NAME = "bottle"


def build_torch_model(spec: ModelSpec, *, few_shot: bool) -> ClipAnomalyDetector:
    """The torch model of ``spec`` with the registry's tiny settings (and few-shot ones) that it takes."""
    torch.manual_seed(0)
    parameters = inspect.signature(spec.torch_class.__init__).parameters
    settings = {**spec.tiny, **(spec.few_shot if few_shot else {})}
    return spec.torch_class(**{name: value for name, value in settings.items() if name in parameters}).eval()


def images(spec: ModelSpec, count: int, seed: int) -> torch.Tensor:
    size = spec.tiny["image_size"]
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


CASES = [
    pytest.param(spec, few_shot, id=f"{spec.name}-{'few_shot' if few_shot else 'default'}")
    for spec in MODELS
    for few_shot in ((False, True) if spec.few_shot else (False,))
]


@pytest.mark.parametrize(("spec", "few_shot"), CASES)
def test_model_speaks_the_vocabulary(spec: ModelSpec, few_shot: bool) -> None:
    model = build_torch_model(spec, few_shot=few_shot)
    assert isinstance(model, ClipAnomalyDetector)
    assert isinstance(model.clip_hparams, dict)
    architecture = model.architecture()
    assert architecture["backbone"] == spec.tiny["backbone"]
    assert architecture["image_size"] == spec.tiny["image_size"]

    # nothing set up: not ready, and the error says so
    assert model.class_name is None
    assert not model.is_ready
    assert not model.references_ready
    with pytest.raises(ModelNotReadyError):
        model.require_ready()
    with pytest.raises(ModelNotReadyError):
        model(images(spec, 1, seed=1))

    model.set_class(CLASS_NAME)
    assert model.class_name == CLASS_NAME
    model.update_text_features()  # the text side of the (random) learned parameters; a no-op for WinCLIP
    with torch.no_grad():
        features = model.encode_images(images(spec, 2, seed=1))
    assert features
    assert all(isinstance(value, torch.Tensor) and value.shape[0] == 2 for value in features.values())

    k_shot = spec.few_shot.get("k_shot", 1)
    if model.uses_references:
        assert not model.is_ready  # the text side alone is not enough
        with pytest.raises(ModelNotReadyError, match="memory"):
            model.require_ready()
        with torch.no_grad():
            model.set_references(images(spec, k_shot, seed=2))
        assert model.references_ready
    else:
        assert not model.references_ready
    assert model.is_ready
    model.require_ready()

    batch = images(spec, 2, seed=3)
    with torch.no_grad():
        output = model(batch)
    assert output.pred_score.shape == (2,)
    assert output.anomaly_map.shape == (2, *batch.shape[-2:])

    if model.uses_references:  # None clears the memory: not ready again
        model.set_references(None)
        assert not model.references_ready
        assert not model.is_ready
        with pytest.raises(ModelNotReadyError, match="memory"):
            model.require_ready()


@pytest.mark.parametrize("spec", MODELS, ids=[spec.name for spec in MODELS])
def test_references_follow_uses_references(spec: ModelSpec) -> None:
    """A model without a reference memory refuses references (clearing is harmless); the others take encoded ones."""
    model = build_torch_model(spec, few_shot=True)
    model.set_class(CLASS_NAME)
    shots = images(spec, spec.few_shot.get("k_shot", 1), seed=4)
    if not model.uses_references:
        model.set_references(None)
        with pytest.raises(ValueError, match="reference"):
            model.set_references(shots)
        return
    with torch.no_grad():
        model.set_references(model.encode_images(shots))  # the encode_images output of the shots is accepted too
    assert model.references_ready
