# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""SimCLIP / SimCLIP+ torch model: every score and loss term against a plain-PyTorch computation of the paper.

The tiny random-init 24-block backbone (``TINY_BACKBONE_24``) stands in for ViT-L-14-336, so the paper's layers
(6, 12, 18, 24) are used. The plain computations below use only the towers' weights (attention, MLP, layer norms,
projections) and the learned parameters, and follow the equations of the paper (eq. 2-7, Algorithm 1) and the
reference code's losses; they share no code with the model.
"""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from scipy.ndimage import gaussian_filter

from anomalib_clipad.clip import TINY_BACKBONE_24
from anomalib_clipad.components.readiness import ModelNotReadyError
from anomalib_clipad.models.simclip import SimCLIPModel, binary_prompts, convert_reference_weights

SIZE = 84  # 6 x 6 patch grid with patch 14
LAYERS = (6, 12, 18, 24)
SCALE = 20.0  # a smaller logit scale than the default (100, tested too) keeps random-init probabilities off 0 and 1
K_SHOT = 2
CLASS_NAME = "bottle"
ATOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one thread is faster, and avoids thread oversubscription on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(**kwargs) -> SimCLIPModel:
    options = {"image_size": SIZE, "seed": 0, "logit_scale": SCALE} | kwargs
    return SimCLIPModel(TINY_BACKBONE_24, None, **options)


@pytest.fixture(scope="module")
def zero_shot(_one_thread) -> SimCLIPModel:
    torch.manual_seed(0)
    model = make_model().eval()
    model.set_class(CLASS_NAME)
    return model


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def shots() -> torch.Tensor:
    return torch.randn(K_SHOT, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def few_shot(zero_shot: SimCLIPModel, shots: torch.Tensor) -> SimCLIPModel:
    """SimCLIP+ with the zero-shot model's weights (CLIP, adapters, IPT) and a memory of two shots."""
    model = make_model(k_shot=K_SHOT).eval()
    model.load_state_dict(zero_shot.state_dict())
    model.set_class(CLASS_NAME)
    model.set_references(shots)
    return model


