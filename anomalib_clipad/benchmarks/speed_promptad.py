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
import warnings

import torch

from anomalib_clipad.benchmarks.prompt_training import (
    CATEGORY,
    add_common_arguments,
    print_training,
    timed_fit,
)
from anomalib_clipad.benchmarks.references import plain_image_forward
from anomalib_clipad.benchmarks.timing import clock_name, median_times
from anomalib_clipad.clip.loading import load_clip
from anomalib_clipad.models.promptad import PromptAD, PromptADModel


def inference_ratio(backbone: str, batch_size: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Seconds per image of PromptAD and of ``encode_image``, and their ratio."""
    clip = load_clip(backbone, None).to(device)
    model = PromptADModel(backbone, clip, k_shot=1).to(device).eval()
    model.set_class(CATEGORY)
    generator = torch.Generator().manual_seed(0)
    size = model.image_size
    images = torch.randn(batch_size, 3, size, size, generator=generator).to(device)
    with torch.no_grad():
        model.update_text_features()
        model.set_references(model.encode_images(torch.randn(1, 3, size, size, generator=generator).to(device)))
        medians = median_times(
            {"promptad": lambda: model(images), "plain": lambda: plain_image_forward(clip, images)}, repeats, device
        )
    promptad_time, plain_time = medians["promptad"] / batch_size, medians["plain"] / batch_size
    return {"promptad_s": promptad_time, "encode_image_s": plain_time, "ratio": promptad_time / plain_time}


def training_times(backbone: str, k_shot: int, epochs: int, repeats: int, device: torch.device) -> dict[str, float]:
    """``Trainer.fit`` of PromptAD and the text-step references (see :mod:`.prompt_training`)."""
    plain_clip = load_clip(backbone, None).to(device)  # open_clip's own text encoder, same architecture
    module = PromptAD(k_shot=k_shot, backbone=backbone, pretrained=None, epochs=epochs)
    model = module.model.to(device)
    model.set_class(CATEGORY)
    tokens = model.prompt_tokens()

    def our_step() -> None:
        model.zero_grad(set_to_none=True)
        features = model.prompt_features()
        torch.stack([f.sum() for groups in features.values() for f in groups.values()]).sum().backward()

    result = timed_fit(
        module, k_shot, epochs, device, our_step=our_step, plain_clip=plain_clip, tokens=tokens, repeats=repeats
    )
    return {
        **result,
        "n_prompts": tokens.shape[0],
        "used_length": model.text.used_length(tokens),
        "context_length": model.text.context_length,
    }


def main() -> None:
    """Run both measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    arguments = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    device = torch.device(arguments.device)
    print(
        f"PromptAD speed, backbone {arguments.backbone} (random init), device {device} "
        f"({torch.get_num_threads()} CPU threads), {clock_name(device)}, torch {torch.__version__}"
    )
    inference = inference_ratio(arguments.backbone, arguments.batch_size, arguments.repeats, device)
    print(
        f"inference (batch {arguments.batch_size}): {inference['promptad_s'] * 1e3:.1f} ms/image vs encode_image "
        f"{inference['encode_image_s'] * 1e3:.1f} ms/image -> ratio {inference['ratio']:.2f}x (goal <= 2x)"
    )
    if not arguments.skip_training:
        training = training_times(arguments.backbone, arguments.k_shot, arguments.epochs, arguments.repeats, device)
        print_training(
            f"{arguments.k_shot}-shot, {arguments.epochs} epochs, {training['n_prompts']} prompts",
            arguments.epochs,
            training,
            context_length=int(training["context_length"]),
            used_length=int(training["used_length"]),
        )


if __name__ == "__main__":
    main()
