# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""DevPrompt: deviation loss with Top-K MIL, prompt learner, anomalous bags, scores and the lightning surface.

Every equation is checked against an independent plain-PyTorch computation written from the paper
(Poudineh & Lalonde, eq. 3-8), on fixed random weights of the tiny CLIP.
"""

from __future__ import annotations

import math

import pytest
import torch

from anomalib_clipad.clip.loading import TINY_BACKBONE, load_clip
from anomalib_clipad.models.devprompt.loss import (
    DeviationLoss,
    deviation_loss,
    deviation_to_probability,
    patch_deviation,
    sample_reference_scores,
    top_k_bag_deviation,
    top_k_count,
)


def paper_deviation_loss(scores, labels, reference, ratio=0.1, margin=5.0, weight=1.0):
    """Eq. 5-8 with loops and sorting, independent of the implementation."""
    mean = sum(reference.tolist()) / len(reference)
    std = math.sqrt(sum((r - mean) ** 2 for r in reference.tolist()) / (len(reference) - 1))
    total = 0.0
    for image_scores, label in zip(scores.tolist(), labels.tolist(), strict=True):
        deviations = sorted((abs(s - mean) / std for s in image_scores), reverse=True)
        k = max(1, math.floor(ratio * len(image_scores)))
        bag = sum(deviations[:k]) / k
        total += weight * (1 - label) * abs(bag) + label * max(0.0, margin - bag)
    return total / len(labels)


class TestDeviationLoss:
    """Paper eq. 4-8."""

    def test_matches_paper_equations(self) -> None:
        scores = torch.randn(6, 225, generator=torch.Generator().manual_seed(0)) * 3
        labels = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
        loss = DeviationLoss()(scores, labels, generator=torch.Generator().manual_seed(7))
        reference = torch.randn(5000, generator=torch.Generator().manual_seed(7))
        expected = paper_deviation_loss(scores, labels, reference)
        assert loss.item() == pytest.approx(expected, rel=1e-5)

    @pytest.mark.parametrize(("margin", "weight", "ratio"), [(5.0, 1.0, 0.1), (3.0, 0.01, 0.2), (1.0, 0.1, 0.3)])
    def test_hyper_parameters_reach_the_equations(self, margin: float, weight: float, ratio: float) -> None:
        scores = torch.randn(4, 100, generator=torch.Generator().manual_seed(1)) * 2
        labels = torch.tensor([0.0, 1.0, 1.0, 0.0])
        criterion = DeviationLoss(margin=margin, normal_weight=weight, top_k_ratio=ratio)
        loss = criterion(scores, labels, generator=torch.Generator().manual_seed(3))
        reference = torch.randn(5000, generator=torch.Generator().manual_seed(3))
        assert loss.item() == pytest.approx(
            paper_deviation_loss(scores, labels, reference, ratio, margin, weight), rel=1e-5
        )

    def test_normal_term_is_lambda_times_bag_deviation(self) -> None:
        bag = torch.tensor([0.5, 2.0])
        assert deviation_loss(bag, torch.zeros(2), normal_weight=0.1).item() == pytest.approx(0.1 * 1.25)

    def test_anomalous_term_is_a_hinge_at_the_margin(self) -> None:
        bag = torch.tensor([1.0, 4.0, 5.0, 9.0])
        per_bag = [4.0, 1.0, 0.0, 0.0]
        assert deviation_loss(bag, torch.ones(4), margin=5.0).item() == pytest.approx(sum(per_bag) / 4)

    def test_top_k_is_ten_percent_of_patches(self) -> None:
        assert top_k_count(225) == 22  # the 15x15 grid of a 240 px ViT-B/16
        assert top_k_count(256) == 25
        assert top_k_count(5) == 1  # never empty
        deviations = torch.arange(100.0).flip(0).unsqueeze(0)  # 99 .. 0
        assert top_k_bag_deviation(deviations).item() == pytest.approx(sum(range(90, 100)) / 10)

    def test_only_top_k_patches_receive_gradient(self) -> None:
        scores = torch.randn(1, 50, generator=torch.Generator().manual_seed(2)).requires_grad_()
        DeviationLoss(top_k_ratio=0.1)(scores, torch.ones(1)).backward()
        assert int((scores.grad != 0).sum()) == 5

    def test_patch_deviation_is_absolute_z_score(self) -> None:
        scores = torch.tensor([-2.0, 0.5, 3.0])
        assert patch_deviation(scores, 0.5, 2.0).tolist() == pytest.approx([1.25, 0.0, 1.25])

    def test_reference_scores_follow_a_standard_normal_and_are_fresh(self) -> None:
        criterion = DeviationLoss()
        like = torch.zeros(1)
        first = criterion.reference_statistics(like)
        second = criterion.reference_statistics(like)
        reference = sample_reference_scores()
        assert reference.shape == (5000,)
        for mean, std in (first, second):
            assert abs(mean.item()) < 4 / math.sqrt(5000)  # 4 standard errors
            assert abs(std.item() - 1.0) < 0.05
        assert first[0].item() != second[0].item()  # drawn afresh at every step

    def test_probability_is_the_two_sided_gaussian_confidence(self) -> None:
        deviation = torch.tensor([0.0, 1.0, 1.96, 5.0, 50.0])
        normal = torch.distributions.Normal(0.0, 1.0)
        expected = 2 * normal.cdf(deviation) - 1
        probability = deviation_to_probability(deviation)
        assert torch.allclose(probability, expected, atol=1e-6)
        assert probability.min() >= 0
        assert probability.max() <= 1

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"top_k_ratio": 0.0}, "Top-K ratio"),
            ({"top_k_ratio": 10.0}, "Top-K ratio"),
            ({"margin": -1.0}, "margin"),
            ({"normal_weight": -1.0}, "lambda"),
            ({"n_reference_samples": 1}, "at least 2 reference"),
            ({"prior_std": 0.0}, "standard deviation"),
        ],
    )
    def test_bad_hyper_parameters(self, kwargs: dict, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            DeviationLoss(**kwargs)

    def test_bad_inputs(self) -> None:
        criterion = DeviationLoss()
        with pytest.raises(ValueError, match="labels must be 0"):
            criterion(torch.randn(2, 10), torch.tensor([0.0, 2.0]))
        with pytest.raises(ValueError, match="shape"):
            criterion(torch.randn(2, 10), torch.zeros(3))
        with pytest.raises(ValueError, match=r"\(batch, patches\)"):
            criterion(torch.randn(10), torch.zeros(1))


# ---------------------------------------------------------------------------------------------------------------------
# Torch model on the tiny random-init CLIP
# ---------------------------------------------------------------------------------------------------------------------
def normalised_images(n: int, seed: int) -> torch.Tensor:
    """Random [0, 1] RGB images normalised with CLIP's mean and std, as the pre-processor delivers them."""
    from anomalib_clipad.models.common import CLIP_MEAN, CLIP_STD

    pixels = torch.rand(n, 3, 240, 240, generator=torch.Generator().manual_seed(seed))
    return (pixels - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)


