# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""AnomalyCLIP torch model: parity with the official code's fixture, the paper's equations, the training contract.

* Parity: ``tests/fixtures/anomalyclip_reference_L24.pt`` holds numbers of the official AnomalyCLIP code on a
  randomly initialised ``ViT-L-14-336`` with QuickGELU (see ``tests/fixtures/README.md``). The CLIP is rebuilt from
  the same seed and handed to the model as a built module (``build_clip`` accepts one), so its 1.7 GB of weights are
  neither written to a file nor initialised a second time. One model build, one image pass (about 40 s on 2 CPU cores).
* Everything else runs on the tiny 24-layer backbone at 518 px (so the 24 x 24 -> 37 x 37 position-embedding
  interpolation is exercised) against plain-PyTorch computations of the paper's equations on the same weights.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from scipy.ndimage import gaussian_filter

from anomalib_clipad.clip import TINY_BACKBONE_24
from anomalib_clipad.clip.loading import uses_quick_gelu
from anomalib_clipad.components.readiness import ModelNotReadyError
from anomalib_clipad.models.anomalyclip import AnomalyCLIPModel, from_reference_state_dict, prompts_from_checkpoint
from anomalib_clipad.models.learned_state import LearnedState, learned_shapes, read_learned_state

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "anomalyclip_reference_L24.pt"
REFERENCE_BACKBONE = "ViT-L-14-336"
TINY_LAYERS = (6, 12, 18, 24)
IMAGE_SIZE = 518
TAU = 0.07
VIT_L_SHAPES = {
    "normal_context": (12, 768),
    "abnormal_context": (12, 768),
    **{f"deep_prompts.{index}": (4, 768) for index in range(8)},
}


