# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Parity of WinCLIPPlusModel with anomalib 2.7's built-in WinClipModel on identical weights and images.

anomalib's ``WinClipModel`` hard-codes its backbone and pretrained tag as module constants; we point them at the tiny
random-init architecture, save its CLIP state dict to a file and load that file into our model, so both hold the same
weights. Intended differences are switched off for the comparison:

* templates: anomalib has 21 ("a cropped photo of a {}." missing, "a jpeg corrupted photo of the {}." twice); we pass
  anomalib's list to our model.
* anomalib 2.7 feeds the window sequences to open_clip's batch-first transformer in (L, N, D) layout (a left-over of
  open_clip < 2.23), so its window tokens attend across windows and images instead of within a window. We remove that
  bug by running anomalib's own window code with ``transformer.batch_first = False`` (which makes open_clip transpose
  to the layout anomalib assumes); a test below shows the bug is real.
* reference images are given to ``WinClipModel.setup`` CLIP-normalised (anomalib's Lightning loader forgets to).
"""

import os

import anomalib.models.image.winclip.torch_model as anomalib_winclip
import pytest
import torch
from anomalib.models.image.winclip.prompting import TEMPLATES as ANOMALIB_TEMPLATES

from anomalib_clipad.clip import TINY_BACKBONE
from anomalib_clipad.clip.loading import register_model_configs
from anomalib_clipad.components.prompts import WINCLIP_TEMPLATES
from anomalib_clipad.models.common import clip_transform
from anomalib_clipad.models.winclip_plus.torch_model import WinCLIPPlusModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Tolerance. Both models run the same float32 operations on the same tokens; only reduction orders differ (anomalib
# batches windows mask-major and aggregates through a dense coverage matrix, we batch image-major and scatter-add).
# Measured on this fixture: window/patch features bit-identical, scores and maps within 3e-7 (a few ulp at ~0.7).
# On other BLAS builds or thread counts, matmul reductions may differ by ~1e-6 relative; the cosine is divided by
# tau = 0.07 before the softmax, so that becomes <= p(1-p) * 14 * 1e-6 ~ 4e-6 in probability. 2e-5 covers this with
# margin and is still far below any real difference (the 21- vs 22-template change fails it, see the last test).
ATOL = 2e-5


def _fixed_window_embeddings(model: anomalib_winclip.WinClipModel):
    """anomalib's own ``_get_window_embeddings`` with the open_clip layout mismatch removed."""
    original = model._get_window_embeddings

    def window_embeddings(feature_map: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        transformer = model.clip.visual.transformer
        transformer.batch_first = False  # open_clip then transposes anomalib's (L, N, D) input to (N, L, D)
        try:
            return original(feature_map, masks)
        finally:
            transformer.batch_first = True

    return window_embeddings


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[anomalib_winclip.WinClipModel, WinCLIPPlusModel]:
    register_model_configs()
    patch = pytest.MonkeyPatch()
    patch.setattr(anomalib_winclip, "BACKBONE", TINY_BACKBONE)
    patch.setattr(anomalib_winclip, "PRETRAINED", None)
    try:
        torch.manual_seed(0)
        theirs = anomalib_winclip.WinClipModel(scales=(2, 3)).eval()
    finally:
        patch.undo()
    weights = tmp_path_factory.mktemp("weights") / "tiny_clip.pt"
    torch.save(theirs.clip.state_dict(), weights)
    ours = WinCLIPPlusModel(TINY_BACKBONE, weights, templates=ANOMALIB_TEMPLATES).eval()
    return theirs, ours


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Test images as both models receive them from anomalib: resized and CLIP-normalised."""
    generator = torch.Generator().manual_seed(1)
    return clip_transform(240)(torch.rand(3, 3, 200, 200, generator=generator))


@pytest.fixture(scope="module")
def references() -> torch.Tensor:
    """A normal reference image, CLIP-normalised like the test images (what anomalib's loader forgets)."""
    generator = torch.Generator().manual_seed(2)
    return clip_transform(240)(torch.rand(1, 3, 200, 200, generator=generator))


def test_same_weights(models: tuple) -> None:
    theirs, ours = models
    assert torch.equal(theirs.clip.visual.conv1.weight, ours.vision.conv1.weight)
    assert torch.equal(theirs.clip.token_embedding.weight, ours.text.token_embedding.weight)


def test_zero_shot_parity(models: tuple, images: torch.Tensor) -> None:
    theirs, ours = models
    theirs.setup("bottle", None)
    theirs._get_window_embeddings = _fixed_window_embeddings(theirs)
    ours.set_class("bottle")
    ours.set_references(None)
    try:
        expected = theirs(images)
    finally:
        del theirs._get_window_embeddings
    actual = ours(images)
    assert ours.k_shot == 0
    torch.testing.assert_close(actual.pred_score, expected.pred_score, atol=ATOL, rtol=0)
    torch.testing.assert_close(actual.anomaly_map, expected.anomaly_map, atol=ATOL, rtol=0)


def test_one_shot_parity(models: tuple, images: torch.Tensor, references: torch.Tensor) -> None:
    theirs, ours = models
    theirs._get_window_embeddings = _fixed_window_embeddings(theirs)
    try:
        theirs.setup("bottle", references)
        expected = theirs(images)
    finally:
        del theirs._get_window_embeddings
    ours.set_class("bottle")
    ours.set_references(references)
    actual = ours(images)
    assert ours.k_shot == theirs.k_shot == 1
    torch.testing.assert_close(actual.pred_score, expected.pred_score, atol=ATOL, rtol=0)
    torch.testing.assert_close(actual.anomaly_map, expected.anomaly_map, atol=ATOL, rtol=0)


def test_anomalib_window_layout_bug_is_real(models: tuple, images: torch.Tensor) -> None:
    """Unpatched, anomalib 2.7's window embeddings differ from running the ViT on one window's tokens."""
    theirs, ours = models
    with torch.no_grad():
        _, buggy, _ = theirs.encode_image(images[:1])
        features = ours.encode_images(images[:1])
        ours_windows = [features[f"window_{scale}"] for scale in ours.scales]
    assert (buggy[0] - ours_windows[0]).abs().max() > 1e-2


def test_template_difference_is_visible(models: tuple, images: torch.Tensor) -> None:
    """Our default 22 templates give different scores than anomalib's 21: the parity tests need the explicit list."""
    _, ours = models
    ours.set_class("bottle")
    ours.set_references(None)
    with_anomalib_templates = ours(images).pred_score
    ours.templates = WINCLIP_TEMPLATES
    try:
        ours.set_class("bottle")
        ours.set_references(None)
        with_paper_templates = ours(images).pred_score
    finally:
        ours.templates = tuple(ANOMALIB_TEMPLATES)
    assert (with_anomalib_templates - with_paper_templates).abs().max() > 10 * ATOL
