# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Quiet export (``anomalib_clipad.export``): no per-node exporter logging, one summary line with the path.

A tiny ``ExportMixin`` + ``LightningModule`` stands in for the models: anomalib's ``to_onnx`` / ``to_openvino`` run
unchanged on it (dynamo exporter, onnxscript optimizer, OpenVINO conversion) and produce the same kinds of noise as
the CLIP models, in about a second per export. The root logger is set to INFO as anomalib's CLI does
(``configure_logger``); without that, INFO records of library loggers never show.

The first test shows the noise without the helper (so the others have teeth); the rest check the helper the way the
models use it, through :class:`~anomalib_clipad.export.QuietExportMixin` put before the model's other bases.
"""

import logging
from pathlib import Path

import pytest
import torch
from anomalib.data import InferenceBatch
from anomalib.models.components.base.export_mixin import ExportMixin
from lightning.pytorch import LightningModule
from torch import nn

from anomalib_clipad.export import NOISY_LOGGERS, VERBOSE_ENV, QuietExportMixin, quiet_export

pytest.importorskip("onnxscript")

DEDUPLICATION = "onnx_ir.passes.common.initializer_deduplication"


class TinyExportable(ExportMixin, LightningModule):
    """A convolution and two identical buffers (the exporter merges them: a deduplication record)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("scale", torch.full((1, 4, 1, 1), 0.5))
        self.register_buffer("shift", torch.full((1, 4, 1, 1), 0.5))

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        anomaly_map = torch.sigmoid(self.conv(images) * self.scale + self.shift).mean(dim=1)
        return InferenceBatch(pred_score=anomaly_map.amax(dim=(1, 2)), anomaly_map=anomaly_map)


class QuietTiny(QuietExportMixin, TinyExportable):
    """How a model is wired: the mixin first, so that its ``to_onnx`` / ``to_openvino`` wrap anomalib's."""


def _noise(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """Records of the exporter libraries below the level the helper lets through."""
    return [
        record
        for record in records
        if any(record.name == name or record.name.startswith(name + ".") for name in NOISY_LOGGERS)
        and record.levelno < logging.ERROR
    ]


def _summaries(records: list[logging.LogRecord]) -> list[str]:
    return [record.getMessage() for record in records if record.name == "anomalib_clipad.export"]


@pytest.fixture
def cli_logging(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    """Root logger at INFO, like ``anomalib export``; the verbose switch off."""
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    caplog.set_level(logging.INFO)
    return caplog


def test_without_the_helper_the_export_is_noisy(
    cli_logging: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    TinyExportable().to_onnx(tmp_path)
    assert any(record.name == DEDUPLICATION for record in cli_logging.records)
    assert any(record.name.startswith("onnxscript.version_converter") for record in cli_logging.records)
    assert "[torch.onnx]" in capfd.readouterr().out


def test_quiet_onnx_export(
    cli_logging: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    levels_before = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    path = QuietTiny().to_onnx(tmp_path)

    assert path == tmp_path / "weights" / "onnx" / "model.onnx"
    assert path.is_file()
    assert not _noise(cli_logging.records), [record.getMessage()[:100] for record in _noise(cli_logging.records)]
    captured = capfd.readouterr()
    assert "[torch.onnx]" not in captured.out
    for text in ("Traceback", "RuntimeError", "Replaced initializer", "operator set version"):
        assert text not in captured.out + captured.err + cli_logging.text, text
    (summary,) = _summaries(cli_logging.records)
    assert "QuietTiny exported to ONNX in " in summary
    assert str(path) in summary
    assert "opset 18" in summary
    assert "outputs pred_score, anomaly_map" in summary
    assert {name: logging.getLogger(name).level for name in NOISY_LOGGERS} == levels_before  # restored


def test_quiet_openvino_export_reports_only_the_ir(cli_logging: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    path = QuietTiny().to_openvino(tmp_path)

    assert path == tmp_path / "weights" / "openvino" / "model.xml"
    assert path.with_suffix(".bin").is_file()
    assert not _noise(cli_logging.records)
    (summary,) = _summaries(cli_logging.records)  # not the ONNX step in its temporary folder
    assert "exported to OpenVINO IR" in summary
    assert str(path) in summary
    assert "model.bin" in summary


def test_an_explicit_opset_is_kept_and_reported(cli_logging: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    QuietTiny().to_onnx(tmp_path, opset_version=14)
    assert not _noise(cli_logging.records)
    (summary,) = _summaries(cli_logging.records)
    assert "opset 14 was asked for" in summary


def test_levels_are_restored_after_an_error_and_verbose_switch(
    cli_logging: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    deduplication = logging.getLogger(DEDUPLICATION)

    def failing_export() -> None:
        with quiet_export("Model", "onnx"):
            assert not deduplication.isEnabledFor(logging.INFO)
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        failing_export()
    assert deduplication.isEnabledFor(logging.INFO)
    assert not _summaries(cli_logging.records)

    monkeypatch.setenv(VERBOSE_ENV, "1")
    with quiet_export("Model", "onnx"):
        assert deduplication.isEnabledFor(logging.INFO)
