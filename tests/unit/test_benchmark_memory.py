# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The peak memory column of a benchmark job: what the job added to the process, measured as its header says."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from anomalib_clipad.benchmarks.memory import PeakMemory

BLOCK_MIB = 64


def _allocate_and_free() -> None:
    """64 MiB in 256 KiB tensors, written then freed: kept by the C heap for reuse, not handed back to the system."""
    blocks = [torch.ones(2**16) for _ in range(4 * BLOCK_MIB)]
    del blocks


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the exact CPU measure reads /proc (Linux)")
def test_a_freed_block_counts_in_the_peak_on_the_cpu() -> None:
    _allocate_and_free()  # freed memory an earlier job left in the heap must not hide the job's own
    with PeakMemory("cpu") as memory:
        _allocate_and_free()
    assert memory.source == "rss_peak_increase"
    assert BLOCK_MIB * 0.95 <= memory.peak_mib <= BLOCK_MIB * 4
    with PeakMemory("cpu") as idle:
        pass
    assert 0.0 <= idle.peak_mib < BLOCK_MIB / 2


def test_the_peak_is_read_when_the_job_fails() -> None:
    memory = PeakMemory("cpu")
    with pytest.raises(RuntimeError), memory:
        raise RuntimeError
    assert math.isfinite(memory.peak_mib)
    assert memory.peak_mib >= 0.0
    assert memory.source in {"rss_peak_increase", "ru_maxrss_increase"}


def test_cuda_memory_is_the_allocator_peak_above_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU branch, on any machine: torch.cuda's counters stand in for a device (CI has none)."""
    mib = 2**20
    counters = {"allocated": 100 * mib, "peak": 100 * mib}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(
        torch.cuda, "reset_peak_memory_stats", lambda device=None: counters.update(peak=counters["allocated"])
    )
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: counters["allocated"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: counters["peak"])
    with PeakMemory("gpu") as memory:
        counters["peak"] = counters["allocated"] + BLOCK_MIB * mib  # a block allocated and freed during the job
    assert memory.source == "cuda_max_memory_allocated"
    assert memory.peak_mib == pytest.approx(BLOCK_MIB)