@pytest.fixture(scope="module")
def shots() -> torch.Tensor:
    return normalised_images(2, seed=11)


@pytest.fixture(scope="module")
def model(shots: torch.Tensor, tiny_clip16: torch.nn.Module):
    from anomalib_clipad.models.devprompt.torch_model import DevPromptModel

    devprompt = DevPromptModel(TINY_BACKBONE, tiny_clip16, n_synthetic_per_shot=2, seed=3)
    devprompt.training_features = devprompt.setup("bottle", shots)
    devprompt.calls_after_setup = devprompt.image_encoder_calls
    with torch.no_grad():  # a non-trivial context, as after some training
        devprompt.prompt_learner.context.normal_(0, 0.5)
    devprompt.update_text_features()
    return devprompt.eval()


def paper_text_features(devprompt, class_name: str) -> torch.Tensor:
    """e_n, e_a = g([C; suffix]) through the open_clip modules directly (eq. 1-2), L2-normalised."""
    import open_clip

    text = devprompt.text
    tokens = open_clip.get_tokenizer(TINY_BACKBONE)(
        [f"X X X X normal {class_name}.", f"X X X X defective {class_name}."]
    )
    embedded = text.token_embedding(tokens).clone()
    embedded[:, 1:5] = devprompt.prompt_learner.context
    hidden = embedded + text.positional_embedding
    for block in text.blocks:
        hidden = block(hidden, attn_mask=text.attn_mask)
    hidden = text.ln_final(hidden)
    pooled = hidden[torch.arange(2), tokens.argmax(dim=-1)] @ text.text_projection
    return pooled / pooled.norm(dim=-1, keepdim=True)


