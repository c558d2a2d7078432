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

:func:`compress_ov_model` is the compression step of every model's ``to_openvino`` (and so of ``anomalib export
--compression_type``), between the conversion of the ONNX file and ``ov.save_model``. It differs from anomalib's in
what it keeps in float and where it calibrates (measured with ``python -m
anomalib_clipad.benchmarks.quantization_settings``; ``docs/export.md#lower-precision``):

* the **score head** (:func:`score_head`: what follows the image tower's last layer norm on every path: projection,
  similarity to the text features, softmax with its temperature, memory and prior-aware distances, fusion, Gaussian
  filter, post-processor with its thresholds) stays float32 at every precision: NNCF ignores it, ``FP16`` leaves
  its constants float32, and :func:`keep_score_head_precise` marks it for float32 under a ``bf16`` inference
  precision (which OpenVINO honours in part);
* NNCF quantises with ``model_type=TRANSFORMER`` and without SmoothQuant (:data:`DEFAULT_QUANTIZATION`);
* calibration reads the datamodule's **train split** (:func:`calibration_data`: normal images, never scored; at most
  ``max_images``, NNCF's ``subset_size`` set to their number), ``INT8_ACQ`` validates on a validation split held out
  from the test set (:func:`validation_data`).

Example:
    >>> from anomalib_clipad.precision import Precision, parse_precision
    >>> parse_precision("INT8_PTQ") is Precision.INT8_PTQ
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anomalib.data import AnomalibDataModule
    from anomalib.deploy import CompressionType

logger = logging.getLogger(__name__)


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
        datamodule: Calibration (its train split) and, for ``int8_acq``, validation data (its validation split, held
            out from the test set); needed by ``int8_ptq`` / ``int8_acq``.
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


#: The exported pipeline's outputs: the fields of anomalib's ``InferenceBatch``.
OUTPUT_FIELDS: tuple[str, ...] = ("pred_score", "pred_label", "anomaly_map", "pred_mask")


def named_outputs(compiled: Any, result: Any) -> dict[str, Any]:
    """``result`` of calling ``compiled`` (an OpenVINO compiled model), by output name.

    An output is named by the :data:`OUTPUT_FIELDS` name it carries (once an IR is reshaped, an output can carry
    several tensor names), else by its first name.
    """
    outputs = {}
    for output in compiled.outputs:
        names = output.get_names()
        outputs[next((name for name in OUTPUT_FIELDS if name in names), output.get_any_name())] = result[output]
    return outputs


# ------------------------------------------------------------------------------------------------------ compression
#: OpenVINO operation types that end the image tower on a path: layer normalisations (ONNX ``LayerNormalization``,
#: which OpenVINO reads as ``MVN`` followed by the affine ``Multiply``/``Add``, often folded into the next MatMul).
TOWER_END_TYPES: frozenset[str] = frozenset({"MVN"})
#: Operation types that are never quantised and carry nothing to keep in float.
_NOT_COMPUTING: frozenset[str] = frozenset({"Constant", "Parameter", "Result"})
#: Element types of a weight stored at low precision (decompressed at run time).
_LOW_PRECISION_WEIGHTS: frozenset[str] = frozenset(
    {"i8", "u8", "i4", "u4", "nf4", "f4e2m1", "f8e4m3", "f8e5m2", "f8e8m0", "f16", "bf16"}
)
#: Operations that quantise activations in place (NNCF's post-training quantisation inserts them).
_QUANTIZERS: frozenset[str] = frozenset({"FakeQuantize", "FakeConvert"})


def score_head(model: Any) -> list[Any]:
    """The operations of an OpenVINO model that come after the image tower: the score head and the post-processor.

    An operation belongs to the score head when it is downstream of a layer normalisation (:data:`TOWER_END_TYPES`)
    and no layer normalisation is downstream of it: on every path, what follows the image tower's last layer norm.
    For our five models that is ``ln_post`` and the projection into the joint space, the cosine similarity to the
    text features and the softmax with its temperature, the memory distances (nearest normal patch), the prior-aware
    and deviation scores, score fusion, upsampling, the Gaussian filter, and anomalib's post-processor (normalisation
    and thresholds); the raw patch tokens that a memory reads inside the tower are the tower's (the distance to the
    memory is the head's). The rule reads the graph's structure, not node names (the ONNX exporter names nodes after
    torch's operator calls, which change with the code), so it holds for every model and backbone.

    Args:
        model: An ``openvino.Model`` (as ``ov.convert_model`` returns it, or compressed).

    Returns:
        The head's computing operations (no constants, parameters or results), in topological order.
    """
    ops = list(model.get_ordered_ops())
    names = [op.get_name() for op in ops]
    types = [op.get_type_name() for op in ops]
    sources = [[item.get_source_output().get_node().get_name() for item in op.inputs()] for op in ops]
    consumers: dict[str, list[str]] = {}
    for name, inputs in zip(names, sources, strict=True):
        for source in inputs:
            consumers.setdefault(source, []).append(name)
    feeds_tower_end: set[str] = set()
    for name, kind in zip(reversed(names), reversed(types), strict=True):
        if kind in TOWER_END_TYPES or any(target in feeds_tower_end for target in consumers.get(name, ())):
            feeds_tower_end.add(name)
    downstream: set[str] = set()
    head = []
    for op, name, kind, inputs in zip(ops, names, types, sources, strict=True):
        if kind in TOWER_END_TYPES:
            downstream.add(name)
        elif any(source in downstream for source in inputs):
            downstream.add(name)
            if name not in feeds_tower_end and kind not in _NOT_COMPUTING:
                head.append(op)
    return head


def score_head_scope(model: Any) -> Any:
    """NNCF's ``IgnoredScope`` of the :func:`score_head` (by node name), or ``None`` when the model has none."""
    import nncf

    names = sorted({op.get_friendly_name() for op in score_head(model)})
    return nncf.IgnoredScope(names=names, validate=False) if names else None


#: The runtime-info key of OpenVINO's ``ov::disable_fp16_compression`` (``DisableFP16Compression``: "precise", version
#: 0). ``ov.save_model`` writes it into the IR as ``DisablePrecisionConversion``, which the CPU plugin reads when it
#: lowers a graph to the ``bf16`` / ``f16`` inference precision. A model marked in memory is honoured once saved and
#: read back, as every IR is.
PRECISE_RT_INFO = "precise_0"


def keep_score_head_precise(model: Any) -> Any:
    """Mark the :func:`score_head` to be computed in float32 when the IR runs at a lower inference precision.

    ``INFERENCE_PRECISION_HINT: bf16`` (``Precision.BF16``, and OpenVINO's own default on CPUs with AVX512-BF16 or
    AMX) otherwise runs the whole graph in bfloat16, the similarity, the softmax with its temperature, the Gaussian
    filter and the thresholds included. OpenVINO honours the mark only in part: with OpenVINO 2026.4 on a CPU with
    AMX, the head's Gaussian filter, reductions and most of its arithmetic and matrix products compute in float32,
    while the upsampling, some softmaxes and element-wise chains and the matrix products fed directly by the bfloat16
    tower stay in bfloat16. Measured at full size (``docs/export.md#precision-benchmark``): WinCLIP+'s pixel AUROC in
    ``bf16`` moved by -0.09 point instead of -1.78, at the same speed; PromptAD's and DevPrompt's outputs did not
    change. Every IR our ``to_openvino`` writes carries the mark.

    Args:
        model: An ``openvino.Model`` (changed in place).

    Returns:
        The same model.
    """
    for op in score_head(model):
        op.get_rt_info()[PRECISE_RT_INFO] = ""
    return model


def _constant_nodes(model: Any) -> dict[str, Any]:
    """Every node whose value is known before inference (constants and what is computed from constants only)."""
    constant: dict[str, Any] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant" or (
            op.get_input_size() > 0
            and op.get_type_name() not in {"Parameter", "ReadValue", "ShapeOf"}
            and all(item.get_source_output().get_node().get_name() in constant for item in op.inputs())
        ):
            constant[op.get_name()] = op
    return constant


