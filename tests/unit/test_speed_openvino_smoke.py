# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Smoke test of ``python -m anomalib_clipad.benchmarks.speed_openvino --tiny`` on one model.

DevPrompt on the tiny random backbone (64 px) is the quickest of the five to export (20 s on two shared cores,
PromptAD 23 s, the others about 40 s; most of it the ONNX export); one warm-up and one timed round, one thread, with the
profiles. The script must print the speed-up over torch and the f32 differences, which must be float32 rounding only
(measured <= 1.9e-6; 1e-4 catches any functional change). The speed-up itself is not checked: one round on a shared
machine is noise.
"""

import re

import pytest

pytest.importorskip("openvino")
pytest.importorskip("onnxscript")

from anomalib_clipad.benchmarks.speed_openvino import BANNER, main

TOLERANCE = 1e-4


def test_tiny_devprompt_prints_speedup_and_f32_difference(capsys: pytest.CaptureFixture[str]) -> None:
    results = main(["--tiny", "--models", "DevPrompt", "--repeats", "1", "--threads", "1", "--profile"])
    printed = capsys.readouterr().out
    assert BANNER in printed  # random weights, said loudly
    line = next(line for line in printed.splitlines() if line.strip().startswith("openvino f32"))
    match = re.search(r"-> ([0-9.]+)x faster than torch.*pred_score ([0-9.e+-]+), anomaly_map ([0-9.e+-]+)", line)
    assert match is not None, line
    speedup, score_difference, map_difference = (float(value) for value in match.groups())
    assert speedup > 0
    assert score_difference < TOLERANCE
    assert map_difference < TOLERANCE
    assert "speed-up" in printed
    assert "OpenVINO profile" in printed  # --profile: OpenVINO's per-node profile and torch's, by type
    assert "FullyConnected" in printed
    assert "torch profile" in printed
    assert results["DevPrompt"]["differences"]["anomaly_map"] < TOLERANCE
    assert results["DevPrompt"]["speedup"] == pytest.approx(speedup, abs=0.006)  # printed with 2 decimals
