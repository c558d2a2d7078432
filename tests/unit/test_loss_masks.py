# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Masks in the training losses and the feature cache, at the torch level.

* AnomalyCLIP's local loss on a batch where only some images have a mask (``has_mask``) is the local loss of those
  images alone, and zero when none has one (SimCLIP's is tested in ``test_simclip.py``; mirrored here);
* AnomalyCLIP's and SimCLIP's losses binarise masks at 0.5: a soft value at or below 0.5 is background;
* the feature cache spilled to disk serves each file its own values, also for equal file names in two folders.
"""

from __future__ import annotations

import pytest
import torch

from anomalib_clipad.clip import TINY_BACKBONE_24
from anomalib_clipad.models.anomalyclip import AnomalyCLIPModel
from anomalib_clipad.models.simclip.torch_model import SimCLIPModel
from anomalib_clipad.training.feature_cache import FeatureCache

SIZE = 56  # 4 x 4 patch grid with patch 14
CLASS_NAME = "bottle"
ATOL = 1e-5


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def masks() -> torch.Tensor:
    """Image 0 normal (no defect), images 1 and 2 with different defects."""
    masks = torch.zeros(3, SIZE, SIZE)
    masks[1, 10:30, 20:40] = 1
    masks[2, 30:, :25] = 1
    return masks


LABELS = torch.tensor([0, 1, 1])


@pytest.fixture(scope="module")
def anomalyclip() -> tuple[AnomalyCLIPModel, torch.Tensor]:
    """A tiny AnomalyCLIP and its text features (fixed: the losses are compared for the same prompts)."""
    model = AnomalyCLIPModel(TINY_BACKBONE_24, pretrained=None, image_size=SIZE, seed=1)
    with torch.no_grad():
        text = model.text_features()
    return model, text


@pytest.fixture(scope="module")
def anomalyclip_features(anomalyclip, images) -> dict[str, torch.Tensor]:
    return anomalyclip[0].encode_images(images)


@pytest.fixture(scope="module")
def simclip() -> SimCLIPModel:
    model = SimCLIPModel(TINY_BACKBONE_24, None, image_size=SIZE, seed=0)
    model.set_class(CLASS_NAME)
    return model


@pytest.fixture(scope="module")
def simclip_features(simclip, images) -> dict[str, torch.Tensor]:
    return simclip.encode_images(images)


def _subset(features: dict[str, torch.Tensor], keep: list[int]) -> dict[str, torch.Tensor]:
    return {name: value[keep] for name, value in features.items()}


# ------------------------------------------------------------------------------------------------ AnomalyCLIP
def _anomalyclip_losses(anomalyclip, features, labels, masks, has_mask=None) -> dict[str, torch.Tensor]:
    model, text = anomalyclip
    with torch.no_grad():
        return model.losses(features, labels, masks, text_features=text, has_mask=has_mask)


def test_anomalyclip_local_loss_is_the_loss_of_the_images_with_a_mask(anomalyclip, anomalyclip_features, masks):
    has_mask = torch.tensor([True, True, False])  # image 2 is anomalous but its mask is not ground truth
    partial = _anomalyclip_losses(anomalyclip, anomalyclip_features, LABELS, masks, has_mask)
    subset = _anomalyclip_losses(anomalyclip, _subset(anomalyclip_features, [0, 1]), LABELS[:2], masks[:2])
    everything = _anomalyclip_losses(anomalyclip, anomalyclip_features, LABELS, masks)
    torch.testing.assert_close(partial["local_loss"], subset["local_loss"], atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(partial["image_loss"], everything["image_loss"])  # every image trains the image loss
    assert float((partial["local_loss"] - everything["local_loss"]).abs()) > 1e-4  # image 2's mask was left out
    weight = anomalyclip[0].local_loss_weight
    expected = partial["image_loss"] + weight * partial["local_loss"]
    torch.testing.assert_close(partial["loss"], expected, atol=ATOL, rtol=1e-5)


def test_anomalyclip_local_loss_is_zero_when_no_image_has_a_mask(anomalyclip, anomalyclip_features, masks):
    losses = _anomalyclip_losses(anomalyclip, anomalyclip_features, LABELS, masks, torch.zeros(3, dtype=torch.bool))
    assert float(losses["local_loss"]) == 0
    torch.testing.assert_close(losses["loss"], losses["image_loss"])


# ------------------------------------------------------------------------------------------------ SimCLIP
def _simclip_losses(simclip, features, labels, masks, has_mask=None) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return simclip.losses(features, labels, masks, has_mask=has_mask)


def test_simclip_segmentation_loss_is_the_loss_of_the_images_with_a_mask(simclip, simclip_features, masks):
    partial = _simclip_losses(simclip, simclip_features, LABELS, masks, torch.tensor([True, False, True]))
    subset = _simclip_losses(simclip, _subset(simclip_features, [0, 2]), LABELS[[0, 2]], masks[[0, 2]])
    torch.testing.assert_close(partial["segmentation"], subset["segmentation"], atol=ATOL, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ both
@pytest.mark.parametrize("model", ["AnomalyCLIP", "SimCLIP"])
@pytest.mark.parametrize(("soft", "hard"), [(0.4, 0.0), (0.5, 0.0), (0.6, 1.0)])
def test_masks_are_binarised_at_one_half(request: pytest.FixtureRequest, model: str, soft: float, hard: float):
    """A soft mask value at or below 0.5 is background, above it defect (the references' ``gt > 0.5``)."""
    if model == "AnomalyCLIP":
        anomalyclip, features = request.getfixturevalue("anomalyclip"), request.getfixturevalue("anomalyclip_features")

        def pixel_loss(masks: torch.Tensor) -> torch.Tensor:
            return _anomalyclip_losses(anomalyclip, features, LABELS, masks)["local_loss"]
    else:
        simclip, features = request.getfixturevalue("simclip"), request.getfixturevalue("simclip_features")

        def pixel_loss(masks: torch.Tensor) -> torch.Tensor:
            return _simclip_losses(simclip, features, LABELS, masks)["segmentation"]

    soft_masks, hard_masks = torch.full((3, SIZE, SIZE), soft), torch.full((3, SIZE, SIZE), hard)
    expected = pixel_loss(hard_masks)
    torch.testing.assert_close(pixel_loss(soft_masks), expected, atol=ATOL, rtol=1e-5)
    assert float((pixel_loss(1 - hard_masks) - expected).abs()) > 1e-3  # the mask matters at all


# ------------------------------------------------------------------------------------------------ feature cache
def _encode(images: torch.Tensor) -> dict[str, torch.Tensor]:
    flat = images.flatten(1)
    return {"pooled": flat.mean(1, keepdim=True), "tokens": flat[:, :8].reshape(-1, 2, 4) * 2}


def test_spilled_entries_of_equal_file_names_in_two_folders_are_each_files_own(tmp_path) -> None:
    paths = [str(tmp_path / "bottle" / "test" / folder / "000.png") for folder in ("good", "hole")]
    images = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)]) + torch.rand(2, 3, 4, 4)
    cache = FeatureCache(max_bytes=0, spill_dir=tmp_path / "spill")  # nothing in memory: every entry on disk

    first = cache.get_or_compute(paths, images, _encode)
    assert cache.stats["on_disk"] == 2
    assert len(list(cache.spill_dir.iterdir())) == 2
    for order in ([0, 1], [1, 0], [1], [0]):
        served = cache.get_or_compute([paths[i] for i in order], images[order], _encode)
        expected = _encode(images[order])
        for name, value in expected.items():
            torch.testing.assert_close(served[name], value, rtol=0, atol=0)
    assert cache.compute_calls == 1
    assert cache.disk_hits == 6
    assert not torch.equal(first["pooled"][0], first["pooled"][1])
