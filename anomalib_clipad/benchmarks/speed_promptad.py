# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Speed of PromptAD relative to the unavoidable CLIP work.

Prints two ratios (goals from the PromptAD issue):

* **inference**: time per image of :class:`~anomalib_clipad.models.promptad.PromptADModel` (VV-CLIP with both
  streams, two memory associations, both heads, fusion, upsampling, smoothing) over a plain ``CLIP.encode_image``
  of the same backbone on the same batch (goal <= 2x);
* **training**: time of ``Trainer.fit`` of :class:`~anomalib_clipad.models.promptad.PromptAD` for ``k_shot``
  shots and ``epochs`` epochs through Lightning's loop (anomalib datamodule with the k shots, pre-processing callback,
  feature caching, both heads), over ``epochs`` x one forward+backward of open_clip's own text encoder on the whole
  prompt set of both heads (:func:`~anomalib_clipad.benchmarks.references.plain_text_forward_backward`, all
  ``context_length`` positions; goal <= 1.3x, i.e. nothing but the text side is recomputed per epoch). It also
  prints the ratio to ``epochs`` x *our* text step (the same prompts through
  :class:`~anomalib_clipad.clip.text.ClipTextTower`, which stops the causal pass at the last end-of-text token):
  that one shows what a training epoch costs beyond its text pass.

Weights do not change the timings, so the backbone is randomly initialised (no download). On a CPU the times are
this process's CPU time (robust to other jobs on a shared machine; wall time is printed too); on a GPU wall time.
Example::

    python -m anomalib_clipad.benchmarks.speed_promptad --backbone ViT-B-16-plus-240 --epochs 100
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import torch

from anomalib_clipad.benchmarks.references import plain_image_forward, plain_text_forward_backward
from anomalib_clipad.benchmarks.timing import clock_for, clock_name, median_times, synchronise
from anomalib_clipad.clip.loading import load_clip
from anomalib_clipad.models.promptad import PromptAD, PromptADModel


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
        medians = median_times(
            {"promptad": lambda: model(images), "plain": lambda: plain_image_forward(clip, images)}, repeats, device
        )
    promptad_time, plain_time = medians["promptad"] / batch_size, medians["plain"] / batch_size
    return {"promptad_s": promptad_time, "encode_image_s": plain_time, "ratio": promptad_time / plain_time}


def text_step_times(model: PromptADModel, plain_clip: torch.nn.Module, repeats: int, device: torch.device) -> dict:
    """Median seconds of one text forward+backward over every prompt of both heads: ours and open_clip's own."""
    tokens = model.prompt_tokens().to(device)

    def ours() -> None:
        model.zero_grad(set_to_none=True)
        features = model.prompt_features()
        torch.stack([f.sum() for groups in features.values() for f in groups.values()]).sum().backward()

    medians = median_times(
        {"ours": ours, "plain": lambda: plain_text_forward_backward(plain_clip, tokens)}, repeats, device
    )
    model.zero_grad(set_to_none=True)
    return {**medians, "n_prompts": tokens.shape[0], "used_length": model.text.used_length(tokens)}


def training_ratio(backbone: str, k_shot: int, epochs: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Seconds of ``Trainer.fit`` and of ``epochs`` text forward+backward passes, and their ratios.

    The text steps are timed before and after the fit (the mean of the two medians), so that a change of machine
    load during the fit affects both sides alike as far as possible.
    """
    from anomalib.data import MVTecAD
    from lightning.pytorch import Trainer

    from anomalib_clipad.data.synthetic import generate_synthetic_dataset

    clock = clock_for(device)
    plain_clip = load_clip(backbone, None).to(device)  # open_clip's own text encoder, same architecture
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        generate_synthetic_dataset(root, category="bottle", n_train=k_shot, n_test_good=1, n_test_defect=1, seed=0)
        module = PromptAD(k_shot=k_shot, backbone=backbone, pretrained=None, epochs=epochs)
        module.model.configure_prompts("bottle")
        before = text_step_times(module.model.to(device), plain_clip, repeats, device)
        datamodule = MVTecAD(root=root, category="bottle")
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
        trainer.fit(module, datamodule=datamodule)
        synchronise(device)
        fit_time, fit_wall = clock() - start, time.perf_counter() - wall_start
        if trainer.global_step != epochs:
            msg = f"Expected one optimizer step per epoch, got {trainer.global_step} steps in {epochs} epochs."
            raise RuntimeError(msg)
        after = text_step_times(module.model, plain_clip, repeats, device)
    plain, ours = (before["plain"] + after["plain"]) / 2, (before["ours"] + after["ours"]) / 2
    return {
        "fit_s": fit_time,
        "fit_wall_s": fit_wall,
        "plain_text_step_s": plain,
        "our_text_step_s": ours,
        "ratio": fit_time / (plain * epochs),
        "overhead_ratio": fit_time / (ours * epochs),
        "n_prompts": before["n_prompts"],
        "used_length": before["used_length"],
        "context_length": module.model.text.context_length,
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
    print(
        f"PromptAD speed, backbone {arguments.backbone} (random init), device {device} ({threads} CPU threads), "
        f"{clock_name(device)}, torch {torch.__version__}"
    )
    inference = inference_ratio(arguments.backbone, arguments.batch_size, arguments.repeats, device)
    print(
        f"inference (batch {arguments.batch_size}): {inference['promptad_s'] * 1e3:.1f} ms/image vs encode_image "
        f"{inference['encode_image_s'] * 1e3:.1f} ms/image -> ratio {inference['ratio']:.2f}x (goal <= 2x)"
    )
    if not arguments.skip_training:
        epochs = arguments.epochs
        training = training_ratio(arguments.backbone, arguments.k_shot, epochs, arguments.repeats, device)
        print(
            f"training ({arguments.k_shot}-shot, {epochs} epochs, {training['n_prompts']} prompts): Trainer.fit "
            f"{training['fit_s']:.1f} s (wall {training['fit_wall_s']:.1f} s)"
        )
        print(
            f"  vs {epochs} x open_clip text forward+backward ({training['context_length']} positions) "
            f"{training['plain_text_step_s']:.3f} s = {training['plain_text_step_s'] * epochs:.1f} s "
            f"-> ratio {training['ratio']:.2f}x (goal <= 1.3x)"
        )
        print(
            f"  vs {epochs} x our text forward+backward (causal pass cut at position {training['used_length']}) "
            f"{training['our_text_step_s']:.3f} s = {training['our_text_step_s'] * epochs:.1f} s "
            f"-> ratio {training['overhead_ratio']:.2f}x (everything beyond the text pass)"
        )


if __name__ == "__main__":
    main()
