# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""PromptAD: parity with the reference fixture, losses and scores against the paper's equations, training contract.

The fixture (``tests/fixtures/promptad_reference.pt``) holds numbers of the official PromptAD code on a randomly
initialised ``ViT-B-16-plus-240`` (see ``tests/fixtures/README.md``). Everything else uses the tiny random-init
backbone.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from scipy.ndimage import gaussian_filter

from anomalib_clipad.clip.loading import TINY_BACKBONE
from anomalib_clipad.components.losses import (
    explicit_anomaly_margin_loss,
    prompt_alignment_loss,
    prompt_contrastive_loss,
)
from anomalib_clipad.models.promptad import PromptAD, PromptADModel, resolve_anomaly_states

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "promptad_reference.pt"
REFERENCE_BACKBONE = "ViT-B-16-plus-240"
REFERENCE_STATE_SUM = 39545.718233
ATOL = 1e-5


# ------------------------------------------------------------------------------------------------ plain PyTorch
def plain_block_states(visual: torch.nn.Module, images: torch.Tensor) -> tuple[dict, dict]:
    """Original-path patch tokens after each block, and after each block's attention residual (before its MLP)."""
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
    hidden = visual.ln_pre(x)
    outputs, after_attention = {}, {}
    for layer, block in enumerate(visual.transformer.resblocks, start=1):
        normed = block.ln_1(hidden)
        hidden = hidden + block.attn(normed, normed, normed, need_weights=False)[0]
        after_attention[layer] = hidden[:, 1:]
        hidden = hidden + block.mlp(block.ln_2(hidden))
        outputs[layer] = hidden[:, 1:]
    return outputs, after_attention