def paper_vision_memory_score(devprompt, shots: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """M_v = mean over blocks 3 and 8 of min_r (1 - cos) / 2 (PromptAD eq. 8), with explicit loops."""
    references = devprompt.vision(shots, patch_layers=(3, 8))
    queries = devprompt.vision(images, patch_layers=(3, 8))
    maps = []
    for layer in (3, 8):
        memory = references.patch_tokens[layer].reshape(-1, references.patch_tokens[layer].shape[-1])
        memory = memory / memory.norm(dim=-1, keepdim=True)
        query = queries.patch_tokens[layer] / queries.patch_tokens[layer].norm(dim=-1, keepdim=True)
        cosine = torch.einsum("bpc,mc->bpm", query, memory)
        maps.append(((1 - cosine) / 2).min(dim=-1).values)
    return (maps[0] + maps[1]) / 2


class TestDevPromptModel:
    """Equations of the model on fixed random weights against independent computations."""

    def test_text_features_follow_the_shared_context_prompts(self, model) -> None:
        expected = paper_text_features(model, "bottle")
        assert torch.allclose(model.prompt_features(), expected, atol=1e-5)
        assert torch.allclose(model.text_features, expected, atol=1e-5)
        assert model.prompt_learner.prompts("metal nut") == [
            "X X X X normal metal nut.",
            "X X X X defective metal nut.",
        ]

    def test_training_loss_matches_paper(self, model, shots: torch.Tensor) -> None:
        from anomalib_clipad.models.devprompt.torch_model import synthesize_anomalies

        step = 3
        torch.manual_seed(42)
        loss = model.training_loss(model.training_features, step)
        torch.manual_seed(42)
        reference = torch.randn(5000)

        anomalous, _ = synthesize_anomalies(shots, 2, seed=3)
        bags = torch.cat([shots, anomalous[:, step % 2]])  # every shot and its anomaly number (step mod n)
        tokens = model.vision(bags, vv_start_layer=1, vv_layers=(8,)).vv_tokens[8]
        patches = model.vision.ln_post(tokens) @ model.vision.proj
        patches = patches / patches.norm(dim=-1, keepdim=True)
        scores = patches @ paper_text_features(model, "bottle")[1]  # s(p) = s_a(p), eq. 3
        labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
        assert loss.item() == pytest.approx(paper_deviation_loss(scores, labels, reference), rel=1e-4)

    def test_scores_match_paper(self, model, shots: torch.Tensor) -> None:
        from scipy.ndimage import gaussian_filter

        images = normalised_images(3, seed=5)
        images[0] = shots[0]
        with torch.no_grad():
            output = model(images)
            vision = paper_vision_memory_score(model, shots, images)
            tokens = model.vision(images, vv_start_layer=1, vv_layers=(8,)).vv_tokens[8]
            patches = model.vision.ln_post(tokens) @ model.vision.proj
            cosine = (patches / patches.norm(dim=-1, keepdim=True)) @ paper_text_features(model, "bottle")[1]
        deviation = cosine.abs()  # |s(p) - 0| / 1 under the N(0, 1) prior
        bag = deviation.sort(dim=1, descending=True).values[:, :22].mean(dim=1)  # K = 10 % of 225
        normal = torch.distributions.Normal(0.0, 1.0)
        pixel_probability = 2 * normal.cdf(deviation) - 1
        image_probability = 2 * normal.cdf(bag) - 1
        upsampled_vision = torch.nn.functional.interpolate(
            vision.reshape(3, 1, 15, 15), size=(240, 240), mode="bilinear", align_corners=False
        )
        expected_score = 1 / (1 / upsampled_vision.flatten(1).max(dim=1).values + 1 / image_probability)
        assert torch.allclose(output.pred_score, expected_score, atol=1e-5)
        assert vision[0].max() < 1e-5  # a shot is its own nearest reference

        grid = (1 / (1 / vision + 1 / pixel_probability)).reshape(3, 1, 15, 15)
        upsampled = torch.nn.functional.interpolate(grid, size=(240, 240), mode="bilinear", align_corners=False)
        expected_map = torch.stack(
            [torch.from_numpy(gaussian_filter(image_map.numpy(), sigma=4 * 240 / 400)) for image_map in upsampled[:, 0]]
        )
        assert output.anomaly_map.shape == (3, 240, 240)
        assert torch.allclose(output.anomaly_map, expected_map.float(), atol=1e-5)
        assert output.pred_score.min() >= 0
        assert output.pred_score.max() <= 1

    def test_only_the_context_is_trainable(self, model) -> None:
        trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
        assert trainable == ["prompt_learner.context"]
        model.train()
        try:
            model.training_loss(model.training_features, 0).backward()
        finally:
            model.eval()
        with_grad = [name for name, parameter in model.named_parameters() if parameter.grad is not None]
        assert with_grad == ["prompt_learner.context"]
        assert model.prompt_learner.context.grad.abs().sum() > 0
        model.prompt_learner.context.grad = None

    def test_training_reuses_cached_features(self, model) -> None:
        assert model.calls_after_setup == 2  # setup: one batch of shots, one batch of synthesised anomalies
        calls = model.image_encoder_calls
        for step in range(4):
            model.training_loss(model.training_features, step)
        assert model.image_encoder_calls == calls

    def test_state_dict_round_trip(self, model) -> None:
        from anomalib_clipad.models.devprompt.torch_model import DevPromptModel

        images = torch.randn(2, 3, 240, 240, generator=torch.Generator().manual_seed(9))
        restored = DevPromptModel(TINY_BACKBONE, load_clip(TINY_BACKBONE, None), n_synthetic_per_shot=2)
        restored.load_state_dict(model.state_dict())
        restored.eval()
        with torch.no_grad():
            expected, actual = model(images), restored(images)
        assert torch.allclose(expected.pred_score, actual.pred_score)
        assert torch.allclose(expected.anomaly_map, actual.anomaly_map)
        assert sorted(key for key in model.state_dict() if not key.startswith(("vision.", "text."))) == [
            "memories.3.features",
            "memories.8.features",
            "prompt_learner.context",
            "prompt_learner.tokens",
            "text_prototypes.features",
        ]  # the training features stay out of checkpoints

    def test_bad_input(self, model) -> None:
        from anomalib_clipad.models.devprompt.torch_model import DevPromptModel, SharedContextPromptLearner

        with pytest.raises(ValueError, match="3-channel"):
            model(torch.randn(1, 1, 240, 240))
        with pytest.raises(ValueError, match="size"):
            model(torch.randn(1, 3, 224, 224))
        with pytest.raises(ValueError, match="placeholder"):
            SharedContextPromptLearner(64, normal_suffix="normal")
        clip = load_clip(TINY_BACKBONE, None)
        with pytest.raises(ValueError, match=r"blocks 1\.\.8"):
            DevPromptModel(TINY_BACKBONE, clip, memory_layers=(3, 12))
        with pytest.raises(ValueError, match="multiple of the patch size"):
            DevPromptModel(TINY_BACKBONE, clip, image_size=250)
        fresh = DevPromptModel(TINY_BACKBONE, clip)
        with pytest.raises(RuntimeError, match="train it"):
            fresh(torch.randn(1, 3, 240, 240))
        with pytest.raises(ValueError, match="class name"):
            fresh.setup(" ", torch.randn(1, 3, 240, 240))
        other = DevPromptModel(TINY_BACKBONE, load_clip(TINY_BACKBONE, None, image_size=256), image_size=256)
        with pytest.raises(ValueError, match="another backbone"):
            other.load_state_dict(model.state_dict())


class TestAnomalousBags:
    """Perlin synthesis of the anomalous bags (our interpretation) and its switch."""

    def test_perlin_anomalies_are_local_and_reproducible(self, shots: torch.Tensor) -> None:
        from anomalib_clipad.models.devprompt.torch_model import synthesize_anomalies

        state = torch.random.get_rng_state()
        anomalous, masks = synthesize_anomalies(shots[:1], 2, seed=1)
        assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
        again, _ = synthesize_anomalies(shots[:1], 2, seed=1)
        other, _ = synthesize_anomalies(shots[:1], 2, seed=2)
        assert anomalous.shape == (1, 2, 3, 240, 240)
        assert masks.shape == (1, 2, 240, 240)
        assert torch.equal(anomalous, again)
        assert not torch.equal(anomalous, other)
        original = shots[0].unsqueeze(0).expand(2, -1, -1, -1)
        for index in range(2):
            inside = masks[0, index].bool()
            assert inside.any()
            difference = (anomalous[0, index] - original[index]).abs()
            assert difference[:, ~inside].max() < 1e-5  # untouched outside the Perlin mask
            assert difference[:, inside].max() > 1e-2

    def test_switch_off_trains_on_normal_bags_only(self, shots: torch.Tensor) -> None:
        from anomalib_clipad.models.devprompt.torch_model import DevPromptModel

        clip = load_clip(TINY_BACKBONE, None)
        devprompt = DevPromptModel(TINY_BACKBONE, clip, synthesize_anomalies=False)
        features = devprompt.setup("bottle", shots)
        assert devprompt.image_encoder_calls == 1
        assert "anomalous_patch_embeddings" not in features
        embeddings, labels = devprompt.training_bags(features, 0)
        assert embeddings.shape == (2, 225, 32)
        assert labels.tolist() == [0.0, 0.0]
        with pytest.raises(ValueError, match="at least 1"):
            DevPromptModel(TINY_BACKBONE, clip, synthesize_anomalies=True, n_synthetic_per_shot=0)

    def test_bags_cycle_through_the_bank(self, model) -> None:
        features = model.training_features
        bank = features["anomalous_patch_embeddings"]
        assert bank.shape == (2, 2, 225, 32)
        embeddings, labels = model.training_bags(features, 5)
        assert labels.tolist() == [0.0, 0.0, 1.0, 1.0]
        assert torch.equal(embeddings[:2], features["patch_embeddings"])
        assert torch.equal(embeddings[2:], bank[:, 1])
        assert torch.equal(model.training_bags(features, 4)[0][2:], bank[:, 0])


# ---------------------------------------------------------------------------------------------------------------------
# Lightning model
# ---------------------------------------------------------------------------------------------------------------------
def tiny_devprompt(**kwargs):
    from anomalib_clipad.models.devprompt import DevPrompt

    defaults = {"backbone": TINY_BACKBONE, "pretrained": None, "n_synthetic_per_shot": 2, "epochs": 3}
    return DevPrompt(**{**defaults, **kwargs})


class TestDevPromptLightning:
    """The anomalib surface: training through Lightning's loop on k cached shots, optimizer, checkpoints."""

    def test_trains_on_k_cached_shots(self, synthetic_root, synthetic_category, tmp_path) -> None:
        from anomalib.data import MVTecAD
        from anomalib.engine import Engine

        model = tiny_devprompt(k_shot=2, seed=1)
        initial_context = model.model.prompt_learner.context.detach().clone()
        datamodule = MVTecAD(root=synthetic_root, category=synthetic_category, num_workers=0, eval_batch_size=32)
        engine = Engine(default_root_dir=tmp_path, logger=False, accelerator="cpu", enable_progress_bar=False)
        engine.fit(model, datamodule=datamodule)

        assert engine.trainer.current_epoch == 3
        assert engine.trainer.global_step == 3  # all shots in one batch: one step per epoch
        assert len(model.reference_paths) == 2
        assert all("/train/good/" in path for path in model.reference_paths)
        n_validation_batches = len(datamodule.val_dataloader())
        # the image encoder ran once for the shots and once for their anomalies, then only for validation
        assert model.model.image_encoder_calls == 2 + n_validation_batches
        assert not torch.equal(model.model.prompt_learner.context.detach(), initial_context)
        assert torch.allclose(model.model.text_features, model.model.prompt_features().detach())
        assert model.model.class_name == synthetic_category

    def test_optimizer_holds_only_the_context(self) -> None:
        model = tiny_devprompt()
        model.trainer = type("FakeTrainer", (), {"max_epochs": 3})()
        optimizer = model.configure_optimizers()["optimizer"]
        parameters = [parameter for group in optimizer.param_groups for parameter in group["params"]]
        assert len(parameters) == 1
        assert parameters[0] is model.model.prompt_learner.context
        assert optimizer.param_groups[0]["lr"] == 0.002
        assert optimizer.param_groups[0]["momentum"] == 0.9
        assert optimizer.param_groups[0]["weight_decay"] == 5e-4

    def test_hyper_parameters_reach_the_torch_model(self) -> None:
        model = tiny_devprompt(
            synthesize_anomalies=False, top_k_ratio=0.2, deviation_margin=3.0, deviation_weight=0.1, image_size=256
        )
        assert model.model.synthesize_anomalies is False
        assert model.model.loss.top_k_ratio == 0.2
        assert model.model.loss.margin == 3.0
        assert model.model.loss.normal_weight == 0.1
        assert model.model.image_size == (256, 256)
        assert model.trainer_arguments["max_epochs"] == 3

    def test_bad_input(self, synthetic_root, synthetic_category, tmp_path) -> None:
        from anomalib.data import MVTecAD
        from anomalib.engine import Engine

        with pytest.raises(ValueError, match="epochs"):
            tiny_devprompt(epochs=0)
        with pytest.raises(ValueError, match="not a folder"):
            tiny_devprompt(anomaly_source_path=str(tmp_path / "missing"))
        model = tiny_devprompt()
        other = {"hyper_parameters": {**model.hparams, "backbone": "ViT-B-16-plus-240"}, "state_dict": {}}
        with pytest.raises(ValueError, match="backbone"):
            model.on_load_checkpoint(other)
        too_many = tiny_devprompt(k_shot=50)
        datamodule = MVTecAD(root=synthetic_root, category=synthetic_category, num_workers=0)
        engine = Engine(default_root_dir=tmp_path, logger=False, accelerator="cpu", enable_progress_bar=False)
        with pytest.raises(ValueError, match="k_shot=50"):
            engine.fit(too_many, datamodule=datamodule)