# ------------------------------------------------------------------------------------------------ plain PyTorch
def plain_image_features(visual: torch.nn.Module, images: torch.Tensor, dpam_start: int, layers: tuple) -> dict:
    """DPAM image tower written out: bilinear position embeddings, dual path from ``dpam_start``, global CLS @ proj."""
    patches = visual.conv1(images)
    batch, _, rows, columns = patches.shape
    patches = patches.flatten(2).transpose(1, 2)
    positions = visual.positional_embedding
    side = int((positions.shape[0] - 1) ** 0.5)
    grid = positions[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(rows, columns), mode="bilinear", align_corners=False)
    positions = torch.cat([positions[:1], grid.permute(0, 2, 3, 1).reshape(rows * columns, -1)])
    hidden = torch.cat([visual.class_embedding.expand(batch, 1, -1), patches], dim=1) + positions
    hidden = visual.ln_pre(hidden)
    stream, output = None, {}
    for layer, block in enumerate(visual.transformer.resblocks, start=1):
        attention = block.attn
        normed = block.ln_1(hidden)
        if layer >= dpam_start:
            width, heads = hidden.shape[-1], attention.num_heads
            values = F.linear(normed, attention.in_proj_weight[2 * width :], attention.in_proj_bias[2 * width :])
            values = values.view(batch, -1, heads, width // heads).transpose(1, 2)
            weights = (values @ values.transpose(-1, -2) / (width // heads) ** 0.5).softmax(dim=-1)
            attended = (weights @ values).transpose(1, 2).reshape(hidden.shape)
            stream = (hidden if stream is None else stream) + attention.out_proj(attended)
        hidden = hidden + attention(normed, normed, normed, need_weights=False)[0]
        hidden = hidden + block.mlp(block.ln_2(hidden))
        if layer in layers:
            if stream is not None:
                output[layer] = (visual.ln_post(stream[:, 1:]) @ visual.proj).clone()
            output[f"original_{layer}"] = (visual.ln_post(hidden[:, 1:]) @ visual.proj).clone()
    output["global"] = hidden[:, 0] @ visual.proj
    return output


def plain_text_features(clip: torch.nn.Module, contexts: torch.Tensor, deep_prompts: list) -> torch.Tensor:
    """Eq. 3 written out on the full 77 positions: contexts at 1..E, deep prompt q_m at 1..Q of layers m = 2..9."""
    n_ctx, n_deep = contexts.shape[1], deep_prompts[0].shape[0]
    prefix = " ".join(["X"] * n_ctx)
    tokens = open_clip.tokenize([f"{prefix} object.", f"{prefix} damaged object."])
    hidden = clip.token_embedding(tokens)
    hidden = torch.cat([hidden[:, :1], contexts, hidden[:, 1 + n_ctx :]], dim=1) + clip.positional_embedding
    for index, block in enumerate(clip.transformer.resblocks):
        if 1 <= index <= len(deep_prompts):  # 0-indexed block 1 is text layer 2
            deep = deep_prompts[index - 1].expand(2, -1, -1)
            hidden = torch.cat([hidden[:, :1], deep, hidden[:, 1 + n_deep :]], dim=1)
        hidden = block(hidden, attn_mask=clip.attn_mask)
    hidden = clip.ln_final(hidden)
    features = hidden[torch.arange(2), tokens.argmax(dim=-1)] @ clip.text_projection
    return features / features.norm(dim=-1, keepdim=True)


def probabilities(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Eq. 1: exp(<f, g_c> / τ) / Σ_c exp(<f, g_c> / τ), cosine similarity; last axis [normal, anomalous]."""
    cos = (features / features.norm(dim=-1, keepdim=True)) @ text.T
    numerators = torch.exp(cos / TAU)
    return numerators / numerators.sum(dim=-1, keepdim=True)


def reference_focal(maps: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5):
    """The reference ``FocalLoss`` (no class weights): smoothed one-hot, p_t + smooth, -(1 - p_t)^gamma log p_t."""
    flat = maps.reshape(maps.shape[0], 2, -1).permute(0, 2, 1).reshape(-1, 2)
    one_hot = torch.zeros(flat.shape[0], 2).scatter_(1, target.reshape(-1, 1).long(), 1)
    one_hot = one_hot.clamp(smooth, 1.0 - smooth)
    p_t = (one_hot * flat).sum(dim=1) + smooth
    return (-((1 - p_t) ** gamma) * p_t.log()).mean()


def reference_dice(probability: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The reference ``BinaryDiceLoss``: 1 - mean_b (2 |x y| + 1) / (|x| + |y| + 1)."""
    x, y = probability.reshape(probability.shape[0], -1), target.reshape(target.shape[0], -1)
    return 1 - ((2 * (x * y).sum(1) + 1) / (x.sum(1) + y.sum(1) + 1)).sum() / x.shape[0]


def upsampled_probabilities(patch_features: torch.Tensor, text: torch.Tensor, size: int) -> torch.Tensor:
    """U_p([S_n, S_a]) ``(B, 2, size, size)`` from patch features on a square grid."""
    probs = probabilities(patch_features, text)
    side = int(probs.shape[1] ** 0.5)
    probs = probs.reshape(probs.shape[0], side, side, 2).permute(0, 3, 1, 2)
    return F.interpolate(probs, size=(size, size), mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------------ parity (ViT-L-14-336)
@pytest.fixture(scope="module")
def reference() -> dict:
    assert FIXTURE.is_file(), f"AnomalyCLIP reference fixture missing at {FIXTURE}"
    return torch.load(FIXTURE, weights_only=False)  # trusted test fixture (plain dict of tensors)


@pytest.fixture(scope="module")
def parity(reference: dict) -> dict:
    """The one ViT-L build and image pass; results with the fixture's prompts (fp32, and fp16-rounded deep prompts)."""
    torch.manual_seed(reference["clip_seed"])
    clip = open_clip.create_model(REFERENCE_BACKBONE, pretrained=None, force_quick_gelu=True)
    with torch.no_grad():
        states = clip.state_dict().values()
        checksum = sum(v.sum(dtype=torch.float64).item() for v in states if v.is_floating_point())
    model = AnomalyCLIPModel(pretrained=clip, quick_gelu=True).eval()
    prompts = prompts_from_checkpoint(reference["prompt_params"], learned_shapes(model))
    # The reference casts the deep prompts to float16 before splicing them in; we keep float32. With the rounded
    # values our model computes exactly what the reference computed.
    rounded = {name: value.half().float() if name.startswith("deep") else value for name, value in prompts.items()}
    results = {"checksum": checksum, "quick_gelu": uses_quick_gelu(clip), "hparams": model.clip_hparams}
    with torch.no_grad():
        features = model.encode_images(reference["images"])
        for kind, state in (("fp32", prompts), ("fp16", rounded)):
            model.load_learned_state_dict(state)
            text = model.text_prototypes.features.clone()
            scores = model.scores(features)
            losses = model.losses(features, reference["labels"], reference["masks"], text_features=text)
            results[kind] = {"text": text, **scores, **losses}
    return results


def test_parity_weights_are_the_fixtures(parity: dict, reference: dict) -> None:
    assert parity["checksum"] == pytest.approx(reference["clip_checksum"], rel=1e-9)
    assert parity["quick_gelu"] is True
    assert reference["quick_gelu"] is True
    assert parity["hparams"]["quick_gelu"] is True


@pytest.mark.parametrize(("kind", "atol"), [("fp16", 1e-5), ("fp32", 1e-4)])
def test_parity_text_features(parity: dict, reference: dict, kind: str, atol: float) -> None:
    torch.testing.assert_close(parity[kind]["text"], reference["text_features"][0], atol=atol, rtol=0)


@pytest.mark.parametrize(("kind", "atol"), [("fp16", 1e-5), ("fp32", 1e-4)])
def test_parity_image_scores(parity: dict, reference: dict, kind: str, atol: float) -> None:
    torch.testing.assert_close(parity[kind]["pred_score"], reference["L24_image_score"], atol=atol, rtol=0)


@pytest.mark.parametrize(("kind", "atol"), [("fp16", 1e-5), ("fp32", 2e-4)])
def test_parity_anomaly_maps(parity: dict, reference: dict, kind: str, atol: float) -> None:
    result = parity[kind]
    assert result["anomaly_map"].shape == reference["L24_anomaly_map"].shape
    torch.testing.assert_close(result["anomaly_map"], reference["L24_anomaly_map"], atol=atol, rtol=0)


@pytest.mark.parametrize(("kind", "atol"), [("fp16", 1e-5), ("fp32", 1e-4)])
def test_parity_losses(parity: dict, reference: dict, kind: str, atol: float) -> None:
    result = parity[kind]
    torch.testing.assert_close(result["image_loss"], reference["L24_image_loss"], atol=atol, rtol=0)
    torch.testing.assert_close(result["local_loss"], reference["L24_local_loss"], atol=atol, rtol=0)
    expected_total = reference["L24_image_loss"] + 4 * reference["L24_local_loss"]
    torch.testing.assert_close(result["loss"], expected_total, atol=5 * atol, rtol=0)


# --------------------------------------------------------------------------------------------- prompts files
def reference_prompt_learner_state(width: int = 768, n_ctx: int = 12, depth: int = 9, length: int = 4) -> dict:
    """A state dict with the names and shapes of the reference ``AnomalyCLIP_PromptLearner`` (random values)."""
    generator = torch.Generator().manual_seed(7)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    state = {"ctx_pos": rand(1, 1, n_ctx, width), "ctx_neg": rand(1, 1, n_ctx, width)}
    for index in range(depth - 1):
        state[f"compound_prompts_text.{index}"] = rand(length, width)
    for index in range(depth - 1):
        state[f"compound_prompt_projections.{index}.weight"] = rand(896, width)
        state[f"compound_prompt_projections.{index}.bias"] = rand(896)
    for side in ("pos", "neg"):
        state[f"token_prefix_{side}"] = rand(1, 1, 1, width)
        state[f"token_suffix_{side}"] = rand(1, 1, 77 - 1 - n_ctx, width)
        state[f"tokenized_prompts_{side}"] = torch.randint(0, 49408, (1, 1, 77), dtype=torch.int32)
    return state


def test_reference_format_maps_to_our_names(tmp_path: Path) -> None:
    state = reference_prompt_learner_state()
    path = tmp_path / "epoch_15.pth"
    torch.save({"prompt_learner": state}, path)
    prompts = prompts_from_checkpoint(torch.load(path, weights_only=True), VIT_L_SHAPES)
    assert set(prompts) == set(VIT_L_SHAPES)
    torch.testing.assert_close(prompts["normal_context"], state["ctx_pos"][0, 0], rtol=0, atol=0)
    torch.testing.assert_close(prompts["abnormal_context"], state["ctx_neg"][0, 0], rtol=0, atol=0)
    for index in range(8):
        torch.testing.assert_close(prompts[f"deep_prompts.{index}"], state[f"compound_prompts_text.{index}"])
    # Without expected shapes the depth is read from the file.
    assert set(from_reference_state_dict(state)) == set(VIT_L_SHAPES)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("drop:compound_prompts_text.3", "compound_prompts_text.3"),
        ("drop:ctx_pos", "ctx_pos"),
        ("shape:ctx_neg", "ctx_neg"),
        ("shape:compound_prompts_text.0", "compound_prompts_text.0"),
        ("add:compound_prompts_text.8", "compound_prompts_text.8"),
        ("add:meta_net.weight", "meta_net.weight"),
    ],
)
def test_reference_format_mismatch_names_the_key(change: str, named: str) -> None:
    state = reference_prompt_learner_state()
    action, key = change.split(":")
    if action == "drop":
        del state[key]
    elif action == "shape":
        state[key] = torch.zeros(1, 1, 8, 768) if key.startswith("ctx") else torch.zeros(4, 512)
    else:
        state[key] = torch.zeros(4, 768)
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        prompts_from_checkpoint({"prompt_learner": state}, VIT_L_SHAPES)


def test_fixture_prompt_params_convert(reference: dict) -> None:
    params = reference["prompt_params"]
    prompts = from_reference_state_dict(params, VIT_L_SHAPES)
    assert {name: tuple(value.shape) for name, value in prompts.items()} == VIT_L_SHAPES
    torch.testing.assert_close(prompts["normal_context"], params["ctx_pos"][0, 0], rtol=0, atol=0)
    torch.testing.assert_close(prompts["deep_prompts.7"], params["compound_prompts_text.7"], rtol=0, atol=0)


def test_unknown_or_unsafe_prompt_files_are_refused(tiny_clip24: torch.nn.Module, tmp_path: Path) -> None:
    model = AnomalyCLIPModel(TINY_BACKBONE_24, pretrained=tiny_clip24, feature_layers=(24,))
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, other)
    with pytest.raises(ValueError, match=r"neither an anomalib-clipad learned state .* nor a file of"):
        read_learned_state(other, model, "AnomalyCLIP")
    with pytest.raises(ValueError, match="neither a former anomalib-clipad AnomalyCLIP prompts file nor a reference"):
        prompts_from_checkpoint({"state_dict": {"w": torch.zeros(1)}})
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"prompt_learner": {"ctx_pos": torch.zeros(1, 1, 12, 768)}, "config": object()}, unsafe)
    with pytest.raises(ValueError, match="weights_only=True"):
        read_learned_state(unsafe, model, "AnomalyCLIP")
    with pytest.raises(FileNotFoundError):
        read_learned_state(tmp_path / "missing.pt", model, "AnomalyCLIP")


