# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The shared CLIP layer against plain-PyTorch computations on a tiny random-init CLIP."""

from __future__ import annotations

import logging
import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from anomalib_clipad.clip import (
    TINY_BACKBONE,
    ClipTextTower,
    ClipVisionTower,
    PretrainedWeightsError,
    UnknownBackboneError,
    load_clip,
    splice_context,
    uses_quick_gelu,
    validate_images,
    window_indices,
)
from anomalib_clipad.clip.attention import class_token_block


@pytest.fixture(scope="module")
def clip() -> torch.nn.Module:
    torch.manual_seed(0)
    return load_clip(TINY_BACKBONE, None).double()


@pytest.fixture(scope="module")
def vision(clip: torch.nn.Module) -> ClipVisionTower:
    return ClipVisionTower(clip.visual)


@pytest.fixture(scope="module")
def text(clip: torch.nn.Module) -> ClipTextTower:
    return ClipTextTower(clip, TINY_BACKBONE)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 240, 240, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


# ----------------------------------------------------------------------------------------------------------- loading
def test_random_init_warns_and_is_frozen(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        model = load_clip(TINY_BACKBONE, None)
    assert "RANDOMLY INITIALISED" in caplog.text
    assert not model.training
    assert not any(parameter.requires_grad for parameter in model.parameters())


def test_unknown_backbone_is_a_clear_error() -> None:
    with pytest.raises(UnknownBackboneError, match="Unknown CLIP backbone 'ViT-Nope-1'"):
        load_clip("ViT-Nope-1", None)


def test_unknown_tag_lists_known_tags() -> None:
    with pytest.raises(PretrainedWeightsError, match=r"Known tags: .*laion400m_e31"):
        load_clip("ViT-B-16-plus-240", "no_such_tag")


def test_missing_and_corrupt_weight_files(tmp_path) -> None:
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        load_clip(TINY_BACKBONE, tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="not a CLIP weight file that can be read safely") as raised:
        load_clip(TINY_BACKBONE, corrupt)
    random_bytes = tmp_path / "random.bin"
    random_bytes.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    with pytest.raises(PretrainedWeightsError) as raised_random:
        load_clip(TINY_BACKBONE, random_bytes)
    for error in (raised.value, raised_random.value):
        # torch's own advice ("Re-running torch.load with weights_only set to False will likely succeed") is unsafe
        assert "will likely succeed" not in str(error)
        assert "Re-running" not in str(error)
        assert "never loads weight files with weights_only=False" in str(error)


def test_weight_file_of_another_architecture_is_rejected(tmp_path) -> None:
    other = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path / "vit_b_32.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match="do not fit CLIP backbone"):
        load_clip(TINY_BACKBONE, path)


def test_local_state_dict_and_checkpoint_round_trip(tmp_path, clip: torch.nn.Module) -> None:
    state = {key: value.float() for key, value in clip.state_dict().items()}
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "wrapped.pt"
    torch.save(state, plain)
    torch.save({"epoch": 3, "state_dict": {f"module.{key}": value for key, value in state.items()}}, wrapped)
    for path in (plain, str(wrapped)):
        loaded = load_clip(TINY_BACKBONE, path).state_dict()
        assert all(torch.equal(loaded[key], value) for key, value in state.items())


def test_openai_state_dict_gets_quick_gelu(tmp_path, clip: torch.nn.Module) -> None:
    state = {key: value.float() for key, value in clip.state_dict().items()}
    state |= {"input_resolution": torch.tensor(240), "context_length": torch.tensor(77), "vocab_size": torch.tensor(1)}
    path = tmp_path / "openai_style.pt"
    torch.save(state, path)
    loaded = load_clip(TINY_BACKBONE, path)
    assert isinstance(loaded.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    default = load_clip(TINY_BACKBONE, None)
    assert not isinstance(default.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)


def test_offline_tag_download_fails_with_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs) -> None:
        msg = "network is unreachable"
        raise OSError(msg)

    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: offline() if k.get("pretrained") else None)
    with pytest.raises(PretrainedWeightsError, match=r"'laion400m_e31'.*'ViT-B-16-plus-240'.*--model.pretrained /path"):
        load_clip("ViT-B-16-plus-240", "laion400m_e31")


