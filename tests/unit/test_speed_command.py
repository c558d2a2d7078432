# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Smoke test of ``python -m anomalib_clipad.benchmarks.speed --tiny``: one table, a row per registered model.

Every model of the registry runs on its tiny random backbone (one timed round, one thread, two training epochs): the
table must hold, for each, its inference row(s), its counterpart where it has one, and the rows of its learning
protocol (set-up, or the two training rows), every ratio finite and positive. The ratios themselves are not checked:
one round on a shared machine is noise. A second test runs the OpenVINO comparison on DevPrompt (the quickest of the
five to export) on the 2-block micro backbone (``micro_registry``: the export is that test's main cost), whose float32
differences to torch must be float32 rounding only (measured <= 1.9e-6).
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from anomalib_clipad.benchmarks.learning_speed import LearnableSide, TrainingSettings, training_rows
from anomalib_clipad.benchmarks.references import COUNTERPARTS
from anomalib_clipad.benchmarks.speed import BANNER, main
from anomalib_clipad.benchmarks.speed_table import parse_table
from anomalib_clipad.registry import MODELS, Protocol, get_spec

TINY = ["--tiny", "--images", "2", "--repeats", "1", "--epochs", "2", "--threads", "1"]
TOLERANCE = 1e-4


def _ratio(cell: str) -> float:
    assert cell.endswith("x"), cell
    return float(cell.removesuffix("x"))


def test_every_registered_model_gets_its_rows(capsys: pytest.CaptureFixture[str]) -> None:
    rows = main(TINY)
    printed = capsys.readouterr().out
    assert BANNER in printed  # random weights, said loudly
    table = parse_table(printed)
    assert len(table) == len(rows)
    for spec in MODELS:
        measurements = [row["measurement"] for row in table if row["model"] == spec.name]
        assert any(m.startswith("inference") for m in measurements), (spec.name, measurements)
        if spec.name in COUNTERPARTS:
            assert any(m.startswith(COUNTERPARTS[spec.name].label) for m in measurements), measurements
        if spec.protocol is Protocol.SET_UP:
            assert any(m.startswith("set-up") for m in measurements), measurements
        else:
            assert {"epoch after the first", "first epoch (one-time encoding)"} <= set(measurements), measurements
    settings = {(row["model"], row["measurement"]) for row in table}
    assert ("WinCLIPPlus", "inference, zero-shot") in settings  # zero-shot by default, and its few-shot setting
    assert ("WinCLIPPlus", "inference, 1-shot") in settings
    assert ("SimCLIP", "inference, 1-shot") in settings  # SimCLIP+
    for printed_row, row in zip(table, rows, strict=True):
        ratio = _ratio(printed_row["ratio"])
        assert math.isfinite(ratio), printed_row
        assert ratio > 0, printed_row
        assert ratio == pytest.approx(row.ratio, abs=0.006)  # printed with 2 decimals
        assert math.isfinite(_ratio(printed_row["wall ratio"]))


def test_unknown_model_names_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--model", "NoSuchModel"])
    assert "known: WinCLIPPlus" in capsys.readouterr().err


def test_the_learnable_side_replays_leave_the_fit_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = get_spec("PromptAD")
    settings = TrainingSettings(images=2, epochs=2, source_size=64, device=torch.device("cpu"))

    def fitted(replays: bool) -> dict[str, torch.Tensor]:
        if not replays:
            monkeypatch.setattr(LearnableSide, "_replay", lambda self, trainer, pl_module: None)
        torch.manual_seed(0)
        module = spec.build_tiny(epochs=settings.epochs)
        rows = training_rows(spec.name, spec.protocol, module, settings)
        assert len(rows) == 2
        return {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}

    with_replays, without = fitted(replays=True), fitted(replays=False)
    assert with_replays.keys() == without.keys()
    assert with_replays
    for name, value in with_replays.items():
        torch.testing.assert_close(value, without[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.usefixtures("micro_registry")
def test_openvino_rows_show_speedup_and_float32_differences(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("onnxscript")
    rows = main([*TINY, "--model", "DevPrompt", "--openvino", "--profile"])
    printed = capsys.readouterr().out
    (float32,) = [row for row in parse_table(printed) if row["reference"] == "OpenVINO f32"]
    assert float32["measurement"] == "eager torch pipeline"
    assert _ratio(float32["ratio"]) > 0
    match = re.search(r"pred_score ([0-9.e+-]+), anomaly_map ([0-9.e+-]+)", float32["note"])
    assert match is not None, float32["note"]
    assert float(match.group(1)) < TOLERANCE
    assert float(match.group(2)) < TOLERANCE
    assert "OpenVINO profile" in printed  # --profile: OpenVINO's per-node profile and torch's, by type
    assert "FullyConnected" in printed
    assert "torch profile" in printed
    assert any(row.reference == "OpenVINO f32" for row in rows)
