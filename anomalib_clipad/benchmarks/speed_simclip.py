# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Speed of SimCLIP and SimCLIP+ relative to the unavoidable CLIP work.

Prints in one run (goals from the SimCLIP issue):

* **inference**: time per image of :class:`~anomalib_clipad.models.simclip.SimCLIPModel` zero-shot (SimCLIP: the
  frozen image tower reading its feature layers, the adapters, image and per-layer scores against the stored text
  prototypes, bilinear upsampling, Gaussian smoothing) and with a ``k``-shot memory gallery (SimCLIP+, ``k=1`` by
  default: nearest-neighbour search per layer, the prior-aware revision, the visual map) over a plain open_clip
  ``CLIP.encode_image`` of the same backbone built for the same input size (518 px by default) on the same batch
  (goal <= 1.5x for both);
* **training**: ``Trainer.fit`` of :class:`~anomalib_clipad.models.simclip.SimCLIP` on a synthetic labelled auxiliary
  set (:class:`~anomalib_clipad.data.auxiliary.AuxiliaryData`, read in the main process) through Lightning's loop,
  timed per epoch. The first epoch runs the frozen image tower once on every image (the features are then cached;
  reported apart, as a one-time cost). Every later epoch is compared with the learnable side alone: for each batch of
  the epoch, the step on cached features (IPT's pass over the cached text hidden states and both projections, the
  adapters, the classification, focal and dice losses), the backward pass and the Adam step, timed outside Lightning
  (goal <= 1.3x: an epoch after the first recomputes nothing of the image side). What remains in an epoch beyond that
  reference is Lightning's loop, reading and resizing the images (the loader does not know about the cache) and the
  cache look-ups.

Weights do not change the timings, so the backbone is randomly initialised (no download; the scores mean nothing).
On a CPU the times are this process's CPU time (robust to other jobs on a shared machine; wall time is printed for
the fit); on a GPU wall time. Example::

    python -m anomalib_clipad.benchmarks.speed_simclip --images 2 --repeats 1   # ViT-L-14-336 at 518 px
    python -m anomalib_clipad.benchmarks.speed_simclip --tiny                   # tiny 24-block backbone (CI smoke)
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer

from anomalib_clipad.benchmarks.references import plain_image_forward
from anomalib_clipad.benchmarks.timing import EpochTimer, clock_for, clock_name, median_times, synchronise
from anomalib_clipad.clip import TINY_BACKBONE_24
from anomalib_clipad.clip.loading import load_clip
from anomalib_clipad.models.simclip import SimCLIP, SimCLIPModel

CATEGORY = "bottle"
DEFECT_TYPES = ("scratch", "hole", "stain")
BANNER = "RANDOM WEIGHTS (pretrained=None): these figures are for SPEED ONLY; the scores and maps mean nothing."
INFERENCE_GOAL, TRAINING_GOAL = 1.5, 1.3

#: Defaults of the options: the paper's backbone and input size, or ``--tiny`` (the tests' 24-block backbone).
FULL_SETTINGS: dict[str, Any] = {
    "backbone": "ViT-L-14-336",
    "image_size": 518,
    "batch_size": 8,
    "images": 10,
    "source_size": 256,
    "epochs": 5,
    "repeats": 5,
}
TINY_SETTINGS: dict[str, Any] = {
    "backbone": TINY_BACKBONE_24,
    "image_size": 112,
    "batch_size": 4,
    "images": 8,
    "source_size": 64,
    "epochs": 3,
    "repeats": 3,
}


