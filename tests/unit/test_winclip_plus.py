# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""WinCLIP / WinCLIP+ equations against a plain, loop-based PyTorch computation of the paper on fixed random weights.

The reference below re-implements the paper from the frozen weights only (conv1, class/position embeddings, ln_pre,
the transformer blocks, ln_post, proj, the text tower): every window is run through the ViT one by one, harmonic
aggregation and associations are written as explicit loops over patches and windows. Nothing of the model's scoring
code or of the shared components is used by the reference.
"""

import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image

from anomalib_clipad.clip import TINY_BACKBONE, PretrainedWeightsError, UnknownBackboneError
from anomalib_clipad.components.prompts import ANOMALOUS_STATES, NORMAL_STATES, WINCLIP_TEMPLATES
from anomalib_clipad.models.winclip_plus import WinCLIPPlus, WinCLIPPlusModel
from anomalib_clipad.models.winclip_plus.torch_model import WinCLIPNotReadyError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

IMAGE_SIZE = 64  # 4x4 patch grid: 9 windows of 2x2, 4 of 3x3
TAU = 0.07


@pytest.fixture(scope="module")
def model() -> WinCLIPPlusModel:
    torch.manual_seed(0)
    return WinCLIPPlusModel(TINY_BACKBONE, None, image_size=IMAGE_SIZE).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def references() -> torch.Tensor:
    return torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(2))


# ------------------------------------------------------------------------------------------- the plain reference
def _tokens(vision, image: torch.Tensor) -> torch.Tensor:
    """Patch embedding + class token + position embedding of one image: (1 + N, width)."""
    patches = vision.conv1(image[None])[0].flatten(1).T  # (N, width)
    return torch.cat([vision.class_embedding[None], patches]) + vision.positional_embedding


def _run_vit(vision, tokens: torch.Tensor) -> torch.Tensor:
    hidden = vision.ln_pre(tokens)[None]
    for block in vision.blocks:
        hidden = block(hidden)
    return vision.ln_post(hidden[0])


def _windows(rows: int, columns: int, size: int) -> list[list[int]]:
    """Patch indices of each size x size window, stride 1, row-major by top-left corner."""
    return [
        [(top + i) * columns + (left + j) for i in range(size) for j in range(size)]
        for top in range(rows - size + 1)
        for left in range(columns - size + 1)
    ]


def reference_features(vision, image: torch.Tensor, scales=(2, 3)) -> dict:
    """f(x), F^W of each scale (eq. 2, one ViT run per window with only its tokens) and F^P, for one image."""
    tokens = _tokens(vision, image)
    grid = IMAGE_SIZE // 16
    full = _run_vit(vision, tokens)
    windows = {}
    for scale in scales:
        embeddings = []
        for window in _windows(grid, grid, scale):
            kept = torch.cat([tokens[:1], tokens[[1 + p for p in window]]])  # masked tokens dropped, class token kept
            embeddings.append(_run_vit(vision, kept)[0] @ vision.proj)
        windows[scale] = torch.stack(embeddings)
    return {"image": full[0] @ vision.proj, "windows": windows, "patches": full[1:]}


def reference_text(text_tower, class_name: str, extra_states=()) -> torch.Tensor:
    prototypes = []
    for states in (NORMAL_STATES, (*ANOMALOUS_STATES, *extra_states)):
        prompts = []
        for state in states:
            for template in WINCLIP_TEMPLATES:
                prompts.append(template.format(state.format(class_name)))
        raw = text_tower(text_tower.tokenize(prompts))
        prototypes.append(raw.mean(dim=0) / raw.mean(dim=0).norm())
    return torch.stack(prototypes)


def ascore0(embedding: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    cosines = torch.stack([F.cosine_similarity(embedding, prototype, dim=-1) for prototype in prototypes], dim=-1)
    return torch.exp(cosines[..., 1] / TAU) / torch.exp(cosines / TAU).sum(dim=-1)


def harmonic_per_patch(window_scores: torch.Tensor, scale: int) -> torch.Tensor:
    """Eq. 3: at each patch, (mean over covering windows of 1 / score)^-1."""
    grid = IMAGE_SIZE // 16
    windows = _windows(grid, grid, scale)
    out = torch.zeros(grid * grid)
    for patch in range(grid * grid):
        covering = [window_scores[w] for w, window in enumerate(windows) if patch in window]
        out[patch] = len(covering) / sum(1.0 / score for score in covering)
    return out


def association(features: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """Eq. 4: min over the memory of (1 - cos) / 2, for each row of ``features``."""
    return torch.stack([min((1 - F.cosine_similarity(f, r, dim=0)) / 2 for r in memory) for f in features])


def reference_winclip(model, images, prototypes, references=None) -> tuple[torch.Tensor, torch.Tensor]:
    grid = IMAGE_SIZE // 16
    ref_features = [reference_features(model.vision, r) for r in references] if references is not None else []
    scores, maps = [], []
    for image in images:
        features = reference_features(model.vision, image)
        score = ascore0(features["image"], prototypes)
        scale_maps = [harmonic_per_patch(ascore0(features["windows"][s], prototypes), s) for s in (2, 3)]
        zero_shot = 3 / (1 / scale_maps[0] + 1 / scale_maps[1] + 1 / score)  # harmonic mean with the image scale
        final = zero_shot
        if ref_features:
            m_p = association(features["patches"], torch.cat([r["patches"] for r in ref_features]))
            m_s, m_m = (
                harmonic_per_patch(
                    association(features["windows"][s], torch.cat([r["windows"][s] for r in ref_features])), s
                )
                for s in (2, 3)
            )
            m_w = (m_p + m_s + m_m) / 3  # eq. 5
            final = (zero_shot + m_w) / 2
            score = (score + m_w.max()) / 2  # eq. 6
        scores.append(score)
        maps.append(F.interpolate(final.reshape(1, 1, grid, grid), size=IMAGE_SIZE, mode="bilinear")[0, 0])
    return torch.stack(scores), torch.stack(maps)


# ------------------------------------------------------------------------------------------------------ tests
@torch.no_grad()
def test_window_embeddings_match_one_vit_run_per_window(model, images) -> None:
    features = model.encode_images(images)
    for b, image in enumerate(images):
        expected = reference_features(model.vision, image)
        torch.testing.assert_close(features["image"][b], expected["image"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(features["patch"][b], expected["patches"], atol=1e-5, rtol=1e-5)
        for scale in (2, 3):
            assert features[f"window_{scale}"].shape[1] == (4 - scale + 1) ** 2
            torch.testing.assert_close(features[f"window_{scale}"][b], expected["windows"][scale], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_compositional_prompt_ensemble(model) -> None:
    model.set_class("bottle")
    torch.testing.assert_close(model.text_prototypes, reference_text(model.text, "bottle"), atol=1e-6, rtol=1e-5)
    extra = ["{} with broken large"]
    model.set_class("bottle", anomaly_states=extra)
    torch.testing.assert_close(model.text_prototypes, reference_text(model.text, "bottle", extra), atol=1e-6, rtol=1e-5)
    assert len(WINCLIP_TEMPLATES) == len(set(WINCLIP_TEMPLATES)) == 22


@torch.no_grad()
def test_zero_shot_scores_and_map(model, images) -> None:
    model.set_class("bottle")
    model.set_references(None)
    output = model(images)
    expected_scores, expected_maps = reference_winclip(model, images, model.text_prototypes)
    assert model.k_shot == 0
    assert output.anomaly_map.shape == (2, IMAGE_SIZE, IMAGE_SIZE)
    torch.testing.assert_close(output.pred_score, expected_scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(output.anomaly_map, expected_maps, atol=1e-5, rtol=0)


@torch.no_grad()
def test_few_shot_association_and_fusion(model, images, references) -> None:
    model.set_class("bottle")
    model.set_references(references)
    assert model.k_shot == 2
    assert model.patch_memory.shape == (2 * 16, model.vision.width)
    assert model.window_memory(2).shape == (2 * 9, model.vision.output_dim)
    output = model(images)
    expected_scores, expected_maps = reference_winclip(model, images, model.text_prototypes, references)
    torch.testing.assert_close(output.pred_score, expected_scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(output.anomaly_map, expected_maps, atol=1e-5, rtol=0)
    # a reference image is its own nearest neighbour: its vision map is 0, so its final map is half the zero-shot one
    same = model(references[:1])
    model.set_references(None)
    zero_shot = model(references[:1])
    torch.testing.assert_close(same.anomaly_map, zero_shot.anomaly_map / 2, atol=1e-5, rtol=0)


@torch.no_grad()
def test_state_dict_round_trip_carries_all_state(model, images, references) -> None:
    model.set_class("bottle")
    model.set_references(references)
    expected = model(images)
    fresh = WinCLIPPlusModel(TINY_BACKBONE, None, image_size=IMAGE_SIZE).eval()
    fresh.load_state_dict(model.state_dict())
    actual = fresh(images)
    assert fresh.k_shot == 2
    torch.testing.assert_close(actual.anomaly_map, expected.anomaly_map)
    buffers = dict(model.named_buffers())
    assert {
        "prototypes.features",
        "memories.patch.features",
        "memories.window_2.features",
        "memories.window_3.features",
        "window_indices_3",
    } <= set(buffers)


# ------------------------------------------------------------------------------------------------- bad inputs
def test_bad_images_give_clear_errors(model, images) -> None:
    model.set_class("bottle")
    with pytest.raises(ValueError, match="3-channel"):
        model(images[:, :1])
    with pytest.raises(ValueError, match=r"size \(64, 64\)"):
        model(torch.randn(1, 3, IMAGE_SIZE, 48))
    with pytest.raises(ValueError, match=r"size \(64, 64\)"):
        model(torch.randn(1, 3, 96, 96))


def test_missing_class_name() -> None:
    fresh = WinCLIPPlusModel(TINY_BACKBONE, None, image_size=IMAGE_SIZE)
    with pytest.raises(WinCLIPNotReadyError, match="set_class"):
        fresh(torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    with pytest.raises(WinCLIPNotReadyError, match="class name"):
        fresh.set_class(" ")
    lightning = WinCLIPPlus(backbone=TINY_BACKBONE, pretrained=None, image_size=IMAGE_SIZE)
    lightning._trainer = SimpleNamespace(datamodule=SimpleNamespace(category=None))
    lightning.setup("test")  # a checkpoint restored after setup could still provide the prompts
    with pytest.raises(ValueError, match="class_name"):
        lightning.on_test_start()
    one_shot = WinCLIPPlus(class_name="bottle", k_shot=1, backbone=TINY_BACKBONE, pretrained=None, image_size=64)
    one_shot._trainer = SimpleNamespace(datamodule=None)
    one_shot.setup("predict")
    with pytest.raises(ValueError, match="train split of the target datamodule, but there is none"):
        one_shot.on_predict_start()


@torch.no_grad()
def test_memory_not_set_gives_clear_error(model, images, references) -> None:
    model.set_class("bottle")
    model.set_references(None)
    with pytest.raises(WinCLIPNotReadyError, match="no reference memory"):
        model.few_shot_map(model.encode_images(images))
    with pytest.raises(ValueError, match="3-channel"):
        model.set_references(references[:, :1])
    with pytest.raises(ValueError, match=r"size \(64, 64\)"):
        model.set_references(references[..., :32])


def test_unknown_backbone_and_unreadable_weights(tmp_path) -> None:
    with pytest.raises(UnknownBackboneError, match="ViT-Q-99"):
        WinCLIPPlusModel("ViT-Q-99", None)
    garbage = tmp_path / "weights.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match=r"weights\.pt"):
        WinCLIPPlusModel(TINY_BACKBONE, garbage, image_size=IMAGE_SIZE)
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        WinCLIPPlusModel(TINY_BACKBONE, None, image_size=70)
    with pytest.raises(ValueError, match="does not fit"):
        WinCLIPPlusModel(TINY_BACKBONE, None, image_size=32, scales=(3,))


def _write_images(folder, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{index:03d}.png"
        Image.new("RGB", (40, 40), (index * 20, 100, 50)).save(path)
        paths.append(str(path))
    return paths


def _trainer(category: str, samples: pd.DataFrame) -> SimpleNamespace:
    """A stand-in for a Lightning trainer whose datamodule has a category and a train split."""
    return SimpleNamespace(datamodule=SimpleNamespace(category=category, train_data=SimpleNamespace(samples=samples)))


def test_k_larger_than_train_set(tmp_path) -> None:
    paths = _write_images(tmp_path / "good", 3)
    samples = pd.DataFrame({"image_path": [*paths, paths[0]], "label_index": [0, 0, 0, 1]})
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(category="bottle", train_data=SimpleNamespace(samples=samples))
    )
    lightning = WinCLIPPlus(k_shot=4, backbone=TINY_BACKBONE, pretrained=None, image_size=IMAGE_SIZE)
    lightning.configure_model()
    with pytest.raises(ValueError, match="only 3"):
        lightning.prepare_for_scoring(trainer, "predict")
    folder_model = WinCLIPPlus(
        class_name="bottle", k_shot=5, few_shot_source=tmp_path / "good", backbone=TINY_BACKBONE, pretrained=None
    )
    folder_model.configure_model()
    with pytest.raises(ValueError, match="only 3"):
        folder_model.prepare_for_scoring(SimpleNamespace(datamodule=None), "predict")


@torch.no_grad()
def test_reference_folder(tmp_path) -> None:
    paths = _write_images(tmp_path / "refs", 3)
    lightning = WinCLIPPlus(
        class_name="bottle", k_shot=2, few_shot_source=tmp_path / "refs", backbone=TINY_BACKBONE, pretrained=None,
        image_size=IMAGE_SIZE,
    )  # fmt: skip
    lightning.configure_model()
    lightning.prepare_for_scoring(SimpleNamespace(datamodule=None), "predict")  # the references are set up to score
    assert len(set(lightning.reference_paths)) == 2
    assert set(lightning.reference_paths) <= set(paths)
    assert lightning.model.k_shot == 2


@torch.no_grad()
def test_lightning_shots_are_seeded_distinct_normalised_and_recorded(tmp_path) -> None:
    paths = _write_images(tmp_path / "good", 4)
    samples = pd.DataFrame({"image_path": paths, "label_index": [0, 0, 0, 0]})
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(category="metal_nut", train_data=SimpleNamespace(samples=samples))
    )
    chosen = []
    for _ in range(2):
        lightning = WinCLIPPlus(k_shot=2, seed=3, backbone=TINY_BACKBONE, pretrained=None, image_size=IMAGE_SIZE)
        lightning.configure_model()
        lightning.prepare_for_scoring(trainer, "predict")  # the references are set up to score
        chosen.append(lightning.reference_paths)
    assert chosen[0] == chosen[1]
    assert len(set(chosen[0])) == 2
    assert lightning.model.class_name == "metal_nut"  # the prompts say "metal nut"
    # the memory holds features of CLIP-normalised images (mean/std applied), not of raw [0, 1] pixels
    raw = torch.stack(
        [torch.from_numpy(np.asarray(Image.open(path))).permute(2, 0, 1).float() / 255 for path in chosen[0]]
    )
    normalised = lightning.pre_processor.transform(raw)
    assert normalised.mean() < raw.mean() - 0.3  # the CLIP mean/std really moved the pixels
    memory = F.normalize(lightning.model.encode_images(normalised)["patch"].flatten(0, 1), dim=-1)
    torch.testing.assert_close(lightning.model.patch_memory, memory, atol=1e-5, rtol=1e-5)
    checkpoint: dict = {}
    lightning.on_save_checkpoint(checkpoint)
    restored = WinCLIPPlus(k_shot=2, backbone=TINY_BACKBONE, pretrained=None, image_size=IMAGE_SIZE)
    restored.on_load_checkpoint(checkpoint)
    assert restored.reference_paths == chosen[0]
