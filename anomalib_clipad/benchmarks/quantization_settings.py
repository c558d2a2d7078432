# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Which quantisation settings to export with: anomalib's defaults against ours, measured on one model.

Run::

    python -m anomalib_clipad.benchmarks.quantization_settings                    # PromptAD, ViT-B-16-plus-240, 240 px
    python -m anomalib_clipad.benchmarks.quantization_settings --model DevPrompt --calibration-images 8
    python -m anomalib_clipad.benchmarks.quantization_settings --tiny             # the registry's tiny model (smoke)

The model is built at its default backbone and input size with **random weights** (``pretrained=None``; no download),
set up without training the way the speed command does it (text features of the class, the reference memory of its
``k_shot`` first normal images), and its post-processor normalisation spread over the test images' raw outputs (so
that a difference is not magnified by a near-zero range, :func:`~.openvino_speed.calibrate_post_processor`). A
generated MVTec-layout dataset gives the images: the train split calibrates (what :func:`~anomalib_clipad.precision.
calibration_data` uses), the test split is scored. The pipeline is exported to ONNX and converted to OpenVINO once;
each row compresses a copy of that float32 model with :func:`~anomalib_clipad.precision.compress_ov_model` and one
setting changed, runs it with ``INFERENCE_PRECISION_HINT: f32``, and prints the largest absolute difference of the
normalised image scores and maps from the float32 IR on the test images, and how many score-head operations compute
with a low-precision input (:func:`~anomalib_clipad.precision.low_precision_in_head`).

Random weights make the scores meaningless, not the differences: they show what each setting does to the same graph.
The default run (PromptAD, ten rows) took 7.4 CPU-minutes (12 min on a shared two-core machine): the export about a
minute, each ``INT8_PTQ`` row one to one and a half; ``--only`` measures fewer rows (``--only "(anomalib)" --only
"score head float32"``: six).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomalib_clipad.benchmarks.speed import quiet
from anomalib_clipad.precision import (
    ANOMALIB_QUANTIZATION,
    DEFAULT_QUANTIZATION,
    Precision,
    QuantizationSettings,
    compress_ov_model,
    low_precision_in_head,
    named_outputs,
    score_head,
)
from anomalib_clipad.registry import MODEL_NAMES, get_spec

CATEGORY = "bottle"
BANNER = "RANDOM WEIGHTS (pretrained=None): the scores mean nothing; the differences show what each setting does."

#: (precision, settings) of each row, anomalib's path first for each precision.
ROWS: tuple[tuple[Precision, QuantizationSettings], ...] = (
    (Precision.FP16, ANOMALIB_QUANTIZATION),
    (Precision.FP16, DEFAULT_QUANTIZATION),
    (Precision.INT8, ANOMALIB_QUANTIZATION),
    (Precision.INT8, DEFAULT_QUANTIZATION),
    (Precision.INT8_PTQ, ANOMALIB_QUANTIZATION),
    (Precision.INT8_PTQ, replace(ANOMALIB_QUANTIZATION, float_score_head=True)),
    (Precision.INT8_PTQ, replace(DEFAULT_QUANTIZATION, smooth_quant=False, float_score_head=False)),
    (Precision.INT8_PTQ, replace(DEFAULT_QUANTIZATION, smooth_quant=True, float_score_head=False)),
    (Precision.INT8_PTQ, replace(DEFAULT_QUANTIZATION, smooth_quant=False, float_score_head=True)),
    (Precision.INT8_PTQ, replace(DEFAULT_QUANTIZATION, smooth_quant=True, float_score_head=True)),
)


def describe(precision: Precision, settings: QuantizationSettings) -> str:
    """A row's label, e.g. ``"INT8_PTQ, transformer + SmoothQuant, score head float32 (ours)"``."""
    parts = [precision.name]
    if precision.needs_data:
        parts.append(
            ("transformer" + (" + SmoothQuant" if settings.smooth_quant else ""))
            if settings.transformer
            else "NNCF defaults"
        )
    parts.append("score head float32" if settings.float_score_head else "everything compressed")
    label = ", ".join(parts)
    if settings == ANOMALIB_QUANTIZATION:
        label += " (anomalib)"
    elif settings == DEFAULT_QUANTIZATION:
        label += " (ours)"
    return label


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="PromptAD", choices=MODEL_NAMES, help="the model (default PromptAD)")
    parser.add_argument("--backbone", help="override the model's default backbone")
    parser.add_argument("--image-size", type=int, help="override the model's default input size")
    parser.add_argument("--tiny", action="store_true", help="the registry's tiny random backbone (smoke run)")
    parser.add_argument("--calibration-images", type=int, default=8, help="train-split images NNCF calibrates on")
    parser.add_argument("--test-images", type=int, default=8, help="test-split images compared (half defective)")
    parser.add_argument("--threads", type=int, default=0, help="torch and OpenVINO threads (0: their default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only", action="append", default=[], help="measure the rows whose label contains this text (repeatable)"
    )
    return parser.parse_args(argv)


