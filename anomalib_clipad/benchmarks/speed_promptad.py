# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Speed of PromptAD relative to the unavoidable CLIP work.

Prints two ratios (goals from the PromptAD issue):

* **inference**: time per image of :class:`~anomalib_clipad.models.promptad.PromptADModel` (VV-CLIP with both
  streams, two memory associations, both heads, fusion, upsampling, smoothing) over a plain ``CLIP.encode_image``
  of the same backbone on the same batch (goal <= 2x);
* **training**: wall time of ``Trainer.fit`` of :class:`~anomalib_clipad.models.promptad.PromptAD` for ``k_shot``
  shots and ``epochs`` epochs through Lightning's loop (anomalib datamodule with the k shots, pre-processing callback,
  feature caching, both heads), over ``epochs`` x one forward+backward of the text encoder on the whole prompt set
  of both heads (goal <= 1.3x, i.e. nothing but the text side is recomputed per epoch).

Weights do not change the timings, so the backbone is randomly initialised (no download). On a CPU the times are
this process's CPU time (robust to other jobs on a shared machine); on a GPU wall time. Example::

    python -m anomalib_clipad.benchmarks.speed_promptad --backbone ViT-B-16-plus-240 --epochs 100
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from anomalib_clipad.clip.loading import load_clip
from anomalib_clipad.models.promptad import PromptAD, PromptADModel


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(device: torch.device) -> float:
    """Seconds: wall time on GPUs, this process's CPU time (all threads) on CPUs (less disturbed by other jobs)."""
    return time.perf_counter() if device.type == "cuda" else time.process_time()


def _median_time(function: Callable[[], object], repeats: int, device: torch.device) -> float:
    function()  # warm-up
    _synchronise(device)
    times = []
    for _ in range(repeats):
        start = _clock(device)
        function()
        _synchronise(device)
        times.append(_clock(device) - start)
    return statistics.median(times)


def inference_ratio(backbone: str, batch_size: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Seconds per image of PromptAD and of ``encode_image``, and their ratio."""
    clip = load_clip(backbone, None).to(device)
    model = PromptADModel(clip, backbone, k_shot=1).to(device).eval()
    model.configure_prompts("bottle")
    generator = torch.Generator().manual_seed(0)
    size = model.image_size
    images = torch.randn(batch_size, 3, size, size, generator=generator).to(device)
    with torch.no_grad():
        model.update_text_features()
        model.build_memory(model.encode_images(torch.randn(1, 3, size, size, generator=generator).to(device)))
        promptad, plain = [], []
        for _ in range(repeats):  # interleaved, so that load changes hit both alike
            promptad.append(_median_time(lambda: model(images), 1, device))
            plain.append(_median_time(lambda: clip.encode_image(images), 1, device))
    promptad_time, plain_time = statistics.median(promptad) / batch_size, statistics.median(plain) / batch_size
    return {"promptad_s": promptad_time, "encode_image_s": plain_time, "ratio": promptad_time / plain_time}


def text_step_time(model: PromptADModel, repeats: int, device: torch.device) -> float:
    """Median seconds of one forward+backward of the text encoder over every prompt of both heads."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        features = model.prompt_features()
        torch.stack([f.sum() for groups in features.values() for f in groups.values()]).sum().backward()

    return _median_time(step, repeats, device)


def training_ratio(backbone: str, k_shot: int, epochs: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Seconds of ``Trainer.fit`` and of ``epochs`` text forward+backward passes, and their ratio.

    The text step is timed before and after the fit (the mean of the two medians), so that a change of machine load
    during the fit affects both sides alike as far as possible.
    """
    from anomalib.data import MVTecAD
    from lightning.pytorch import Trainer

    from anomalib_clipad.data.synthetic import generate_synthetic_dataset

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        generate_synthetic_dataset(root, category="bottle", n_train=k_shot, n_test_good=1, n_test_defect=1, seed=0)
        module = PromptAD(k_shot=k_shot, backbone=backbone, pretrained=None, epochs=epochs)
        module.model.configure_prompts("bottle")
        before = text_step_time(module.model.to(device), repeats, device)
        module.model.zero_grad(set_to_none=True)
        datamodule = MVTecAD(root=root, category="bottle", num_workers=0)
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
        start, wall_start = _clock(device), time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        _synchronise(device)
        fit_time, fit_wall = _clock(device) - start, time.perf_counter() - wall_start
        if trainer.global_step != epochs:
            msg = f"Expected one optimizer step per epoch, got {trainer.global_step} steps in {epochs} epochs."
            raise RuntimeError(msg)
        module.model.configure_prompts("bottle")
        reference = (before + text_step_time(module.model, repeats, device)) / 2
    return {
        "fit_s": fit_time,
        "fit_wall_s": fit_wall,
        "text_step_s": reference,
        "ratio": fit_time / (reference * epochs),
    }


def main() -> None:
    """Run both measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="ViT-B-16-plus-240")
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-training", action="store_true")
    arguments = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    device = torch.device(arguments.device)
    threads = torch.get_num_threads()
    clock = "wall time" if device.type == "cuda" else "process CPU time"
    print(f"PromptAD speed, backbone {arguments.backbone}, device {device} ({threads} CPU threads), {clock}")
    inference = inference_ratio(arguments.backbone, arguments.batch_size, arguments.repeats, device)
    print(
        f"inference: {inference['promptad_s'] * 1e3:.1f} ms/image vs encode_image "
        f"{inference['encode_image_s'] * 1e3:.1f} ms/image -> ratio {inference['ratio']:.2f}x (goal <= 2x)"
    )
    if not arguments.skip_training:
        training = training_ratio(arguments.backbone, arguments.k_shot, arguments.epochs, arguments.repeats, device)
        print(
            f"training ({arguments.k_shot}-shot, {arguments.epochs} epochs): Trainer.fit {training['fit_s']:.1f} s "
            f"(wall {training['fit_wall_s']:.1f} s) vs "
            f"{arguments.epochs} x text forward+backward {training['text_step_s']:.3f} s = "
            f"{training['text_step_s'] * arguments.epochs:.1f} s -> ratio {training['ratio']:.2f}x (goal <= 1.3x)"
        )


if __name__ == "__main__":
    main()
