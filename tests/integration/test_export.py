# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""ONNX and OpenVINO export after anomalib's Engine: the exported graphs give the torch model's numbers.

WinCLIP+ and DevPrompt are calibrated (DevPrompt also trained one epoch) by anomalib's Engine on the 2-block micro
random-init backbone (``tests/micro.py``: the ONNX export, these tests' main cost, takes half the time of the 8-block
tiny backbone's). WinCLIP+ is exported with ``to_openvino`` (the code ``anomalib export`` runs: it exports the whole
pipeline, pre-processor + model + post-processor, to ONNX with the dynamo exporter, then converts that file to OpenVINO
IR); both the intermediate ``.onnx`` file and the IR are run with OpenVINO's runtime, and the IR with anomalib's
``OpenVINOInferencer``. DevPrompt is exported by ``anomalib export --export_type openvino`` in a subprocess, from the
training checkpoint. Every model, at every precision, the ONNX file, a second batch and raw size and the torch export
are checked on the micro backbone in ``test_export_precision.py`` (one ONNX export per model: the export of the tiny
backbone alone takes 10-40 s; the micro backbone's 5-20 s).

The inputs are not the model's input size (the in-graph resize must run) and a second call changes batch size and
image size (the default export has dynamic batch, height and width).

Tolerance: the outputs are normalised scores and maps in [0, 1]; the exported float32 graphs differ from eager torch
only by operation order (measured <= 3e-6), so ``1e-4`` absolute catches any functional change while leaving room
for other CPUs. OpenVINO runs in float32 here (``INFERENCE_PRECISION_HINT``): its CPU default is bfloat16 on CPUs with
bf16 support, which moves the maps by ~1e-2 (see the models' READMEs).
"""

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.data import InferenceBatch, MVTecAD
from anomalib.data.utils.image import read_image
from anomalib.deploy import OpenVINOInferencer
from anomalib.engine import Engine
from anomalib.models import AnomalibModule
from cli_runner import anomalib, tiny_model_args
from micro import micro_settings

from anomalib_clipad.registry import get_spec

FLOAT32 = {"INFERENCE_PRECISION_HINT": "f32"}
TOLERANCE = 1e-4
OUTPUTS = ("pred_score", "pred_label", "anomaly_map", "pred_mask")


def _fit(model: AnomalibModule, root: Path, category: str, results: Path) -> AnomalibModule:
    datamodule = MVTecAD(root=root, category=category, num_workers=0, train_batch_size=4, eval_batch_size=8)
    engine = Engine(default_root_dir=results, accelerator="cpu", logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    return model.eval()


def _inputs(root: Path, category: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two raw ``[0, 1]`` batches: 3 images at 80 x 72 px, then 2 at 96 x 56 px (the model's input size is 64)."""
    folder = root / category
    paths = [folder / "test" / "stain" / "000.png", folder / "test" / "good" / "001.png", folder / "train" / "good"]
    paths[2] = sorted(paths[2].glob("*.png"))[-1]
    images = torch.stack([read_image(path, as_tensor=True) for path in paths])
    return (
        F.interpolate(images, size=(80, 72), mode="bilinear", align_corners=False),
        F.interpolate(images[:2], size=(96, 56), mode="bilinear", align_corners=False),
    )


def _compile(path: Path) -> ov.CompiledModel:
    return ov.Core().compile_model(str(path), "CPU", FLOAT32)


def _run(compiled: ov.CompiledModel, images: torch.Tensor) -> dict[str, np.ndarray]:
    result = compiled(images.numpy())
    return {output.get_any_name(): result[output] for output in compiled.outputs}


def _assert_matches(
    outputs: dict[str, np.ndarray], model: AnomalibModule, images: torch.Tensor, size: int = 64
) -> None:
    with torch.no_grad():
        expected: InferenceBatch = model(images)
    assert set(outputs) == set(OUTPUTS)
    batch = images.shape[0]
    assert outputs["pred_score"].shape == (batch,)
    assert outputs["anomaly_map"].shape == (batch, size, size)  # at the pre-processed size
    assert expected.anomaly_map.std() > 1e-3  # not a constant map: the comparison has teeth
    for name in ("pred_score", "anomaly_map"):
        np.testing.assert_allclose(outputs[name], getattr(expected, name).numpy(), rtol=0, atol=TOLERANCE, err_msg=name)
    # labels and masks: identical except where the normalised value is within the tolerance of the threshold
    post = model.post_processor
    for name, value, threshold in (
        ("pred_label", "pred_score", post.normalized_image_threshold),
        ("pred_mask", "anomaly_map", post.normalized_pixel_threshold),
    ):
        decided = (getattr(expected, value) - threshold).abs().numpy() > TOLERANCE
        np.testing.assert_array_equal(outputs[name][decided], getattr(expected, name).numpy()[decided], err_msg=name)


def _export_and_check(
    model: AnomalibModule, images: tuple[torch.Tensor, torch.Tensor], export_root: Path, size: int = 64
) -> Path:
    """``to_openvino`` (which exports ONNX first, into a temporary folder we keep a copy of); compare both files."""
    kept = export_root / "onnx"
    to_onnx = model.to_onnx

    def to_onnx_keeping_a_copy(*args: Any, **kwargs: Any) -> Path:
        path = to_onnx(*args, **kwargs)
        shutil.copytree(path.parent, kept)
        return path

    model.to_onnx = to_onnx_keeping_a_copy  # an instance attribute: to_openvino's `self.to_onnx` finds it
    try:
        ir_path = model.to_openvino(export_root, onnx_kwargs={"opset_version": 18})
    finally:
        del model.to_onnx
    onnx_path = kept / "model.onnx"
    assert onnx_path.with_name("model.onnx.data").is_file()  # weights are external data: ship both files
    assert ir_path.is_file()
    assert ir_path.with_suffix(".bin").is_file()
    for path in (onnx_path, ir_path):
        compiled = _compile(path)
        for batch in images:
            _assert_matches(_run(compiled, batch), model, batch, size)
    return ir_path


def test_winclip_plus_onnx_openvino_and_inferencer(
    synthetic_root: Path, synthetic_category: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # k = 1: the graph holds both the zero-shot (text) map and the few-shot (memory) map
    winclip_plus = get_spec("WinCLIPPlus").lightning_class(**micro_settings("WinCLIPPlus", k_shot=1))
    model = _fit(winclip_plus, synthetic_root, synthetic_category, tmp_path / "results")
    ir_path = _export_and_check(model, _inputs(synthetic_root, synthetic_category), tmp_path / "export")

    # anomalib's OpenVINOInferencer on an image file (it only scales to [0, 1]; the graph resizes)
    monkeypatch.chdir(tmp_path)  # the inferencer writes ./openvino_cache
    image = synthetic_root / synthetic_category / "test" / "hole" / "001.png"
    prediction = OpenVINOInferencer(ir_path, device="CPU", config=FLOAT32).predict(image)
    with torch.no_grad():
        expected = model(read_image(image, as_tensor=True)[None])
    np.testing.assert_allclose(prediction.pred_score, expected.pred_score.numpy(), rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(prediction.anomaly_map, expected.anomaly_map.numpy(), rtol=0, atol=TOLERANCE)


def test_devprompt_cli_openvino_export(synthetic_root: Path, synthetic_category: str, tmp_path: Path) -> None:
    arguments = micro_settings("DevPrompt", k_shot=1, n_synthetic_per_shot=2)  # 1 epoch, random weights
    model = _fit(
        get_spec("DevPrompt").lightning_class(**arguments), synthetic_root, synthetic_category, tmp_path / "results"
    )
    images = _inputs(synthetic_root, synthetic_category)

    # `anomalib export --export_type openvino` from the training checkpoint, in a fresh process
    checkpoints = list((tmp_path / "results").rglob("model.ckpt"))
    assert len(checkpoints) == 1
    anomalib(
        ["export", *tiny_model_args("DevPrompt", **arguments), "--export_type", "openvino",
         "--ckpt_path", str(checkpoints[0]), "--default_root_dir", str(tmp_path / "cli")],
        cwd=tmp_path,
    )  # fmt: skip
    ir_path = tmp_path / "cli" / "weights" / "openvino" / "model.xml"
    assert ir_path.is_file()
    assert ir_path.with_suffix(".bin").is_file()
    compiled = _compile(ir_path)
    for batch in images:
        _assert_matches(_run(compiled, batch), model, batch)
