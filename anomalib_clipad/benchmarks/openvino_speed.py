# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Eager torch against OpenVINO on the CPU, for the speed command's ``--openvino`` (one model at a time).

The model is the whole anomalib pipeline (pre-processor, torch model, post-processor) with its inference state (the
speed command sets it up without data). The post-processor is calibrated by hand on the raw outputs of the timed images
(the span of the raw maps and scores plus a margin for both the image and the pixel range, thresholds at mid-range:
:func:`calibrate_post_processor`), so the normalised outputs spread over ``[0, 1]`` without clamping and differences
are not magnified by a near-zero range.

The pipeline is exported the way ``anomalib export --export_type openvino`` does (``model.to_openvino``: ONNX through
the dynamo exporter, then OpenVINO IR, dynamic batch / height / width) and run with OpenVINO's runtime on the CPU,
``INFERENCE_PRECISION_HINT: f32``. Eager torch (``model(images)`` under ``torch.inference_mode``: the same pipeline)
and OpenVINO get the same ``[0, 1]`` images and are timed in interleaved rounds
(:func:`~anomalib_clipad.benchmarks.timing.interleaved_times`). The differences are the max absolute differences of
``pred_score`` and ``anomaly_map`` (normalised outputs) between OpenVINO and torch on those images. Where the CPU's
default inference precision is not f32 (bf16 on CPUs with AVX512-BF16 / AMX), the default-precision compilation is
timed and compared too. ``profile`` adds OpenVINO's per-node profile (``PERF_COUNT``) grouped by node type, next to
torch's profile grouped by operator.

On a shared machine pass ``--threads 1`` (both runtimes): with two threads, a core taken by another job leaves torch's
OpenMP threads spinning at their barriers, which bills CPU time to torch and inflated its figures up to 2x in our runs
(OpenVINO's TBB pool suffered less). At f32 both runtimes spend 80-92% of the time in the same kind of GEMM (torch:
MKL / oneDNN; OpenVINO: oneDNN brgemm / MLAS ``FullyConnected``), at the same rate (110-165 GFLOP/s per core here), so
OpenVINO's f32 gain is bounded by the share of the rest that it fuses (about 1.1-1.35x for these ViTs); bf16 (AMX) is
what gives 3-5x.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from anomalib_clipad.benchmarks.speed_table import Goal, SpeedRow
from anomalib_clipad.benchmarks.timing import interleaved_times
from anomalib_clipad.precision import named_outputs
from anomalib_clipad.training.thresholds import set_thresholds

FLOAT32 = {"INFERENCE_PRECISION_HINT": "f32"}
GOAL = Goal(">=", 1.3)
"""OpenVINO should be at least this much faster than eager torch (issue "Compare and deploy all five")."""
CPU = torch.device("cpu")


@torch.no_grad()
def calibrate_post_processor(module: Any, images: torch.Tensor) -> None:
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
    set_thresholds(post, float((low + high) / 2))


# ---------------------------------------------------------------------------------------------------------- OpenVINO
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


def openvino_rows(
    name: str, module: Any, images: torch.Tensor, *, repeats: int, threads: int | None = None, profile: bool = False
) -> tuple[list[SpeedRow], list[str]]:
    """Export, compile, time and compare one model against eager torch.

    Args:
        name: the model's registry name.
        module: the anomalib module with its inference state, on the CPU, in eval mode (its post-processor is
            calibrated here).
        images: ``[0, 1]`` images ``(B, 3, H, W)`` (the pipeline's input).
        repeats: timed interleaved rounds (after one warm-up round).
        threads: OpenVINO's CPU threads (``None``: its default).
        profile: also return OpenVINO's and torch's profiles.

    Returns:
        One row per OpenVINO compilation (f32, and the CPU's default precision where it differs): eager torch over
        OpenVINO, so that the ratio is OpenVINO's speed-up; and the profile lines (empty without ``profile``).
    """
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
    calibrate_post_processor(module, images)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        xml = module.to_openvino(folder)
        export_s = time.perf_counter() - start
        core = ov.Core()
        ov_model = core.read_model(xml, config={"ENABLE_MMAP": False})  # weights in memory: the folder goes
    compiled: dict[str, Any] = {"OpenVINO f32": core.compile_model(ov_model, "CPU", {**FLOAT32, **config})}
    default = core.compile_model(ov_model, "CPU", config)
    default_precision = _precision(default)
    if default_precision != _precision(compiled["OpenVINO f32"]):
        compiled[f"OpenVINO {default_precision} (CPU default)"] = default
    array = images.numpy()
    with torch.inference_mode():
        expected = module(images)
        functions: dict[str, Callable[[], object]] = {"torch": lambda: module(images)}
        functions.update({label: (lambda c=c: c(array)) for label, c in compiled.items()})
        timings = interleaved_times(functions, repeats, CPU)
    rows = []
    for label, compiled_model in compiled.items():
        difference = max_differences(named_outputs(compiled_model, compiled_model(array)), expected)
        rows.append(
            SpeedRow(
                model=name,
                measurement="eager torch pipeline",
                seconds=timings.median("torch") / len(images),
                reference=label,
                reference_seconds=timings.median(label) / len(images),
                wall_ratio=timings.median_wall("torch") / timings.median_wall(label),
                goal=GOAL if label == "OpenVINO f32" else None,
                note=(
                    f"per image, batch {len(images)}; max abs difference pred_score {difference['pred_score']:.1e}, "
                    f"anomaly_map {difference['anomaly_map']:.1e}; export {export_s:.1f} s"
                ),
            )
        )
    lines: list[str] = []
    if profile:
        lines.append(f"{name}:")
        lines += profile_openvino(ov_model, array, {**FLOAT32, **config}, "f32, dynamic shape as exported")
        with torch.inference_mode():
            lines += profile_torch(lambda: module(images))
    return rows, lines
