# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Deployment rows of ``anomalib-clipad benchmark``: the torch model beside its OpenVINO exports, per job.

A deployment is where and at which precision a benchmark job's model is scored: ``torch`` (the fitted Lightning model,
tested by anomalib's ``Engine``, float32) or ``openvino:<precision>`` (the model exported to an OpenVINO IR by
:func:`anomalib_clipad.precision.export_openvino`, compiled with :func:`~anomalib_clipad.precision.compile_openvino`
and run on the CPU), ``<precision>`` being a name of :class:`~anomalib_clipad.precision.Precision` (``f32``,
``bf16``, ``fp16``, ``int8``, ``int8_ptq``, ``int8_acq``) or anomalib's ``--compression_type`` (``INT8_PTQ``, ...).

The torch row always comes first: it is the reference the deployed rows are read against, and its test calibrates the
thresholds and normalisation that the export bakes into the IR (a zero-/few-shot model is calibrated by that test).
Each deployed row then exports the same fitted, calibrated model, and scores the job's test split with the compiled
IR: :func:`score_openvino` feeds each test batch's raw images to the IR (whose graph holds the pre-processor, the
model and the post-processor), brings the batch's ground truth to the model's input size with the model's own
pre-processor exactly as anomalib's test loop does, and updates a fresh :class:`~anomalib.metrics.Evaluator` of the
run's metrics with the IR's ``pred_score``, ``pred_label``, ``anomaly_map`` and ``pred_mask``: the same metric
classes, on the same fields and shapes, as the torch row.

Quantisation that calibrates on data (``int8_ptq``, ``int8_acq``) gets the job's datamodule with its validation split
in place of the test split (:func:`calibration_datamodule`): NNCF's calibration and the accuracy-control validation
see held-out images only, never the scored ones; a validation split that shares images with the test split (e.g.
``val_split_mode: same_as_test``) is refused for them.

Example:
    >>> parse_deployment("openvino:INT8_PTQ").name
    'openvino:int8_ptq'
    >>> [deployment.label for deployment in parse_deployments(["openvino:f32"])]
    ['torch f32', 'openvino f32']
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, NamedTuple

from anomalib_clipad.precision import OUTPUT_FIELDS, PRECISIONS, Precision, named_outputs, parse_precision

DEPLOY_KEY = "deploy"
"""Key of the deployments, at the top of a benchmark configuration (every job) or in a model entry (its jobs)."""
TORCH = "torch"
OPENVINO = "openvino"
RUNTIMES = (TORCH, OPENVINO)
OPENVINO_DEVICE = "CPU"
"""The OpenVINO device of the deployed rows."""
"""The outputs of an exported anomalib graph that the metrics read."""

_LIGHTNING_F32 = {"32", "32-true", "f32", "float32"}


class Deployment(NamedTuple):
    """One deployment of a job's model.

    Attributes:
        runtime: ``torch`` or ``openvino``.
        precision: The precision (``torch``: always :attr:`Precision.F32`, the precision the job's ``Engine`` uses
            unless the entry's ``trainer`` sets another).
    """

    runtime: str
    precision: Precision

    @property
    def name(self) -> str:
        """``torch`` or ``openvino:<precision>``: the CSV's ``deploy`` column and what ``--deploy`` takes."""
        return TORCH if self.runtime == TORCH else f"{self.runtime}:{self.precision.value}"

    @property
    def label(self) -> str:
        """``torch f32`` or ``openvino int8_ptq``: how the results page names the row."""
        return f"{self.runtime} {self.precision.value}"


TORCH_F32 = Deployment(TORCH, Precision.F32)


def deployment_choices() -> str:
    """The accepted deployment names, for messages."""
    names = ", ".join(f"{OPENVINO}:{precision.value}" for precision in PRECISIONS)
    return f"{TORCH}, {names} (or anomalib's compression names: {OPENVINO}:INT8_PTQ, ...)"


def parse_deployment(text: str | Deployment) -> Deployment:
    """Read a deployment name: ``torch`` (or ``torch:f32``), ``openvino:<precision>`` (any case).

    Raises:
        ValueError: An unknown name; the message lists the choices.
    """
    if isinstance(text, Deployment):
        return text
    runtime, _, precision = str(text).strip().partition(":")
    runtime = runtime.strip().lower()
    try:
        if runtime == TORCH and parse_precision(precision or Precision.F32) is Precision.F32:
            return TORCH_F32
        if runtime == OPENVINO and precision:
            return Deployment(OPENVINO, parse_precision(precision))
    except ValueError:
        pass
    msg = f"Unknown deployment {text!r}: choose {deployment_choices()}."
    raise ValueError(msg)


