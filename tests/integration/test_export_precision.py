# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""OpenVINO export at every deployment precision, for every model: the IR runs, stays close to torch, keeps the score
head in float32 and carries the calibrated thresholds.

Each model is built once per module on the 2-block micro backbone (``clipad-micro-vit-16``, 64 px: its export takes
seconds, where the 8-block tiny backbone's takes 15-40 s), with fixed random weights read from a file (so that a
subprocess builds the same CLIP), set up without training (text features of the class, the reference memory of a
normal image) and calibrated by hand: normalisation over the raw outputs of the compared images, the image threshold in
the widest gap between their raw scores. It is exported to ONNX and converted to OpenVINO once (module-scoped
fixture); each precision then compresses a copy of that float32 model with
:func:`~anomalib_clipad.precision.compress_ov_model`, the function the models' ``to_openvino`` uses, calibrating on the
4 train images of the generated dataset (``INT8_ACQ`` also validates on the held-out half of its test split). One
end-to-end test runs ``anomalib export --compression_type INT8_PTQ --data ...`` in a subprocess, from a learned-state
file that holds the thresholds; it starts before the first in-process export and runs beside it (an ONNX export keeps
one core busy; CI has two).

Tolerances, on the normalised scores and maps in [0, 1] (the largest differences measured on these five models in
brackets; ``docs/export.md#lower-precision`` has a ViT-B model's):

* ``f32``: 1e-4 (3e-6: operation order only), as ``test_export.py``;
* ``bf16``: 0.1 (6.3e-2, WinCLIP+; the others 9.0e-3 to 1.5e-2; measured on a CPU with AMX: a CPU without bf16 runs
  it in float32, within 1e-4);
* ``fp16`` (weights stored in float16, computed in float32): 2e-3 (7.8e-4; a float16 weight is within 2^-11 of its
  value);
* ``int8`` (weights int8, activations float): 2e-2 (8.3e-3);
* ``int8_ptq`` / ``int8_acq`` (weights and activations int8, calibrated on 4 images): 0.25 (0.13). Loose, because an
  8-bit activation of a random-weight network calibrated on 4 images is coarse; it catches a broken graph (a constant
  output, the uncalibrated threshold, NaN), and the float score head is checked exactly: no head operation computes
  with a quantised input or a low-precision weight, and its constants (thresholds included) equal the float32
  model's, bit for bit.

Each precision's IR is saved and read back, as ``to_openvino`` writes it, with the score head marked
(:func:`~anomalib_clipad.precision.keep_score_head_precise`); under the ``bf16`` hint the head's Gaussian filter and
reductions must compute in float32 (on a CPU with bf16: elsewhere everything does).

Labels are compared with ``raw score > calibrated threshold`` wherever the normalised score is farther than the
tolerance from the threshold, and the calibrated threshold splits the images (some normal, some anomalous, and not the
split an uncalibrated 0.5 or NaN threshold would give).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.data import MVTecAD
from anomalib.data.utils.image import read_image
from cli_runner import anomalib
from micro import micro_settings

from anomalib_clipad.models.learned_state import LearnedState
from anomalib_clipad.precision import (
    PRECISIONS,
    Precision,
    compile_config,
    compress_ov_model,
    keep_score_head_precise,
    low_precision_in_head,
    score_head,
)
from anomalib_clipad.registry import MODEL_NAMES, get_spec
from anomalib_clipad.training.thresholds import set_normalization, set_thresholds

CLASS_NAME = "bottle"
TOLERANCE: dict[Precision, float] = {
    Precision.F32: 1e-4,
    Precision.BF16: 0.1,
    Precision.FP16: 2e-3,
    Precision.INT8: 2e-2,
    Precision.INT8_PTQ: 0.25,
    Precision.INT8_ACQ: 0.25,
}
ACQ_MAX_DROP = 1.0
"""``INT8_ACQ`` here accepts any drop: it validates both models on the held-out split (the function and the data
under test) and keeps the quantised one; NNCF's search for layers to revert, on a random-weight model, is NNCF's."""


@dataclass
class Exported:
    """A set-up, calibrated model, its float32 OpenVINO model (converted from the ONNX export) and torch's outputs."""

    name: str
    module: Any
    images: torch.Tensor
    image_threshold: float
    converted: Any = None
    onnx_path: Path | None = None
    expected: Any = None
    raw_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        with torch.no_grad():
            self.expected = self.module(self.images)
            self.raw_scores = self.module.model(self.module.pre_processor(self.images)).pred_score.numpy()


def _model_arguments(name: str, weights: Path) -> dict[str, Any]:
    """The micro backbone's settings, the weights file and the model's few-shot setting (a memory to score)."""
    return micro_settings(name, pretrained=str(weights), **get_spec(name).few_shot)


def _widest_gap(values: np.ndarray, avoid: float | None) -> float:
    """The middle of the widest gap between sorted ``values`` whose split differs from the split at ``avoid``."""
    ordered = np.sort(values)
    best, threshold = -1.0, None
    for low, high in itertools.pairwise(ordered):
        middle = float(low + high) / 2
        if avoid is not None and np.array_equal(values > middle, values > avoid):
            continue
        if high - low > best:
            best, threshold = float(high - low), middle
    assert threshold is not None, values
    return threshold


def _span(values: torch.Tensor) -> tuple[float, float]:
    """The range of ``values`` widened by 10 % on each side (no output is clamped at 0 or 1)."""
    margin = 0.1 * float(values.max() - values.min())
    return float(values.min()) - margin, float(values.max()) + margin


@torch.no_grad()
def _calibrate(module: Any, images: torch.Tensor) -> float:
    """Thresholds: image in the widest gap of the raw image scores, pixel at the median raw map value; normalisation
    over the raw scores' and the raw maps' own spans. Returns the image threshold."""
    raw = module.model(module.pre_processor(images))
    post = module.post_processor
    image = _widest_gap(raw.pred_score.numpy(), avoid=0.5 if module.raw_scores else None)
    set_thresholds(post, image, float(raw.anomaly_map.median()))
    if post.enable_normalization:
        set_normalization(post, _span(raw.pred_score), _span(raw.anomaly_map))
    return image


@pytest.fixture(scope="module")
def images(synthetic_root: Path, synthetic_category: str) -> torch.Tensor:
    """Four test images (two normal, two defective) at 80 x 72 px: not the model's size, so the graph resizes."""
    folder = synthetic_root / synthetic_category / "test"
    paths = [folder / "good" / "000.png", folder / "good" / "001.png", folder / "hole" / "000.png"]
    paths.append(folder / "stain" / "001.png")
    batch = torch.stack([read_image(path, as_tensor=True) for path in paths])
    return F.interpolate(batch, size=(80, 72), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def datamodule(synthetic_root: Path, synthetic_category: str) -> MVTecAD:
    """The generated dataset: 4 train images calibrate, half of the test split (held out) validates ``INT8_ACQ``."""
    return MVTecAD(
        root=synthetic_root,
        category=synthetic_category,
        num_workers=0,
        val_split_mode="from_test",
        val_split_ratio=0.5,
    )


@pytest.fixture(scope="module")
def prepare(
    micro_weights: Path, synthetic_root: Path, synthetic_category: str, images: torch.Tensor
) -> Callable[[str], Exported]:
    """``prepare(name)``: the set-up, calibrated model (not exported yet), made once a module."""
    from anomalib_clipad.benchmarks.speed import prepare as set_up

    made: dict[str, Exported] = {}
    train = sorted((synthetic_root / synthetic_category / "train" / "good").glob("*.png"))

    def make(name: str) -> Exported:
        if name not in made:
            module = get_spec(name).lightning_class(**_model_arguments(name, micro_weights)).eval()
            references = torch.stack([read_image(path, as_tensor=True) for path in train])
            with torch.no_grad():
                set_up(module, module.pre_processor.transform(references))
            made[name] = Exported(name, module, images, _calibrate(module, images))
        return made[name]

    return make


@pytest.fixture(scope="module")
def build(prepare: Callable[[str], Exported], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Exported]:
    """``build(name)``: the prepared model with its float32 OpenVINO model (ONNX export, conversion), once a module."""

    def make(name: str) -> Exported:
        item = prepare(name)
        if item.converted is None:
            item.onnx_path = item.module.to_onnx(tmp_path_factory.mktemp(name))
            item.converted = ov.convert_model(item.onnx_path)
        return item

    return make


@dataclass
class CliExport:
    """``anomalib export --compression_type INT8_PTQ`` of PromptAD, run in a thread (its process on a second core)."""

    thread: threading.Thread
    root: Path
    output: list[str]
    errors: list[BaseException]


@pytest.fixture(scope="module")
def cli_export(
    prepare: Callable[[str], Exported],
    micro_weights: Path,
    synthetic_root: Path,
    synthetic_category: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CliExport]:
    """Started before the in-process exports (``exported`` asks for it), so that both run at once on two cores.

    PromptAD's learned-state file holds its calibrated thresholds; the command builds the model from it (no
    checkpoint) and calibrates INT8 on the train split of ``--data``.
    """
    root = tmp_path_factory.mktemp("cli")
    state = prepare("PromptAD").module.learned_state()
    learned_state = state.save(root / "learned_state.pt")
    arguments = _model_arguments("PromptAD", micro_weights)
    command = ["export", "--model", "anomalib_clipad.PromptAD"]
    for key in ("backbone", "pretrained", "image_size", "k_shot", "memory_layers"):
        command += [f"--model.{key}", str(arguments[key])]
    command += [
        "--model.learned_state", str(learned_state), "--export_type", "openvino", "--compression_type", "INT8_PTQ",
        "--data", "anomalib.data.MVTecAD", "--data.root", str(synthetic_root), "--data.category", synthetic_category,
        "--data.num_workers", "0", "--default_root_dir", str(root / "out"),
    ]  # fmt: skip
    export = CliExport(threading.Thread(target=lambda: None), root, [], [])

    def run() -> None:
        try:
            export.output.append(anomalib(command, cwd=root))
        except BaseException as error:  # re-raised by the test
            export.errors.append(error)

    export.thread = threading.Thread(target=run, name="anomalib export", daemon=True)
    export.thread.start()
    yield export
    export.thread.join(timeout=600)


@pytest.fixture(scope="module", params=MODEL_NAMES)
def exported(request: pytest.FixtureRequest, build: Callable[[str], Exported], cli_export: CliExport) -> Exported:
    """Each model in turn (one export each: pytest runs every precision of a model before the next model)."""
    del cli_export  # started first, so that it runs while the models export
    return build(request.param)


def _run(compiled: Any, images: torch.Tensor) -> dict[str, np.ndarray]:
    result = compiled(images.numpy())
    return {name: result[output] for output in compiled.outputs for name in output.get_names()}


def _count(model: Any, kinds: set[str]) -> int:
    return sum(op.get_type_name() in kinds for op in model.get_ordered_ops())


def _low_precision_weights(model: Any) -> int:
    return sum(
        op.get_type_name() == "Constant" and op.get_output_element_type(0).get_type_name() in {"i8", "u8", "f16"}
        for op in model.get_ordered_ops()
    )


def _head_constants(model: Any) -> Counter[tuple[str, tuple[int, ...], bytes]]:
    """The constant inputs of the score-head operations (text features, memories, kernels, thresholds ...), as a
    multiset of (type, shape, bytes): node names differ between two conversions of the same model."""
    return Counter(
        (str(node.get_element_type()), tuple(node.get_output_shape(0)), node.get_data().tobytes())
        for op in score_head(model)
        for item in op.inputs()
        if (node := item.get_source_output().get_node()).get_type_name() == "Constant"
    )


def _assert_head_unchanged(compressed: Any, converted: Any) -> None:
    """The score head computes in float32 with the float32 model's constants, bit for bit (the thresholds too)."""
    assert low_precision_in_head(compressed) == []
    before = _head_constants(converted)
    assert before, "the score head has constants (text features, memories, thresholds)"
    assert _head_constants(compressed) == before


#: Runtime node types of the score head that OpenVINO's CPU plugin computes in float32 under a ``bf16`` hint in all
#: five models once marked (:func:`keep_score_head_precise`): the Gaussian filter and the reductions (max, sum, norms);
#: unmarked, it runs them in bfloat16. Most of the marked arithmetic and matrix products run in float32 too, but not
#: all: the upsampling (``Interpolate``), some softmaxes and element-wise chains and the matrix products fed by the
#: bfloat16 tower stay in bfloat16 (OpenVINO 2026.4, on a CPU with AMX).
KEPT_IN_F32 = frozenset({"Convolution", "Reduce"})


def _assert_head_marked(model: Any, bf16: Any) -> None:
    """Every score-head operation of a saved IR carries OpenVINO's precision mark, and ``bf16`` (the IR compiled with
    the ``bf16`` hint) computes the head's Gaussian filter and reductions in float32. On a CPU without
    bf16 OpenVINO computes everything in float32, so there the second check holds whether marked or not."""
    head_ops = score_head(model)
    unmarked = [
        op.get_friendly_name()
        for op in head_ops
        if not any("Precision" in key or "precise" in key for key in op.get_rt_info())
    ]
    assert unmarked == [], f"score-head operations without the mark: {unmarked[:5]}"
    head = {op.get_friendly_name() for op in head_ops}
    below = []
    for node in bf16.get_runtime_model().get_ops():
        info = node.get_rt_info()
        names = {name for name in info["originalLayersNames"].astype(str).split(",") if name}
        kind, precision = info["layerType"].astype(str), info["runtimePrecision"].astype(str).lower()
        if names and names <= head and kind in KEPT_IN_F32 and precision in {"bf16", "f16"}:
            below.append(f"{kind} {','.join(sorted(names))}: {precision}")
    assert below == [], "\n".join(below)


def _assert_close_to_torch(outputs: dict[str, np.ndarray], item: Exported, tolerance: float) -> None:
    """Scores and maps within ``tolerance``; labels and masks as torch's wherever the value is clear of its threshold;
    the labels are those of the calibrated threshold."""
    expected, post = item.expected, item.module.post_processor
    for name in ("pred_score", "anomaly_map"):
        assert np.isfinite(outputs[name]).all(), name
        np.testing.assert_allclose(outputs[name], getattr(expected, name).numpy(), rtol=0, atol=tolerance, err_msg=name)
    # the calibrated threshold, not 0.5 / NaN: torch labels `raw score > threshold`, and that splits the images
    labels = item.raw_scores > item.image_threshold
    assert labels.any(), "the calibrated threshold must label some image anomalous"
    assert not labels.all(), "the calibrated threshold must label some image normal"
    np.testing.assert_array_equal(expected.pred_label.numpy(), labels)
    image_threshold = float(post.normalized_image_threshold)
    np.testing.assert_array_equal(outputs["pred_label"], outputs["pred_score"] > image_threshold)
    clear = np.abs(expected.pred_score.numpy() - image_threshold) > tolerance
    assert clear.any() or tolerance >= 0.1, "the label comparison has teeth at the tight tolerances"
    np.testing.assert_array_equal(outputs["pred_label"][clear], labels[clear], err_msg="pred_label")
    clear = (expected.anomaly_map - post.normalized_pixel_threshold).abs().numpy() > tolerance
    np.testing.assert_array_equal(outputs["pred_mask"][clear], expected.pred_mask.numpy()[clear], err_msg="pred_mask")


@pytest.mark.parametrize("precision", PRECISIONS, ids=[precision.value for precision in PRECISIONS])
def test_precision(exported: Exported, precision: Precision, datamodule: MVTecAD, tmp_path: Path) -> None:
    """The IR of ``precision`` runs, stays within its tolerance of torch, labels by the calibrated threshold, and its
    score head computes in float32 while the image tower is compressed (and under the ``bf16`` hint: on a CPU with
    bf16, OpenVINO would run the unmarked head in bfloat16)."""
    model = compress_ov_model(exported.converted.clone(), precision, datamodule, max_drop=ACQ_MAX_DROP)
    _assert_head_unchanged(model, exported.converted)
    ov.save_model(keep_score_head_precise(model), tmp_path / "model.xml", compress_to_fp16=False)  # as to_openvino
    model = ov.Core().read_model(tmp_path / "model.xml")  # the mark takes effect in a saved IR
    # the compression did something (outside the head)
    if precision in {Precision.INT8_PTQ, Precision.INT8_ACQ}:
        assert _count(model, {"FakeQuantize"}) > 0
    elif precision in {Precision.INT8, Precision.FP16}:
        assert _low_precision_weights(model) > 0
    else:
        assert _count(model, {"FakeQuantize"}) + _low_precision_weights(model) == 0
    compiled = ov.Core().compile_model(model, "CPU", compile_config(precision))
    if precision is Precision.BF16:
        _assert_head_marked(model, compiled)
    outputs = _run(compiled, exported.images)
    if os.environ.get("CLIPAD_PRINT_DIFFERENCES"):  # what the tolerances are set from
        print(
            f"{exported.name} {precision.value}: score "
            f"{np.abs(outputs['pred_score'] - exported.expected.pred_score.numpy()).max():.2e} map "
            f"{np.abs(outputs['anomaly_map'] - exported.expected.anomaly_map.numpy()).max():.2e}"
        )
    _assert_close_to_torch(outputs, exported, TOLERANCE[precision])


def test_anomalib_defaults_quantise_the_score_head(build: Callable[[str], Exported], datamodule: MVTecAD) -> None:
    """The check has teeth: anomalib's own settings (NNCF defaults, nothing ignored) quantise the score head."""
    from anomalib_clipad.precision import ANOMALIB_QUANTIZATION

    model = compress_ov_model(
        build("PromptAD").converted.clone(), Precision.INT8, datamodule, settings=ANOMALIB_QUANTIZATION
    )
    found = low_precision_in_head(model)
    assert any("MatMul" in line for line in found), found


def test_calibration_data_rules(build: Callable[[str], Exported], synthetic_root: Path, caplog: Any) -> None:
    """Calibration reads the train split, bounded by the data, and says when it is small; INT8_ACQ refuses to validate
    on the test set (MVTecAD's default ``val_split_mode=same_as_test``)."""
    from anomalib_clipad.precision import calibration_data, validation_data

    converted = build("PromptAD").converted
    same_as_test = MVTecAD(root=synthetic_root, category="widget", num_workers=0)
    with caplog.at_level(logging.WARNING, logger="anomalib_clipad.precision"):
        data = calibration_data(same_as_test, converted, max_images=300)
    assert data.get_length() == 4  # the 4 train images, not 300
    assert "4 image(s) of the train split" in caplog.text
    assert calibration_data(same_as_test, converted, max_images=2).get_length() == 2
    first = next(iter(data.get_inference_data()))
    assert first.shape[:2] == (1, 3)
    assert first.dtype == np.float32
    with pytest.raises(ValueError, match="val_split_mode from_test"):
        validation_data(same_as_test)


def test_cli_int8_ptq_export_from_learned_state(cli_export: CliExport, build: Callable[[str], Exported]) -> None:
    """``anomalib export --compression_type INT8_PTQ --data MVTecAD`` in a fresh process, from a learned-state file:
    calibrated on the train split, the IR carries the file's thresholds, keeps the score head float and stays close to
    torch."""
    item = build("PromptAD")
    cli_export.thread.join(timeout=600)
    assert not cli_export.thread.is_alive(), "anomalib export did not finish"
    if cli_export.errors:
        raise cli_export.errors[0]
    output = cli_export.output[0]
    thresholds = LearnedState.load(cli_export.root / "learned_state.pt").thresholds
    assert thresholds["image"] == pytest.approx(item.image_threshold)  # the file holds the calibrated threshold
    assert "thresholds of the learned state" in output  # read from the file, not NaN
    assert "calibrates on 4 image(s) of the train split" in output  # the train split, bounded by the data
    assert "INT8_PTQ, score head in float32" in output  # the export's summary
    model = ov.Core().read_model(cli_export.root / "out" / "weights" / "openvino" / "model.xml")
    assert _count(model, {"FakeQuantize"}) > 0
    _assert_head_unchanged(model, item.converted)  # the thresholds among the head's constants, bit for bit
    _assert_head_marked(model, ov.Core().compile_model(model, "CPU", compile_config(Precision.BF16)))  # to_openvino's
    compiled = ov.Core().compile_model(model, "CPU", compile_config(Precision.INT8_PTQ))
    _assert_close_to_torch(_run(compiled, item.images), item, TOLERANCE[Precision.INT8_PTQ])


def test_onnx_file_and_other_sizes(build: Callable[[str], Exported]) -> None:
    """The ONNX file itself (weights as external data), and both graphs at another batch size and raw size."""
    second = F.interpolate(build(MODEL_NAMES[0]).images[:2], size=(96, 56), mode="bilinear", align_corners=False)
    for name in MODEL_NAMES:
        item = build(name)
        assert item.onnx_path is not None
        assert item.onnx_path.with_name(item.onnx_path.name + ".data").is_file()  # ship both files
        with torch.no_grad():
            expected = item.module(second)
        for source in (item.onnx_path, item.converted):
            compiled = ov.Core().compile_model(source, "CPU", compile_config(Precision.F32))
            outputs = _run(compiled, item.images)
            np.testing.assert_allclose(outputs["pred_score"], item.expected.pred_score.numpy(), rtol=0, atol=1e-4)
            outputs = _run(compiled, second)
            assert outputs["anomaly_map"].shape == (2, 64, 64), name  # at the pre-processed size
            for field in ("pred_score", "anomaly_map"):
                np.testing.assert_allclose(
                    outputs[field], getattr(expected, field).numpy(), rtol=0, atol=1e-4, err_msg=f"{name} {field}"
                )


@pytest.mark.parametrize("name", ["AnomalyCLIP"])
def test_torch_export(build: Callable[[str], Exported], name: str, tmp_path: Path) -> None:
    """``--export_type torch``: the pickled pipeline (a trusted file of our own) gives the same outputs."""
    item = build(name)
    exported = torch.load(item.module.to_torch(tmp_path), map_location="cpu", weights_only=False)["model"]
    with torch.no_grad():
        actual = exported.eval()(item.images)
    torch.testing.assert_close(actual.pred_score, item.expected.pred_score, rtol=0, atol=1e-6)
    torch.testing.assert_close(actual.anomaly_map, item.expected.anomaly_map, rtol=0, atol=1e-6)
