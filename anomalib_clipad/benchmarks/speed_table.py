# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The one table format of the speed command: a measurement, what it is divided by, their ratio, the goal.

Every figure of :mod:`anomalib_clipad.benchmarks.speed` is a :class:`SpeedRow`: inference against a plain CLIP
``encode_image``, a training epoch against the learnable side alone, WinCLIP+ against anomalib's ``WinClip``, eager
torch against OpenVINO. The ratio is always ``time / reference time``; a comparison that is a speed-up puts the slower
runtime in the measurement column (anomalib's ``WinClip`` over ours, eager torch over OpenVINO), so that the ratio is
the speed-up. :func:`format_table` prints the rows as one markdown table.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

_GOAL_TESTS = {"<=": operator.le, ">=": operator.ge}
_GOAL_SIGNS = {"<=": "≤", ">=": "≥"}
HEADER = ("model", "measurement", "time", "reference", "reference time", "ratio", "wall ratio", "goal", "note")


@dataclass(frozen=True)
class Goal:
    """A bound on a ratio, e.g. ``Goal("<=", 2.0)``: the measurement takes at most twice its reference.

    Attributes:
        comparison: ``"<="`` or ``">="``.
        bound: the ratio.
    """

    comparison: str
    bound: float

    def met(self, ratio: float) -> bool:
        """Whether ``ratio`` satisfies the goal."""
        return bool(_GOAL_TESTS[self.comparison](ratio, self.bound))

    def __str__(self) -> str:
        """``≤ 2x``."""
        return f"{_GOAL_SIGNS[self.comparison]} {self.bound:g}x"


@dataclass(frozen=True)
class SpeedRow:
    """One figure: a measurement and its reference, both in seconds on the same clock.

    Attributes:
        model: the registry name of the model.
        measurement: what was timed (e.g. ``"inference, 1-shot"``).
        seconds: its time (per image for inference) on the measurement clock.
        reference: what it is divided by (e.g. ``"CLIP encode_image"``).
        reference_seconds: the reference's time, same unit and clock.
        wall_ratio: the same ratio on the wall clock, where recorded.
        goal: the bound the ratio should meet, if any.
        note: batch, rounds, data and other context.
    """

    model: str
    measurement: str
    seconds: float
    reference: str
    reference_seconds: float
    wall_ratio: float | None = None
    goal: Goal | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        """``seconds / reference_seconds`` (NaN when the reference took no measurable time)."""
        return self.seconds / self.reference_seconds if self.reference_seconds > 0 else math.nan

    def cells(self) -> tuple[str, ...]:
        """The row's cells, in :data:`HEADER` order."""
        goal = ""
        if self.goal is not None:
            goal = f"{self.goal} {'met' if self.goal.met(self.ratio) else 'MISSED'}"
        wall = "" if self.wall_ratio is None else f"{self.wall_ratio:.2f}x"
        return (
            self.model,
            self.measurement,
            format_seconds(self.seconds),
            self.reference,
            format_seconds(self.reference_seconds),
            f"{self.ratio:.2f}x",
            wall,
            goal,
            self.note,
        )


def format_seconds(seconds: float) -> str:
    """``"4.61 s"`` from one second up, ``"365.2 ms"`` below, ``"0.042 ms"`` below a millisecond."""
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e3:.3f} ms"


def format_table(rows: Sequence[SpeedRow]) -> str:
    """The rows as a markdown table (columns :data:`HEADER`), aligned for the console."""
    lines = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(HEADER))]

    def join(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([join(HEADER), separator, *(join(cells) for cells in lines[1:])])


def parse_table(text: str) -> list[dict[str, str]]:
    """The rows of a table printed by :func:`format_table` (in ``text`` among other lines), as header -> cell."""
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == len(HEADER) and tuple(cells) != HEADER:
            rows.append(dict(zip(HEADER, cells, strict=True)))
    return rows