def parse_deployments(value: Any, where: str = DEPLOY_KEY) -> list[Deployment]:
    """The deployments of a ``deploy`` value (a name or a list of names): ``torch`` first, each one once.

    Args:
        value: ``"openvino:int8"``, ``["torch", "openvino:int8_ptq"]``, or ``None`` (torch only).
        where: Where the value comes from, for messages (``deploy``, ``--deploy``, a model entry).

    Returns:
        ``[torch f32, ...]``: the torch row is always there (the reference, and the test that calibrates the model).

    Raises:
        ValueError: A value that is not a name or a list of names, or an unknown name (the choices are listed).
    """
    if value is None:
        names: list[Any] = []
    elif isinstance(value, str):
        names = [value]
    elif isinstance(value, list | tuple):
        names = list(value)
    else:
        msg = f"{where} must be a deployment name or a list of them ({deployment_choices()}), got {value!r}."
        raise ValueError(msg)
    deployments = [TORCH_F32]
    for name in names:
        if not isinstance(name, str):
            msg = f"{where}: {name!r} is not a deployment name; choose {deployment_choices()}."
            raise ValueError(msg)
        try:
            deployment = parse_deployment(name)
        except ValueError as error:
            msg = f"{where}: {error}"
            raise ValueError(msg) from None
        if deployment not in deployments:
            deployments.append(deployment)
    return deployments


def torch_precision(trainer_arguments: dict[str, Any]) -> str:
    """The precision of the torch row: ``f32``, or the ``precision`` an entry's ``trainer`` gives Lightning."""
    value = trainer_arguments.get("precision")
    if value is None or str(value).lower() in _LIGHTNING_F32:
        return Precision.F32.value
    return str(value)


def deployment_columns(deployment: Deployment, precision: str | None = None) -> dict[str, str]:
    """The CSV columns that say how a row was scored: ``deploy``, ``runtime``, ``precision``."""
    return {
        "deploy": deployment.name,
        "runtime": deployment.runtime,
        "precision": precision or deployment.precision.value,
    }


# ------------------------------------------------------------------------------------------------ scoring an IR
def _sample_paths(dataset: Any) -> set[str]:
    samples = getattr(dataset, "samples", None)
    if samples is None or "image_path" not in getattr(samples, "columns", ()):
        return set()
    return {str(path) for path in samples["image_path"]}


def calibration_datamodule(datamodule: Any, precision: Precision) -> Any:
    """The datamodule a quantising export calibrates (and, for ``int8_acq``, validates) on: the validation split.

    anomalib's ``int8_ptq`` calibrates on ``val_dataloader()`` and its ``int8_acq`` validates on
    ``test_dataloader()``; the copy returned here serves the job's validation split for both, so that no scored test
    image enters the quantisation. The job's datamodule is not modified.

    Args:
        datamodule: The job's datamodule, set up (its test ran).
        precision: The deployment precision.

    Returns:
        ``None`` for a precision that needs no data, else a shallow copy whose test loader is the validation loader.

    Raises:
        ValueError: The datamodule has no validation split, or its validation split shares images with the test split.
    """
    if not precision.needs_data:
        return None
    val_data = getattr(datamodule, "val_data", None)
    if val_data is None or len(val_data) == 0:
        msg = (
            f"openvino:{precision.value} calibrates on the validation split, and this datamodule has none: set "
            "val_split_mode (e.g. from_test) in benchmark.data."
        )
        raise ValueError(msg)
    shared = _sample_paths(val_data) & _sample_paths(getattr(datamodule, "test_data", None))
    if shared:
        msg = (
            f"openvino:{precision.value} calibrates on the validation split, which shares {len(shared)} images with "
            "the scored test split here (val_split_mode same_as_test?): use val_split_mode from_test (the pipeline's "
            "default) so that quantisation never sees the scored images."
        )
        raise ValueError(msg)
    calibration = copy.copy(datamodule)
    calibration.setup = lambda stage=None: None  # already set up: keep the job's splits
    calibration.test_dataloader = datamodule.val_dataloader
    return calibration