# ---------------------------------------------------------------------------------------------- tiny backbone
def tiny_model(clip: torch.nn.Module, **kwargs) -> AnomalyCLIPModel:
    kwargs.setdefault("feature_layers", TINY_LAYERS)
    model = AnomalyCLIPModel(TINY_BACKBONE_24, pretrained=clip, image_size=IMAGE_SIZE, seed=3, **kwargs).eval()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():  # prompts larger than their N(0, 0.02) init, so that every term is clearly exercised
        for name in model.learned_state_dict():
            model.get_parameter(name).normal_(std=0.5, generator=generator)
    return model


@pytest.fixture(scope="module")
def tiny(tiny_clip24: torch.nn.Module) -> dict:
    """Tiny model with feature layers [6, 12, 18, 24], two images and masks, features and plain computations."""
    model = tiny_model(tiny_clip24)
    generator = torch.Generator().manual_seed(11)
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    masks = torch.zeros(2, IMAGE_SIZE, IMAGE_SIZE)
    masks[1, 200:320, 150:300] = 1.0
    labels = torch.tensor([0, 1])
    with torch.no_grad():
        features = model.encode_images(images)
        plain = plain_image_features(tiny_clip24.visual, images, dpam_start=6, layers=TINY_LAYERS)
        contexts = torch.stack([model.normal_context, model.abnormal_context])
        plain_text = plain_text_features(tiny_clip24, contexts, list(model.deep_prompts))
    return {
        "model": model,
        "images": images,
        "masks": masks,
        "labels": labels,
        "features": features,
        "plain": plain,
        "plain_text": plain_text,
    }