def low_precision_in_head(model: Any) -> list[str]:
    """The score-head operations that compute with a low-precision input: what :func:`compress_ov_model` must avoid.

    An input is low-precision when it comes from a quantiser (``FakeQuantize``/``FakeConvert``: NNCF's INT8
    post-training quantisation) or is a weight stored at low precision (an int8/int4/fp16/fp8 constant decompressed
    at run time: ``compress_weights``, or ``compress_to_fp16``).

    Args:
        model: An ``openvino.Model``.

    Returns:
        ``"<friendly name> (<type>): <why>"`` for each such operation; empty when the head computes in float32.
    """
    constant = _constant_nodes(model)
    found = []
    for op in score_head(model):
        if op.get_name() in constant:
            continue
        for item in op.inputs():
            source = item.get_source_output().get_node()
            if source.get_type_name() in _QUANTIZERS:
                found.append(f"{op.get_friendly_name()} ({op.get_type_name()}): input from {source.get_type_name()}")
                continue
            stack, seen, types = [source], set(), set()
            while stack:
                node = stack.pop()
                if node.get_name() in seen or node.get_name() not in constant:
                    continue
                seen.add(node.get_name())
                if node.get_type_name() == "Constant":
                    types.add(node.get_output_element_type(0).get_type_name())
                stack.extend(parent.get_source_output().get_node() for parent in node.inputs())
            low = sorted(types & _LOW_PRECISION_WEIGHTS)
            if low:
                found.append(f"{op.get_friendly_name()} ({op.get_type_name()}): {'/'.join(low)} weight")
    return found


