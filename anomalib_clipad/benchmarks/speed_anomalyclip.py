# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Speed of AnomalyCLIP relative to the unavoidable CLIP work.

Prints two ratios in one run (goals from the AnomalyCLIP issue):

* **inference**: time per image of :class:`~anomalib_clipad.models.anomalyclip.AnomalyCLIPModel` (DPAM image tower
  with both streams, global and patch scores against the stored text features, bilinear upsampling, Gaussian
  smoothing) over a plain open_clip ``CLIP.encode_image`` of the same backbone built for the same input size (518 px
  by default) on the same batch (goal <= 1.5x);
* **training**: ``Trainer.fit`` of :class:`~anomalib_clipad.models.anomalyclip.AnomalyCLIP` on a synthetic labelled
  auxiliary set (:class:`~anomalib_clipad.data.auxiliary.AuxiliaryData`, read in the main process) through
  Lightning's loop, timed per epoch. The first epoch runs the frozen image tower on every image (the features are
  then cached); every later epoch is compared with the learnable side alone: for each batch of the epoch, the text
  forward of the prompts, the glocal loss on the cached features, the backward pass and the Adam step, timed outside
  Lightning (goal <= 1.3x: an epoch after the first recomputes nothing of the image side). What remains in an epoch
  beyond that reference is Lightning's loop, reading and resizing the images (the loader does not know about the
  cache) and the cache look-ups.

Weights do not change the timings, so the backbone is randomly initialised (no download). On a CPU the times are
this process's CPU time (robust to other jobs on a shared machine; wall time is printed too); on a GPU wall time.
Example::

    python -m anomalib_clipad.benchmarks.speed_anomalyclip --backbone ViT-L-14-336 --images 2 --repeats 1
    python -m anomalib_clipad.benchmarks.speed_anomalyclip --backbone clipad-tiny-vit-14-l24
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer

from anomalib_clipad.benchmarks.references import plain_image_forward
from anomalib_clipad.benchmarks.timing import EpochTimer, clock_for, clock_name, median_times, synchronise
from anomalib_clipad.clip.loading import load_clip
from anomalib_clipad.models.anomalyclip import AnomalyCLIP, AnomalyCLIPModel

CATEGORY = "bottle"
DEFECT_TYPES = ("scratch", "hole", "stain")


# ------------------------------------------------------------------------------------------------------- inference
def inference_ratio(
    backbone: str, image_size: int, batch_size: int, repeats: int, device: torch.device
) -> dict[str, float]:
    """Seconds per image of AnomalyCLIP and of a plain ``encode_image`` at ``image_size``, and their ratio."""
    plain_clip = load_clip(backbone, None, image_size=image_size).to(device)  # open_clip, built for this size
    model = AnomalyCLIPModel(backbone, None, image_size=image_size, seed=0).to(device).eval()
    images = torch.randn(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    images = images.to(device)
    with torch.no_grad():
        model.update_text_features()
        medians = median_times(
            {"anomalyclip": lambda: model(images), "plain": lambda: plain_image_forward(plain_clip, images)},
            repeats,
            device,
        )
    anomalyclip_time, plain_time = medians["anomalyclip"] / batch_size, medians["plain"] / batch_size
    return {"anomalyclip_s": anomalyclip_time, "encode_image_s": plain_time, "ratio": anomalyclip_time / plain_time}


# -------------------------------------------------------------------------------------------------------- training


def learnable_epoch(
    model: AnomalyCLIPModel,
    features: dict[str, torch.Tensor],
    labels: torch.Tensor,
    masks: torch.Tensor,
    *,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
) -> None:
    """The learnable side of one epoch: per batch, text forward, loss on cached features, backward, Adam step."""
    for start in range(0, labels.shape[0], batch_size):
        chunk = slice(start, start + batch_size)
        optimizer.zero_grad(set_to_none=True)
        losses = model.losses({name: value[chunk] for name, value in features.items()}, labels[chunk], masks[chunk])
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
    """``Trainer.fit`` of AnomalyCLIP timed per epoch, with one learnable-side reference epoch after each epoch.

    Returns:
        ``n_images``, ``n_batches`` (steps per epoch), ``fit_s`` / ``fit_wall_s``, per-epoch ``epochs_s`` /
        ``epochs_wall_s``, ``later_epoch_s`` (median of the epochs after the first) and ``learnable_epoch_s`` (median
        of the reference epochs).

    Raises:
        ValueError: fewer than 2 epochs.
        RuntimeError: the frozen encoder did not run exactly once per training image.
    """
    from anomalib_clipad.data.auxiliary import AuxiliaryData
    from anomalib_clipad.data.synthetic import generate_synthetic_dataset

    if epochs < 2:
        msg = f"--epochs must be at least 2 (the first epoch encodes the images), got {epochs}."
        raise ValueError(msg)
    module = AnomalyCLIP(backbone=backbone, pretrained=None, image_size=image_size, epochs=epochs, seed=0)
    model = module.model.to(device)
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
        batches = [module.pre_processor.transform(batch.image, batch.gt_mask) for batch in loader]  # as in training
        with torch.no_grad():
            encoded = [model.encode_images(image.to(device)) for image, _ in batches]
        features = {name: torch.cat([chunk[name] for chunk in encoded]) for name in encoded[0]}
        masks = torch.cat([mask for _, mask in batches]).to(device)
        labels = torch.cat([batch.gt_label for batch in loader]).to(device)
        del encoded, batches
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, betas=(0.5, 0.999))
        clock = clock_for(device)

        def reference_epoch() -> float:
            """One timed learnable-side epoch; the prompts are put back as they were (the fit goes on unchanged)."""
            state = model.learned_state_dict()
            synchronise(device)
            start = clock()
            with torch.enable_grad():
                learnable_epoch(model, features, labels, masks, batch_size=batch_size, optimizer=optimizer)
            synchronise(device)
            elapsed = clock() - start
            with torch.no_grad():
                model.load_learned_state_dict(state, update_text_features=False)
            model.zero_grad(set_to_none=True)
            return elapsed

        reference_epoch()  # warm-up, not kept
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
    later = timer.epochs[1:]
    return {
        "n_images": n_images,
        "n_batches": len(range(0, n_images, batch_size)),
        "fit_s": fit_time,
        "fit_wall_s": fit_wall,
        "epochs_s": timer.epochs,
        "epochs_wall_s": timer.wall,
        "later_epoch_s": statistics.median(later),
        "learnable_epoch_s": statistics.median(timer.references),
    }


