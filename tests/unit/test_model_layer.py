# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The shared model layer: checkpoints of one class used on another, the CLI's error messages, the papers' defaults."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from anomalib_clipad.clip import TINY_BACKBONE, PretrainedWeightsError, UnknownBackboneError
from anomalib_clipad.data.shots import select_shot_indices
from anomalib_clipad.models.checkpoint_policy import ClassMismatchError
from anomalib_clipad.models.devprompt import DevPrompt
from anomalib_clipad.models.promptad import PromptAD
from anomalib_clipad.models.winclip_plus import WinCLIPPlus
from anomalib_clipad.registry import get_spec


def _datamodule(root: Path, category: str):
    from anomalib.data import MVTecAD

    return MVTecAD(root=root, category=category, num_workers=0, eval_batch_size=8, val_split_mode="from_test")


def _engine(tmp_path: Path):
    from anomalib.engine import Engine

    return Engine(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False)


@pytest.mark.parametrize("model_class", [PromptAD, DevPrompt])
def test_prompt_checkpoint_refuses_another_category(model_class, two_categories: Path, tmp_path: Path) -> None:
    spec = get_spec(model_class.__name__)  # tiny settings: 1 epoch (DevPrompt: 1 synthetic anomaly per shot)
    model = spec.build_tiny(k_shot=1)
    engine = _engine(tmp_path)
    engine.fit(model, datamodule=_datamodule(two_categories, "alpha"))
    checkpoint = tmp_path / "alpha.ckpt"
    engine.trainer.save_checkpoint(checkpoint)
    # the checkpoint loaded by the trainer (anomalib test --ckpt_path ... --data.category beta)
    fresh = spec.build_tiny(k_shot=1, pretrained="checkpoint")
    with pytest.raises(ClassMismatchError, match=r"trained for class 'alpha'.*'beta'"):
        _engine(tmp_path).test(fresh, datamodule=_datamodule(two_categories, "beta"), ckpt_path=checkpoint)
    # and load_from_checkpoint in Python
    reloaded = model_class.load_from_checkpoint(checkpoint)
    with pytest.raises(ClassMismatchError, match="alpha"):
        _engine(tmp_path).test(reloaded, datamodule=_datamodule(two_categories, "beta"))
    # the category it was trained for is fine
    _engine(tmp_path).test(reloaded, datamodule=_datamodule(two_categories, "alpha"))


def test_winclip_rebuilds_for_another_category(two_categories: Path, tmp_path: Path, caplog) -> None:
    import logging

    model = get_spec("WinCLIPPlus").build_tiny(k_shot=1)
    _engine(tmp_path).test(model, datamodule=_datamodule(two_categories, "alpha"))
    alpha_text = model.model.text_prototypes.clone()
    alpha_paths = list(model.reference_paths)
    with caplog.at_level(logging.INFO):
        _engine(tmp_path).test(model, datamodule=_datamodule(two_categories, "beta"))
    assert "re-building for class 'beta'" in caplog.text
    assert not torch.allclose(model.model.text_prototypes, alpha_text)  # beta's prompts, not alpha's
    assert all("/beta/train/good/" in path for path in model.reference_paths)
    assert all("/alpha/train/good/" in path for path in alpha_paths)
    # a checkpoint of alpha tested on beta is re-built too (text and reference memory of beta)
    engine = _engine(tmp_path)
    engine.test(get_spec("WinCLIPPlus").build_tiny(k_shot=1), datamodule=_datamodule(two_categories, "alpha"))
    path = tmp_path / "winclip_alpha.ckpt"
    engine.trainer.save_checkpoint(path)
    reloaded = WinCLIPPlus.load_from_checkpoint(path)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _engine(tmp_path).test(reloaded, datamodule=_datamodule(two_categories, "beta"))
    assert "re-building for class 'beta'" in caplog.text
    assert all("/beta/train/good/" in p for p in reloaded.reference_paths)


def test_cli_errors_are_ours_and_last(tmp_path: Path, two_categories: Path) -> None:
    """Model-building errors reach the user unwrapped: not inside jsonargparse's Union-subtype dump."""
    from anomalib.cli import AnomalibCLI

    garbage = tmp_path / "weights.pt"
    garbage.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8)))
    data = ["--data", "MVTecAD", "--data.root", str(two_categories), "--data.category", "alpha"]
    data += ["--data.num_workers", "0", "--trainer.logger", "false", "--default_root_dir", str(tmp_path)]
    cases = [
        (["--model.backbone", "ViT-Nope-1"], UnknownBackboneError, "Unknown CLIP backbone 'ViT-Nope-1'"),
        (["--model.pretrained", str(garbage)], PretrainedWeightsError, "not a CLIP weight file that can be read"),
        (["--model.learned_state", str(tmp_path / "moved.pt")], FileNotFoundError, "learned-state file .* not exist"),
    ]
    for arguments, error, message in cases:
        model = ["--model", "anomalib_clipad.WinCLIPPlus", "--model.backbone", TINY_BACKBONE, "--model.image_size"]
        with pytest.raises(error, match=message) as raised:
            AnomalibCLI(args=["test", *model, "64", *arguments, *data])
        assert "Union subtypes" not in str(raised.value)
        assert "will likely succeed" not in str(raised.value)


