# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Eager torch against OpenVINO on the CPU: latency per image and numerical difference, for every model.

Run::

    python -m anomalib_clipad.benchmarks.speed_openvino [--models WinCLIPPlus PromptAD] [--batch 2] [--repeats 3]
    python -m anomalib_clipad.benchmarks.speed_openvino --tiny          # tiny random backbones (CI / smoke)
    python -m anomalib_clipad.benchmarks.speed_openvino --models PromptAD --profile   # per-layer profile as well

Each model is built at its default backbone and resolution with **random weights** (``pretrained=None``: the figures
are for speed only, the scores mean nothing) and given its inference state without data: the class name's text
features, and, for the models with reference memories, the memories of one random reference image (WinCLIP+, PromptAD,
DevPrompt with k = 1; AnomalyCLIP and zero-shot SimCLIP have none), through the torch models' common interface
(:class:`~anomalib_clipad.models.interface.ClipAnomalyDetector`: ``set_class``, ``update_text_features``,
``set_references``).
The post-processor is calibrated by hand on the raw outputs of the timed images (the span of the raw maps and scores
plus a margin for both the image and the pixel range, thresholds at mid-range: see :func:`calibrate_post_processor`),
so the normalised outputs spread over ``[0, 1]`` without clamping and differences are not magnified by a near-zero
range.

The whole anomalib pipeline (pre-processor, model, post-processor) is then exported the way ``anomalib export
--export_type openvino`` does (``model.to_openvino``: ONNX through the dynamo exporter, then OpenVINO IR, dynamic
batch / height / width) and run with OpenVINO's runtime on the CPU, ``INFERENCE_PRECISION_HINT: f32``. Eager torch
(``model(images)`` under ``torch.inference_mode``: the same pipeline) and OpenVINO get the same ``[0, 1]`` images and
are timed in interleaved rounds (one call of each per round, after a warm-up round); per-image times are medians over
the rounds of this process's CPU time (all threads; other jobs on a shared machine disturb it far less than wall
time) and, for reference, of wall time. The differences are the max absolute differences of ``pred_score`` and
``anomaly_map`` (normalised outputs) between OpenVINO and torch on those images.

Where the CPU's default inference precision is not f32 (bf16 on CPUs with AVX512-BF16 / AMX), the default-precision
compilation is timed and compared too. ``--static`` also times the IR reshaped to the timed input shape (what a fixed
``--input_size`` export gives), and ``--profile`` (or any model short of the ``--goal`` speed-up) prints OpenVINO's
per-node profile (``PERF_COUNT``) grouped by node type, next to torch's profile grouped by operator.

On a shared machine pass ``--threads 1`` (both runtimes): with two threads, a core taken by another job leaves
torch's OpenMP threads spinning at their barriers, which bills CPU time to torch and inflated its figures up to 2x in
our runs (OpenVINO's TBB pool suffered less). At f32 both runtimes spend 80-92% of the time in the same kind of
GEMM (torch: MKL / oneDNN; OpenVINO: oneDNN brgemm / MLAS ``FullyConnected``), at the same rate (110-165 GFLOP/s per
core here), so OpenVINO's f32 gain is bounded by the share of the rest that it fuses (about 1.1-1.35x for these
ViTs); bf16 (AMX) is what gives 3-5x.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.models import AnomalibModule

from anomalib_clipad.clip.loading import TINY_BACKBONE, TINY_BACKBONE_24, register_model_configs

CLASS_NAME = "bottle"
GOAL = 1.3
"""OpenVINO should be at least this much faster than eager torch (issue "Compare and deploy all five")."""
FLOAT32 = {"INFERENCE_PRECISION_HINT": "f32"}
MODEL_NAMES = ("WinCLIPPlus", "PromptAD", "DevPrompt", "AnomalyCLIP", "SimCLIP")
BANNER = "RANDOM WEIGHTS (pretrained=None): these figures are for SPEED ONLY; the scores and maps mean nothing."


@dataclass(frozen=True)
class ModelSetting:
    """Backbone, input size and reference shots of one model.

    Attributes:
        backbone: open_clip architecture.
        image_size: square input side in pixels.
        k_shot: normal reference images of the model's memories (0: the model's default, no ``k_shot`` argument).
    """

    backbone: str
    image_size: int
    k_shot: int = 0