# ------------------------------------------------------------------------------------------------------- inference
def inference_ratios(
    backbone: str, image_size: int, batch_size: int, repeats: int, device: torch.device, *, k_shot: int = 1
) -> dict[str, float]:
    """Seconds per image of SimCLIP, SimCLIP+ (``k_shot``) and a plain ``encode_image`` at ``image_size``.

    Returns:
        ``simclip_s``, ``simclip_plus_s``, ``encode_image_s`` (per image) and the ratios ``simclip_ratio``,
        ``simclip_plus_ratio`` to ``encode_image``.
    """
    plain_clip = load_clip(backbone, None, image_size=image_size).to(device)  # open_clip, built for this size
    zero_shot = SimCLIPModel(backbone, None, image_size=image_size, seed=0).to(device).eval()
    few_shot = SimCLIPModel(backbone, None, image_size=image_size, k_shot=k_shot, seed=0).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(device)
    shots = torch.randn(k_shot, 3, image_size, image_size, generator=generator).to(device)
    with torch.no_grad():
        for model in (zero_shot, few_shot):
            model.set_class(CATEGORY)
        few_shot.set_references(shots)
        medians = median_times(
            {
                "simclip": lambda: zero_shot(images),
                "simclip_plus": lambda: few_shot(images),
                "plain": lambda: plain_image_forward(plain_clip, images),
            },
            repeats,
            device,
        )
    per_image = {name: value / batch_size for name, value in medians.items()}
    return {
        "simclip_s": per_image["simclip"],
        "simclip_plus_s": per_image["simclip_plus"],
        "encode_image_s": per_image["plain"],
        "simclip_ratio": per_image["simclip"] / per_image["plain"],
        "simclip_plus_ratio": per_image["simclip_plus"] / per_image["plain"],
    }


# -------------------------------------------------------------------------------------------------------- training


def learnable_epoch(
    model: SimCLIPModel,
    features: dict[str, torch.Tensor],
    batches: Sequence[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
) -> None:
    """The learnable side of one epoch: per batch, the losses on cached features, backward, Adam step.

    Each batch's losses run IPT over the cached text hidden states of its classes, both projections, the adapters and
    the classification, focal and dice terms, exactly as a training step does (:meth:`SimCLIPModel.losses`).

    Args:
        model: the torch model.
        features: the cached :meth:`SimCLIPModel.encode_images` output of every training image, in loader order.
        batches: per batch ``{"rows": slice, "labels", "masks", "has_mask", "names"}``.
        optimizer: Adam on the trainable parameters.
    """
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        losses = model.losses(
            {name: value[batch["rows"]] for name, value in features.items()},
            batch["labels"],
            batch["masks"],
            class_names=batch["names"],
            has_mask=batch["has_mask"],
        )
        losses["loss"].backward()
        optimizer.step()


def training_times(
    backbone: str,
    *,
    image_size: int,
    n_good: int,
    n_defect: int,
    defect_types: tuple[str, ...],
    source_size: int,
    epochs: int,
    batch_size: int,
    device: torch.device,
) -> dict[str, Any]:
    """``Trainer.fit`` of SimCLIP timed per epoch, with one learnable-side reference epoch after each epoch.

    Returns:
        ``n_images``, ``n_batches`` (steps per epoch), ``fit_s`` / ``fit_wall_s``, per-epoch ``epochs_s`` /
        ``epochs_wall_s``, ``later_epoch_s`` (median of the epochs after the first), ``learnable_epoch_s`` (median
        of the reference epochs) and ``encode_s`` (the frozen image tower alone on every training image, once).

    Raises:
        ValueError: fewer than 2 epochs.
        RuntimeError: the frozen encoder did not run exactly once per training image.
    """
    from anomalib_clipad.data.auxiliary import AuxiliaryData
    from anomalib_clipad.data.synthetic import generate_synthetic_dataset

    if epochs < 2:
        msg = f"--epochs must be at least 2 (the first epoch encodes the images), got {epochs}."
        raise ValueError(msg)
    module = SimCLIP(backbone=backbone, pretrained=None, image_size=image_size, epochs=epochs, seed=0)
    model = module.model.to(device)
    clock = clock_for(device)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        generate_synthetic_dataset(
            root,
            category=CATEGORY,
            n_train=1,
            n_test_good=n_good,
            n_test_defect=n_defect,
            image_size=source_size,
            seed=0,
            defect_types=defect_types,
        )
        datamodule = AuxiliaryData(
            dataset="MVTecAD", root=root, categories=[CATEGORY], train_batch_size=batch_size, num_workers=0, seed=0
        )
        datamodule.setup()
        n_images = len(datamodule.train_data)
        # the reference's inputs: every training image once through the model's pre-processing and frozen encoder
        loader = torch.utils.data.DataLoader(
            datamodule.train_data, batch_size=batch_size, collate_fn=datamodule.train_data.collate_fn
        )
        loaded = list(loader)
        transformed = [module.pre_processor.transform(batch.image, batch.gt_mask) for batch in loaded]
        synchronise(device)
        encode_start = clock()
        with torch.no_grad():
            encoded = [model.encode_images(image.to(device)) for image, _ in transformed]
        synchronise(device)
        encode_time = clock() - encode_start
        features = {name: torch.cat([chunk[name] for chunk in encoded]) for name in encoded[0]}
        batches, first = [], 0
        for batch, (_, mask) in zip(loaded, transformed, strict=True):
            size = len(batch.image_path)
            batches.append(
                {
                    "rows": slice(first, first + size),
                    "labels": batch.gt_label.to(device),
                    "masks": mask.to(device),
                    "has_mask": batch.has_mask.to(device) if batch.has_mask is not None else None,
                    "names": list(batch.category) if batch.category is not None else [CATEGORY] * size,
                }
            )
            first += size
        del encoded, transformed, loaded
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, betas=(0.5, 0.999))

        def reference_epoch() -> float:
            """One timed learnable-side epoch; the weights are put back as they were (the fit goes on unchanged)."""
            state = model.learned_state_dict()
            synchronise(device)
            start = clock()
            with torch.enable_grad():
                learnable_epoch(model, features, batches, optimizer)
            synchronise(device)
            elapsed = clock() - start
            with torch.no_grad():
                model.load_learned_state_dict(state, update_text_features=False)
            model.zero_grad(set_to_none=True)
            return elapsed

        reference_epoch()  # warm-up, not kept
        # the fit's first epoch runs the frozen text tower over the class's prompts once, as a real run does
        model._prompt_cache.clear()
        timer = EpochTimer(device, after_epoch=reference_epoch)
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
            callbacks=[timer],
        )
        synchronise(device)
        start, wall_start = clock(), time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        synchronise(device)
        # the interleaved reference epochs ran inside the fit: not part of it
        fit_time = clock() - start - sum(timer.references)
        fit_wall = time.perf_counter() - wall_start - timer.reference_wall
        stats = module.recipe.cache.stats
    if stats["computed_images"] != n_images:
        msg = f"The frozen encoder ran on {stats['computed_images']} images for {n_images} training images."
        raise RuntimeError(msg)
    return {
        "n_images": n_images,
        "n_batches": len(batches),
        "fit_s": fit_time,
        "fit_wall_s": fit_wall,
        "epochs_s": timer.epochs,
        "epochs_wall_s": timer.wall,
        "later_epoch_s": statistics.median(timer.epochs[1:]),
        "learnable_epoch_s": statistics.median(timer.references),
        "encode_s": encode_time,
    }


