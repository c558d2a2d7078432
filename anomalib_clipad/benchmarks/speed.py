# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The speed of every model against the CLIP work it cannot avoid, in one table.

Run::

    python -m anomalib_clipad.benchmarks.speed                          # every model, its paper backbone and size
    python -m anomalib_clipad.benchmarks.speed --model PromptAD --model DevPrompt --repeats 3
    python -m anomalib_clipad.benchmarks.speed --tiny --images 2 --repeats 1   # tiny random backbones (CI / smoke)
    python -m anomalib_clipad.benchmarks.speed --openvino --threads 1   # eager torch vs OpenVINO as well

The models are those of :data:`anomalib_clipad.registry.MODELS` (``--model`` picks some), each built at its default
backbone and input size (``--tiny``: the registry's tiny settings; ``--backbone`` / ``--image-size`` override both)
with **random weights** unless ``--pretrained`` names a weights tag: speed does not depend on the weights' values, and
the scores mean nothing. Every model is handled alike, through the interface all of them share: the torch model is set
up for a class (``set_class``, ``update_text_features``) and, where it uses them (``uses_references``), given the
memory of ``k_shot`` random reference images (``set_references``). Each row of the table
(:mod:`~anomalib_clipad.benchmarks.speed_table`) divides a measurement by a reference timed in the same run, in
interleaved rounds (:mod:`~anomalib_clipad.benchmarks.timing`: one call of each per round, so that a change of machine
load hits both alike; medians; on a CPU this process's CPU time, on a GPU wall time; the wall-time ratio beside it):

* **inference**, per image, over a plain open_clip ``CLIP.encode_image`` of the same backbone built for the same input
  size, on the same batch of ``--images`` images; for a model whose default is zero-shot and that has a few-shot
  setting (the registry's ``few_shot``: WinCLIP+, SimCLIP+), both;
* a **counterpart** (:data:`~anomalib_clipad.benchmarks.references.COUNTERPARTS`: anomalib's ``WinClip`` for
  WinCLIP+), over ours on the same images, so that the ratio is our speed-up;
* how the model **learns** (:mod:`~anomalib_clipad.benchmarks.learning_speed`, by the registry's protocol): the set-up
  time of a ``SET_UP`` model (WinCLIP+); for the ``NORMAL_SHOTS`` (PromptAD, DevPrompt) and ``AUXILIARY_DATA``
  (AnomalyCLIP, SimCLIP) models, a ``Trainer.fit`` of ``--epochs`` epochs on generated data, each epoch after the
  first over the learnable side alone, and the first epoch (one-time encoding) over a later one;
* with ``--openvino``, **eager torch over OpenVINO** (:mod:`~anomalib_clipad.benchmarks.openvino_speed`: the whole
  anomalib pipeline exported with ``to_openvino``, on the CPU), so that the ratio is OpenVINO's speed-up.

On a shared CPU pass ``--threads 1``: with several threads, a core taken by another job leaves torch's threads
spinning, which bills CPU time to small operations most.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from anomalib_clipad.benchmarks.learning_speed import (
    CATEGORY,
    TrainingSettings,
    set_up_row,
    training_rows,
)
from anomalib_clipad.benchmarks.references import COUNTERPARTS, plain_image_forward
from anomalib_clipad.benchmarks.speed_table import Goal, SpeedRow, format_table
from anomalib_clipad.benchmarks.timing import clock_name, interleaved_times
from anomalib_clipad.registry import MODEL_NAMES, MODELS, ModelSpec, Protocol, get_spec

BANNER = "RANDOM WEIGHTS (pretrained=None): these figures are for SPEED ONLY; the scores and maps mean nothing."
INFERENCE_GOALS: dict[str, Goal] = {
    "WinCLIPPlus": Goal("<=", 14.0),
    "PromptAD": Goal("<=", 2.0),
    "DevPrompt": Goal("<=", 2.0),
    "AnomalyCLIP": Goal("<=", 1.5),
    "SimCLIP": Goal("<=", 1.5),
}
"""Inference time per image over ``encode_image`` that each model's issue set (the README of each model quotes it)."""
SOURCE_SIZE, TINY_SOURCE_SIZE = 256, 64
"""Side of the generated training images on disk, in pixels (``--tiny``: the second)."""


def add_model_arguments(parser: argparse.ArgumentParser, *, tiny: str, pretrained: str) -> None:
    """The options that choose the models and build them, shared by the benchmark scripts.

    ``--model`` (repeatable, into ``models``), ``--tiny``, ``--backbone``, ``--image-size``, ``--pretrained``
    (:func:`model_arguments` reads them); ``tiny`` and ``pretrained`` end the help of the last two's defaults.
    """
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help=f"a model of the registry ({', '.join(MODEL_NAMES)}); repeatable; default: all",
    )
    parser.add_argument("--tiny", action="store_true", help=f"the registry's tiny random backbones ({tiny})")
    parser.add_argument("--backbone", help="open_clip architecture of every model (default: each model's)")
    parser.add_argument("--image-size", type=int, help="input side in pixels of every model (default: each model's)")
    parser.add_argument("--pretrained", help=f"weights tag or file (default: {pretrained})")


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser, tiny="CI / smoke", pretrained="random weights, speed only")
    parser.add_argument("--images", type=int, default=8, help="images per timed call; labelled training images")
    parser.add_argument("--repeats", type=int, default=3, help="timed interleaved rounds (after one warm-up)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (at least 2: the first one encodes)")
    parser.add_argument("--threads", type=int, help="torch (and OpenVINO) CPU threads (default: theirs)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--openvino", action="store_true", help="also time eager torch against OpenVINO (CPU)")
    parser.add_argument("--profile", action="store_true", help="with --openvino: OpenVINO's and torch's profiles")
    args = parser.parse_args(argv)
    try:
        args.specs = [get_spec(name) for name in args.models] if args.models else list(MODELS)
    except KeyError as error:
        parser.error(str(error.args[0]))
    if args.images < 1 or args.repeats < 1:
        parser.error("--images and --repeats must be at least 1.")
    if args.epochs < 2 and any(spec.trains for spec in args.specs):
        parser.error("--epochs must be at least 2 (the first epoch encodes the training images).")
    return args


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence logging below ERROR (set-up messages, the random-weights warning: the banner says it) and warnings."""
    logging.disable(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def model_arguments(spec: ModelSpec, args: argparse.Namespace) -> dict[str, Any]:
    """The Lightning model's constructor arguments: tiny or default settings, the overrides, the epochs."""
    arguments: dict[str, Any] = dict(spec.tiny) if args.tiny else {}
    arguments["pretrained"] = args.pretrained
    if args.backbone:
        arguments["backbone"] = args.backbone
    if args.image_size:
        arguments["image_size"] = args.image_size
    if spec.trains:
        arguments["epochs"] = args.epochs
    return arguments


def _k_shot(module: Any) -> int:
    """The model's number of reference images (its ``k_shot``; 0 without one)."""
    return int(module.hparams.get("k_shot") or 0)


def _setting(module: Any) -> str:
    """``"1-shot"`` for a model scoring with a reference memory, ``"zero-shot"`` otherwise."""
    return f"{_k_shot(module)}-shot" if module.model.uses_references else "zero-shot"


def prepare(module: Any, references: torch.Tensor) -> None:
    """Give the torch model its inference state without data: the class's text side and, if used, its references.

    Args:
        module: the Lightning model (its ``model`` is set up).
        references: pre-processed normal images, at least as many as its ``k_shot`` (the first ``k_shot`` are used).

    Raises:
        ModelNotReadyError: the model still cannot score.
    """
    model = module.model
    with torch.no_grad():
        model.set_class(CATEGORY)
        model.update_text_features()
        if model.uses_references:
            model.set_references(references[: _k_shot(module)])
    model.require_ready()


def measure_model(spec: ModelSpec, args: argparse.Namespace, device: torch.device) -> tuple[list[SpeedRow], list[str]]:
    """Every row of one model (and the profile lines of ``--openvino --profile``).

    Args:
        spec: the model's registry row.
        args: the parsed command line.
        device: where torch runs.

    Returns:
        The rows, in the order: inference, counterpart, learning, OpenVINO.
    """
    from anomalib_clipad.clip.loading import load_clip

    arguments = model_arguments(spec, args)
    modules = [spec.lightning_class(**arguments)]
    if spec.few_shot and not modules[0].model.uses_references:
        modules.append(spec.lightning_class(**arguments, **spec.few_shot))
    module = modules[-1]  # the most complete setting: the counterpart, the set-up and OpenVINO use it
    architecture = module.model.architecture()
    backbone, size = architecture["backbone"], int(architecture["image_size"])
    clip = load_clip(backbone, None, image_size=size).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    raw_images = torch.rand(args.images, 3, size, size, generator=generator)  # the pipeline's [0, 1] input
    images = module.pre_processor.transform(raw_images).to(device)
    references = module.pre_processor.transform(
        torch.rand(max(_k_shot(module), 1), 3, size, size, generator=generator)
    ).to(device)
    functions: dict[str, Callable[[], object]] = {"plain": lambda: plain_image_forward(clip, images)}
    for candidate in modules:
        candidate.to(device).eval()
        prepare(candidate, references)
        functions[_setting(candidate)] = lambda m=candidate.model: m(images)
    counterpart = COUNTERPARTS.get(spec.name)
    if counterpart is not None:
        theirs = counterpart.build(backbone, size, CATEGORY, references[: _k_shot(module)]).to(device)
        functions[counterpart.label] = lambda: theirs(images)
    with torch.inference_mode():
        timings = interleaved_times(functions, args.repeats, device)

    count = len(images)
    note = f"per image; {backbone} at {size} px, batch {count}"
    rows = [
        SpeedRow(
            model=spec.name,
            measurement=f"inference, {_setting(candidate)}",
            seconds=timings.median(_setting(candidate)) / count,
            reference="CLIP encode_image",
            reference_seconds=timings.median("plain") / count,
            wall_ratio=timings.median_wall(_setting(candidate)) / timings.median_wall("plain"),
            goal=INFERENCE_GOALS.get(spec.name),
            note=note,
        )
        for candidate in modules
    ]
    if counterpart is not None:
        ours = _setting(module)
        rows.append(
            SpeedRow(
                model=spec.name,
                measurement=f"{counterpart.label}, {ours}",
                seconds=timings.median(counterpart.label) / count,
                reference=f"ours, {ours}",
                reference_seconds=timings.median(ours) / count,
                wall_ratio=timings.median_wall(counterpart.label) / timings.median_wall(ours),
                goal=None if counterpart.goal is None else Goal(">=", counterpart.goal),
                note=note,
            )
        )
        del theirs
    if spec.protocol is Protocol.SET_UP:
        rows.append(set_up_row(spec.name, module.model, references[: _k_shot(module)], clip, repeats=args.repeats))
    else:
        settings = TrainingSettings(args.images, args.epochs, TINY_SOURCE_SIZE if args.tiny else SOURCE_SIZE, device)
        rows += training_rows(spec.name, spec.protocol, spec.lightning_class(**arguments), settings)
    profile: list[str] = []
    if args.openvino:
        from anomalib_clipad.benchmarks.openvino_speed import openvino_rows

        openvino, profile = openvino_rows(
            spec.name, module.cpu(), raw_images, repeats=args.repeats, threads=args.threads, profile=args.profile
        )
        rows += openvino
    return rows, profile


def main(argv: Sequence[str] | None = None) -> list[SpeedRow]:
    """Measure the chosen models and print one table.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        Every row of the table.
    """
    args = parse_arguments(argv)
    from anomalib_clipad.clip.loading import register_model_configs

    register_model_configs()
    device = torch.device(args.device)
    saved_threads = torch.get_num_threads()  # restored at the end (main runs inside test processes too)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.pretrained is None:
        print(BANNER)
    print(
        f"torch {torch.__version__} on {device} ({torch.get_num_threads()} CPU threads), {clock_name(device)}; "
        f"{args.repeats} interleaved round(s) after one warm-up, batch {args.images}"
    )
    rows: list[SpeedRow] = []
    profiles: list[str] = []
    try:
        with quiet():
            for spec in args.specs:
                model_rows, profile = measure_model(spec, args, device)
                rows += model_rows
                profiles += profile
                gc.collect()
    finally:
        torch.set_num_threads(saved_threads)
    print(format_table(rows))
    for line in profiles:
        print(line)
    return rows


if __name__ == "__main__":
    main()
