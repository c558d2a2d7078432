# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Timing helpers shared by the speed benchmarks.

* :func:`clock_for`: the clock a benchmark reads: wall time on a GPU (after synchronising), this process's CPU time
  (all threads) on a CPU, which other jobs on a shared machine disturb much less than wall time.
* :func:`interleaved_times`: time several functions in rounds, one call of each per round, so that a change of machine
  load hits all of them alike; ratios are then taken between medians.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

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


def interleaved_times(
    functions: dict[str, Callable[[], object]],
    rounds: int,
    device: torch.device,
    *,
    warmup: int = 1,
    clock: Clock | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in interleaved rounds.

    Args:
        functions: name -> function to time (called without arguments).
        rounds: rounds kept; each calls every function once, in turn.
        device: where the functions run (synchronised after each call on a GPU).
        warmup: first rounds not kept.
        clock: time source; default :func:`clock_for` ``(device)``.

    Returns:
        name -> the ``rounds`` timings.
    """
    read = clock or clock_for(device)
    timings: dict[str, list[float]] = {name: [] for name in functions}
    for round_index in range(warmup + rounds):
        for name, function in functions.items():
            synchronise(device)
            start = read()
            function()
            synchronise(device)
            if round_index >= warmup:
                timings[name].append(read() - start)
    return timings


def median_times(
    functions: dict[str, Callable[[], object]],
    rounds: int,
    device: torch.device,
    *,
    warmup: int = 1,
    clock: Clock | None = None,
) -> dict[str, float]:
    """Median of :func:`interleaved_times` per function."""
    timings = interleaved_times(functions, rounds, device, warmup=warmup, clock=clock)
    return {name: statistics.median(values) for name, values in timings.items()}


class EpochTimer(Callback):
    """Clock (:func:`~anomalib_clipad.benchmarks.timing.clock_for`) and wall seconds of every training epoch.

    Args:
        device: where the fit runs (synchronised around the clock readings on a GPU).
        after_epoch: run after each epoch's time is taken, outside it (here: one timed reference epoch, so that
            fit epochs and references alternate and a change of machine load hits both alike); its return values
            are kept in ``references``.
    """

    def __init__(self, device: torch.device, after_epoch: Callable[[], float] | None = None) -> None:
        self.device = device
        self.clock = clock_for(device)
        self.after_epoch = after_epoch
        self.epochs: list[float] = []
        self.wall: list[float] = []
        self.references: list[float] = []
        self.reference_wall = 0.0
        self._start = self._wall_start = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        del trainer, pl_module
        synchronise(self.device)
        self._start, self._wall_start = self.clock(), time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        del trainer, pl_module
        synchronise(self.device)
        self.epochs.append(self.clock() - self._start)
        self.wall.append(time.perf_counter() - self._wall_start)
        if self.after_epoch is not None:
            wall_start = time.perf_counter()
            self.references.append(self.after_epoch())
            self.reference_wall += time.perf_counter() - wall_start