def test_defaults_are_the_published_setting() -> None:
    defaults = {name: parameter.default for name, parameter in inspect.signature(AnomalyCLIPModel).parameters.items()}
    assert defaults["backbone"] == "ViT-L-14-336"
    assert defaults["pretrained"] == "openai"
    assert defaults["image_size"] == 518
    assert defaults["quick_gelu"] is None
    assert defaults["n_ctx"] == 12
    assert defaults["deep_prompt_length"] == 4
    assert defaults["deep_prompt_depth"] == 9
    assert defaults["dpam_start_layer"] == 6
    assert tuple(defaults["feature_layers"]) == (24,)
    assert defaults["local_loss_weight"] == 4.0
    assert defaults["temperature"] == 0.07
    assert defaults["sigma"] == 4.0


def test_prompt_design(tiny: dict) -> None:
    model = tiny["model"]
    assert model.prompts == (f"{' '.join(['X'] * 12)} object.", f"{' '.join(['X'] * 12)} damaged object.")
    assert model.normal_context.shape == model.abnormal_context.shape == (12, model.text.width)
    assert len(model.deep_prompts) == 8
    assert model.deep_prompt_layers == (2, 3, 4, 5, 6, 7, 8, 9)
    assert all(prompt.shape == (4, model.text.width) for prompt in model.deep_prompts)


