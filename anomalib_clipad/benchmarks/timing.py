# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The one timer of the speed command (:mod:`anomalib_clipad.benchmarks.speed`).

* :func:`clock_for`: the clock a measurement reads: wall time on a GPU (after synchronising), this process's CPU time
  (all threads) on a CPU, which other jobs on a shared machine disturb much less than wall time. Wall time is recorded
  beside it, for reference.
* :func:`timed_call`: both clocks around one call.
* :func:`interleaved_times`: time several functions in rounds, one call of each per round, so that a change of machine
  load hits all of them alike; ratios are then taken between medians (:class:`Timings`).
* :class:`EpochTimer`: both clocks around every training epoch of a Lightning fit, and a reference measurement run
  between the epochs (interleaved the same way).

The time per image of the test runs of ``anomalib-clipad benchmark`` is a different measurement (what a test run costs,
wall time, through anomalib's ``Engine``): :class:`~anomalib_clipad.training.progress.InferenceTiming`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

Clock = Callable[[], float]


def synchronise(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock_for(device: torch.device) -> Clock:
    """Wall time on GPUs, this process's CPU time (all threads) on CPUs."""
    return time.perf_counter if device.type == "cuda" else time.process_time


def clock_name(device: torch.device) -> str:
    """What :func:`clock_for` measures, for printing."""
    return "wall time" if device.type == "cuda" else "process CPU time"


def timed_call(function: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Run ``function`` once; return its seconds on :func:`clock_for` ``(device)`` and on the wall clock."""
    clock = clock_for(device)
    synchronise(device)
    start, wall_start = clock(), time.perf_counter()
    function()
    synchronise(device)
    return clock() - start, time.perf_counter() - wall_start


@dataclass
class Timings:
    """Seconds per call of each function in each kept round, on the measurement clock and on the wall clock.

    Attributes:
        clock: name -> seconds per round on :func:`clock_for`.
        wall: name -> wall seconds per round.
    """

    clock: dict[str, list[float]] = field(default_factory=dict)
    wall: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, seconds: tuple[float, float]) -> None:
        """Record one round of ``name`` (a :func:`timed_call` result)."""
        self.clock.setdefault(name, []).append(seconds[0])
        self.wall.setdefault(name, []).append(seconds[1])

    def median(self, name: str) -> float:
        """Median seconds of ``name`` on the measurement clock."""
        return statistics.median(self.clock[name])

    def median_wall(self, name: str) -> float:
        """Median wall seconds of ``name``."""
        return statistics.median(self.wall[name])


def interleaved_times(
    functions: dict[str, Callable[[], object]], rounds: int, device: torch.device, *, warmup: int = 1
) -> Timings:
    """Seconds per call of each function, measured in interleaved rounds.

    Args:
        functions: name -> function to time (called without arguments).
        rounds: rounds kept; each calls every function once, in turn.
        device: where the functions run (synchronised around each call on a GPU).
        warmup: first rounds not kept.

    Returns:
        The kept rounds of every function.
    """
    timings = Timings()
    for round_index in range(warmup + rounds):
        for name, function in functions.items():
            seconds = timed_call(function, device)
            if round_index >= warmup:
                timings.add(name, seconds)
    return timings


class EpochTimer(Callback):
    """Both clocks around every training epoch, and a reference measurement after each one.

    Args:
        device: where the fit runs (synchronised around the clock readings on a GPU).
        after_epoch: run after each epoch's time is taken, outside it: a reference measurement that returns its
            :func:`timed_call` seconds, or ``None`` when it measured nothing; kept in ``references``, so that fit
            epochs and references alternate and a change of machine load hits both alike.

    Attributes:
        epochs: :class:`Timings` of the epochs under the name ``"epoch"``, in order.
        references: :class:`Timings` of the reference measurements under the name ``"reference"``.
    """

    def __init__(
        self,
        device: torch.device,
        after_epoch: Callable[[Trainer, LightningModule], tuple[float, float] | None] | None = None,
    ) -> None:
        self.device = device
        self.clock = clock_for(device)
        self.after_epoch = after_epoch
        self.epochs = Timings()
        self.references = Timings()
        self._start = self._wall_start = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        del trainer, pl_module
        synchronise(self.device)
        self._start, self._wall_start = self.clock(), time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        synchronise(self.device)
        self.epochs.add("epoch", (self.clock() - self._start, time.perf_counter() - self._wall_start))
        if self.after_epoch is not None:
            seconds = self.after_epoch(trainer, pl_module)
            if seconds is not None:
                self.references.add("reference", seconds)
