# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Quiet ONNX / OpenVINO export: silence the exporter's per-node logging, then log one summary with the paths.

``anomalib export --export_type onnx|openvino`` of a tiny DevPrompt printed 4,342 lines (3,858 on stdout, 484 on
stderr; about 6,000 were reported for a full-size backbone). anomalib's CLI sets the root logger to INFO with two
handlers (a plain one on stderr and a rich one on stdout, which wraps each record over several lines), and every
library logger without a level of its own inherits that INFO. Measured with torch 2.14.1, onnx 1.23.2, onnxscript
0.7.2 (with its onnx_ir) and openvino 2026.4.1; a tiny WinCLIP+ gave the same sources with other counts. Every line
but the model's own set-up came from one of these:

* ``onnx_ir.passes.common.initializer_deduplication``: one INFO record per merged constant ("Replaced initializer
  'val_1564' with existing initializer 'val_1430'"), 352 records (563 for WinCLIP+);
  ``onnx_ir.passes.common.unused_removal``: a few more INFO records.
* ``onnxscript.optimizer._constant_folding`` ("Skipping constant folding for node Node(...)" with the whole node
  printed, 44 records of up to 40 wrapped lines each), ``onnxscript.rewriter`` and
  ``onnxscript.rewriter.rules.common._collapse_slices`` (about 40 INFO records).
* anomalib asks ``torch.onnx.export`` for opset 14, which the dynamo exporter cannot produce: torch's logger
  ``torch.onnx._internal.exporter._compat`` warns that it uses opset 18 and will convert, and
  ``onnxscript.version_converter`` then warns twice, once with the traceback of a ``RuntimeError`` from onnx's C
  converter ("Failed to convert the model to the target version 14 ... The model was not modified"). The file is
  opset 18 either way.
* ``torch.onnx.export`` itself ``print``s eight ``[torch.onnx] ... ✅`` progress lines (its ``verbose=None``).

No Python ``warnings`` are raised during the export, and OpenVINO's ``convert_model`` / ``save_model`` log nothing.

:func:`quiet_export` raises those loggers' levels while an export runs (and restores them afterwards);
:data:`QUIET_ONNX_KWARGS` (``opset_version=18``, ``verbose=False``) removes the opset conversion attempt and the
progress prints at their source; :func:`export_summary` describes the written files in one or two lines (path,
companion files, size, opset, inputs and outputs). :class:`QuietExportMixin` wires the three into a model's
``to_onnx`` / ``to_openvino``, after :func:`require_export_packages` has checked that the packages of the ``export``
extra are installed (else one error says ``pip install "anomalib-clipad[export]"``). Set
``ANOMALIB_CLIPAD_EXPORT_VERBOSE=1`` to see the exporter's full output again.

Example:
    >>> from anomalib.models import AnomalibModule
    >>> from anomalib_clipad.export import QuietExportMixin
    >>> class MyModel(QuietExportMixin, AnomalibModule):  # doctest: +SKIP
    ...     ...
"""

from __future__ import annotations

import contextvars
import importlib.util
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

logger = logging.getLogger(__name__)

VERBOSE_ENV = "ANOMALIB_CLIPAD_EXPORT_VERBOSE"

#: Logger (prefix) -> the lowest level let through while exporting. A prefix covers its child loggers.
NOISY_LOGGERS: dict[str, int] = {
    # initializer_deduplication and unused_removal: one INFO record per merged constant / removed node
    "onnx_ir": logging.WARNING,
    # optimizer (constant folding) and rewriter rules: one INFO record per node they skip or rewrite
    "onnxscript": logging.WARNING,
    # "version conversion is not supported ... fallback" and "Failed to convert the model to the target version 14"
    # with a RuntimeError traceback: the file stays at opset 18, which the summary reports
    "onnxscript.version_converter": logging.ERROR,
    # NNCF's INFO records (e.g. one per node of an ignored scope); its progress bars stay
    "nncf": logging.WARNING,
    # "Setting ONNX exporter to use operator set version 18 because the requested opset_version 14 is lower ..."
    "torch.onnx._internal.exporter._compat": logging.ERROR,
}

#: ``torch.onnx.export`` arguments that remove noise at its source (a caller's own values win):
#: opset 18 is the dynamo exporter's own opset (anomalib's default of 14 is unreachable and only causes the failed
#: conversion above), ``verbose=False`` drops the ``[torch.onnx]`` progress prints.
QUIET_ONNX_KWARGS: dict[str, Any] = {"opset_version": 18, "verbose": False}

#: The packages each export needs: the ``export`` extra of anomalib-clipad (pyproject.toml) installs them all.
EXPORT_PACKAGES: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxscript"),
    "openvino": ("onnx", "onnxscript", "openvino"),
    "openvino_int8": ("onnx", "onnxscript", "openvino", "nncf"),
}
EXPORT_EXTRA_INSTALL = 'pip install "anomalib-clipad[export]"'

_EXPORT_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("anomalib_clipad_export_depth", default=0)


def export_verbose() -> bool:
    """Whether ``ANOMALIB_CLIPAD_EXPORT_VERBOSE`` asks for the exporter's full output (any value but ``""``/``0``)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in {"", "0", "false", "no"}


def _loggers_under(prefix: str) -> list[logging.Logger]:
    """The logger ``prefix`` and every already-created child logger that has a level of its own."""
    loggers = [logging.getLogger(prefix)]
    for name, item in list(logging.root.manager.loggerDict.items()):
        if name.startswith(prefix + ".") and isinstance(item, logging.Logger) and item.level != logging.NOTSET:
            loggers.append(item)
    return loggers


@contextmanager
def quiet_loggers(levels: dict[str, int] | None = None) -> Iterator[None]:
    """Raise the given loggers (and their children that set a level) to at least a level; restore them on exit.

    Records below the level are then never created, so this also saves the time of formatting them. Loggers that
    are already at or above the level are left alone; nothing else (handlers, other loggers) is touched.

    Args:
        levels: Logger name (prefix) -> lowest level let through. Defaults to :data:`NOISY_LOGGERS`.

    Yields:
        Nothing; the levels are restored when the block exits, also on an exception.
    """
    saved: list[tuple[logging.Logger, int]] = []
    try:
        for prefix, level in (NOISY_LOGGERS if levels is None else levels).items():
            for item in _loggers_under(prefix):
                if item.getEffectiveLevel() < level:
                    saved.append((item, item.level))
                    item.setLevel(level)
        yield
    finally:
        for item, level in reversed(saved):
            item.setLevel(level)


def require_export_packages(model_name: str, export_type: str) -> None:
    """Raise a clear error, before anything is written, when a package an export needs is not installed.

    Without the check, anomalib's ``to_openvino`` ends in a bare ``ModuleNotFoundError`` and ``to_onnx`` in torch's
    own message, neither naming the extra that installs what is missing.

    Args:
        model_name: Name shown in the message (e.g. ``"PromptAD"``).
        export_type: ``"onnx"``, ``"openvino"`` or ``"openvino_int8"`` (see :data:`EXPORT_PACKAGES`).

    Raises:
        ModuleNotFoundError: naming the missing packages (``name``: the first of them) and the install command.
    """
    missing = [package for package in EXPORT_PACKAGES[export_type] if importlib.util.find_spec(package) is None]
    if missing:
        target = {"openvino": "OpenVINO IR", "openvino_int8": "an INT8 OpenVINO IR"}.get(export_type, "ONNX")
        msg = (
            f"Exporting {model_name} to {target} needs the package(s) {', '.join(map(repr, missing))}, which are not "
            f"installed. Install anomalib-clipad's export extra: {EXPORT_EXTRA_INSTALL}"
        )
        raise ModuleNotFoundError(msg, name=missing[0])


@dataclass
class ExportRecord:
    """What one export wrote: filled by the code inside :func:`quiet_export`, summarised when it exits.

    Attributes:
        model_name: Name shown in the summary (e.g. ``"PromptAD"``).
        export_type: ``"onnx"`` or ``"openvino"``.
        path: The main file written (``model.onnx`` / ``model.xml``); set it inside the block.
        requested_opset: The ONNX opset asked for, if any (the summary says when the file has another one).
        compression: anomalib's compression type of an OpenVINO IR (``"INT8_PTQ"``, ...), ``None``: float32.
        seconds: Wall time of the block, set on exit.
        summary: The logged summary, set on exit (``None`` for a nested export, e.g. the ONNX step of OpenVINO).
    """

    model_name: str
    export_type: str
    path: Path | None = None
    requested_opset: int | None = None
    compression: str | None = None
    seconds: float = 0.0
    summary: str | None = field(default=None, repr=False)


@contextmanager
def quiet_export(model_name: str, export_type: str, verbose: bool | None = None) -> Iterator[ExportRecord]:
    """Run an ONNX / OpenVINO export without the exporter's per-node logging, then log a short summary.

    Set ``record.path`` to the written file inside the block. The summary is logged (logger
    ``anomalib_clipad.export``, INFO: what ``anomalib export`` shows) only by the outermost block, so the ONNX step
    that ``to_openvino`` runs in a temporary folder is not reported. Nothing is logged when the block raises.

    Args:
        model_name: Name shown in the summary.
        export_type: ``"onnx"`` or ``"openvino"``.
        verbose: ``True`` leaves every logger as it is (the full exporter output); default: the
            ``ANOMALIB_CLIPAD_EXPORT_VERBOSE`` environment variable.

    Yields:
        The :class:`ExportRecord` to fill.

    Example:
        >>> with quiet_export("PromptAD", "onnx") as record:  # doctest: +SKIP
        ...     record.path = model.to_onnx("exports", **QUIET_ONNX_KWARGS)
    """
    verbose = export_verbose() if verbose is None else verbose
    record = ExportRecord(model_name=model_name, export_type=export_type)
    depth = _EXPORT_DEPTH.get()
    token = _EXPORT_DEPTH.set(depth + 1)
    start = time.perf_counter()
    try:
        if verbose:
            yield record
        else:
            with quiet_loggers():
                yield record
    finally:
        _EXPORT_DEPTH.reset(token)
    record.seconds = time.perf_counter() - start
    if depth == 0 and record.path is not None:
        record.summary = export_summary(record, verbose=verbose)
        logger.info(record.summary)


def _size(paths: list[Path]) -> str:
    total = sum(path.stat().st_size for path in paths if path.is_file())
    return f"{total / 2**20:.1f} MiB" if total >= 2**20 else f"{total / 2**10:.0f} KiB"


def _onnx_details(path: Path, requested_opset: int | None) -> str:
    """``opset 18; input input[batch_size,3,height,width]; outputs pred_score, ...``, read without the weights."""
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # the summary is informative only: never fail an export that worked
        return ""
    opset = next((item.version for item in proto.opset_import if item.domain in {"", "ai.onnx"}), None)
    text = f"opset {opset}"
    if requested_opset is not None and opset is not None and requested_opset != opset:
        text += f" (opset {requested_opset} was asked for: the converter cannot produce it, the file keeps {opset})"

    def shape(value: Any) -> str:
        dims = value.type.tensor_type.shape.dim
        return ",".join(dim.dim_param or str(dim.dim_value) for dim in dims)

    inputs = ", ".join(f"{value.name}[{shape(value)}]" for value in proto.graph.input)
    outputs = ", ".join(value.name for value in proto.graph.output)
    return f"{text}; input {inputs}; outputs {outputs}"


def export_summary(record: ExportRecord, verbose: bool = False) -> str:
    """Describe an export in one or two lines: the main file, the files that go with it, size, opset and I/O.

    Args:
        record: The finished export (``path`` set).
        verbose: Whether the exporter's own output was shown (otherwise the summary says how to see it).

    Returns:
        The summary text.
    """
    if record.path is None:
        msg = "The export record has no path."
        raise ValueError(msg)
    path = Path(record.path)
    if record.export_type == "openvino":
        companions = [path.with_suffix(".bin")]
        kind, details = "OpenVINO IR", "for torch's numbers compile it with INFERENCE_PRECISION_HINT f32"
        if record.compression is not None:
            kind = f"OpenVINO IR ({record.compression}, score head in float32)"
    else:
        companions = [path.with_name(path.name + ".data")]
        kind, details = "ONNX", _onnx_details(path, record.requested_opset)
    companions = [companion for companion in companions if companion.is_file()]
    files = f" (+ {', '.join(companion.name for companion in companions)})" if companions else ""
    text = (
        f"{record.model_name} exported to {kind} in {record.seconds:.1f} s: {path}{files}, {_size([path, *companions])}"
    )
    if details:
        text += f"; {details}"
    if not verbose:
        text += f" (exporter log silenced; {VERBOSE_ENV}=1 shows it)"
    return text


class QuietExportMixin:
    """Quiet ``to_onnx`` / ``to_openvino`` for an ``AnomalibModule``: anomalib's export inside :func:`quiet_export`.

    Put it first among the bases (``class PromptAD(QuietExportMixin, AnomalibModule)``) so that its methods run
    before anomalib's ``ExportMixin`` ones; ``get_model`` still sees a direct ``AnomalibModule`` subclass. ``to_onnx``
    adds :data:`QUIET_ONNX_KWARGS` unless the caller gives those arguments; ``to_openvino`` does what anomalib's
    method does (its ONNX step calls this ``to_onnx``: quiet, and not summarised, it writes a temporary file), with
    the compression step of :func:`anomalib_clipad.precision.compress_ov_model` for ``compression_type``: anomalib's
    ``_compress_ov_model`` hooks answered by it, and ``FP16`` applied before saving rather than by
    ``ov.save_model(compress_to_fp16=True)``, so that the score head keeps float32 constants.
    """

    def to_onnx(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> Path:
        """Export to ONNX (anomalib's ``ExportMixin.to_onnx``) quietly, then log a summary.

        Args:
            export_root: Output folder (the file goes to ``<export_root>/weights/onnx/<model_file_name>.onnx``).
            model_file_name: File name without suffix.
            input_size: Fixed raw input ``(H, W)``; ``None``: dynamic batch, height and width.
            **kwargs: Passed to ``torch.onnx.export``; ``opset_version`` and ``verbose`` default to
                :data:`QUIET_ONNX_KWARGS` (unless ``ANOMALIB_CLIPAD_EXPORT_VERBOSE`` is set).

        Returns:
            Path of the ``.onnx`` file.

        Raises:
            ModuleNotFoundError: ``onnx`` or ``onnxscript`` is not installed (the message names the extra).
        """
        require_export_packages(type(self).__name__, "onnx")
        with quiet_export(type(self).__name__, "onnx") as record:
            record.requested_opset = kwargs.get("opset_version")
            if not export_verbose():
                kwargs = {**QUIET_ONNX_KWARGS, **kwargs}
            record.path = super().to_onnx(export_root, model_file_name, input_size, **kwargs)  # type: ignore[misc]
        return record.path

    def to_openvino(  # noqa: PLR0917 (anomalib's signature)
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        compression_type: Any = None,
        datamodule: Any = None,
        metric: Any = None,
        task: Any = None,
        max_drop: float = 0.01,
        ov_kwargs: dict[str, Any] | None = None,
        onnx_kwargs: dict[str, Any] | None = None,
    ) -> Path:
        """Export to OpenVINO IR quietly, compressed for a lower precision if asked, then log a summary.

        anomalib's ``ExportMixin.to_openvino`` (same arguments), with the compression step of
        :func:`anomalib_clipad.precision.compress_ov_model`: the score head stays float32 at every precision (and is
        marked by :func:`~anomalib_clipad.precision.keep_score_head_precise` for float32 under a ``bf16`` inference
        precision hint, which OpenVINO honours in part), NNCF
        quantises as a transformer without SmoothQuant, and calibrates on the datamodule's train split
        (``docs/export.md#lower-precision``). The IR is written by ``ov.save_model(..., compress_to_fp16=False)``:
        ``FP16`` is applied before, sparing the score head.

        Args:
            export_root: Output folder (the IR goes to ``<export_root>/weights/openvino/<model_file_name>.xml``).
            model_file_name: File name without suffix.
            input_size: Fixed raw input ``(H, W)``; ``None``: dynamic batch, height and width.
            compression_type: anomalib's ``CompressionType`` (``FP16``, ``INT8``, ``INT8_PTQ``, ``INT8_ACQ``) or
                ``None`` (float32).
            datamodule: Calibration (``INT8_PTQ``, ``INT8_ACQ``) and validation (``INT8_ACQ``) data.
            metric: ``INT8_ACQ``'s metric (default: image F1).
            task: Unused (anomalib's argument, kept for its callers).
            max_drop: ``INT8_ACQ``'s largest accepted metric drop.
            ov_kwargs: ``ov.convert_model`` arguments.
            onnx_kwargs: ``to_onnx`` arguments.

        Returns:
            Path of the ``.xml`` file.

        Raises:
            ModuleNotFoundError: ``openvino``, ``onnx``, ``onnxscript`` (or, for INT8, ``nncf``) is not installed (the
                message names the extra).
        """
        del task  # anomalib takes it and uses none of it
        needs_nncf = compression_type is not None and getattr(compression_type, "name", str(compression_type)) != "FP16"
        require_export_packages(type(self).__name__, "openvino_int8" if needs_nncf else "openvino")
        import openvino as ov
        from anomalib.deploy.export import ExportType
        from anomalib.models.components.base.export_mixin.utils import create_export_root

        from anomalib_clipad.precision import keep_score_head_precise

        with quiet_export(type(self).__name__, "openvino") as record, TemporaryDirectory() as onnx_directory:
            onnx_path = self.to_onnx(onnx_directory, model_file_name, input_size, **(onnx_kwargs or {}))
            ov_model_path = create_export_root(export_root, ExportType.OPENVINO) / (model_file_name + ".xml")
            model = ov.convert_model(onnx_path, **(ov_kwargs or {}))
            if compression_type is not None:
                record.compression = getattr(compression_type, "name", str(compression_type))
                model = self._compress_ov_model(model, compression_type, datamodule, metric, None, max_drop)
            keep_score_head_precise(model)  # the head in float32 under a bf16 inference precision, where OpenVINO can
            ov.save_model(model, ov_model_path, compress_to_fp16=False)
            record.path = ov_model_path
        return record.path

    def _compress_ov_model(  # noqa: PLR0917 (anomalib's signature)
        self,
        model: Any,
        compression_type: Any = None,
        datamodule: Any = None,
        metric: Any = None,
        task: Any = None,
        max_drop: float = 0.01,
    ) -> Any:
        """The compression hook of anomalib, answered by :func:`anomalib_clipad.precision.compress_ov_model`."""
        from anomalib_clipad.precision import compress_ov_model

        del task
        return compress_ov_model(model, compression_type, datamodule, metric=metric, max_drop=max_drop)

    @staticmethod
    def _post_training_quantization_ov(model: Any, datamodule: Any = None) -> Any:
        """The ``INT8_PTQ`` step of anomalib, answered by :func:`anomalib_clipad.precision.compress_ov_model`."""
        from anomalib_clipad.precision import Precision, compress_ov_model

        return compress_ov_model(model, Precision.INT8_PTQ, datamodule)

    @staticmethod
    def _accuracy_control_quantization_ov(
        model: Any,
        datamodule: Any = None,
        metric: Any = None,
        task: Any = None,
        max_drop: float = 0.01,
    ) -> Any:
        """The ``INT8_ACQ`` step of anomalib, answered by :func:`anomalib_clipad.precision.compress_ov_model`."""
        from anomalib_clipad.precision import Precision, compress_ov_model

        del task
        return compress_ov_model(model, Precision.INT8_ACQ, datamodule, metric=metric, max_drop=max_drop)