@dataclass(frozen=True)
class QuantizationSettings:
    """How :func:`compress_ov_model` quantises (see ``docs/export.md#lower-precision`` for the measurements).

    Attributes:
        transformer: NNCF's ``model_type=ModelType.TRANSFORMER`` (its transformer patterns: attention's matrix
            products quantised symmetrically, layer norms, softmax and GELU left in float).
        smooth_quant: NNCF's SmoothQuant (it only runs with ``transformer``; NNCF's default there is on, alpha 0.95).
        float_score_head: keep :func:`score_head` in float32: excluded from NNCF's quantisation (``INT8_PTQ``,
            ``INT8_ACQ``) and weight compression (``INT8``), and its constants left float32 by ``FP16``.
        max_images: most calibration images (NNCF's ``subset_size``); fewer when the data has fewer.
    """

    transformer: bool = True
    smooth_quant: bool = False
    float_score_head: bool = True
    max_images: int = 300


#: Our settings (what the mixin's export uses).
DEFAULT_QUANTIZATION = QuantizationSettings()
#: What anomalib's ``ExportMixin`` does: NNCF's defaults (no model type, so no SmoothQuant), everything quantised.
ANOMALIB_QUANTIZATION = QuantizationSettings(transformer=False, smooth_quant=False, float_score_head=False)
#: Fewer calibration images than this get a warning (NNCF's own default subset is 300).
RECOMMENDED_CALIBRATION_IMAGES = 300


class _Images:
    """Iterable of the images of an anomalib dataset, one ``(1, 3, H, W)`` float32 array each (NNCF's input)."""

    def __init__(self, dataset: Any, indices: list[int], size: tuple[int, int] | None = None) -> None:
        self.dataset, self.indices, self.size = dataset, indices, size

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[Any]:
        import torch.nn.functional as F  # noqa: N812

        for index in self.indices:
            image = self.dataset[index].image[None].float()
            if self.size is not None and tuple(image.shape[-2:]) != self.size:
                image = F.interpolate(image, size=self.size, mode="bilinear", align_corners=False)
            yield image.numpy()


def _spaced(count: int, limit: int) -> list[int]:
    """``limit`` indices spread evenly over ``range(count)`` (all of them when ``count <= limit``)."""
    if count <= limit:
        return list(range(count))
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)}) if limit > 1 else [0]


def _static_size(model: Any) -> tuple[int, int] | None:
    """The IR's fixed input height and width (``input_size`` at export), ``None`` when dynamic."""
    shape = model.input(0).get_partial_shape()
    if shape.rank.is_static and shape[2].is_static and shape[3].is_static:
        return int(shape[2].get_length()), int(shape[3].get_length())
    return None