def test_shot_selection_never_repeats_an_image() -> None:
    """With k equal to the pool, only a permutation of the pool passes, for every seed."""
    for seed in range(20):
        assert select_shot_indices(7, 7, seed=seed) == list(range(7))
        chosen = select_shot_indices(12, 6, seed=seed)
        assert len(set(chosen)) == 6


def _default(cls: type, name: str) -> object:
    return inspect.signature(cls.__init__).parameters[name].default


def test_papers_defaults() -> None:
    """What a user gets from the classes without a config: the papers' settings."""
    assert _default(PromptAD, "alignment_weight") == 0.001
    assert _default(PromptAD, "eam_margin") == 0.0
    assert _default(PromptAD, "n_ctx") == 4
    assert _default(PromptAD, "n_normal_prompts_image") == 3
    assert _default(PromptAD, "n_normal_prompts_pixel") == 1
    assert _default(PromptAD, "n_learned_anomaly_prompts") == 4
    assert _default(PromptAD, "n_ctx_anomaly") == 1
    assert tuple(_default(PromptAD, "memory_layers")) == (3, 8)
    for cls in (PromptAD, DevPrompt):  # PromptAD's recipe, which DevPrompt keeps
        assert _default(cls, "epochs") == 100
        assert _default(cls, "lr") == 0.002
        assert _default(cls, "momentum") == 0.9
        assert _default(cls, "weight_decay") == 5e-4
        assert _default(cls, "min_lr") == 1e-5
        assert _default(cls, "sigma") == 4.0
        assert _default(cls, "backbone") == "ViT-B-16-plus-240"
        assert _default(cls, "pretrained") == "laion400m_e32"
    assert _default(DevPrompt, "top_k_ratio") == 0.1
    assert _default(DevPrompt, "deviation_margin") == 5.0
    assert _default(DevPrompt, "deviation_weight") == 1.0
    assert _default(DevPrompt, "n_reference_samples") == 5000
    assert _default(DevPrompt, "k_shot") == 1
    assert tuple(_default(WinCLIPPlus, "scales")) == (2, 3)
    assert _default(WinCLIPPlus, "backbone") == "ViT-B-16-plus-240"
    assert _default(WinCLIPPlus, "pretrained") == "laion400m_e31"
    assert _default(WinCLIPPlus, "image_size") == 240


def test_lightning_models_build_no_clip_until_used() -> None:
    from anomalib_clipad.models.common import is_built

    model = PromptAD(backbone="ViT-Nope-1", pretrained=None)  # constructs: the CLI can parse it
    assert not is_built(model)
    with pytest.raises(UnknownBackboneError, match="ViT-Nope-1"):
        _ = model.model


def test_time_per_image_is_logged_at_the_end_of_a_test(two_categories: Path, tmp_path: Path, caplog) -> None:
    import logging

    model = get_spec("WinCLIPPlus").build_tiny(k_shot=0)
    datamodule = _datamodule(two_categories, "alpha")
    with caplog.at_level(logging.INFO, logger="anomalib_clipad.training.progress"):
        _engine(tmp_path).test(model, datamodule=datamodule)
    scored = len(datamodule.test_data)  # the test part of alpha's test folder (the rest calibrates)
    assert model.timing.images == scored
    assert model.timing.seconds_per_image > 0
    assert f"WinCLIPPlus scored {scored} images in" in caplog.text
    assert "ms per image" in caplog.text


@pytest.mark.parametrize(
    ("name", "argument"),
    [("PromptAD", "memory_layers"), ("DevPrompt", "memory_layers"), ("AnomalyCLIP", "feature_layers"),
     ("SimCLIP", "feature_layers")],
)  # fmt: skip
@pytest.mark.parametrize("blocks", [[], [2, 2]])
def test_every_block_list_names_one_block_at_least_each_once(name: str, argument: str, blocks: list[int]) -> None:
    """One check (``clip.builder.block_list``) for every model, before any CLIP is built."""
    spec = get_spec(name)
    model_class = spec.torch_class
    with pytest.raises(ValueError, match=rf"^{argument} must name at least one image-tower block, each once; got"):
        model_class(spec.tiny["backbone"], pretrained=None, **{argument: blocks})