def plain_vv_tokens(visual: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Projected last-layer tokens of the V-V stream (q = k = v in every block, no MLP), per the paper."""
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
    hidden = visual.ln_pre(x)
    stream = hidden
    for block in visual.transformer.resblocks:
        attention = block.attn
        width, heads = hidden.shape[-1], attention.num_heads
        values = F.linear(
            block.ln_1(hidden), attention.in_proj_weight[2 * width :], attention.in_proj_bias[2 * width :]
        )
        values = values.view(*values.shape[:2], heads, width // heads).transpose(1, 2)
        weights = (values @ values.transpose(-1, -2) / (width // heads) ** 0.5).softmax(dim=-1)
        attended = (weights @ values).transpose(1, 2).reshape(hidden.shape)
        stream = stream + attention.out_proj(attended)
        normed = block.ln_1(hidden)
        hidden = hidden + attention(normed, normed, normed, need_weights=False)[0]
        hidden = hidden + block.mlp(block.ln_2(hidden))
    return visual.ln_post(stream[:, 1:]) @ visual.proj


def association_map(query: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Eq. 8 by brute force: for each query token the minimum over reference tokens of (1 - cos) / 2."""
    refs = references.reshape(-1, references.shape[-1])
    out = torch.empty(query.shape[:2])
    for b in range(query.shape[0]):
        for n in range(query.shape[1]):
            cos = torch.stack([F.cosine_similarity(query[b, n], r, dim=0) for r in refs])
            out[b, n] = ((1 - cos) / 2).min()
    return out


def anomaly_probability(
    features: torch.Tensor, normal: torch.Tensor, anomaly: torch.Tensor, scale: float
) -> torch.Tensor:
    """Eq. 16 (anomalous side): exp(s<z, w_a>) / (exp(s<z, w_n>) + exp(s<z, w_a>))."""
    z = features / features.norm(dim=-1, keepdim=True)
    e_normal = torch.exp(scale * (z @ normal))
    e_anomaly = torch.exp(scale * (z @ anomaly))
    return e_anomaly / (e_normal + e_anomaly)


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def reference() -> dict:
    assert FIXTURE.is_file(), f"PromptAD reference fixture missing at {FIXTURE}"
    return torch.load(FIXTURE, weights_only=False)  # trusted test fixture (plain dict of tensors)


@pytest.fixture(scope="module")
def reference_setup(reference: dict) -> dict:
    """ViT-B-16-plus-240 with the fixture's random init and contexts, evaluated once."""
    torch.manual_seed(reference["clip_seed"])
    clip = open_clip.create_model(REFERENCE_BACKBONE, pretrained=None).eval()
    state_sum = sum(v.double().sum().item() for v in clip.state_dict().values() if v.is_floating_point())
    model = PromptADModel(REFERENCE_BACKBONE, clip, k_shot=1).eval()
    model.set_class(reference["class_name"])
    with torch.no_grad():
        for head, prefix in (("image", "cls"), ("pixel", "seg")):
            model.prompt_learners[head].normal_context.copy_(reference[f"{prefix}_normal_ctx"])
            model.prompt_learners[head].anomaly_context.copy_(reference[f"{prefix}_abnormal_ctx"])
        prompts = model.prompt_features()
        model.update_text_features(prompts)
        shot = model.encode_images(reference["ref_images"])
        model.set_references(shot)
        test = model.encode_images(reference["test_images"])
        losses = model.losses(shot, prompts)
        ref_outputs, ref_mid = plain_block_states(clip.visual, reference["ref_images"])
        test_outputs, test_mid = plain_block_states(clip.visual, reference["test_images"])
    return {
        "clip": clip,
        "model": model,
        "state_sum": state_sum,
        "prompts": prompts,
        "shot": shot,
        "test": test,
        "losses": losses,
        "ref_outputs": ref_outputs,
        "ref_mid": ref_mid,
        "test_outputs": test_outputs,
        "test_mid": test_mid,
    }


# ------------------------------------------------------------------------------------------------ fixture parity
class TestReferenceFixture:
    """Parity with the official PromptAD code on fixed random weights."""

    def test_random_init_matches_the_fixture(self, reference_setup: dict) -> None:
        assert reference_setup["state_sum"] == pytest.approx(REFERENCE_STATE_SUM, abs=1e-3)

    def test_prompt_counts(self, reference: dict, reference_setup: dict) -> None:
        prompts = reference_setup["prompts"]["image"]
        assert prompts["manual"].shape[0] == reference["n_manual_anomaly_prompts"]
        assert prompts["learned"].shape[0] == reference["n_learned_anomaly_prompts"]

    def test_text_features(self, reference: dict, reference_setup: dict) -> None:
        model = reference_setup["model"]
        torch.testing.assert_close(
            model.text_prototypes["image"].features, reference["cls_text_features"], atol=ATOL, rtol=0
        )
        torch.testing.assert_close(
            model.text_prototypes["pixel"].features, reference["seg_text_features"], atol=ATOL, rtol=0
        )

    def test_textual_scores(self, reference: dict, reference_setup: dict) -> None:
        scores = reference_setup["model"].scores(reference_setup["test"], (400, 400))
        torch.testing.assert_close(scores["textual_score"], reference["cls_textual_score"], atol=ATOL, rtol=0)
        torch.testing.assert_close(scores["textual_map"], reference["seg_textual_map_15"], atol=ATOL, rtol=0)

    def test_losses(self, reference: dict, reference_setup: dict) -> None:
        losses = reference_setup["losses"]
        for name in ("ce", "eam", "align"):
            torch.testing.assert_close(losses[f"image_{name}"], reference[f"cls_loss_{name}"], atol=ATOL, rtol=1e-6)
        torch.testing.assert_close(losses["image_loss"], reference["cls_loss_total"], atol=ATOL, rtol=1e-6)

    def test_visual_map_uses_block_outputs_3_and_8(self, reference_setup: dict) -> None:
        """Our memory taps are the outputs of blocks 3 and 8 (the paper's definition), checked by brute force."""
        ours = reference_setup["model"].visual_map(reference_setup["test"])
        expected = 0.5 * sum(
            association_map(reference_setup["test_outputs"][layer][:, :20], reference_setup["ref_outputs"][layer])
            for layer in (3, 8)
        )
        torch.testing.assert_close(ours.flatten(1)[:, :20], expected, atol=ATOL, rtol=0)

    def test_reference_map_is_taken_inside_blocks_4_and_9(self, reference: dict, reference_setup: dict) -> None:
        """The reference's forward hooks keep a view of block 3's (8's) output, which block 4 (9) then updates in
        place with its attention residual, so its "layer 3/8" memory is the state after the attention of block 4 (9).
        Fed those features, our association code reproduces the fixture; at the true block outputs it does not."""
        model = reference_setup["model"]
        mid_shot = {
            **reference_setup["shot"],
            "memory_3": reference_setup["ref_mid"][4],
            "memory_8": reference_setup["ref_mid"][9],
        }
        mid_test = {
            **reference_setup["test"],
            "memory_3": reference_setup["test_mid"][4],
            "memory_8": reference_setup["test_mid"][9],
        }
        saved = {layer: model.memories[str(layer)].features.clone() for layer in (3, 8)}
        try:
            model.set_references(mid_shot)
            scores = model.scores(mid_test, (400, 400))
        finally:
            for layer, memory in saved.items():
                model.memories[str(layer)].features = memory
        torch.testing.assert_close(scores["visual_map"], reference["visual_map_15"], atol=ATOL, rtol=0)
        torch.testing.assert_close(scores["fused_map"], reference["seg_fused_map_15"], atol=ATOL, rtol=0)
        torch.testing.assert_close(scores["anomaly_map"], reference["seg_map_400"], atol=ATOL, rtol=0)
        torch.testing.assert_close(scores["pred_score"], reference["image_score"], atol=ATOL, rtol=0)
        block_output_map = model.visual_map(reference_setup["test"])
        assert (block_output_map - reference["visual_map_15"]).abs().max() > 1e-3

    def test_reference_memory_tap_reproduces_the_fixture(self, reference: dict, reference_setup: dict) -> None:
        """``memory_tap="reference"`` reads the memories where the reference does: every output matches the fixture."""
        model = PromptADModel(REFERENCE_BACKBONE, reference_setup["clip"], k_shot=1, memory_tap="reference").eval()
        model.load_state_dict(reference_setup["model"].state_dict())  # trained contexts and text prototypes
        with torch.no_grad():
            model.set_references(model.encode_images(reference["ref_images"]))
            scores = model.scores(model.encode_images(reference["test_images"]), (400, 400))
        torch.testing.assert_close(scores["visual_map"], reference["visual_map_15"], atol=ATOL, rtol=0)
        torch.testing.assert_close(scores["anomaly_map"], reference["seg_map_400"], atol=ATOL, rtol=0)
        torch.testing.assert_close(scores["pred_score"], reference["image_score"], atol=ATOL, rtol=0)

    def test_memory_tap_is_validated(self, reference_setup: dict) -> None:
        clip = reference_setup["clip"]
        with pytest.raises(ValueError, match="memory_tap must be one of"):
            PromptADModel(REFERENCE_BACKBONE, clip, memory_tap="hooks")
        with pytest.raises(ValueError, match="memory_layers must be below 12"):
            PromptADModel(REFERENCE_BACKBONE, clip, memory_layers=(3, 12), memory_tap="reference")

    def test_checkpoint_of_another_backbone_is_refused(self, reference_setup: dict, tiny_model: PromptADModel) -> None:
        with pytest.raises(ValueError, match="another backbone"):
            reference_setup["model"].load_state_dict(tiny_model.state_dict())


# ---------------------------------------------------------------------------------------- losses (paper equations)
class TestLosses:
    """Each loss term against a direct transcription of the paper's equation."""

    @pytest.fixture
    def features(self) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        return {
            "z": torch.randn(5, 16, generator=generator),
            "normal": torch.randn(3, 16, generator=generator),
            "manual": torch.randn(6, 16, generator=generator),
            "learned": torch.randn(4, 16, generator=generator),
        }

    def test_contrastive_loss_eq12(self, features: dict) -> None:
        tau = 1 / 4.6
        z = [v / v.norm() for v in features["z"]]
        w_n = features["normal"].mean(0)
        w_n = w_n / w_n.norm()
        anomalies = [w / w.norm() for w in torch.cat([features["manual"], features["learned"]])]
        expected = 0.0
        for zi in z:
            numerator = torch.exp(torch.dot(zi, w_n) / tau)
            denominator = numerator + sum(torch.exp(torch.dot(zi, w) / tau) for w in anomalies)
            expected += -torch.log(numerator / denominator) / len(z)
        anomaly = torch.cat([features["manual"], features["learned"]])
        actual = prompt_contrastive_loss(features["z"], features["normal"], anomaly, 1 / tau)
        torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-6)

    @pytest.mark.parametrize("margin", [0.0, 0.5])
    def test_explicit_anomaly_margin_eq13(self, features: dict, margin: float) -> None:
        anomaly = torch.cat([features["manual"], features["learned"]])
        w_n = features["normal"].sum(0) / 3
        w_a = anomaly.sum(0) / anomaly.shape[0]  # eq. 14
        expected = 0.0
        for zi in features["z"]:
            z_hat = zi / zi.norm()
            d_n = torch.dist(z_hat, w_n / w_n.norm()) ** 2
            d_a = torch.dist(z_hat, w_a / w_a.norm()) ** 2
            expected += max(torch.tensor(0.0), d_n - d_a + margin) / features["z"].shape[0]
        actual = explicit_anomaly_margin_loss(features["z"], features["normal"], anomaly, margin)
        torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-6)

    def test_eam_is_zero_when_closer_to_the_normal_prototype(self) -> None:
        z = torch.tensor([[1.0, 0.0]])
        loss = explicit_anomaly_margin_loss(z, torch.tensor([[1.0, 0.1]]), torch.tensor([[0.0, 1.0]]))
        assert loss == 0
        loss = explicit_anomaly_margin_loss(z, torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.1]]))
        assert loss > 0

    def test_alignment_eq15(self, features: dict) -> None:
        manual = torch.stack([w / w.norm() for w in features["manual"]]).mean(0)
        learned = torch.stack([w / w.norm() for w in features["learned"]]).mean(0)
        printed = 0.001 * torch.sum((manual / manual.norm() - learned / learned.norm()) ** 2)
        reference_form = 0.001 * torch.sum((manual - learned) ** 2)
        torch.testing.assert_close(
            prompt_alignment_loss(features["manual"], features["learned"], 0.001, normalize_means=True),
            printed,
        )
        torch.testing.assert_close(
            prompt_alignment_loss(features["manual"], features["learned"], 0.001), reference_form
        )

    def test_dimension_mismatch_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="dimension"):
            prompt_contrastive_loss(torch.randn(2, 8), torch.randn(1, 4), torch.randn(3, 4), 1.0)