def test_text_features_match_plain_eq3(tiny: dict) -> None:
    text = tiny["model"].text_features()
    torch.testing.assert_close(text, tiny["plain_text"], atol=1e-5, rtol=0)
    assert text.requires_grad


def test_deep_prompts_change_the_text_features(tiny_clip24: torch.nn.Module) -> None:
    model = tiny_model(tiny_clip24, feature_layers=(24,))
    before = model.text_features().detach()
    with torch.no_grad():
        # text layer 9, the last one with deep prompts (a random change: a constant one vanishes in layer norms)
        model.deep_prompts[7].add_(torch.randn(4, model.text.width, generator=torch.Generator().manual_seed(1)))
    assert (model.text_features().detach() - before).abs().max() > 1e-3


def test_image_features_match_plain_dpam(tiny: dict) -> None:
    features, plain = tiny["features"], tiny["plain"]
    torch.testing.assert_close(features["global_features"], plain["global"], atol=1e-5, rtol=0)
    for layer in TINY_LAYERS:
        torch.testing.assert_close(features[f"patch_features_{layer}"], plain[layer], atol=1e-5, rtol=0)


def test_feature_layers_use_their_own_tokens(tiny: dict) -> None:
    features = tiny["features"]
    for index, first in enumerate(TINY_LAYERS):
        for second in TINY_LAYERS[index + 1 :]:
            difference = (features[f"patch_features_{first}"] - features[f"patch_features_{second}"]).abs().max()
            assert difference > 1e-2, f"layers {first} and {second} have the same patch features"


