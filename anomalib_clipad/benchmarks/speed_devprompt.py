# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Speed of DevPrompt relative to the unavoidable CLIP work.

Prints two ratios (goals from the PromptAD/DevPrompt issue):

* **inference**: time per image of :class:`~anomalib_clipad.models.devprompt.DevPromptModel` (VV-CLIP with both
  streams, two memory associations, patch-to-prompt alignment, deviation, Top-K, fusion, upsampling, smoothing) over
  a plain ``CLIP.encode_image`` of the same backbone on the same batch (goal <= 2x);
* **training**: time of ``Trainer.fit`` of :class:`~anomalib_clipad.models.devprompt.DevPrompt` for ``k_shot``
  shots and ``epochs`` epochs through Lightning's loop (anomalib datamodule with the k shots, pre-processing callback,
  feature caching, deviation loss) over ``epochs`` x one forward+backward of open_clip's own text encoder on the
  prompt set (the normal and the abnormal prompt, all ``context_length`` positions; goal <= 1.3x). The ratio to
  ``epochs`` x *our* text step (cut at the last end-of-text token) is printed too: what an epoch costs beyond it.

DevPrompt's synthesised anomalous bags need image-encoder passes too: they are generated once per shot (a fixed bank
of ``n_synthetic_per_shot`` Perlin anomalies) and encoded once with the shots, like the shots' own features. That
one-time cost (Perlin synthesis on the CPU plus ``k x (1 + n_synthetic_per_shot)`` encoder passes) is printed
separately, together with the ratio of the rest of the fit (the per-epoch work) to the text-side reference.

Weights do not change the timings, so the backbone is randomly initialised (no download). On a CPU the times are
this process's CPU time (wall time of the fit is printed too); on a GPU wall time. Example::

    python -m anomalib_clipad.benchmarks.speed_devprompt --backbone ViT-B-16-plus-240 --epochs 100
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
from anomalib_clipad.benchmarks.timing import clock_for, clock_name, median_times, synchronise
from anomalib_clipad.clip.loading import load_clip
from anomalib_clipad.models.devprompt import DevPrompt, DevPromptModel


def inference_ratio(backbone: str, batch_size: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Seconds per image of DevPrompt and of ``encode_image``, and their ratio."""
    clip = load_clip(backbone, None).to(device)
    model = DevPromptModel(backbone, clip, synthesize_anomalies=False).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    size = model.image_size[0]
    images = torch.randn(batch_size, 3, size, size, generator=generator).to(device)
    with torch.no_grad():
        model.setup(CATEGORY, torch.randn(1, 3, size, size, generator=generator).to(device))
        medians = median_times(
            {"devprompt": lambda: model(images), "plain": lambda: plain_image_forward(clip, images)}, repeats, device
        )
    devprompt_time, plain_time = medians["devprompt"] / batch_size, medians["plain"] / batch_size
    return {"devprompt_s": devprompt_time, "encode_image_s": plain_time, "ratio": devprompt_time / plain_time}


def training_times(
    backbone: str,
    k_shot: int,
    epochs: int,
    *,
    n_synthetic_per_shot: int,
    repeats: int,
    device: torch.device,
) -> dict[str, float]:
    """``Trainer.fit`` of DevPrompt, its one-time encoding, and the text references (see :mod:`.prompt_training`)."""
    plain_clip = load_clip(backbone, None).to(device)  # open_clip's own text encoder, same architecture
    module = DevPrompt(
        k_shot=k_shot, backbone=backbone, pretrained=None, epochs=epochs, n_synthetic_per_shot=n_synthetic_per_shot
    )
    model = module.model.to(device)
    model.set_class(CATEGORY)
    tokens = model.prompt_learner.tokens

    def our_step() -> None:
        model.zero_grad(set_to_none=True)
        model.prompt_features().sum().backward()

    clock, one_time = clock_for(device), []
    encode = model.encode_training_images  # what the recipe runs once per shot (and its synthesised anomalies)

    def timed_encode(images: torch.Tensor) -> dict[str, torch.Tensor]:
        synchronise(device)
        start = clock()
        features = encode(images)
        synchronise(device)
        one_time.append(clock() - start)
        return features

    model.encode_training_images = timed_encode
    result = timed_fit(
        module, k_shot, epochs, device, our_step=our_step, plain_clip=plain_clip, tokens=tokens, repeats=repeats
    )
    return {
        **result,
        "one_time_s": sum(one_time),
        "used_length": model.text.used_length(tokens),
        "context_length": model.text.context_length,
    }


def main() -> None:
    """Run both measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--n-synthetic-per-shot", type=int, default=10)
    arguments = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    device = torch.device(arguments.device)
    print(
        f"DevPrompt speed, backbone {arguments.backbone} (random init), device {device} "
        f"({torch.get_num_threads()} CPU threads), {clock_name(device)}, torch {torch.__version__}"
    )
    inference = inference_ratio(arguments.backbone, arguments.batch_size, arguments.repeats, device)
    print(
        f"inference (batch {arguments.batch_size}): {inference['devprompt_s'] * 1e3:.1f} ms/image vs encode_image "
        f"{inference['encode_image_s'] * 1e3:.1f} ms/image -> ratio {inference['ratio']:.2f}x (goal <= 2x)"
    )
    if not arguments.skip_training:
        epochs = arguments.epochs
        training = training_times(
            arguments.backbone,
            arguments.k_shot,
            epochs,
            n_synthetic_per_shot=arguments.n_synthetic_per_shot,
            repeats=arguments.repeats,
            device=device,
        )
        print_training(
            f"{arguments.k_shot}-shot, {epochs} epochs, {arguments.n_synthetic_per_shot} synthetic anomalies per shot",
            epochs,
            training,
            context_length=int(training["context_length"]),
            used_length=int(training["used_length"]),
        )
        rest = training["fit_s"] - training["one_time_s"]
        print(
            f"  of which one-time synthesis and encoding of the shots and their anomalies: "
            f"{training['one_time_s']:.1f} s; the rest (per-epoch work) {rest:.1f} s vs our text steps -> ratio "
            f"{rest / (training['our_text_step_s'] * epochs):.2f}x"
        )


if __name__ == "__main__":
    main()