# ------------------------------------------------------------------------------------------- tiny-backbone model
@pytest.fixture(scope="module")
def tiny_model(tiny_clip16: torch.nn.Module) -> PromptADModel:
    model = PromptADModel(TINY_BACKBONE, tiny_clip16, k_shot=2, seed=0).eval()
    model.set_class("bottle")
    generator = torch.Generator().manual_seed(1)
    model.update_text_features()
    model.set_references(model.encode_images(torch.randn(2, 3, 240, 240, generator=generator)))
    return model


class TestPromptADModel:
    """Scores against an independent plain-PyTorch computation; prompts; trainable parameters; bad input."""

    def test_scores_match_the_paper(self, tiny_clip16: torch.nn.Module) -> None:
        model = PromptADModel(TINY_BACKBONE, tiny_clip16, k_shot=2, seed=0).eval()
        model.set_class("bottle")
        generator = torch.Generator().manual_seed(2)
        shots, images = (
            torch.randn(2, 3, 240, 240, generator=generator),
            torch.randn(2, 3, 240, 240, generator=generator),
        )
        with torch.no_grad():
            model.update_text_features()
            model.set_references(model.encode_images(shots))
            scores = model.scores(model.encode_images(images))
            visual = tiny_clip16.visual
            scale = float(tiny_clip16.logit_scale)  # raw, not exponentiated (reference code)
            class_token = tiny_clip16.encode_image(images)
            shot_outputs, _ = plain_block_states(visual, shots)
            image_outputs, _ = plain_block_states(visual, images)
            vv = plain_vv_tokens(visual, images)
        text_image, text_pixel = model.text_prototypes["image"].features, model.text_prototypes["pixel"].features
        s_t = anomaly_probability(class_token, text_image[0], text_image[1], scale)
        m_t = anomaly_probability(vv, text_pixel[0], text_pixel[1], scale).reshape(2, 1, 15, 15)
        m_v = 0.5 * (
            association_map(image_outputs[3], shot_outputs[3]) + association_map(image_outputs[8], shot_outputs[8])
        )
        m_v = m_v.reshape(2, 1, 15, 15)
        fused = 1.0 / (1.0 / m_v + 1.0 / m_t)  # eq. 17
        upsampled = F.interpolate(fused, size=(240, 240), mode="bilinear", align_corners=False)[:, 0].numpy()
        smoothed = np.stack([gaussian_filter(m, sigma=4 * 240 / 400) for m in upsampled])
        max_m_v = F.interpolate(m_v, size=(240, 240), mode="bilinear", align_corners=False).flatten(1).max(1).values
        image_score = 1.0 / (1.0 / max_m_v + 1.0 / s_t)  # eq. 18
        torch.testing.assert_close(scores["textual_score"], s_t, atol=ATOL, rtol=0)
        torch.testing.assert_close(scores["textual_map"], m_t, atol=ATOL, rtol=0)
        torch.testing.assert_close(scores["visual_map"], m_v, atol=ATOL, rtol=0)
        torch.testing.assert_close(scores["fused_map"], fused, atol=ATOL, rtol=0)
        torch.testing.assert_close(scores["anomaly_map"], torch.from_numpy(smoothed), atol=ATOL, rtol=0)
        torch.testing.assert_close(scores["pred_score"], image_score, atol=ATOL, rtol=0)
        batch = model(images)
        assert batch.pred_score.shape == (2,)
        assert batch.anomaly_map.shape == (2, 240, 240)
        assert ((batch.pred_score >= 0) & (batch.pred_score <= 1)).all()

    def test_contexts_splice_like_words(self, tiny_clip16: torch.nn.Module) -> None:
        """With contexts set to real word embeddings, every prompt equals the plain CLIP encoding of the sentence."""
        model = PromptADModel(TINY_BACKBONE, tiny_clip16, n_normal_prompts_image=1, n_learned_anomaly_prompts=1)
        model.set_class("bottle", anomaly_states=["{} with crack"])
        tokenizer = open_clip.get_tokenizer(TINY_BACKBONE)
        words = tiny_clip16.token_embedding(tokenizer(["a photo of the damaged"]))[0, 1:6]
        with torch.no_grad():
            for learner in model.prompt_learners.values():
                learner.normal_context.copy_(words[:4].unsqueeze(0))
                learner.anomaly_context.copy_(words[4:5].unsqueeze(0))
            prompts = model.prompt_features()["image"]
            expected = tiny_clip16.encode_text(
                tokenizer(
                    ["a photo of the bottle.", "a photo of the bottle with crack.", "a photo of the damaged bottle."]
                ),
            )
        torch.testing.assert_close(prompts["normal"][0], expected[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(prompts["manual"][-1], expected[1], atol=ATOL, rtol=0)
        torch.testing.assert_close(prompts["learned"][0], expected[2], atol=ATOL, rtol=0)

    def test_prompt_layout(self, tiny_model: PromptADModel) -> None:
        learner = tiny_model.prompt_learners["image"]
        assert learner.prompts["learned"][0] == "X X X X X bottle."  # anomaly token before the class name
        assert len(learner.prompts["normal"]) == 3
        assert len(learner.prompts["manual"]) == 3 * 11  # 8 generic + 3 bottle states
        assert len(learner.prompts["learned"]) == 3 * 4
        assert len(tiny_model.prompt_learners["pixel"].prompts["normal"]) == 1
        contexts = learner.contexts(11)["learned"]
        pairs = {
            (
                int(torch.where((learner.normal_context == c[:4]).all(-1).all(-1))[0]),
                int(torch.where((learner.anomaly_context == c[4:]).all(-1).all(-1))[0]),
            )
            for c in contexts
        }
        assert pairs == {(i, j) for i in range(3) for j in range(4)}

    def test_only_prompt_contexts_are_trainable(self, tiny_model: PromptADModel) -> None:
        trainable = {name: tuple(p.shape) for name, p in tiny_model.named_parameters() if p.requires_grad}
        width = tiny_model.text.width
        assert trainable == {
            "prompt_learners.image.normal_context": (3, 4, width),
            "prompt_learners.image.anomaly_context": (4, 1, width),
            "prompt_learners.pixel.normal_context": (1, 4, width),
            "prompt_learners.pixel.anomaly_context": (4, 1, width),
        }

    def test_losses_backpropagate_to_both_heads_only(self, tiny_model: PromptADModel) -> None:
        features = tiny_model.encode_images(torch.randn(1, 3, 240, 240))
        tiny_model.zero_grad()
        tiny_model.losses(features)["loss"].backward()
        for name, parameter in tiny_model.named_parameters():
            if parameter.requires_grad:
                assert parameter.grad is not None, name
                assert parameter.grad.abs().sum() > 0, name
            else:
                assert parameter.grad is None, name
        tiny_model.zero_grad()

    def test_anomaly_states(self, caplog: pytest.LogCaptureFixture) -> None:
        assert resolve_anomaly_states("bottle")[-3:] == [
            "{} with large breakage",
            "{} with small breakage",
            "{} with contamination",
        ]
        assert resolve_anomaly_states("bottle", ["{} with scratch"])[-1] == "{} with scratch"
        with caplog.at_level(logging.WARNING):
            states = resolve_anomaly_states("my_widget")
        assert len(states) == 8
        assert "no class-specific anomalous states" in caplog.text
        with pytest.raises(ValueError, match="placeholder"):
            resolve_anomaly_states("bottle", ["scratched"])

    def test_bad_input(self, tiny_model: PromptADModel, tiny_clip16: torch.nn.Module) -> None:
        with pytest.raises(ValueError, match="3-channel"):
            tiny_model(torch.rand(1, 1, 240, 240))
        with pytest.raises(ValueError, match="size"):
            tiny_model(torch.rand(1, 3, 224, 224))
        with pytest.raises(ValueError, match="class name"):
            tiny_model.set_class("")
        untrained = PromptADModel(TINY_BACKBONE, tiny_clip16).eval()
        with pytest.raises(RuntimeError, match="train it"):
            untrained(torch.rand(1, 3, 240, 240))
        with pytest.raises(RuntimeError, match="set_class"):
            untrained.prompt_features()
        with pytest.raises(ValueError, match="k_shot"):
            untrained.set_references(tiny_model.encode_images(torch.rand(3, 3, 240, 240)))


# -------------------------------------------------------------------------------------------- anomalib training
class TestTraining:
    """The few-shot training contract through anomalib's Engine (tiny backbone, synthetic images)."""

    def test_trains_on_k_cached_shots(self, bottle_root: Path, tmp_path: Path) -> None:
        from anomalib.data import MVTecAD
        from anomalib.engine import Engine

        model = PromptAD(k_shot=2, seed=3, backbone=TINY_BACKBONE, pretrained=None, epochs=3)
        encoded: list[int] = []
        original = model.model.vision.forward

        def counting(images: torch.Tensor, *args, **kwargs):
            encoded.append(images.shape[0])
            return original(images, *args, **kwargs)

        model.model.vision.forward = counting
        before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        # anomalib's default of 8 loader workers: the k-shot train loader must not re-spawn them every epoch
        datamodule = MVTecAD(root=bottle_root, category="bottle", train_batch_size=1, eval_batch_size=8)
        engine = Engine(default_root_dir=tmp_path, accelerator="cpu", logger=False, limit_val_batches=0)
        engine.fit(model, datamodule=datamodule)
        loader = engine.trainer.train_dataloader  # the loader the fit read: all shots in one batch, no workers
        assert (loader.num_workers, loader.batch_size, len(loader.dataset)) == (0, 2, 2)
        # the user's datamodule is unchanged: its train split, batch size and loader are its own
        assert len(datamodule.train_data) == 5
        assert datamodule.train_batch_size == 1
        assert datamodule.train_dataloader().batch_size == 1

        assert sum(encoded) == 2  # the frozen encoder saw each of the 2 shots exactly once over 3 epochs
        assert engine.trainer.current_epoch == 3
        assert engine.trainer.global_step == 3  # all shots in one batch: one step per epoch
        assert len(set(model.reference_paths)) == 2
        assert all("train/good" in path for path in model.reference_paths)
        assert "train_image_ce" in engine.trainer.callback_metrics
        changed = [name for name, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[name])]
        assert len(changed) == 4
        assert model.model.is_ready  # vision memories and both heads' text prototypes
        scheduler = engine.trainer.lr_scheduler_configs[0].scheduler
        assert scheduler.T_max == 3
        assert scheduler.eta_min == pytest.approx(1e-5)

        # text prototypes reflect the trained contexts, and the checkpoint carries them and the shot paths
        stored = model.model.text_prototypes["image"].features.clone()
        model.model.update_text_features()
        torch.testing.assert_close(model.model.text_prototypes["image"].features, stored)
        checkpoint_path = tmp_path / "promptad.ckpt"
        engine.trainer.save_checkpoint(checkpoint_path)
        checkpoint = torch.load(checkpoint_path, weights_only=False)
        assert checkpoint["clipad_reference_paths"] == model.reference_paths
        reloaded = PromptAD.load_from_checkpoint(checkpoint_path).eval()
        # the CLIP was rebuilt as architecture only: every weight came from the checkpoint (strict load)
        assert reloaded.hparams.pretrained == "checkpoint"
        assert reloaded.hparams.quick_gelu is False
        images = torch.randn(2, 3, 240, 240)
        with torch.no_grad():
            expected, actual = model.model.eval()(images), reloaded.model(images)
        torch.testing.assert_close(actual.pred_score, expected.pred_score)
        torch.testing.assert_close(actual.anomaly_map, expected.anomaly_map)
        assert reloaded.reference_paths == model.reference_paths

        # the same seed picks the same shots; too many shots is a clear error
        fresh = MVTecAD(root=bottle_root, category="bottle", num_workers=0)
        fresh.setup("fit")
        assert len(fresh.train_data) == 5
        fake_trainer = SimpleNamespace(datamodule=fresh, max_epochs=1, check_val_every_n_epoch=1)
        again = PromptAD(k_shot=2, seed=3, backbone=TINY_BACKBONE, pretrained=None)
        assert again.recipe.choose_shots(fake_trainer) == model.reference_paths
        assert len(fresh.train_data) == 5  # choosing the shots derives a subset; the dataset stays whole
        too_many = PromptAD(k_shot=50, backbone=TINY_BACKBONE, pretrained=None)
        with pytest.raises(ValueError, match="k_shot=50"):
            too_many.recipe.choose_shots(fake_trainer)

    def test_lightning_errors(self) -> None:
        model = PromptAD(backbone=TINY_BACKBONE, pretrained=None)
        model._trainer = SimpleNamespace(datamodule=SimpleNamespace(category=None))
        with pytest.raises(ValueError, match="class name"):
            model.setup("fit")
        with pytest.raises(ValueError, match="backbone"):
            model.on_load_checkpoint({"hyper_parameters": {"backbone": REFERENCE_BACKBONE}})
        with pytest.raises(ValueError, match="backbone"):  # the CLI builds no CLIP before it is used
            PromptAD(backbone="ViT-Nope-1", pretrained=None).configure_model()
        with pytest.raises(ValueError, match="memory_tap='reference'"):
            model.on_load_checkpoint({"hyper_parameters": {"memory_tap": "reference"}})
        with pytest.raises(ValueError, match="k_shot=0"):
            PromptAD(k_shot=0, backbone=TINY_BACKBONE, pretrained=None)
        with pytest.raises(ValueError, match="epochs"):
            PromptAD(epochs=0, backbone=TINY_BACKBONE, pretrained=None)
        with pytest.raises(ValueError, match="memory_tap"):
            PromptAD(memory_tap="inside", backbone=TINY_BACKBONE, pretrained=None)
        reference_tap = PromptAD(memory_tap="reference", memory_layers=(3, 7), backbone=TINY_BACKBONE, pretrained=None)
        assert reference_tap.model.memory_tap == "reference"
        assert reference_tap.hparams.memory_tap == "reference"
        with pytest.raises(ValueError, match="placeholder"):
            PromptAD(backbone=TINY_BACKBONE, pretrained=None, class_name="bottle", anomaly_states=["cracked"])
        assert model.learning_type.value == "one_class"
        assert type(model.configure_post_processor()).__name__ == "PostProcessor"