def calibration_data(datamodule: AnomalibDataModule, model: Any, max_images: int = 300) -> Any:
    """NNCF's calibration data: images of the datamodule's **train split** (normal images, never scored).

    anomalib calibrates on the validation split, which is the test split itself under ``val_split_mode=same_as_test``
    (the default of ``MVTecAD``); the train split never holds the images a test scores, whatever the split modes.
    Images are fed one at a time (any size: the graph resizes), ``max_images`` of them at most, spread evenly over the
    split.

    Args:
        datamodule: The datamodule given to the export (``--data``).
        model: The ``openvino.Model`` to calibrate (a fixed input size, if any, is respected).
        max_images: Most images used.

    Returns:
        An ``nncf.Dataset`` (its length is the number of images).

    Raises:
        ValueError: the train split has no image.
    """
    import nncf

    datamodule.setup("fit")
    dataset = getattr(datamodule, "train_data", None)
    count = 0 if dataset is None else len(dataset)
    if count == 0:
        msg = (
            f"INT8 post-training quantisation calibrates on the train split of {type(datamodule).__name__}, which has "
            "no image: give a datamodule with normal training images (`--data ...`)."
        )
        raise ValueError(msg)
    indices = _spaced(count, max(1, max_images))
    if len(indices) < RECOMMENDED_CALIBRATION_IMAGES:
        logger.warning(
            "INT8 quantisation calibrates on %d image(s) of the train split of %s (NNCF recommends about %d): the "
            "quantisation ranges may not cover the images you score.",
            len(indices),
            type(datamodule).__name__,
            RECOMMENDED_CALIBRATION_IMAGES,
        )
    else:
        logger.info("INT8 quantisation calibrates on %d image(s) of the train split.", len(indices))
    return nncf.Dataset(_Images(dataset, indices, _static_size(model)))


def validation_data(datamodule: AnomalibDataModule) -> Any:
    """``INT8_ACQ``'s labelled validation images: the datamodule's validation split, refused when it is the test set.

    Raises:
        ValueError: no validation split, or ``val_split_mode=same_as_test`` (accuracy control would pick what to keep
            in float by the accuracy on the very images a test then scores).
    """
    import nncf
    from anomalib.data.utils import ValSplitMode

    datamodule.setup("fit")
    mode = getattr(datamodule, "val_split_mode", None)
    dataset = getattr(datamodule, "val_data", None)
    if dataset is None or len(dataset) == 0 or mode in {ValSplitMode.SAME_AS_TEST, ValSplitMode.NONE}:
        what = "the test set" if mode == ValSplitMode.SAME_AS_TEST else "empty"
        msg = (
            "INT8_ACQ measures the accuracy drop on labelled images held out from the test set, but the validation "
            f"split of {type(datamodule).__name__} is {what} (val_split_mode={getattr(mode, 'value', mode)}). Hold "
            "some out: `--data.val_split_mode from_test` (or `synthetic`)."
        )
        raise ValueError(msg)
    return nncf.Dataset([dataset[index] for index in range(len(dataset))])


def _accuracy_function(metric: Any) -> Callable[[Any, Iterable[Any]], float]:
    """NNCF's validation function: the pipeline's outputs on each labelled item, then ``metric`` (reset each call)."""
    import torch
    from anomalib.data import ImageBatch

    def validate(compiled: Any, items: Iterable[Any]) -> float:
        metric.reset()
        for item in items:
            image = item.image[None].float()
            named = named_outputs(compiled, compiled(image.numpy()))
            outputs = {name: torch.from_numpy(value) for name, value in named.items()}
            metric.update(
                ImageBatch(
                    image=image,
                    gt_label=item.gt_label.reshape(1),
                    pred_score=outputs["pred_score"].reshape(1),
                    pred_label=outputs["pred_label"].reshape(1),
                )
            )
        return float(metric.compute())

    return validate


def _fp16_except_head(model: Any) -> Any:
    """``compress_to_fp16`` (OpenVINO's own transformation), with the score head's constants left float32."""
    from openvino import opset13
    from openvino._offline_transformations import compress_model_transformation

    sources = {
        op.get_friendly_name(): [item.get_source_output().get_node() for item in op.inputs()]
        for op in score_head(model)
    }
    compress_model_transformation(model)
    for op in score_head(model):
        for index, item in enumerate(op.inputs()):
            convert = item.get_source_output().get_node()
            if convert.get_type_name() != "Convert" or convert.get_input_element_type(0).get_type_name() != "f16":
                continue
            original = sources.get(op.get_friendly_name(), [])
            if index < len(original) and original[index].get_type_name() == "Constant":
                item.replace_source_output(opset13.constant(original[index].get_data()).output(0))
    model.validate_nodes_and_infer_types()
    return model