#: Default backbone and resolution of each model (the paper's).
DEFAULT_SETTINGS: dict[str, ModelSetting] = {
    "WinCLIPPlus": ModelSetting("ViT-B-16-plus-240", 240, k_shot=1),
    "PromptAD": ModelSetting("ViT-B-16-plus-240", 240, k_shot=1),
    "DevPrompt": ModelSetting("ViT-B-16-plus-240", 240, k_shot=1),
    "AnomalyCLIP": ModelSetting("ViT-L-14-336", 518),
    "SimCLIP": ModelSetting("ViT-L-14-336", 518),
}
#: ``--tiny``: the tiny random backbones of the tests (24 blocks for the methods that read layers 6/12/18/24).
TINY_SETTINGS: dict[str, ModelSetting] = {
    "WinCLIPPlus": ModelSetting(TINY_BACKBONE, 64, k_shot=1),
    "PromptAD": ModelSetting(TINY_BACKBONE, 64, k_shot=1),
    "DevPrompt": ModelSetting(TINY_BACKBONE, 64, k_shot=1),
    "AnomalyCLIP": ModelSetting(TINY_BACKBONE_24, 56),
    "SimCLIP": ModelSetting(TINY_BACKBONE_24, 56),
}


def available_models() -> tuple[str, ...]:
    """The model names this installation has (SimCLIP only once ``anomalib_clipad.SimCLIP`` imports)."""
    import anomalib_clipad

    names = []
    for name in MODEL_NAMES:
        try:
            getattr(anomalib_clipad, name)
        except (AttributeError, ImportError):
            continue
        names.append(name)
    return tuple(names)


# ---------------------------------------------------------------------------------------------------------- models
def _reference(module: AnomalibModule, size: int, generator: torch.Generator) -> torch.Tensor:
    """One random ``[0, 1]`` image through the module's own transform (resize + CLIP normalisation)."""
    return module.pre_processor.transform(torch.rand(1, 3, size, size, generator=generator))


def build_model(name: str, setting: ModelSetting, generator: torch.Generator) -> AnomalibModule:
    """The anomalib module ``name`` with random weights and its inference state (no data, no training).

    Args:
        name: one of :data:`MODEL_NAMES`.
        setting: backbone, input size and reference shots.
        generator: source of the random reference image.

    Returns:
        The module in eval mode; its post-processor is not calibrated yet (:func:`calibrate_post_processor`).

    Raises:
        ValueError: unknown model name.
    """
    import anomalib_clipad

    if name not in MODEL_NAMES:
        msg = f"Unknown model {name!r}; known: {', '.join(MODEL_NAMES)}."
        raise ValueError(msg)
    arguments: dict[str, Any] = {"backbone": setting.backbone, "pretrained": None, "image_size": setting.image_size}
    if setting.k_shot:
        arguments["k_shot"] = setting.k_shot
    module = getattr(anomalib_clipad, name)(**arguments)
    model = module.model
    with torch.no_grad():
        model.set_class(CLASS_NAME)
        model.update_text_features()
        if model.uses_references:
            model.set_references(_reference(module, setting.image_size, generator))
    return module.eval()