# ------------------------------------------------------------------------------------------------ plain PyTorch
def plain_vision(vision: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """``ln_post(CLS) @ proj`` and the raw patch tokens after every block, block by block."""
    x = vision.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([vision.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + vision.positional_embedding
    hidden = vision.ln_pre(x)
    patches = {}
    for layer, block in enumerate(vision.blocks, start=1):
        normed = block.ln_1(hidden)
        hidden = hidden + block.attn(normed, normed, normed, need_weights=False)[0]
        hidden = hidden + block.mlp(block.ln_2(hidden))
        patches[layer] = hidden[:, 1:]
    return vision.ln_post(hidden[:, 0]) @ vision.proj, patches


@torch.no_grad()
def plain_text(model: SimCLIPModel, class_name: str) -> dict[str, torch.Tensor]:
    """Eq. 3-5: the binary prompts through the text tower (all 77 positions), IPT by hand, both projections."""
    text, ipt = model.text, model.ipt
    tokens = text.tokenize([f"a photo of a {class_name} without defect.", f"a photo of a {class_name} with defect."])
    hidden = text.token_embedding(tokens) + text.positional_embedding
    for block in text.blocks:
        normed = block.ln_1(hidden)
        hidden = hidden + block.attn(normed, normed, normed, need_weights=False, attn_mask=text.attn_mask)[0]
        hidden = hidden + block.mlp(block.ln_2(hidden))
    t_last = text.ln_final(hidden)  # T_last,j: (2, 77, C)
    eot = t_last[torch.arange(2), tokens.argmax(dim=-1)]
    pooled = torch.einsum("jnc,n->jc", t_last, ipt.token_weighting.weight[0]) + ipt.token_weighting.bias[0]  # T^T W
    first, last = ipt.prompt_mlp[0], ipt.prompt_mlp[2]
    task_prompt = F.gelu(ipt.prompt_seed[0] @ first.weight.T + first.bias) @ last.weight.T + last.bias  # MLP(P_s)
    fusion_weight, fusion_bias = ipt.fusion.weight[0], ipt.fusion.bias[0]
    refined = fusion_weight[0] * pooled + fusion_weight[1] * task_prompt + fusion_bias  # FFN([T^T W, P])
    return {
        "image": F.normalize(eot @ text.text_projection, dim=-1),
        "layer": F.normalize((eot + refined) @ text.text_projection, dim=-1),
    }


def anomalous_probability(features: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    """``exp(s sim(f, t_a)) / sum_j exp(s sim(f, t_j))`` (eq. 1 and 6)."""
    cosine = F.normalize(features, dim=-1) @ F.normalize(text, dim=-1).T
    logits = scale * cosine
    return logits[..., 1].exp() / logits.exp().sum(dim=-1)


def adapted(model: SimCLIPModel, layer: int, tokens: torch.Tensor) -> torch.Tensor:
    """Eq. 2, the linear adapter written out."""
    adapter = model.adapters[str(layer)]
    return tokens @ adapter.weight.T + adapter.bias


def grid_logits(model: SimCLIPModel, layer: int, tokens: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    side = SIZE // 14
    logits = SCALE * F.normalize(adapted(model, layer, tokens), dim=-1) @ text.T  # (B, N, 2)
    return logits.permute(0, 2, 1).reshape(tokens.shape[0], 2, side, side)


def smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """scipy's Gaussian filter (what the reference applies), image by image."""
    return torch.stack(
        [torch.from_numpy(gaussian_filter(m.detach().double().numpy(), sigma=sigma)).float() for m in maps]
    )


@torch.no_grad()
def plain_zero_shot(model: SimCLIPModel, images: torch.Tensor) -> dict[str, torch.Tensor]:
    class_token, patches = plain_vision(model.vision, images)
    text = plain_text(model, CLASS_NAME)
    image_score = anomalous_probability(class_token, text["image"], SCALE)
    layer_maps = {}
    for layer in LAYERS:
        logits = F.interpolate(
            grid_logits(model, layer, patches[layer], text["layer"]),
            size=(SIZE, SIZE),
            mode="bilinear",
            align_corners=True,
        )
        layer_maps[layer] = logits.softmax(dim=1)[:, 1]
    raw_map = sum(layer_maps.values()) / len(LAYERS)
    return {"image_score": image_score, "raw_map": raw_map, "map": smooth(raw_map, 7 * SIZE / 518), "text": text}


@torch.no_grad()
def plain_few_shot(model: SimCLIPModel, images: torch.Tensor, shots: torch.Tensor, bug: bool = False) -> dict:
    """Eq. 7 and Algorithm 1 for every layer (``bug=True``: the reference's last-layer similarities for all)."""
    zero = plain_zero_shot(model, images)
    text = zero["text"]["layer"]
    _, patches = plain_vision(model.vision, images)
    _, shot_patches = plain_vision(model.vision, shots)
    side = SIZE // 14
    revised, visual, similarities, zero_f, zero_nn = {}, [], {}, {}, {}
    for layer in LAYERS:
        memory = shot_patches[layer].reshape(-1, shot_patches[layer].shape[-1])  # M_l: raw tokens of the k shots
        cosine = F.normalize(patches[layer], dim=-1) @ F.normalize(memory, dim=-1).T  # (B, N, k N)
        best, index = cosine.max(dim=-1)
        nearest = memory[index]  # f_l(h, w)
        similarities[layer] = (1 + best) / 2  # D_l
        visual.append((1 - best) / 2)  # min (1 - sim) / 2
        zero_f[layer] = anomalous_probability(adapted(model, layer, patches[layer]), text, SCALE)
        zero_nn[layer] = anomalous_probability(adapted(model, layer, nearest), text, SCALE)
        revised[layer] = zero_f[layer] - similarities[layer] * zero_nn[layer]  # M_l,zero - D_l M_l,zero(f_l)
    if bug:
        last = similarities[LAYERS[-1]]
        total = sum(zero_f.values()) - last * sum(zero_nn.values())
        prior = (total / len(LAYERS)).clamp(0, 1)
    else:
        prior = (sum(revised.values()) / len(LAYERS)).clamp(0, 1)
    visual_grid = sum(visual) / len(LAYERS)

    def up(grid: torch.Tensor) -> torch.Tensor:
        return F.interpolate(grid.reshape(-1, 1, side, side), size=(SIZE, SIZE), mode="bilinear", align_corners=True)[
            :, 0
        ]

    prior_map = smooth(up(prior), 7 * SIZE / 518)
    visual_map = up(visual_grid)
    final = (prior_map + visual_map) / 2
    return {
        "prior_grid": prior.reshape(-1, side, side),
        "visual_grid": visual_grid.reshape(-1, side, side),
        "revised": {layer: r.reshape(-1, side, side) for layer, r in revised.items()},
        "similarity": {layer: s.reshape(-1, side, side) for layer, s in similarities.items()},
        "prior_map": prior_map,
        "visual_map": visual_map,
        "map": final,
        "pred_score": (zero["image_score"] + final.flatten(1).amax(dim=1)) / 2,
        "unrevised_score": (zero["image_score"] + ((zero["map"] + visual_map) / 2).flatten(1).amax(dim=1)) / 2,
    }


@torch.no_grad()
def plain_losses(
    model: SimCLIPModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    class_names: list[str],
    has_mask: list[bool],
) -> dict:
    """CE on the image logits; focal (gamma 2, reference smoothing 1e-5) and dice on every layer's map.

    Image by image with its own class's prompts; the map terms over the images with a mask only.
    """
    class_token, patches = plain_vision(model.vision, images)
    texts = [plain_text(model, name) for name in class_names]
    logits = torch.stack(
        [SCALE * F.normalize(token, dim=-1) @ text["image"].T for token, text in zip(class_token, texts, strict=True)]
    )
    ce = -(logits.log_softmax(dim=-1)[torch.arange(len(labels)), labels]).mean()
    keep = torch.tensor(has_mask)
    target = (masks[keep] > 0.5).float()
    eps = 1e-5
    output = {"classification": ce}
    for layer in LAYERS:
        logits_l = torch.cat(
            [
                grid_logits(model, layer, patches[layer][i : i + 1], texts[i]["layer"])
                for i in range(len(labels))
                if has_mask[i]
            ]
        )
        logits_l = F.interpolate(logits_l, size=(SIZE, SIZE), mode="bilinear", align_corners=True)
        probabilities = logits_l.softmax(dim=1)
        one_hot = torch.stack([1 - target, target], dim=1).clamp(eps, 1 - eps)
        p_t = (one_hot * probabilities).sum(dim=1) + eps
        output[f"focal_{layer}"] = (-((1 - p_t) ** 2) * p_t.log()).mean()
        anomalous = probabilities[:, 1].flatten(1)
        truth = target.flatten(1)
        dice = (2 * (anomalous * truth).sum(1) + 1) / (anomalous.sum(1) + truth.sum(1) + 1)
        output[f"dice_{layer}"] = 1 - dice.mean()
    segmentation = sum(output[f"focal_{layer}"] + output[f"dice_{layer}"] for layer in LAYERS)
    output["loss"] = 1.3 * ce + 0.08 * segmentation
    return output


# -------------------------------------------------------------------------------------------------------- tests
def test_prompts_are_the_class_aware_binary_prompts() -> None:
    assert binary_prompts("metal_nut") == {
        "normal": ["a photo of a metal_nut without defect."],
        "anomalous": ["a photo of a metal_nut with defect."],
    }
    with pytest.raises(ValueError, match="class name"):
        binary_prompts("  ")


def test_build_records_activation_and_freezes_clip_except_projections(zero_shot) -> None:
    # default: the weights' own activation (QuickGELU for ViT-L-14-336 / openai; the tiny random backbone: GELU)
    assert zero_shot.clip_hparams["quick_gelu"] is False
    assert make_model(quick_gelu=True).clip_hparams["quick_gelu"] is True
    model = make_model(quick_gelu=False, train_projections=False)
    assert model.clip_hparams["quick_gelu"] is False
    assert not any(
        parameter.requires_grad
        for name, parameter in model.named_parameters()
        if "adapters" not in name and not name.startswith("ipt.")
    )
    assert model.text.text_projection.requires_grad is False


def test_text_features_follow_eq_3_to_5(zero_shot: SimCLIPModel) -> None:
    expected = plain_text(zero_shot, CLASS_NAME)
    features = zero_shot.prompt_features()
    for head in ("image", "layer"):
        torch.testing.assert_close(features[head], expected[head], atol=ATOL, rtol=0)
        torch.testing.assert_close(zero_shot.text_prototypes[head].features, expected[head], atol=ATOL, rtol=0)
    assert not torch.allclose(features["image"], features["layer"])
    assert zero_shot.ipt.token_weighting.in_features == 77
    assert zero_shot.ipt.prompt_seed.shape == (1, 8)
    assert zero_shot.ipt.prompt_mlp[0].out_features == 256
    assert torch.all((zero_shot.ipt.token_weighting.weight >= 0) & (zero_shot.ipt.token_weighting.weight <= 1))


def test_encode_images_gives_raw_patch_tokens_and_the_class_token_before_projection(zero_shot, images) -> None:
    features = zero_shot.encode_images(images)
    class_token, patches = plain_vision(zero_shot.vision, images)
    torch.testing.assert_close(zero_shot.image_embedding(features["class_token"]), class_token, atol=ATOL, rtol=0)
    assert set(features) == {"class_token", *(f"patch_tokens_{layer}" for layer in LAYERS)}
    for layer in LAYERS:
        assert features[f"patch_tokens_{layer}"].shape == (3, 36, zero_shot.vision.width)
        torch.testing.assert_close(features[f"patch_tokens_{layer}"], patches[layer], atol=ATOL, rtol=0)
    assert not any(value.requires_grad for value in features.values())


def test_zero_shot_scores_follow_the_paper(zero_shot: SimCLIPModel, images: torch.Tensor) -> None:
    expected = plain_zero_shot(zero_shot, images)
    with torch.no_grad():
        output = zero_shot(images)
    torch.testing.assert_close(output.pred_score, expected["image_score"], atol=ATOL, rtol=0)
    torch.testing.assert_close(output.anomaly_map, expected["map"], atol=ATOL, rtol=0)
    assert output.anomaly_map.shape == (3, SIZE, SIZE)
    assert 0.05 < float(expected["raw_map"].mean()) < 0.95  # not saturated: the comparison means something


def test_default_logit_scale_is_100_and_scores_are_probabilities(zero_shot, images) -> None:
    model = copy.deepcopy(zero_shot)
    model.logit_scale = 100.0
    with torch.no_grad():
        output = make_scores(model, images)
    cosine = F.normalize(model.image_embedding(model.encode_images(images)["class_token"]), dim=-1)
    logits = 100 * cosine @ model.text_prototypes["image"].features.T
    torch.testing.assert_close(output["pred_score"], logits.softmax(dim=-1)[:, 1])
    assert inspect.signature(SimCLIPModel).parameters["logit_scale"].default == 100.0
    for value in (output["pred_score"], output["anomaly_map"]):
        assert float(value.min()) >= 0
        assert float(value.max()) <= 1


def make_scores(model: SimCLIPModel, images: torch.Tensor) -> dict[str, torch.Tensor]:
    return model.scores(model.encode_images(images))


@pytest.mark.parametrize(
    ("class_names", "has_mask"),
    [
        (None, None),  # the class of set_class, every mask is ground truth
        (["bottle", "cable", "bottle"], [True, False, True]),  # class-aware prompts per image; one image label-only
    ],
)
def test_losses_follow_the_paper_and_reference(zero_shot, images, class_names, has_mask) -> None:
    labels = torch.tensor([0, 1, 1])
    masks = torch.zeros(3, 1, SIZE, SIZE)
    masks[1, :, 10:40, 20:50] = 1
    masks[2, :, 50:, :30] = 0.8
    expected = plain_losses(
        zero_shot, images, labels, masks[:, 0], class_names or [CLASS_NAME] * 3, has_mask or [True] * 3
    )
    features = zero_shot.encode_images(images)
    output = zero_shot.losses(features, labels, masks, class_names=class_names, has_mask=has_mask)
    for key, value in expected.items():
        torch.testing.assert_close(output[key], value, atol=ATOL, rtol=1e-5, msg=key)
    torch.testing.assert_close(output["focal"], sum(expected[f"focal_{layer}"] for layer in LAYERS))
    torch.testing.assert_close(output["dice"], sum(expected[f"dice_{layer}"] for layer in LAYERS))


def test_losses_without_any_mask_train_the_image_loss_only(zero_shot, images) -> None:
    output = zero_shot.losses(
        zero_shot.encode_images(images),
        torch.tensor([0, 1, 1]),
        torch.zeros(3, SIZE, SIZE),
        has_mask=torch.zeros(3, dtype=torch.bool),
    )
    assert float(output["segmentation"].detach()) == 0
    torch.testing.assert_close(output["loss"], 1.3 * output["classification"])


def test_only_adapters_ipt_and_projections_train(zero_shot: SimCLIPModel, images: torch.Tensor) -> None:
    model = copy.deepcopy(zero_shot).train()
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == set(model.learnable_state_dict())
    assert {"vision.proj", "text.text_projection"} <= trainable
    before = {name: value.clone() for name, value in model.state_dict().items()}
    features = model.encode_images(images)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    masks = torch.zeros(3, SIZE, SIZE)
    masks[1, 20:40, 20:40] = 1
    model.losses(features, torch.tensor([0, 1, 0]), masks)["loss"].backward()
    for name, parameter in model.named_parameters():
        if name in trainable:
            assert parameter.grad is not None, name
            assert parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name
    optimizer.step()
    after = model.state_dict()
    for name, value in before.items():
        changed = not torch.equal(value, after[name])
        assert changed == (name in trainable), name


def test_simclip_plus_follows_algorithm_1_on_every_layer(few_shot, images, shots) -> None:
    expected = plain_few_shot(few_shot, images, shots)
    with torch.no_grad():
        scores = make_scores(few_shot, images)
        output = few_shot(images)
    for layer in LAYERS:
        torch.testing.assert_close(scores[f"similarity_{layer}"], expected["similarity"][layer], atol=ATOL, rtol=0)
        torch.testing.assert_close(scores[f"revised_{layer}"], expected["revised"][layer], atol=ATOL, rtol=0)
    torch.testing.assert_close(scores["prior"], expected["prior_grid"], atol=ATOL, rtol=0)
    torch.testing.assert_close(scores["visual"], expected["visual_grid"], atol=ATOL, rtol=0)
    torch.testing.assert_close(scores["prior_map"], expected["prior_map"], atol=ATOL, rtol=0)
    torch.testing.assert_close(scores["visual_map"], expected["visual_map"], atol=ATOL, rtol=0)
    torch.testing.assert_close(output.anomaly_map, expected["map"], atol=ATOL, rtol=0)
    torch.testing.assert_close(output.pred_score, expected["pred_score"], atol=ATOL, rtol=0)
    assert float(output.anomaly_map.min()) >= 0
    assert float(output.anomaly_map.max()) <= 1
    # Each layer's own similarities weigh its pseudo-normal map, not the last layer's (the reference's overwrite).
    buggy = plain_few_shot(few_shot, images, shots, bug=True)
    assert (scores["prior"] - buggy["prior_grid"]).abs().max() > 1e-3
    similarities = torch.stack([expected["similarity"][layer] for layer in LAYERS])
    assert (similarities - similarities[-1]).abs().max() > 1e-3


def test_every_layers_memory_enters_the_prior(few_shot, images) -> None:
    model = copy.deepcopy(few_shot)
    with torch.no_grad():
        before = make_scores(model, images)
        other = model.encode_images(torch.randn(K_SHOT, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(9)))
        model.memories["6"].fill(other["patch_tokens_6"])  # only the first layer's gallery changes
        after = make_scores(model, images)
    assert (before["revised_6"] - after["revised_6"]).abs().max() > 1e-4
    assert (before["prior"] - after["prior"]).abs().max() > 1e-4
    for layer in LAYERS[1:]:
        torch.testing.assert_close(before[f"revised_{layer}"], after[f"revised_{layer}"])


def test_refined_image_prompt_option(zero_shot, images) -> None:
    model = copy.deepcopy(zero_shot)
    model.refined_image_prompt = True
    class_token, _ = plain_vision(model.vision, images)
    with torch.no_grad():
        expected = anomalous_probability(class_token, plain_text(model, CLASS_NAME)["layer"], SCALE)
        torch.testing.assert_close(model(images).pred_score, expected, atol=ATOL, rtol=0)


def test_unrevised_image_score_option(few_shot, images, shots) -> None:
    model = copy.deepcopy(few_shot)
    model.image_score_map = "unrevised"
    with torch.no_grad():
        output = model(images)
    torch.testing.assert_close(
        output.pred_score, plain_few_shot(few_shot, images, shots)["unrevised_score"], atol=ATOL, rtol=0
    )


@pytest.mark.parametrize("mode", ["zero_shot", "few_shot"])
def test_image_score_does_not_depend_on_the_rest_of_the_batch(mode, request, images) -> None:
    model = request.getfixturevalue(mode)
    outlier = images[1:2] * 10 + 3
    with torch.no_grad():
        alone = model(images[:1])
        batch = model(torch.cat([images[:1], outlier, images[2:]]))
    torch.testing.assert_close(batch.pred_score[:1], alone.pred_score, atol=1e-6, rtol=0)
    torch.testing.assert_close(batch.anomaly_map[:1], alone.anomaly_map, atol=1e-6, rtol=0)


def test_bad_inputs_give_clear_errors(zero_shot: SimCLIPModel, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="3-channel"):
        zero_shot(images[:, :1])
    with pytest.raises(ValueError, match="size"):
        zero_shot(torch.randn(1, 3, SIZE + 14, SIZE + 14))
    with pytest.raises(TypeError, match="floating-point"):
        zero_shot(torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8))
    with pytest.raises(ValueError, match="class name"):
        zero_shot.set_class("")
    with pytest.raises(ValueError, match="masks"):
        zero_shot.losses(zero_shot.encode_images(images), torch.tensor([0, 1, 1]), torch.zeros(2, SIZE, SIZE))
    with pytest.raises(ValueError, match="zero-shot"):
        zero_shot.set_references(images)
    with pytest.raises(ValueError, match="Layer 25"):
        make_model(feature_layers=(6, 25))
    with pytest.raises(ValueError, match="image_score_map"):
        make_model(image_score_map="max")


def test_not_ready_models_refuse_to_score(zero_shot: SimCLIPModel, few_shot, images) -> None:
    fresh = copy.deepcopy(zero_shot)
    fresh.class_name = None
    fresh.load_learnable_state_dict(zero_shot.learnable_state_dict())  # no class name: prototypes cleared
    with pytest.raises(ModelNotReadyError, match="text prototypes"):
        fresh(images)
    with pytest.raises(ModelNotReadyError, match="class name"):
        fresh.prompt_features()
    no_memory = copy.deepcopy(few_shot)
    no_memory.set_references(None)
    with pytest.raises(ModelNotReadyError, match="reference memory"):
        no_memory(images)
    with pytest.raises(ValueError, match="k_shot=2"):
        no_memory.set_references(images)
    with pytest.raises(ValueError, match="no reference images"):
        no_memory.set_references(images[:0])
    with pytest.raises(ValueError, match="memory is empty"):
        no_memory.memories["6"].nearest(torch.randn(1, 36, no_memory.vision.width))


def test_learned_weights_round_trip(zero_shot: SimCLIPModel, images: torch.Tensor) -> None:
    learned = zero_shot.learnable_state_dict()
    assert set(learned) == {
        "vision.proj",
        "text.text_projection",
        *(f"adapters.{layer}.{kind}" for layer in LAYERS for kind in ("weight", "bias")),
        "ipt.prompt_seed",
        *(
            f"ipt.{part}.{kind}"
            for part in ("token_weighting", "prompt_mlp.0", "prompt_mlp.2", "fusion")
            for kind in ("weight", "bias")
        ),
    }
    other = copy.deepcopy(zero_shot)
    with torch.no_grad():
        for parameter in other.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(3)))
        other.update_text_features()
        assert not torch.allclose(other(images).pred_score, zero_shot(images).pred_score)
        other.load_learnable_state_dict(learned)
        torch.testing.assert_close(other(images).anomaly_map, zero_shot(images).anomaly_map)
    with pytest.raises(ValueError, match="missing"):
        other.load_learnable_state_dict({k: v for k, v in learned.items() if k != "ipt.prompt_seed"})
    with pytest.raises(ValueError, match="shape"):
        other.load_learnable_state_dict(learned | {"ipt.prompt_seed": torch.zeros(1, 9)})


def test_checkpoint_restores_memory_and_prototypes(few_shot: SimCLIPModel, images: torch.Tensor) -> None:
    state = few_shot.state_dict()
    restored = copy.deepcopy(few_shot)
    restored.set_references(None)
    for prototypes in restored.text_prototypes.values():
        prototypes.features = prototypes.features[:0]
    restored.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(restored(images).pred_score, few_shot(images).pred_score)


def test_reference_weights_convert(zero_shot: SimCLIPModel) -> None:
    learned = zero_shot.learnable_state_dict()
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
        "visual.proj": learned["vision.proj"].half(),
        "text_projection": learned["text.text_projection"],
    }
    adapters = {
        f"fc.{i}.{kind}": learned[f"adapters.{layer}.{kind}"]
        for i, layer in enumerate(LAYERS)
        for kind in ("weight", "bias")
    }
    converted = convert_reference_weights({"clip": clip}, {"trainable_linearlayer": adapters})
    assert set(converted) == set(learned)
    for key, value in learned.items():
        torch.testing.assert_close(converted[key], value, atol=1e-2 if key == "vision.proj" else 0, rtol=1e-2)
    with pytest.raises(KeyError, match="layer_learner_1"):
        convert_reference_weights({k: v for k, v in clip.items() if k != "layer_learner_1"}, adapters)


def test_scores_have_no_nan_for_constant_images(few_shot: SimCLIPModel) -> None:
    with torch.no_grad():
        output = few_shot(torch.zeros(2, 3, SIZE, SIZE))
    assert np.isfinite(output.anomaly_map.numpy()).all()
    assert np.isfinite(output.pred_score.numpy()).all()