# ------------------------------------------------------------------------------------------------------------ main
def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help=f"the tiny random {TINY_BACKBONE_24} (CI / smoke)")
    parser.add_argument("--backbone", help=f"default {FULL_SETTINGS['backbone']} ({TINY_SETTINGS['backbone']} tiny)")
    parser.add_argument("--image-size", type=int, help="input size (default 518; 112 tiny)")
    parser.add_argument("--batch-size", type=int, help="images per inference forward and training batch (8; 4 tiny)")
    parser.add_argument("--images", type=int, help="labelled training images, about half anomalous (10; 8 tiny)")
    parser.add_argument("--source-size", type=int, help="side of the synthetic images on disk (256; 64 tiny)")
    parser.add_argument("--epochs", type=int, help="training epochs, the first one encodes the images (5; 3 tiny)")
    parser.add_argument("--repeats", type=int, help="timed inference rounds (5; 3 tiny)")
    parser.add_argument("--k-shot", type=int, default=1, help="normal reference images of SimCLIP+ (1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-training", action="store_true")
    arguments = parser.parse_args(argv)
    settings = TINY_SETTINGS if arguments.tiny else FULL_SETTINGS
    for name, value in settings.items():
        if getattr(arguments, name) is None:
            setattr(arguments, name, value)
    if arguments.k_shot < 1:
        parser.error("--k-shot must be at least 1 (SimCLIP+).")
    if not arguments.skip_training and arguments.images < 2:
        parser.error("--images must be at least 2 (one normal, one anomalous).")
    return arguments


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run both measurements and print them.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        ``{"inference": inference_ratios(...), "training": training_times(...)}`` (no ``"training"`` with
        ``--skip-training``).
    """
    arguments = _arguments(argv)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    device = torch.device(arguments.device)
    saved_threads = torch.get_num_threads()  # restored at the end (main may run inside a test process)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    try:
        return _run(arguments, device)
    finally:
        torch.set_num_threads(saved_threads)


def _run(arguments: argparse.Namespace, device: torch.device) -> dict[str, dict[str, Any]]:
    print(BANNER)
    print(
        f"SimCLIP speed, backbone {arguments.backbone} (random init) at {arguments.image_size} px, device {device} "
        f"({torch.get_num_threads()} CPU threads), {clock_name(device)}, torch {torch.__version__}"
    )
    results: dict[str, dict[str, Any]] = {}
    batch = min(arguments.batch_size, arguments.images) if not arguments.skip_training else arguments.batch_size
    inference = inference_ratios(
        arguments.backbone, arguments.image_size, batch, arguments.repeats, device, k_shot=arguments.k_shot
    )
    results["inference"] = inference
    print(
        f"inference (batch {batch}, median of {arguments.repeats} round(s)): encode_image "
        f"{inference['encode_image_s'] * 1e3:.1f} ms/image"
    )
    for label, key in (
        ("SimCLIP (zero-shot)", "simclip"),
        (f"SimCLIP+ ({arguments.k_shot}-shot memory)", "simclip_plus"),
    ):
        print(
            f"  {label:<26} {inference[f'{key}_s'] * 1e3:.1f} ms/image -> ratio {inference[f'{key}_ratio']:.2f}x "
            f"(goal <= {INFERENCE_GOAL}x)"
        )
    if arguments.skip_training:
        return results
    gc.collect()
    per_type = (arguments.images // 2) // len(DEFECT_TYPES)
    # about half anomalous (each defect type alike); below 6 images one anomalous image, the rest normal
    defect_types, n_defect = (DEFECT_TYPES, per_type) if per_type else (DEFECT_TYPES[:1], 1)
    n_good = arguments.images - n_defect * len(defect_types)
    training = training_times(
        arguments.backbone,
        image_size=arguments.image_size,
        n_good=n_good,
        n_defect=n_defect,
        defect_types=defect_types,
        source_size=arguments.source_size,
        epochs=arguments.epochs,
        batch_size=arguments.batch_size,
        device=device,
    )
    results["training"] = training
    epochs = ", ".join(f"{value:.2f}" for value in training["epochs_s"])
    print(
        f"training ({training['n_images']} labelled images, batch {arguments.batch_size}, {training['n_batches']} "
        f"step(s)/epoch, {arguments.epochs} epochs): Trainer.fit {training['fit_s']:.1f} s (wall "
        f"{training['fit_wall_s']:.1f} s, both without the interleaved references); epochs {epochs} s"
    )
    ratio = training["later_epoch_s"] / training["learnable_epoch_s"]
    training["ratio"] = ratio
    print(
        f"  epoch after the first {training['later_epoch_s'] * 1e3:.1f} ms vs the learnable side alone (IPT text "
        f"pass + adapters + losses on cached features + backward + Adam, {training['n_batches']} step(s)) "
        f"{training['learnable_epoch_s'] * 1e3:.1f} ms -> ratio {ratio:.2f}x (goal <= {TRAINING_GOAL}x)"
    )
    print(
        f"  first epoch (one-time: encodes every image once) {training['epochs_s'][0]:.2f} s = "
        f"{training['epochs_s'][0] / training['later_epoch_s']:.1f}x a later epoch; the frozen image tower alone on "
        f"the {training['n_images']} images {training['encode_s']:.2f} s"
    )
    return results


if __name__ == "__main__":
    main()