# ------------------------------------------------------------------------------------------------------------ vision
def _plain_blocks(clip: torch.nn.Module, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of every block of the original path, from a hand-written embedding."""
    visual = clip.visual
    patches = visual.conv1(tokens).flatten(2).transpose(1, 2)
    hidden = torch.cat([visual.class_embedding.expand(patches.shape[0], 1, -1), patches], dim=1)
    hidden = visual.ln_pre(hidden + visual.positional_embedding)
    outputs = []
    for block in visual.transformer.resblocks:
        hidden = block(hidden)
        outputs.append(hidden)
    return outputs


def test_class_and_patch_tokens_match_plain_clip(clip, vision, images) -> None:
    features = vision(images, patch_layers=[3, 8])
    torch.testing.assert_close(features.class_token, clip.encode_image(images))
    outputs = _plain_blocks(clip, images)
    torch.testing.assert_close(features.patch_tokens[3], outputs[2][:, 1:])
    torch.testing.assert_close(features.patch_tokens[8], outputs[7][:, 1:])
    assert features.grid_size == (15, 15)
    projected = vision.project(outputs[7][:, 1:])
    torch.testing.assert_close(projected, clip.visual.ln_post(outputs[7][:, 1:]) @ clip.visual.proj)


def test_attention_tokens_are_taken_between_attention_and_mlp(clip, vision, images) -> None:
    features = vision(images, patch_layers=[3, 4, 8], attention_layers=[4])
    outputs = _plain_blocks(clip, images)
    block = clip.visual.transformer.resblocks[3]
    normed = block.ln_1(outputs[2])
    expected = outputs[2] + block.attn(normed, normed, normed, need_weights=False)[0]
    torch.testing.assert_close(features.attention_tokens[4], expected[:, 1:])
    # the block's output (and everything after it) is unchanged by the tap
    torch.testing.assert_close(features.patch_tokens[4], outputs[3][:, 1:])
    torch.testing.assert_close(features.patch_tokens[8], outputs[7][:, 1:])
    torch.testing.assert_close(features.class_token, clip.encode_image(images))
    with pytest.raises(ValueError, match="does not exist"):
        vision(images, attention_layers=[9])


def _naive_vv(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """q = k = v attention written head by head with an explicit softmax."""
    attention = block.attn
    width, heads = attention.embed_dim, attention.num_heads
    head_dim = width // heads
    normed = block.ln_1(x)
    value = normed @ attention.in_proj_weight[2 * width :].T + attention.in_proj_bias[2 * width :]
    outputs = []
    for head in range(heads):
        v = value[..., head * head_dim : (head + 1) * head_dim]
        weights = torch.softmax(v @ v.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
        outputs.append(weights @ v)
    return attention.out_proj(torch.cat(outputs, dim=-1))


@pytest.mark.parametrize("start", [1, 6])
def test_vv_stream_matches_naive_dual_path(clip, vision, images, start: int) -> None:
    features = vision(images, vv_start_layer=start, vv_layers=[start, 8])
    outputs = _plain_blocks(clip, images)
    visual = clip.visual
    patches = visual.conv1(images).flatten(2).transpose(1, 2)
    hidden = visual.ln_pre(
        torch.cat([visual.class_embedding.expand(2, 1, -1), patches], dim=1) + visual.positional_embedding,
    )
    block_inputs = [hidden, *outputs[:-1]]
    stream = block_inputs[start - 1]
    expected = {}
    for layer in range(start, 9):
        block = visual.transformer.resblocks[layer - 1]
        stream = stream + _naive_vv(block, block_inputs[layer - 1])
        expected[layer] = stream[:, 1:]
    torch.testing.assert_close(features.vv_tokens[start], expected[start])
    torch.testing.assert_close(features.vv_tokens[8], expected[8])
    # the original path is untouched by the V-V stream
    torch.testing.assert_close(features.class_token, clip.encode_image(images))


@pytest.mark.parametrize("window_size", [2, 3])
def test_window_tokens_match_window_by_window_forward(clip, vision, images, window_size: int) -> None:
    indices = window_indices((15, 15), window_size)
    assert indices.shape == ((16 - window_size) ** 2, window_size**2)
    features = vision(images, windows=[indices])
    visual = clip.visual
    patches = visual.conv1(images).flatten(2).transpose(1, 2) + visual.positional_embedding[1:]
    class_token = visual.class_embedding + visual.positional_embedding[0]
    for window in [0, 7, indices.shape[0] - 1]:
        row, column = divmod(window, 16 - window_size)
        kept = [(row + i) * 15 + column + j for i in range(window_size) for j in range(window_size)]
        sequence = torch.cat([class_token.expand(2, 1, -1), patches[:, kept]], dim=1)
        hidden = visual.ln_pre(sequence)
        for block in visual.transformer.resblocks:
            hidden = block(hidden)
        expected = visual.ln_post(hidden[:, 0]) @ visual.proj
        torch.testing.assert_close(features.window_tokens[0][:, window], expected)


@pytest.mark.parametrize("layer_scale", [None, 0.5])
def test_class_token_block_equals_the_block_at_the_class_token(layer_scale: float | None) -> None:
    torch.manual_seed(3)
    block = open_clip.transformer.ResidualAttentionBlock(48, 4, ls_init_value=layer_scale).double().eval()
    tokens = torch.randn(5, 10, 48, dtype=torch.float64)
    torch.testing.assert_close(class_token_block(block, tokens), block(tokens)[:, 0])


def test_window_indices_reject_bad_sizes() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        window_indices((2, 2), 3)
    with pytest.raises(ValueError, match="positive"):
        window_indices((4, 4), 0)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_position_embeddings_interpolate_for_other_sizes(clip, images, mode: str) -> None:
    tower = ClipVisionTower(clip.visual, position_interpolation=mode)
    small = images[:, :, :160, :208]
    features = tower(small, patch_layers=[8])
    assert features.grid_size == (10, 13)
    assert features.patch_tokens[8].shape == (2, 130, 64)
    grid = clip.visual.positional_embedding[1:].reshape(1, 15, 15, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(10, 13), mode=mode, align_corners=False).permute(0, 2, 3, 1).reshape(130, -1)
    torch.testing.assert_close(tower.position_embedding((10, 13))[1:], resized)
    torch.testing.assert_close(tower.position_embedding((10, 13))[0], clip.visual.positional_embedding[0])


def test_bad_images_and_layers_are_clear_errors(clip, vision, images) -> None:
    with pytest.raises(ValueError, match="3-channel RGB"):
        vision(images[:, :1])
    with pytest.raises(ValueError, match="shape"):
        vision(images[0])
    with pytest.raises(TypeError, match="floating-point"):
        vision((images * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"size \(240, 240\)"):
        validate_images(images[:, :, :, :200], expected_size=(240, 240))
    with pytest.raises(ValueError, match=r"blocks 1\.\.8"):
        vision(images, patch_layers=[9])
    with pytest.raises(ValueError, match="vv_start_layer"):
        vision(images, vv_layers=[3])
    with pytest.raises(ValueError, match="position_interpolation"):
        ClipVisionTower(clip.visual, position_interpolation="nearest")
    with pytest.raises(TypeError, match="class-token ViT"):
        ClipVisionTower(torch.nn.Linear(2, 2))


# -------------------------------------------------------------------------------------------------------------- text
def test_text_tower_matches_encode_text(clip, text) -> None:
    tokens = text.tokenize(["a photo of a bottle.", "a damaged bottle"])
    torch.testing.assert_close(text(tokens), clip.encode_text(tokens))
    expected = F.normalize(clip.encode_text(tokens).mean(dim=0), dim=-1)
    torch.testing.assert_close(text.encode_prompt_set(["a photo of a bottle.", "a damaged bottle"]), expected)
    assert text.width == 64
    assert text.context_length == 77
    assert text.logit_scale is clip.logit_scale


def test_spliced_context_replaces_placeholder_embeddings(clip, text) -> None:
    tokens = text.tokenize(["X X X X bottle.", "X X X X damaged bottle."])
    context = torch.randn(4, 64, dtype=torch.float64, requires_grad=True)
    spliced = splice_context(text.embed_tokens(tokens), context)
    manual = clip.token_embedding(tokens).clone()
    manual[:, 1:5] = context
    torch.testing.assert_close(spliced, manual)
    encoded = text(tokens, token_embeddings=spliced)
    hidden = manual + clip.positional_embedding
    hidden = clip.ln_final(clip.transformer(hidden, attn_mask=clip.attn_mask))
    expected = hidden[torch.arange(2), tokens.argmax(-1)] @ clip.text_projection
    torch.testing.assert_close(encoded, expected)
    encoded.sum().backward()
    assert context.grad is not None
    assert context.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="context sets"):
        splice_context(text.embed_tokens(tokens), torch.zeros(3, 4, 64, dtype=torch.float64))


def test_deep_prompts_replace_tokens_at_chosen_layers(clip, text) -> None:
    tokens = text.tokenize(["X X X X X X object.", "X X X X X X damaged object."])
    deep = {2: torch.randn(3, 64, dtype=torch.float64), 4: torch.randn(3, 64, dtype=torch.float64)}
    encoded = text(tokens, deep_prompts=deep)
    hidden = clip.token_embedding(tokens) + clip.positional_embedding
    for layer, block in enumerate(clip.transformer.resblocks, start=1):
        if layer in deep:
            hidden = hidden.clone()
            hidden[:, 1:4] = deep[layer]
        hidden = block(hidden, attn_mask=clip.attn_mask)
    hidden = clip.ln_final(hidden)
    torch.testing.assert_close(encoded, hidden[torch.arange(2), tokens.argmax(-1)] @ clip.text_projection)


def test_text_pass_stops_at_the_last_end_of_text_token_without_changing_results(clip, text) -> None:
    tokens = text.tokenize(["X X X X bottle.", "X X X X damaged bottle."])
    assert text.is_causal
    assert text.used_length(tokens) == int(tokens.argmax(-1).max()) + 1 == 9
    # deep prompts longer than the prompts keep their positions
    deep = {1: torch.randn(12, 64, dtype=torch.float64), 3: torch.randn(12, 64, dtype=torch.float64)}
    assert text.used_length(tokens, deep) == 13
    encoded = text(tokens, deep_prompts=deep)
    hidden = clip.token_embedding(tokens) + clip.positional_embedding
    for layer, block in enumerate(clip.transformer.resblocks, start=1):
        if layer in deep:
            hidden = torch.cat([hidden[:, :1], deep[layer].expand(2, -1, -1), hidden[:, 13:]], dim=1)
        hidden = block(hidden, attn_mask=clip.attn_mask)
    hidden = clip.ln_final(hidden)
    torch.testing.assert_close(encoded, hidden[torch.arange(2), tokens.argmax(-1)] @ clip.text_projection)
    # gradients of learnable context equal those of the full 77-position pass
    context = torch.randn(4, 64, dtype=torch.float64, requires_grad=True)
    text(tokens, token_embeddings=splice_context(text.embed_tokens(tokens), context)).square().sum().backward()
    full = clip.token_embedding(tokens).clone()
    full_context = context.detach().clone().requires_grad_(True)
    full = torch.cat([full[:, :1], full_context.expand(2, -1, -1), full[:, 5:]], dim=1) + clip.positional_embedding
    full = clip.ln_final(clip.transformer(full, attn_mask=clip.attn_mask))
    (full[torch.arange(2), tokens.argmax(-1)] @ clip.text_projection).square().sum().backward()
    torch.testing.assert_close(context.grad, full_context.grad)


def test_text_tower_without_causal_mask_runs_every_position(clip) -> None:
    causal_mask = clip.attn_mask
    clip.attn_mask = None  # a bidirectional text tower
    try:
        text = ClipTextTower(clip, TINY_BACKBONE)
    finally:
        clip.attn_mask = causal_mask
    assert not text.is_causal
    tokens = text.tokenize(["a bottle."])
    hidden = clip.ln_final(clip.transformer(clip.token_embedding(tokens) + clip.positional_embedding))
    torch.testing.assert_close(text(tokens), hidden[torch.arange(1), tokens.argmax(-1)] @ clip.text_projection)


def test_tokenize_rejects_a_bare_string(text) -> None:
    with pytest.raises(ValueError, match="non-empty list"):
        text.tokenize("a photo of a bottle")


# ------------------------------------------------------------------------------------------------ activation
def test_openai_file_in_open_clip_layout_gets_quick_gelu(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    """The file open_clip downloads for the `openai` tag has open_clip's keys; its path says openai."""
    torch.manual_seed(3)
    weights = open_clip.create_model(TINY_BACKBONE, pretrained=None, force_quick_gelu=True).state_dict()
    folder = tmp_path / "models--timm--vit_large_patch14_clip_336.openai" / "snapshots" / "abc"
    folder.mkdir(parents=True)
    path = folder / "open_clip_pytorch_model.bin"
    torch.save(weights, path)
    assert uses_quick_gelu(load_clip(TINY_BACKBONE, path))  # default: the file's provenance decides
    with caplog.at_level(logging.WARNING, logger="anomalib_clipad.clip.loading"):
        explicit = load_clip(TINY_BACKBONE, path, quick_gelu=False)
    assert not uses_quick_gelu(explicit)  # the explicit argument decides ...
    assert "trained with QuickGELU" in caplog.text  # ... and the disagreement is not silent
    caplog.clear()
    plain = tmp_path / "mine.pt"
    torch.save(weights, plain)
    with caplog.at_level(logging.WARNING, logger="anomalib_clipad.clip.loading"):
        assert not uses_quick_gelu(load_clip(TINY_BACKBONE, plain))  # unknown provenance: the backbone's default
    assert "QuickGELU" not in caplog.text


def test_backbone_default_activation() -> None:
    from anomalib_clipad.clip.loading import backbone_default_quick_gelu

    assert backbone_default_quick_gelu("ViT-L-14-336")  # OpenAI weights only
    assert not backbone_default_quick_gelu("ViT-B-16-plus-240")  # LAION weights only
    assert not backbone_default_quick_gelu(TINY_BACKBONE)


def test_set_quick_gelu_switches_every_activation_in_place() -> None:
    from anomalib_clipad.clip.loading import set_quick_gelu

    torch.manual_seed(0)
    gelu = open_clip.create_model(TINY_BACKBONE, pretrained=None).eval()
    quick = open_clip.create_model(TINY_BACKBONE, pretrained=None, force_quick_gelu=True).eval()
    quick.load_state_dict(gelu.state_dict())
    images = torch.randn(1, 3, 240, 240)
    with torch.no_grad():
        expected = quick.encode_image(images)
        assert not torch.allclose(gelu.encode_image(images), expected)
        assert set_quick_gelu(gelu, True) == 8 + 4  # vision and text blocks
        torch.testing.assert_close(gelu.encode_image(images), expected)
    assert set_quick_gelu(gelu, True) == 0


def test_laion400m_e32_is_downloaded_from_its_own_release_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """open_clip 3.3 maps laion400m_e32 to the hub repository of laion400m_e31: asking for e32 must give e32."""
    from anomalib_clipad.clip import loading

    assert loading.resolve_pretrained_download("ViT-B-16-plus-240", "laion400m_e31") == (
        "hf_hub",
        "timm/vit_base_patch16_plus_clip_240.laion400m_e31/",
    )
    kind, url = loading.resolve_pretrained_download("ViT-B-16-plus-240", "laion400m_e32")
    assert kind == "url"
    assert "laion400m_e32" in url
    requested: list[str] = []

    def offline_download(source: str, cache_dir: str | None = None) -> str:
        requested.append(source)
        raise OSError("no network")

    monkeypatch.setattr(loading, "download_pretrained_from_url", offline_download)
    with pytest.raises(PretrainedWeightsError, match="laion400m_e32") as raised:
        load_clip("ViT-B-16-plus-240", "laion400m_e32")
    assert requested == [url]
    assert "--model.pretrained /path/to/" in str(raised.value)


def test_architecture_only_builds_without_open_clips_random_init_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        load_clip(TINY_BACKBONE, "checkpoint")
    assert "initialized randomly" not in caplog.text
    assert "architecture only" in caplog.text
