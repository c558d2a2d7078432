# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Speed of DevPrompt relative to the unavoidable CLIP work.

Prints two ratios (goals from the PromptAD/DevPrompt issue):

* **inference**: time per image of :class:`~anomalib_clipad.models.devprompt.DevPromptModel` (VV-CLIP with both
  streams, two memory associations, patch-to-prompt alignment, deviation, Top-K, fusion, upsampling, smoothing) over
  a plain ``CLIP.encode_image`` of the same backbone on the same batch (goal <= 2x);
* **training**: wall time of ``Trainer.fit`` of :class:`~anomalib_clipad.models.devprompt.DevPrompt` for ``k_shot``
  shots and ``epochs`` epochs through Lightning's loop (anomalib datamodule with the k shots, pre-processing callback,
  feature caching, deviation loss) over ``epochs`` x one forward+backward of the text encoder on the prompt set (the
  normal and the abnormal prompt) (goal <= 1.3x).

DevPrompt's synthesised anomalous bags need image-encoder passes too: they are generated once per shot (a fixed bank
of ``n_synthetic_per_shot`` Perlin anomalies) and encoded once with the shots, like the shots' own features. That
one-time cost (Perlin synthesis on the CPU plus ``k x (1 + n_synthetic_per_shot)`` encoder passes) is printed
separately, together with the ratio of the rest of the fit (the per-epoch work) to the text-side reference.

Weights do not change the timings, so the backbone is randomly initialised (no download). Example::

    python -m anomalib_clipad.benchmarks.speed_devprompt --backbone ViT-B-16-plus-240 --epochs 100
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from anomalib_clipad.benchmarks.speed_promptad import _median_time, _synchronise
from anomalib_clipad.clip.loading import load_clip
from anomalib_clipad.models.devprompt import DevPrompt, DevPromptModel


def inference_ratio(backbone: str, batch_size: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Seconds per image of DevPrompt and of ``encode_image``, and their ratio."""
    clip = load_clip(backbone, None).to(device)
    model = DevPromptModel(clip, backbone, synthesize_anomalies=False).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    size = model.image_size[0]
    images = torch.randn(batch_size, 3, size, size, generator=generator).to(device)
    with torch.no_grad():
        model.setup("bottle", torch.randn(1, 3, size, size, generator=generator).to(device))
        devprompt, plain = [], []
        for _ in range(repeats):  # interleaved, so that load changes hit both alike
            devprompt.append(_median_time(lambda: model(images), 1, device))
            plain.append(_median_time(lambda: clip.encode_image(images), 1, device))
    devprompt_time, plain_time = statistics.median(devprompt) / batch_size, statistics.median(plain) / batch_size
    return {"devprompt_s": devprompt_time, "encode_image_s": plain_time, "ratio": devprompt_time / plain_time}


def text_step_time(model: DevPromptModel, repeats: int, device: torch.device) -> float:
    """Median seconds of one forward+backward of the text encoder over the prompt set ``[T_n, T_a]``."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model.prompt_features().sum().backward()

    return _median_time(step, repeats, device)


def training_ratio(
    backbone: str,
    k_shot: int,
    epochs: int,
    *,
    n_synthetic_per_shot: int,
    repeats: int,
    device: torch.device,
) -> dict[str, float]:
    """Seconds of ``Trainer.fit``, of its one-time encoding, and of ``epochs`` text passes; the ratios."""
    from anomalib.data import MVTecAD
    from lightning.pytorch import Trainer

    from anomalib_clipad.data.synthetic import generate_synthetic_dataset

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        generate_synthetic_dataset(root, category="bottle", n_train=k_shot, n_test_good=1, n_test_defect=1, seed=0)
        module = DevPrompt(
            k_shot=k_shot, backbone=backbone, pretrained=None, epochs=epochs, n_synthetic_per_shot=n_synthetic_per_shot
        )
        module.model.set_class_name("bottle")
        reference = text_step_time(module.model.to(device), repeats, device)
        module.model.zero_grad(set_to_none=True)

        one_time: list[float] = []
        encode = module.compute_cached_features

        def timed_encode(images: torch.Tensor) -> dict[str, torch.Tensor]:
            start = time.perf_counter()
            features = encode(images)
            _synchronise(device)
            one_time.append(time.perf_counter() - start)
            return features

        module.compute_cached_features = timed_encode
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
        start = time.perf_counter()
        trainer.fit(module, datamodule=MVTecAD(root=root, category="bottle", num_workers=0))
        _synchronise(device)
        fit_time = time.perf_counter() - start
        assert trainer.global_step == epochs, trainer.global_step
    setup_time = sum(one_time)
    return {
        "fit_s": fit_time,
        "one_time_s": setup_time,
        "text_step_s": reference,
        "ratio": fit_time / (reference * epochs),
        "per_epoch_ratio": (fit_time - setup_time) / (reference * epochs),
    }


def main() -> None:
    """Run both measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="ViT-B-16-plus-240")
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--n-synthetic-per-shot", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-training", action="store_true")
    arguments = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    device = torch.device(arguments.device)
    threads = torch.get_num_threads()
    print(f"DevPrompt speed, backbone {arguments.backbone}, device {device} ({threads} CPU threads)")
    inference = inference_ratio(arguments.backbone, arguments.batch_size, arguments.repeats, device)
    print(
        f"inference: {inference['devprompt_s'] * 1e3:.1f} ms/image vs encode_image "
        f"{inference['encode_image_s'] * 1e3:.1f} ms/image -> ratio {inference['ratio']:.2f}x (goal <= 2x)"
    )
    if not arguments.skip_training:
        training = training_ratio(
            arguments.backbone,
            arguments.k_shot,
            arguments.epochs,
            n_synthetic_per_shot=arguments.n_synthetic_per_shot,
            repeats=arguments.repeats,
            device=device,
        )
        reference = training["text_step_s"] * arguments.epochs
        print(
            f"training ({arguments.k_shot}-shot, {arguments.epochs} epochs, {arguments.n_synthetic_per_shot} "
            f"synthesised anomalies per shot): Trainer.fit {training['fit_s']:.1f} s vs {arguments.epochs} x text "
            f"forward+backward {training['text_step_s'] * 1e3:.1f} ms = {reference:.1f} s -> ratio "
            f"{training['ratio']:.2f}x (goal <= 1.3x)"
        )
        print(
            f"  of which one-time synthesis and encoding of the shots' anomalies and the shots: "
            f"{training['one_time_s']:.1f} s; the rest (per-epoch work) -> ratio {training['per_epoch_ratio']:.2f}x"
        )


if __name__ == "__main__":
    main()