def test_scores_match_the_paper(tiny: dict) -> None:
    model, plain = tiny["model"], tiny["plain"]
    text = tiny["plain_text"]
    with torch.no_grad():
        scores = model.scores(tiny["features"], text_features=text)
    expected_score = probabilities(plain["global"], text)[:, 1]
    torch.testing.assert_close(scores["pred_score"], expected_score, atol=1e-5, rtol=0)
    layer_maps = []
    for layer in TINY_LAYERS:
        maps = upsampled_probabilities(plain[layer], text, IMAGE_SIZE)
        layer_maps.append(0.5 * (1 - maps[:, 0]) + 0.5 * maps[:, 1])
    mean_map = torch.stack(layer_maps).mean(dim=0)
    smoothed = torch.stack([torch.from_numpy(gaussian_filter(m.numpy(), sigma=4)) for m in mean_map])
    torch.testing.assert_close(scores["layer_maps"], torch.stack(layer_maps), atol=1e-5, rtol=0)
    torch.testing.assert_close(scores["anomaly_map"], smoothed, atol=1e-5, rtol=0)
    assert scores["anomaly_map"].shape == (2, IMAGE_SIZE, IMAGE_SIZE)
    assert 0 <= float(scores["anomaly_map"].min()) <= float(scores["anomaly_map"].max()) <= 1


