# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Inference speed of WinCLIP+ (1-shot) against anomalib's built-in WinClip and a plain CLIP image forward.

Run::

    python -m anomalib_clipad.benchmarks.speed_winclip_plus [--batch 8] [--repeats 3] [--backbone ViT-B-16-plus-240]

All three use the same randomly initialised weights (speed does not depend on their values) and the same batch of
``image_size`` images; it prints the per-image time of each and the ratios. WinCLIP runs the ViT once on the image and
once on every window (196 windows of 2x2 and 169 of 3x3 patches at 240 px): 12.8x the tokens of a plain forward.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from anomalib_clipad.benchmarks.timing import interleaved_times, median_times
from anomalib_clipad.clip.loading import register_model_configs
from anomalib_clipad.models.winclip_plus.torch_model import WinCLIPPlusModel

CPU = torch.device("cpu")
WALL = time.perf_counter  # wall time per round (the figures in the README were taken with it)


def _block_cost_per_token(ours: WinCLIPPlusModel, batch: int, rounds: int) -> None:
    """Print the time per token of one ViT block on the plain batch and on each scale's window batch."""
    vision = ours.vision
    block = vision.blocks[0]
    n_patches = ours.grid_size[0] * ours.grid_size[1]
    shapes = {"plain": (batch, n_patches + 1)}
    for scale in ours.scales:
        shapes[f"windows {scale}x{scale}"] = (batch * ours.window_indices(scale).shape[0], scale * scale + 1)
    inputs = {name: torch.randn(*shape, vision.width) for name, shape in shapes.items()}
    with torch.inference_mode():
        medians = median_times({name: (lambda x=x: block(x)) for name, x in inputs.items()}, rounds, CPU, clock=WALL)
    for name, (sequences, length) in shapes.items():
        per_token = medians[name] / (sequences * length)
        print(f"one block, {name:<12}: {sequences:5d} x {length:3d} tokens, {per_token * 1e6:8.1f} us/token")


def _anomalib_winclip(backbone: str) -> torch.nn.Module:
    """Anomalib's WinClipModel on ``backbone`` with random weights (it hard-codes its backbone and weights tag)."""
    import anomalib.models.image.winclip.torch_model as anomalib_winclip

    saved = anomalib_winclip.BACKBONE, anomalib_winclip.PRETRAINED
    anomalib_winclip.BACKBONE, anomalib_winclip.PRETRAINED = backbone, None
    try:
        return anomalib_winclip.WinClipModel(scales=(2, 3)).eval()
    finally:
        anomalib_winclip.BACKBONE, anomalib_winclip.PRETRAINED = saved


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark and print per-image times and ratios.

    Returns:
        Per-image seconds of ``plain``, ``ours`` and ``anomalib``.
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ViT-B-16-plus-240", help="open_clip architecture (random weights)")
    parser.add_argument("--image-size", type=int, default=240, help="input side in pixels (the backbone's own)")
    parser.add_argument("--batch", type=int, default=8, help="images per forward")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (one forward of each model per round)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--skip-anomalib", action="store_true", help="do not time anomalib's WinClip")
    parser.add_argument("--block-profile", action="store_true", help="also time one ViT block per token shape")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    register_model_configs()
    torch.manual_seed(0)

    images = torch.randn(args.batch, 3, args.image_size, args.image_size)
    reference = torch.randn(1, 3, args.image_size, args.image_size)

    theirs = None if args.skip_anomalib else _anomalib_winclip(args.backbone)
    with tempfile.TemporaryDirectory() as folder:
        weights = None
        if theirs is not None:
            weights = Path(folder) / "weights.pt"
            torch.save(theirs.clip.state_dict(), weights)
        ours = WinCLIPPlusModel(args.backbone, weights, image_size=args.image_size).eval()
    with torch.inference_mode():
        ours.set_class("object")
        ours.set_references(reference)
        if theirs is not None:
            theirs.setup("object", reference)

    # "plain": what CLIP.encode_image does (patch embedding, blocks, ln_post + proj of the class token), same tower
    vision = ours.vision
    functions: dict[str, Callable[[], object]] = {
        "plain": lambda: vision(images).class_token,
        "ours": lambda: ours(images),
    }
    if theirs is not None:
        functions["anomalib"] = lambda: theirs(images)
    with torch.inference_mode():
        timings = interleaved_times(functions, args.repeats, CPU, warmup=args.warmup, clock=WALL)
    results = {name: statistics.median(values) / args.batch for name, values in timings.items()}

    print(
        f"backbone {args.backbone} (random init), {args.image_size} px, batch {args.batch}, "
        f"{args.repeats} interleaved rounds after {args.warmup} warm-up, {torch.get_num_threads()} CPU threads, "
        f"torch {torch.__version__}"
    )
    for name, label in (
        ("plain", "plain encode_image"),
        ("ours", "WinCLIP+ 1-shot (ours)"),
        ("anomalib", "anomalib WinClip 1-shot"),
    ):
        if name in results:
            per_round = ", ".join(f"{value / args.batch:.2f}" for value in timings[name])
            print(
                f"{label:<25}: {results[name] * 1000:9.1f} ms/image = {results[name] / results['plain']:6.2f}x plain "
                f"(s/image per round: {per_round})"
            )
    if "anomalib" in results:
        ratios = [
            theirs_time / ours_time for theirs_time, ours_time in zip(timings["anomalib"], timings["ours"], strict=True)
        ]
        print(
            f"ours is {results['anomalib'] / results['ours']:.2f}x faster than anomalib's WinClip "
            f"(per round: {', '.join(f'{ratio:.2f}' for ratio in ratios)})"
        )
    if args.block_profile:
        _block_cost_per_token(ours, args.batch, max(args.repeats, 3))
    return results


if __name__ == "__main__":
    main()
