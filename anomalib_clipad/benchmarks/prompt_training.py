# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""What the PromptAD and DevPrompt speed benchmarks share: argument set, the text-step references, a timed fit.

A prompt-learning model's training speed is judged against the text side, the only part that must be recomputed
every epoch (the frozen image encoder's features are cached). Two references are timed, interleaved, before and after
the fit (their mean is used, so that a change of machine load during the fit hits both sides alike as far as
possible):

* ``plain``: open_clip's own text encoder, forward and backward over the same prompts at all ``context_length``
  positions (:func:`~anomalib_clipad.benchmarks.references.plain_text_forward_backward`): the issue's reference;
* ``ours``: the model's own text step (:class:`~anomalib_clipad.clip.text.ClipTextTower` stops the causal pass at the
  last end-of-text token), which shows what an epoch costs beyond its text pass.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from anomalib_clipad.benchmarks.references import plain_text_forward_backward
from anomalib_clipad.benchmarks.timing import clock_for, median_times, synchronise

CATEGORY = "bottle"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every prompt-learning speed benchmark takes."""
    parser.add_argument("--backbone", default="ViT-B-16-plus-240")
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8, help="images per inference forward")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds of each measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-training", action="store_true")


def text_step_times(
    model: torch.nn.Module,
    our_step: Callable[[], object],
    plain_clip: torch.nn.Module,
    tokens: torch.Tensor,
    *,
    repeats: int,
    device: torch.device,
) -> dict[str, float]:
    """Median seconds of our text forward+backward (``our_step``) and of open_clip's own on ``tokens``.

    ``model``'s gradients are cleared afterwards (they are not part of any later measurement).
    """
    tokens = tokens.to(device)
    times = median_times(
        {"ours": our_step, "plain": lambda: plain_text_forward_backward(plain_clip, tokens)}, repeats, device
    )
    model.zero_grad(set_to_none=True)
    return times


def timed_fit(
    module: Any,
    k_shot: int,
    epochs: int,
    device: torch.device,
    *,
    our_step: Callable[[], object],
    plain_clip: torch.nn.Module,
    tokens: torch.Tensor,
    repeats: int,
) -> dict[str, float]:
    """Fit ``module`` on ``k_shot`` synthetic normal images for ``epochs``; time it and the text references.

    Args:
        module: the Lightning model (PromptAD or DevPrompt) on ``device``, prompts built for :data:`CATEGORY`.
        k_shot: its ``k_shot``.
        epochs: its ``epochs``.
        device: where it runs.
        our_step: one forward+backward of the module's own text side over its prompt set.
        plain_clip: an open_clip CLIP of the same architecture (for the plain reference).
        tokens: the prompt set's token ids.
        repeats: timed rounds of the text references (before and after the fit).

    Returns:
        ``fit_s`` (:func:`~anomalib_clipad.benchmarks.timing.clock_for` seconds), ``fit_wall_s``, and the mean
        ``plain_text_step_s`` / ``our_text_step_s`` of the references before and after the fit.

    Raises:
        RuntimeError: the fit did not run one optimizer step per epoch.
    """
    from anomalib.data import MVTecAD
    from lightning.pytorch import Trainer

    from anomalib_clipad.data.synthetic import generate_synthetic_dataset

    def text_references() -> dict[str, float]:
        return text_step_times(module.model, our_step, plain_clip, tokens, repeats=repeats, device=device)

    clock = clock_for(device)
    before = text_references()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        generate_synthetic_dataset(root, category=CATEGORY, n_train=k_shot, n_test_good=1, n_test_defect=1, seed=0)
        trainer = Trainer(
            max_epochs=epochs,
            accelerator=device.type,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            default_root_dir=root,
        )
        synchronise(device)
        start, wall_start = clock(), time.perf_counter()
        trainer.fit(module, datamodule=MVTecAD(root=root, category=CATEGORY))  # anomalib's default loader workers
        synchronise(device)
        fit_time, fit_wall = clock() - start, time.perf_counter() - wall_start
    if trainer.global_step != epochs:
        msg = f"Expected one optimizer step per epoch, got {trainer.global_step} steps in {epochs} epochs."
        raise RuntimeError(msg)
    after = text_references()
    return {
        "fit_s": fit_time,
        "fit_wall_s": fit_wall,
        "plain_text_step_s": (before["plain"] + after["plain"]) / 2,
        "our_text_step_s": (before["ours"] + after["ours"]) / 2,
    }


def print_training(
    description: str, epochs: int, result: dict[str, float], context_length: int, used_length: int
) -> None:
    """Print the fit time and its ratios to ``epochs`` x each text-step reference."""
    plain, ours = result["plain_text_step_s"], result["our_text_step_s"]
    print(f"training ({description}): Trainer.fit {result['fit_s']:.1f} s (wall {result['fit_wall_s']:.1f} s)")
    print(
        f"  vs {epochs} x open_clip text forward+backward ({context_length} positions) {plain * 1e3:.1f} ms = "
        f"{plain * epochs:.1f} s -> ratio {result['fit_s'] / (plain * epochs):.2f}x (goal <= 1.3x)"
    )
    print(
        f"  vs {epochs} x our text forward+backward (causal pass cut at position {used_length}) {ours * 1e3:.1f} ms = "
        f"{ours * epochs:.1f} s -> ratio {result['fit_s'] / (ours * epochs):.2f}x (everything beyond the text pass)"
    )