def compress_ov_model(
    model: Any,
    precision: str | Precision | CompressionType,
    datamodule: AnomalibDataModule | None = None,
    *,
    metric: Any = None,
    max_drop: float = 0.01,
    settings: QuantizationSettings = DEFAULT_QUANTIZATION,
) -> Any:
    """Compress a float32 ``openvino.Model`` for ``precision``: the step between conversion and ``ov.save_model``.

    ``fp16``: weights stored as float16 (OpenVINO's ``compress_to_fp16``); ``int8``: weights int8 (NNCF
    ``compress_weights``, INT8_ASYM per channel); ``int8_ptq``: weights and activations int8 (NNCF ``quantize``,
    calibrated on :func:`calibration_data`); ``int8_acq``: the same, with the layers that cost most accuracy (the
    default metric: image F1 on :func:`validation_data`) put back in float until the drop is at most ``max_drop``.
    With ``settings.float_score_head`` (the default) the :func:`score_head` stays float32 throughout.

    Save the result with ``ov.save_model(model, path, compress_to_fp16=False)`` (the fp16 compression is done here).

    Args:
        model: The converted float32 model (changed in place for ``fp16``; NNCF returns new models).
        precision: A deployment precision or anomalib's ``CompressionType``; ``f32``/``bf16`` return the model as is.
        datamodule: Calibration data for ``int8_ptq`` / ``int8_acq`` (and validation data for ``int8_acq``).
        metric: ``int8_acq``'s metric (higher is better); default anomalib's image ``F1Score``.
        max_drop: ``int8_acq``'s largest accepted drop of the metric (absolute, 0 to 1).
        settings: The quantisation settings (default: ours; :data:`ANOMALIB_QUANTIZATION`: anomalib's).

    Returns:
        The compressed model.

    Raises:
        ValueError: ``int8_ptq`` / ``int8_acq`` without a datamodule, or data the split rules refuse.
    """
    precision = parse_precision(getattr(precision, "name", precision))
    if precision.compression is None:
        return model
    if settings.float_score_head and not score_head(model):
        logger.warning(
            "The graph has no layer normalisation, so no score head to keep in float32: %s compresses all of it.",
            precision.name,
        )
    if precision is Precision.FP16:
        if settings.float_score_head:
            return _fp16_except_head(model)
        from openvino._offline_transformations import compress_model_transformation

        compress_model_transformation(model)
        return model
    import nncf  # noqa: F401 (imported before quiet_loggers: importing NNCF sets its logger's level to INFO)

    from anomalib_clipad.export import quiet_loggers

    with quiet_loggers({"nncf": logging.WARNING}):  # NNCF logs a record per node it leaves alone
        return _quantize(model, precision, datamodule, metric, max_drop, settings)


def _quantize(  # noqa: PLR0917
    model: Any,
    precision: Precision,
    datamodule: AnomalibDataModule | None,
    metric: Any,
    max_drop: float,
    settings: QuantizationSettings,
) -> Any:
    """NNCF's part of :func:`compress_ov_model` (``int8``, ``int8_ptq``, ``int8_acq``)."""
    import nncf

    ignored_scope = score_head_scope(model) if settings.float_score_head else None
    if precision is Precision.INT8:
        return nncf.compress_weights(model, ignored_scope=ignored_scope)
    if datamodule is None:
        msg = f"The {precision.value} export calibrates on data: pass a datamodule (`--data ...` on the CLI)."
        raise ValueError(msg)
    calibration = calibration_data(datamodule, model, settings.max_images)
    arguments: dict[str, Any] = {
        "subset_size": calibration.get_length(),
        "model_type": nncf.ModelType.TRANSFORMER if settings.transformer else None,
        "ignored_scope": ignored_scope,
    }
    advanced = None
    if settings.transformer and not settings.smooth_quant:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

        advanced = AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(convolution=-1, matmul=-1)
        )
    if precision is Precision.INT8_PTQ:
        return nncf.quantize(model, calibration, advanced_parameters=advanced, **arguments)
    if not 0 <= max_drop <= 1:
        msg = f"max_drop must be between 0 and 1, got {max_drop}"
        raise ValueError(msg)
    if metric is None:
        from anomalib.metrics import F1Score

        metric = F1Score(fields=["pred_label", "gt_label"])
    return nncf.quantize_with_accuracy_control(
        model,
        calibration,
        validation_data(datamodule),
        _accuracy_function(metric),
        max_drop=max_drop,
        advanced_quantization_parameters=advanced,
        **arguments,
    )
