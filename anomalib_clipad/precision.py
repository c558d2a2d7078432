# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Deployment precisions of the OpenVINO export: one name per way of running a model on a CPU.

A deployment precision is a pair: how the IR is written (anomalib's ``--compression_type``: none, ``FP16`` weights,
``INT8`` weights, ``INT8_PTQ`` or ``INT8_ACQ`` quantisation through NNCF) and how OpenVINO runs it
(``INFERENCE_PRECISION_HINT``: ``f32`` or ``bf16``). The names here are the ones the benchmark (``--deploy
openvino:<precision>``) and the precision script print:

=========  ====================  ==========================
name       IR (compression)      inference precision hint
=========  ====================  ==========================
f32        float32 (none)        f32
bf16       float32 (none)        bf16
fp16       FP16 weights          f32
int8       INT8 weights          f32
int8_ptq   INT8 PTQ              f32
int8_acq   INT8 ACQ              f32
=========  ====================  ==========================

The compressed IRs run with the ``f32`` hint so that each row measures what its compression changes, and nothing
else; OpenVINO's own CPU default is ``bf16`` on CPUs with bf16 support (AVX512-BF16, AMX) and ``f32`` elsewhere.

Example:
    >>> from anomalib_clipad.precision import Precision, parse_precision
    >>> parse_precision("INT8_PTQ") is Precision.INT8_PTQ
    True
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anomalib.data import AnomalibDataModule
    from anomalib.deploy import CompressionType


class Precision(str, Enum):
    """A deployment precision (see the module's table)."""

    F32 = "f32"
    BF16 = "bf16"
    FP16 = "fp16"
    INT8 = "int8"
    INT8_PTQ = "int8_ptq"
    INT8_ACQ = "int8_acq"

    @property
    def compression(self) -> str | None:
        """The name of anomalib's ``CompressionType`` for the IR, ``None`` for an uncompressed float32 IR."""
        return None if self in {Precision.F32, Precision.BF16} else self.name

    @property
    def needs_data(self) -> bool:
        """Whether writing the IR needs a datamodule (NNCF's calibration, and validation for ACQ)."""
        return self in {Precision.INT8_PTQ, Precision.INT8_ACQ}

    @property
    def inference_hint(self) -> str:
        """OpenVINO's ``INFERENCE_PRECISION_HINT`` for running the IR."""
        return "bf16" if self is Precision.BF16 else "f32"


#: Every deployment precision, in the order the tables print them.
PRECISIONS: tuple[Precision, ...] = tuple(Precision)


def parse_precision(text: str | Precision) -> Precision:
    """Read a precision name: ours (``int8_ptq``) or anomalib's ``--compression_type`` (``INT8_PTQ``), any case.

    Raises:
        ValueError: An unknown name; the message lists the known ones.
    """
    if isinstance(text, Precision):
        return text
    key = str(text).strip().lower().replace("-", "_")
    for precision in PRECISIONS:
        if key == precision.value:
            return precision
    choices = ", ".join(p.value for p in PRECISIONS)
    msg = (
        f"Unknown deployment precision {text!r}: choose one of {choices} "
        "(or anomalib's FP16, INT8, INT8_PTQ, INT8_ACQ)."
    )
    raise ValueError(msg)


def compression_type(precision: str | Precision) -> CompressionType | None:
    """The ``CompressionType`` of anomalib that writes the IR of ``precision`` (``None``: a float32 IR)."""
    name = parse_precision(precision).compression
    if name is None:
        return None
    from anomalib.deploy import CompressionType

    return CompressionType[name]


def compile_config(precision: str | Precision) -> dict[str, str]:
    """The OpenVINO ``compile_model`` configuration that runs an IR at ``precision``."""
    return {"INFERENCE_PRECISION_HINT": parse_precision(precision).inference_hint}


def export_openvino(
    module: Any,
    export_root: Path | str,
    precision: str | Precision,
    datamodule: AnomalibDataModule | None = None,
    **kwargs: Any,
) -> Path:
    """Write the OpenVINO IR of an anomalib model for ``precision`` (``module.to_openvino`` with its compression).

    Args:
        module: The ``AnomalibModule`` (ours or anomalib's), calibrated if its thresholds matter.
        export_root: Output folder (the IR goes to ``<export_root>/weights/openvino/model.xml``).
        precision: A deployment precision (:class:`Precision` or its name).
        datamodule: Calibration (and, for ``int8_acq``, validation) data; needed by ``int8_ptq`` / ``int8_acq``.
        **kwargs: More ``to_openvino`` arguments (``input_size``, ``max_drop``, ...).

    Returns:
        The path of the ``.xml`` file.

    Raises:
        ValueError: ``int8_ptq`` / ``int8_acq`` without a datamodule.
    """
    precision = parse_precision(precision)
    if precision.needs_data and datamodule is None:
        msg = f"The {precision.value} export calibrates on data: pass a datamodule (`--data ...` on the CLI)."
        raise ValueError(msg)
    return module.to_openvino(
        export_root,
        compression_type=compression_type(precision),
        datamodule=datamodule,
        **kwargs,
    )


def compile_openvino(model_path: Path | str, precision: str | Precision, device: str = "CPU") -> Any:
    """Compile an IR (``.xml``) with the inference precision of ``precision``; returns OpenVINO's compiled model."""
    import openvino as ov

    return ov.Core().compile_model(str(model_path), device, compile_config(precision))