class IRScores(NamedTuple):
    """What :func:`score_openvino` measured.

    Attributes:
        metrics: Metric name -> value (the names of the torch row's metrics).
        images: The number of scored test images.
        inference_seconds: Wall time of the IR's inference calls (its pre-processing included: it is in the graph).
        seconds: Wall time of the whole scoring loop (data loading, inference, metric updates).
    """

    metrics: dict[str, float]
    images: int
    inference_seconds: float
    seconds: float


def score_openvino(module: Any, datamodule: Any, compiled: Any, metrics: list[str] | None = None) -> IRScores:
    """Score the test split of ``datamodule`` with a compiled IR of ``module``, with the torch row's metrics.

    Each test batch's raw images go to the IR; the batch's ground truth is brought to the model's input size by the
    model's pre-processor hook (``on_test_batch_start``, what anomalib's test loop calls), and the IR's outputs replace
    the predictions before a fresh evaluator of ``metrics`` is updated, as anomalib's ``Evaluator`` is in the torch row.

    Args:
        module: The ``AnomalibModule`` the IR was exported from (for its pre-processor).
        datamodule: The job's datamodule, set up.
        compiled: OpenVINO's compiled model.
        metrics: The run's metric names (default: the pipeline's defaults).

    Returns:
        The metrics and timings.
    """
    import numpy as np
    import torch

    from anomalib_clipad.benchmarks.pipeline import build_evaluator

    evaluator = build_evaluator(metrics)
    pre_processor = getattr(module, "pre_processor", None)
    images = 0
    inference_seconds = 0.0
    start = time.perf_counter()
    for index, batch in enumerate(datamodule.test_dataloader()):
        inputs = np.ascontiguousarray(batch.image.detach().cpu().numpy(), dtype=np.float32)
        inference_start = time.perf_counter()
        result = compiled(inputs)
        inference_seconds += time.perf_counter() - inference_start
        outputs = named_outputs(compiled, result)
        if pre_processor is not None and hasattr(pre_processor, "on_test_batch_start"):
            pre_processor.on_test_batch_start(None, module, batch, index)
        predictions = {name: torch.from_numpy(np.asarray(outputs[name])) for name in OUTPUT_FIELDS if name in outputs}
        batch.update(**predictions)
        for metric in evaluator.test_metrics:
            metric.update(batch)
        images += len(inputs)
    values = {metric.name: float(metric.compute()) for metric in evaluator.test_metrics}
    return IRScores(values, images, inference_seconds, time.perf_counter() - start)


def inference_precision(compiled: Any) -> str:
    """The precision OpenVINO runs a compiled model at (``f32``, ``bf16``): the hint is not honoured everywhere."""
    try:
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
    except Exception:  # a device without the property
        return ""
    return value.to_string() if hasattr(value, "to_string") else str(value)


class ExportedIR(NamedTuple):
    """An IR written by :func:`export_ir`: its ``.xml`` path and the seconds the export took."""

    path: Path
    seconds: float


def export_ir(module: Any, datamodule: Any, deployment: Deployment, export_root: Path) -> ExportedIR:
    """Export ``module`` to an OpenVINO IR at the deployment's precision.

    The export is :func:`anomalib_clipad.precision.export_openvino` (``to_openvino`` with the precision's
    compression; calibrating precisions get :func:`calibration_datamodule`), with the exporter's per-node logging
    silenced (:func:`anomalib_clipad.export.quiet_export`, also for anomalib's own models).

    Raises:
        TypeError: The model has no ``to_openvino``.
        ValueError: A calibrating precision without a held-out validation split (:func:`calibration_datamodule`).
    """
    from anomalib_clipad.export import QUIET_ONNX_KWARGS, quiet_export
    from anomalib_clipad.precision import export_openvino

    name = type(module).__name__
    if not callable(getattr(module, "to_openvino", None)):
        msg = f"{name} has no to_openvino: it cannot be deployed as {deployment.name}."
        raise TypeError(msg)
    data = calibration_datamodule(datamodule, deployment.precision)
    start = time.perf_counter()
    with quiet_export(name, OPENVINO) as record:
        record.path = export_openvino(
            module, export_root, deployment.precision, data, onnx_kwargs=dict(QUIET_ONNX_KWARGS)
        )
    return ExportedIR(Path(record.path), time.perf_counter() - start)


def compile_ir(path: Path, deployment: Deployment) -> Any:
    """Compile an IR for the CPU at the deployment's inference precision (``precision.compile_openvino``)."""
    from anomalib_clipad.precision import compile_openvino

    return compile_openvino(path, deployment.precision, OPENVINO_DEVICE)