def test_losses_match_the_paper(tiny: dict) -> None:
    model, plain, text = tiny["model"], tiny["plain"], tiny["plain_text"]
    masks, labels = tiny["masks"], tiny["labels"]
    with torch.no_grad():
        losses = model.losses(tiny["features"], labels, masks, text_features=text)
    global_probabilities = probabilities(plain["global"], text)
    image_loss = -torch.log(global_probabilities[torch.arange(2), labels]).mean()
    local_loss = 0.0
    for layer in TINY_LAYERS:
        maps = upsampled_probabilities(plain[layer], text, IMAGE_SIZE)
        local_loss = local_loss + reference_focal(maps, masks)
        local_loss = local_loss + reference_dice(maps[:, 1], masks) + reference_dice(maps[:, 0], 1 - masks)
    torch.testing.assert_close(losses["image_loss"], image_loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(losses["local_loss"], local_loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(losses["loss"], image_loss + 4 * local_loss, atol=5e-5, rtol=0)
    # Masks with a channel axis and soft values are binarised at 0.5 like the reference's ground truth.
    with torch.no_grad():
        soft = model.losses(tiny["features"], labels, (masks * 0.8).unsqueeze(1), text_features=text)
    torch.testing.assert_close(soft["local_loss"], local_loss, atol=1e-5, rtol=0)


def test_forward_uses_the_stored_text_features(tiny: dict) -> None:
    model = tiny["model"]
    model.update_text_features()
    with torch.no_grad():
        batch = model(tiny["images"][:1])
        expected = model.scores({key: value[:1] for key, value in tiny["features"].items()})
    torch.testing.assert_close(model.text_prototypes.features, tiny["plain_text"], atol=1e-5, rtol=0)
    torch.testing.assert_close(batch.pred_score, expected["pred_score"], atol=1e-6, rtol=0)
    torch.testing.assert_close(batch.anomaly_map, expected["anomaly_map"], atol=1e-6, rtol=0)
    assert batch.anomaly_map.shape == (1, IMAGE_SIZE, IMAGE_SIZE)


def test_only_prompts_learn(tiny_clip24: torch.nn.Module) -> None:
    model = AnomalyCLIPModel(
        TINY_BACKBONE_24, pretrained=tiny_clip24, image_size=224, feature_layers=TINY_LAYERS, seed=1
    )
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == set(model.learned_state_dict())
    assert len(trainable) == 2 + 8
    frozen = {name: value.clone() for name, value in model.state_dict().items() if name not in trainable}
    prompts = {name: value.clone() for name, value in model.learned_state_dict().items()}
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    masks = torch.zeros(2, 224, 224)
    masks[1, 50:120, 80:150] = 1
    features = model.encode_images(images)
    assert not any(value.requires_grad for value in features.values())
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, betas=(0.5, 0.999))
    losses = model.losses(features, torch.tensor([0, 1]), masks)
    losses["loss"].backward()
    assert all(model.get_parameter(name).grad is not None for name in trainable)
    assert all(parameter.grad is None for parameter in model.parameters() if not parameter.requires_grad)
    optimizer.step()
    for name, value in model.state_dict().items():
        if name in frozen:
            assert torch.equal(value, frozen[name]), f"frozen {name} changed"
    changed = [name for name, value in model.learned_state_dict().items() if not torch.equal(value, prompts[name])]
    assert set(changed) == trainable


def test_prompts_file_round_trip(tiny_clip24: torch.nn.Module, tmp_path: Path) -> None:
    source = tiny_model(tiny_clip24, feature_layers=(24,))
    target = AnomalyCLIPModel(TINY_BACKBONE_24, pretrained=tiny_clip24, feature_layers=(24,), seed=99)
    path = LearnedState.from_model(source, "AnomalyCLIP", class_name=None).save(tmp_path / "learned_state.pt")
    assert path.stat().st_size < 100_000
    read_learned_state(path, target, "AnomalyCLIP").apply_to(target)
    assert target.is_ready
    # Two code paths (features stored under no_grad at load vs a forward with autograd on) may pick different kernels:
    # unit-norm features agree to float32 rounding (3e-8 seen on some CPUs), not bit for bit.
    torch.testing.assert_close(target.text_prototypes.features, source.text_features().detach(), rtol=1e-5, atol=1e-6)
    # The reference's format with this backbone's width loads to the same parameters.
    reference_state = {
        "ctx_pos": source.normal_context.detach()[None, None],
        "ctx_neg": source.abnormal_context.detach()[None, None],
        **{f"compound_prompts_text.{i}": prompt.detach() for i, prompt in enumerate(source.deep_prompts)},
        "token_prefix_pos": torch.zeros(1, 1, 1, 32),
        "compound_prompt_projections.0.weight": torch.zeros(896, 32),
    }
    torch.save({"prompt_learner": reference_state}, tmp_path / "epoch_15.pth")
    content = torch.load(tmp_path / "epoch_15.pth", weights_only=True)
    converted = prompts_from_checkpoint(content, learned_shapes(target))
    for name, value in source.learned_state_dict().items():  # copies of stored tensors: bit for bit
        torch.testing.assert_close(converted[name], value, rtol=0, atol=0)
    other = AnomalyCLIPModel(TINY_BACKBONE_24, pretrained=tiny_clip24, feature_layers=(24,), seed=98)
    read_learned_state(tmp_path / "epoch_15.pth", other, "AnomalyCLIP").apply_to(other)
    # the same computation (load, then store the text features) on the same prompts and CLIP: bit for bit
    torch.testing.assert_close(other.text_prototypes.features, target.text_prototypes.features, rtol=0, atol=0)


def test_learned_state_dict_mismatch_names_the_key(tiny_clip24: torch.nn.Module) -> None:
    model = AnomalyCLIPModel(TINY_BACKBONE_24, pretrained=tiny_clip24, feature_layers=(24,))
    state = model.learned_state_dict()
    missing = {name: value for name, value in state.items() if name != "deep_prompts.5"}
    with pytest.raises(ValueError, match=r"missing key 'deep_prompts\.5'"):
        model.load_learned_state_dict(missing)
    wrong = {**state, "abnormal_context": torch.zeros(8, 32)}
    with pytest.raises(ValueError, match=r"'abnormal_context' has shape \(8, 32\)"):
        model.load_learned_state_dict(wrong)
    with pytest.raises(ValueError, match=r"unexpected key 'extra'"):
        model.load_learned_state_dict({**state, "extra": torch.zeros(1)})
    assert not model.is_ready


def test_checkpoint_restores_text_features(tiny_clip24: torch.nn.Module, tiny: dict) -> None:
    source = tiny["model"]
    source.update_text_features()
    target = AnomalyCLIPModel(
        TINY_BACKBONE_24, pretrained=tiny_clip24, image_size=IMAGE_SIZE, feature_layers=TINY_LAYERS
    )
    assert not target.is_ready
    target.load_state_dict(source.state_dict())
    assert target.is_ready
    # the stored features are a buffer the checkpoint carries: a copy, bit for bit
    torch.testing.assert_close(target.text_prototypes.features, source.text_prototypes.features, rtol=0, atol=0)


def test_bad_inputs_give_clear_errors(tiny_clip24: torch.nn.Module, tiny: dict) -> None:
    model = AnomalyCLIPModel(TINY_BACKBONE_24, pretrained=tiny_clip24, image_size=IMAGE_SIZE, feature_layers=(24,))
    with pytest.raises(ModelNotReadyError, match="AnomalyCLIP has no text features"):
        model(tiny["images"][:1])
    model.update_text_features()
    with pytest.raises(ValueError, match="3-channel"):
        model(tiny["images"][:1, :1])
    with pytest.raises(ValueError, match=r"Expected images of size \(518, 518\)"):
        model(tiny["images"][:1, :, :224, :224])
    with pytest.raises(TypeError, match="floating-point"):
        model((tiny["images"][:1] * 100).long())
    features = {key: tiny["features"][key] for key in ("global_features", "patch_features_24")}
    with pytest.raises(ValueError, match="labels"):
        model.losses(features, torch.tensor([0, 1, 1]), tiny["masks"])
    with pytest.raises(ValueError, match="masks"):
        model.losses(features, tiny["labels"], tiny["masks"][:1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"feature_layers": (3,)}, "dpam_start_layer=6"),
        ({"feature_layers": (25,)}, "Layer 25 does not exist"),
        ({"feature_layers": ()}, "at least one"),
        ({"feature_layers": (24, 24)}, "each once"),
        ({"deep_prompt_depth": 13}, "exceeds the 12 text layers"),
        ({"image_size": 500}, "not a multiple of the patch size"),
        ({"n_ctx": 80}, "no room for the prompt words"),
        ({"deep_prompt_length": 15}, "end-of-text token"),
    ],
)
def test_bad_settings_give_clear_errors(tiny_clip24: torch.nn.Module, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AnomalyCLIPModel(TINY_BACKBONE_24, pretrained=tiny_clip24, **kwargs)


def test_without_dpam_patch_features_come_from_the_original_path(tiny_clip24: torch.nn.Module) -> None:
    model = AnomalyCLIPModel(
        TINY_BACKBONE_24, pretrained=tiny_clip24, image_size=224, dpam_start_layer=None, feature_layers=(12,)
    )
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features = model.encode_images(images)
        plain = plain_image_features(tiny_clip24.visual, images, dpam_start=99, layers=(12,))
    assert 12 not in plain
    torch.testing.assert_close(features["patch_features_12"], plain["original_12"], atol=1e-5, rtol=0)
    torch.testing.assert_close(features["global_features"], plain["global"], atol=1e-5, rtol=0)