@torch.no_grad()
def calibrate_post_processor(module: AnomalibModule, images: torch.Tensor) -> None:
    """Set the post-processor's normalisation range and thresholds from the raw outputs on ``images``.

    No validation data is needed: the image and the pixel range are both the span of the raw anomaly maps and scores
    together, widened by 10% on each side (a random-weight model scores random images almost alike, so the scores'
    own range would be near zero and magnify any difference; the margin keeps every output off the clamp at 0 and 1,
    where a difference would vanish), and both thresholds sit at mid-range. Models that do not normalise
    (AnomalyCLIP, SimCLIP) only use the thresholds.

    Args:
        module: the anomalib module (pre-processor, model, post-processor).
        images: ``[0, 1]`` images ``(B, 3, H, W)``.
    """
    raw = module.model(module.pre_processor(images))
    values = torch.cat([raw.anomaly_map.flatten(), raw.pred_score.flatten()])
    margin = 0.1 * (values.max() - values.min())
    low, high = values.min() - margin, values.max() + margin
    post = module.post_processor
    for name in ("image_min", "pixel_min"):
        getattr(post, name).copy_(low)
    for name in ("image_max", "pixel_max"):
        getattr(post, name).copy_(high)
    post._image_threshold.copy_((low + high) / 2)  # anomalib's buffers (validation sets them)
    post._pixel_threshold.copy_((low + high) / 2)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence INFO logging and Python warnings of the model set-up and the exporter."""
    logging.disable(logging.INFO)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


# ---------------------------------------------------------------------------------------------------------- timing
@dataclass
class Timings:
    """Seconds per call of each function, per round, on two clocks.

    Attributes:
        cpu: name -> process CPU time (all threads) per round.
        wall: name -> wall time per round.
    """

    cpu: dict[str, list[float]] = field(default_factory=dict)
    wall: dict[str, list[float]] = field(default_factory=dict)


def interleaved(functions: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> Timings:
    """Call each function once per round, in turn, and record its process CPU time and wall time.

    Args:
        functions: name -> function (no arguments).
        rounds: rounds kept.
        warmup: first rounds not kept.

    Returns:
        The :class:`Timings` of the kept rounds.
    """
    timings = Timings({name: [] for name in functions}, {name: [] for name in functions})
    for round_index in range(warmup + rounds):
        for name, function in functions.items():
            cpu, wall = time.process_time(), time.perf_counter()
            function()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if round_index >= warmup:
                timings.cpu[name].append(cpu)
                timings.wall[name].append(wall)
    return timings


# ---------------------------------------------------------------------------------------------------------- OpenVINO
def _outputs(compiled: Any, images: np.ndarray) -> dict[str, np.ndarray]:
    """The graph's outputs by name (an output can carry several tensor names once the IR is reshaped)."""
    result = compiled(images)
    outputs = {}
    for output in compiled.outputs:
        names = output.get_names()
        name = next((name for name in ("pred_score", "pred_label", "anomaly_map", "pred_mask") if name in names), None)
        outputs[name or output.get_any_name()] = result[output]
    return outputs


def max_differences(outputs: dict[str, np.ndarray], expected: Any) -> dict[str, float]:
    """Max absolute difference of ``pred_score`` and ``anomaly_map`` between OpenVINO and torch outputs."""
    return {
        name: float(np.abs(outputs[name] - getattr(expected, name).numpy()).max())
        for name in ("pred_score", "anomaly_map")
    }


def _precision(compiled: Any) -> str:
    """The compiled model's inference precision (``f32``, ``bf16``, ...)."""
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    return value.to_string() if hasattr(value, "to_string") else str(value)


def profile_openvino(
    model: Any, images: np.ndarray, config: dict[str, Any], title: str = "", top: int = 12
) -> list[str]:
    """OpenVINO's per-node profile of one inference (``PERF_COUNT``), grouped by node type.

    Args:
        model: the ``ov.Model`` (read or reshaped IR).
        images: the input.
        config: compile configuration (precision, threads); ``PERF_COUNT`` is added.
        title: what is profiled, for the heading.
        top: node types listed; the heaviest single nodes are listed too.

    Returns:
        Printable lines.
    """
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {**config, "PERF_COUNT": "YES"})
    request = compiled.create_infer_request()
    request.infer({0: images})  # warm-up (first-inference shape inference and primitive creation)
    request.infer({0: images})
    by_type: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    kernels: dict[str, set[str]] = defaultdict(set)
    nodes = []
    for info in request.profiling_info:
        if str(info.status).endswith("NOT_RUN"):
            continue
        real = info.real_time.total_seconds()
        by_type[info.node_type][0] += real
        by_type[info.node_type][1] += 1
        kernels[info.node_type].add(info.exec_type)
        nodes.append((real, info.node_type, info.node_name, info.exec_type))
    total = sum(value[0] for value in by_type.values()) or 1.0
    heading = f"  OpenVINO profile ({title}; one inference, {total * 1e3:.1f} ms summed over nodes), by node type:"
    lines = [heading]
    for node_type, (seconds, count) in sorted(by_type.items(), key=lambda item: -item[1][0])[:top]:
        kinds = ", ".join(sorted(kernels[node_type]))[:70]
        lines.append(
            f"    {node_type:<22} {seconds * 1e3:9.2f} ms {100 * seconds / total:5.1f}% {int(count):5d} nodes [{kinds}]"
        )
    lines.append("  heaviest nodes:")
    for real, node_type, node_name, exec_type in sorted(nodes, reverse=True)[:8]:
        lines.append(f"    {real * 1e3:8.2f} ms  {node_type:<16} {exec_type:<24} {node_name[:90]}")
    return lines