def build(args: argparse.Namespace, root: Path) -> tuple[Any, Any, np.ndarray]:
    """The set-up model, the datamodule of a generated dataset, and the test images ``(N, 3, S, S)`` in ``[0, 1]``."""
    from anomalib.data import MVTecAD
    from anomalib.data.utils.image import read_image

    from anomalib_clipad.benchmarks.openvino_speed import calibrate_post_processor
    from anomalib_clipad.benchmarks.speed import prepare
    from anomalib_clipad.data.synthetic import generate_synthetic_dataset

    spec = get_spec(args.model)
    arguments: dict[str, Any] = dict(spec.tiny) if args.tiny else {}
    arguments.update(spec.few_shot)
    arguments["pretrained"] = None
    if args.backbone:
        arguments["backbone"] = args.backbone
    if args.image_size:
        arguments["image_size"] = args.image_size
    torch.manual_seed(args.seed)
    module = spec.lightning_class(**arguments).eval()
    size = int(np.atleast_1d(module.model.image_size)[0])
    defect_types = ("scratch", "hole", "stain")
    per_defect = max(1, args.test_images // (2 * len(defect_types)))
    generate_synthetic_dataset(
        root,
        category=CATEGORY,
        n_train=args.calibration_images,
        n_test_good=max(1, args.test_images - per_defect * len(defect_types)),
        n_test_defect=per_defect,
        image_size=size + 16,  # not the model's size: the in-graph resize runs
        seed=args.seed,
    )
    datamodule = MVTecAD(root=root, category=CATEGORY, num_workers=0)
    train = sorted((root / CATEGORY / "train" / "good").glob("*.png"))
    references = torch.stack([read_image(path, as_tensor=True) for path in train])
    test = sorted((root / CATEGORY / "test").rglob("*.png"))
    images = torch.stack([read_image(path, as_tensor=True) for path in test])
    with torch.no_grad():
        prepare(module, module.pre_processor.transform(references))
        calibrate_post_processor(module, images)
    return module, datamodule, images.numpy()


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Measure every row of :data:`ROWS` and print the table.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        One dict per row (label, seconds, score / map difference, low-precision head operations).
    """
    args = parse_arguments(argv)
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": args.threads} if args.threads else {})}
    core = ov.Core()
    print(BANNER)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder, quiet():
        module, datamodule, images = build(args, Path(folder) / "data")
        architecture = module.model.architecture()
        start = time.perf_counter()
        onnx_path = module.to_onnx(Path(folder) / "export")
        converted = ov.convert_model(onnx_path)
        seconds = time.perf_counter() - start
        head = score_head(converted)
        with torch.no_grad():
            expected = module(torch.from_numpy(images))
        compiled = core.compile_model(converted, "CPU", config)
        reference = named_outputs(compiled, compiled(images))
        print(
            f"{args.model}, {architecture['backbone']} at {architecture['image_size']} px; {len(images)} test and "
            f"{args.calibration_images} calibration images of a generated dataset; ONNX + OpenVINO conversion "
            f"{seconds:.0f} s; score head: {len(head)} of {len(converted.get_ordered_ops())} operations; "
            f"f32 IR vs torch: score {np.abs(reference['pred_score'] - expected.pred_score.numpy()).max():.1e}, "
            f"map {np.abs(reference['anomaly_map'] - expected.anomaly_map.numpy()).max():.1e}"
        )
        print("| setting | compression time | max abs Δ image score | max abs Δ map | low-precision head operations |")
        print("|---|---|---|---|---|")
        for precision, settings in ROWS:
            label = describe(precision, settings)
            if args.only and not any(text.lower() in label.lower() for text in args.only):
                continue
            start = time.perf_counter()
            compressed = compress_ov_model(converted.clone(), precision, datamodule, settings=settings)
            seconds = time.perf_counter() - start
            compiled = core.compile_model(compressed, "CPU", config)
            outputs = named_outputs(compiled, compiled(images))
            row = {
                "setting": label,
                "seconds": seconds,
                "score": float(np.abs(outputs["pred_score"] - reference["pred_score"]).max()),
                "map": float(np.abs(outputs["anomaly_map"] - reference["anomaly_map"]).max()),
                "low_precision_head": len(low_precision_in_head(compressed)),
            }
            rows.append(row)
            print(
                f"| {label} | {seconds:.0f} s | {row['score']:.1e} | {row['map']:.1e} | {row['low_precision_head']} |",
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main()
