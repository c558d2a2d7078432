# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The speed command's references and timer: the plain pass is open_clip's, the rounds interleave, the table parses."""

from __future__ import annotations

import math
import time

import torch

from anomalib_clipad.benchmarks.references import plain_image_forward
from anomalib_clipad.benchmarks.speed_table import Goal, SpeedRow, format_table, parse_table
from anomalib_clipad.benchmarks.timing import clock_for, interleaved_times, timed_call

CPU = torch.device("cpu")


def test_plain_image_forward_is_encode_image(tiny_clip16: torch.nn.Module) -> None:
    images = torch.randn(2, 3, 240, 240)
    with torch.no_grad():
        expected = tiny_clip16.encode_image(images)
    torch.testing.assert_close(plain_image_forward(tiny_clip16, images), expected)


def test_interleaved_times_calls_each_function_once_per_round() -> None:
    calls: list[str] = []
    timings = interleaved_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, CPU, warmup=1)
    assert calls == ["a", "b"] * 4
    assert {name: len(values) for name, values in timings.clock.items()} == {"a": 3, "b": 3}
    assert {name: len(values) for name, values in timings.wall.items()} == {"a": 3, "b": 3}
    assert clock_for(CPU) is time.process_time


def test_wall_and_cpu_clocks_are_both_recorded() -> None:
    cpu, wall = timed_call(lambda: time.sleep(0.02), CPU)
    assert wall >= 0.019
    assert cpu < wall  # sleeping costs no CPU time
    timings = interleaved_times({"sleep": lambda: time.sleep(0.01)}, 2, CPU, warmup=0)
    assert timings.median_wall("sleep") >= 0.009
    assert timings.median("sleep") < timings.median_wall("sleep")


def test_the_table_prints_and_parses_back() -> None:
    rows = [
        SpeedRow("PromptAD", "inference, 1-shot", 0.0125, "CLIP encode_image", 0.01, 1.3, Goal("<=", 2.0), "batch 2"),
        SpeedRow("WinCLIPPlus", "anomalib WinClip, 1-shot", 7.0, "ours, 1-shot", 4.6, None, Goal(">=", 1.8)),
        SpeedRow("X", "y", 1.0, "z", 0.0),
    ]
    printed = format_table(rows)
    parsed = parse_table("some line before\n" + printed + "\nand after")
    assert [row["model"] for row in parsed] == ["PromptAD", "WinCLIPPlus", "X"]
    assert parsed[0]["ratio"] == "1.25x"
    assert parsed[0]["goal"] == "≤ 2x met"
    assert parsed[0]["time"] == "12.5 ms"
    assert parsed[1]["ratio"] == "1.52x"
    assert parsed[1]["goal"] == "≥ 1.8x MISSED"
    assert parsed[1]["time"] == "7.00 s"
    assert parsed[1]["wall ratio"] == ""
    assert math.isnan(rows[2].ratio)  # a reference that took no time gives no ratio, not a division error
    assert Goal(">=", 1.3).met(1.3)
    assert not Goal("<=", 1.3).met(1.31)