# ------------------------------------------------------------------------------------------------------------ main
def main() -> None:
    """Run both measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="ViT-L-14-336")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--batch-size", type=int, default=8, help="images per inference forward and training batch")
    parser.add_argument("--images", type=int, default=10, help="labelled training images (about half anomalous)")
    parser.add_argument("--source-size", type=int, default=256, help="side of the synthetic images on disk")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (the first one encodes the images)")
    parser.add_argument("--repeats", type=int, default=5, help="timed inference rounds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-training", action="store_true")
    arguments = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    device = torch.device(arguments.device)
    print(
        f"AnomalyCLIP speed, backbone {arguments.backbone} (random init) at {arguments.image_size} px, device {device} "
        f"({torch.get_num_threads()} CPU threads), {clock_name(device)}, torch {torch.__version__}"
    )
    batch = min(arguments.batch_size, arguments.images) if not arguments.skip_training else arguments.batch_size
    inference = inference_ratio(arguments.backbone, arguments.image_size, batch, arguments.repeats, device)
    print(
        f"inference (batch {batch}): {inference['anomalyclip_s'] * 1e3:.1f} ms/image vs encode_image "
        f"{inference['encode_image_s'] * 1e3:.1f} ms/image -> ratio {inference['ratio']:.2f}x (goal <= 1.5x)"
    )
    if arguments.skip_training:
        return
    gc.collect()
    if arguments.images < 2:
        parser.error("--images must be at least 2 (one normal, one anomalous).")
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
    epochs = ", ".join(f"{value:.2f}" for value in training["epochs_s"])
    print(
        f"training ({training['n_images']} labelled images, batch {arguments.batch_size}, {training['n_batches']} "
        f"step(s)/epoch, {arguments.epochs} epochs): Trainer.fit {training['fit_s']:.1f} s (wall "
        f"{training['fit_wall_s']:.1f} s, both without the interleaved references); epochs {epochs} s"
    )
    ratio = training["later_epoch_s"] / training["learnable_epoch_s"]
    print(
        f"  epoch after the first {training['later_epoch_s'] * 1e3:.1f} ms vs the learnable side alone (text "
        f"forward + loss on cached features + backward + Adam, {training['n_batches']} step(s)) "
        f"{training['learnable_epoch_s'] * 1e3:.1f} ms -> ratio {ratio:.2f}x (goal <= 1.3x)"
    )
    print(
        f"  first epoch (encodes every image once) {training['epochs_s'][0]:.2f} s = "
        f"{training['epochs_s'][0] / training['later_epoch_s']:.1f}x a later epoch"
    )


if __name__ == "__main__":
    main()