def profile_torch(function: Callable[[], object], top: int = 12) -> list[str]:
    """The torch profile of one eager call, grouped by operator (self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # no profiler start/stop chatter on stderr
    function()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        function()
    events = sorted(prof.key_averages(), key=lambda event: -event.self_cpu_time_total)
    total = sum(event.self_cpu_time_total for event in events) or 1.0
    lines = [f"  torch profile (one call, {total / 1e3:.1f} ms self CPU summed), by operator:"]
    for event in events[:top]:
        seconds = event.self_cpu_time_total / 1e6
        lines.append(
            f"    {event.key[:40]:<40} {seconds * 1e3:9.2f} ms {1e8 * seconds / total:5.1f}% {event.count:5d} calls"
        )
    return lines


def _probe_compile(model: Any, path: Path, config: dict[str, Any]) -> str:
    """Compile ``model`` in a child process first: OpenVINO can crash the process while compiling some graphs.

    OpenVINO 2026.4.1 segfaults compiling the tiny WinCLIP+ graph reshaped to a static shape in f32 (its snippets
    pass: ``SNIPPETS_MODE: DISABLE`` avoids it; the dynamic graph, bf16 and the full-size graph compile).

    Returns:
        ``""`` if it compiles, else why not.
    """
    import openvino as ov

    ov.save_model(model, path, compress_to_fp16=False)
    code = "import json, sys, openvino as ov; ov.Core().compile_model(sys.argv[1], 'CPU', json.loads(sys.argv[2]))"
    command = [sys.executable, "-c", code, str(path), json.dumps(config)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode == 0:
        return ""
    reason = f"signal {-result.returncode}" if result.returncode < 0 else f"exit code {result.returncode}"
    return f"OpenVINO failed compiling it ({reason}; an OpenVINO fault, see _probe_compile)"


# ---------------------------------------------------------------------------------------------------------- main
def _median_ms(values: list[float], batch: int) -> float:
    return statistics.median(values) / batch * 1e3


def benchmark_model(name: str, setting: ModelSetting, args: argparse.Namespace) -> dict[str, Any]:
    """Build, calibrate, export, compile, time, compare (and possibly profile) one model; print its lines.

    Returns:
        ``torch_ms``, ``openvino_ms`` (per image, process CPU time), ``speedup``, ``differences`` (f32), and the
        same for the default precision and the static shape where they were run.
    """
    import openvino as ov

    generator = torch.Generator().manual_seed(0)
    size = setting.image_size
    threads = {"INFERENCE_NUM_THREADS": args.threads} if args.threads else {}
    with _quiet():
        module = build_model(name, setting, generator)
        images = torch.rand(args.batch, 3, size, size, generator=generator)
        calibrate_post_processor(module, images)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            xml = module.to_openvino(folder)
            export_s = time.perf_counter() - start
            core = ov.Core()
            ov_model = core.read_model(xml, config={"ENABLE_MMAP": False})  # weights in memory: the folder goes
            static, static_note = None, ""
            if args.static:
                static = ov_model.clone()
                static.reshape(list(images.shape))
                static_note = _probe_compile(static, Path(folder) / "static.xml", {**FLOAT32, **threads})
                if static_note:
                    static = None
    compiled: dict[str, Any] = {"openvino f32": core.compile_model(ov_model, "CPU", {**FLOAT32, **threads})}
    default = core.compile_model(ov_model, "CPU", threads)
    default_precision = _precision(default)
    if default_precision != _precision(compiled["openvino f32"]):
        compiled[f"openvino default ({default_precision})"] = default
    else:
        del default
    if static is not None:
        compiled["openvino f32 static"] = core.compile_model(static, "CPU", {**FLOAT32, **threads})
    array = images.numpy()
    with torch.inference_mode():
        expected = module(images)
        functions: dict[str, Callable[[], object]] = {"torch": lambda: module(images)}
        functions.update({label: (lambda c=c: c(array)) for label, c in compiled.items()})
        timings = interleaved(functions, args.repeats, warmup=args.warmup)
    differences = {label: max_differences(_outputs(c, array), expected) for label, c in compiled.items()}

    torch_ms = _median_ms(timings.cpu["torch"], args.batch)
    print(
        f"{name}: {setting.backbone} (random init) at {size} px, batch {args.batch}; export (to_openvino) "
        f"{export_s:.1f} s; OpenVINO precision by default: {default_precision}"
    )
    print(
        f"  {'torch eager':<30}: {torch_ms:9.1f} ms/image CPU time ({_median_ms(timings.wall['torch'], args.batch):.1f}"
        " ms wall)"
    )
    result: dict[str, Any] = {"torch_ms": torch_ms}
    for label in compiled:
        ov_ms = _median_ms(timings.cpu[label], args.batch)
        ratios = [t / o for t, o in zip(timings.cpu["torch"], timings.cpu[label], strict=True)]
        wall_ratio = statistics.median(timings.wall["torch"]) / statistics.median(timings.wall[label])
        diff = differences[label]
        print(
            f"  {label:<30}: {ov_ms:9.1f} ms/image CPU time ({_median_ms(timings.wall[label], args.batch):.1f} ms wall)"
            f" -> {torch_ms / ov_ms:.2f}x faster than torch (wall {wall_ratio:.2f}x; per round "
            f"{', '.join(f'{ratio:.2f}' for ratio in ratios)}); max |diff| pred_score {diff['pred_score']:.1e}, "
            f"anomaly_map {diff['anomaly_map']:.1e}"
        )
        result[label] = {"openvino_ms": ov_ms, "speedup": torch_ms / ov_ms, "differences": diff}
    if static_note:
        print(f"  {'openvino f32 static':<30}: not timed: {static_note}")
    speedup = result["openvino f32"]["speedup"]
    result.update(
        openvino_ms=result["openvino f32"]["openvino_ms"],
        speedup=speedup,
        differences=result["openvino f32"]["differences"],
    )
    verdict = "meets" if speedup >= args.goal else "MISSES"
    print(f"  f32 speed-up {speedup:.2f}x {verdict} the goal of >= {args.goal}x")
    if args.profile or (speedup < args.goal and not args.no_profile):
        for line in profile_openvino(ov_model, array, {**FLOAT32, **threads}, "f32, dynamic shape as exported"):
            print(line)
        if static is not None:
            for line in profile_openvino(static, array, {**FLOAT32, **threads}, "f32, reshaped to the input shape"):
                print(line)
        with torch.inference_mode():
            for line in profile_torch(lambda: module(images)):
                print(line)
    return result


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run the comparison for the chosen models and print one block per model.

    Args:
        argv: command-line arguments (default: ``sys.argv``).

    Returns:
        model name -> :func:`benchmark_model`'s result.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=None, help=f"subset of {', '.join(MODEL_NAMES)} (default: all)")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny random backbones (CI / smoke) instead of the defaults"
    )
    parser.add_argument("--batch", type=int, default=2, help="images per call")
    parser.add_argument("--repeats", type=int, default=3, help="timed interleaved rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch and OpenVINO CPU threads (default: theirs; 1: steadiest on a shared machine)",
    )
    parser.add_argument("--static", action="store_true", help="also time the IR reshaped to the input shape")
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument(
        "--profile", action="store_true", help="per-node profiles (default: for a model short of goal)"
    )
    profile.add_argument("--no-profile", action="store_true", help="no profiles, not even for a model short of goal")
    parser.add_argument("--goal", type=float, default=GOAL, help="speed-up OpenVINO should reach")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    register_model_configs()
    import openvino as ov

    names = available_models()
    if args.models:
        unknown = [name for name in args.models if name not in names]
        if unknown:
            parser.error(f"unknown or unavailable model(s) {unknown}; available: {', '.join(names)}")
        names = tuple(args.models)
    settings = TINY_SETTINGS if args.tiny else DEFAULT_SETTINGS
    saved_threads = torch.get_num_threads()  # restored at the end (main runs inside test processes too)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(BANNER)
    print(
        f"eager torch {torch.__version__} ({torch.get_num_threads()} threads) vs OpenVINO {ov.get_version()} CPU "
        f"({ov.Core().get_property('CPU', 'FULL_DEVICE_NAME')}); {args.repeats} interleaved rounds after "
        f"{args.warmup} warm-up; medians of process CPU time (all threads), wall time in brackets; same [0, 1] "
        "inputs; post-processor calibrated on the raw outputs of those inputs"
    )
    results = {}
    try:
        for name in names:
            results[name] = benchmark_model(name, settings[name], args)
    finally:
        torch.set_num_threads(saved_threads)
    if len(results) > 1:
        print("summary (f32, CPU time): " + "; ".join(f"{n} {r['speedup']:.2f}x" for n, r in results.items()))
    return results


if __name__ == "__main__":
    main()
