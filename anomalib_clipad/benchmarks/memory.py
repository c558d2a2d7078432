# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The peak memory of a benchmark job: CUDA memory allocated by tensors on a GPU, the peak RSS increase on a CPU.

:class:`PeakMemory` measures what one job (model and datamodule built, fit, test) needs on top of what the process
held when the job started, in MiB, and says how it was measured (:attr:`PeakMemory.source`, the CSV's
``peak_memory_source``):

* ``cuda_max_memory_allocated``: on a CUDA device, ``torch.cuda.max_memory_allocated`` after
  ``torch.cuda.reset_peak_memory_stats`` (tensors only; the CUDA context and the allocator's cache are not counted),
  minus the memory allocated at the start;
* ``rss_peak_increase``: on the CPU under Linux, the process's peak resident set size (``VmHWM`` of
  ``/proc/self/status``, reset to the current RSS at the start by writing ``5`` to ``/proc/self/clear_refs``) minus
  its RSS at the start. Memory that earlier jobs freed is first handed back to the system (``gc.collect`` and
  glibc's ``malloc_trim``), so that the start counts only live memory and the job's own allocations show even where
  they reuse freed memory; what the job keeps of earlier ones (a model fitted once and reused) is not counted;
* ``ru_maxrss_increase``: elsewhere, the increase of ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the process's
  lifetime peak): a lower bound, 0 when an earlier job of the process peaked higher.

Example:
    >>> with PeakMemory("cpu") as memory:
    ...     block = torch.ones(2**24)  # 64 MiB, written
    >>> memory.source, memory.peak_mib >= 64  # under Linux
    ('rss_peak_increase', True)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import sys
from pathlib import Path
from types import TracebackType

import torch

MIB = 2**20
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_RESET_PEAK_RSS = "5"  # proc(5): "reset the peak resident set size ("high water mark") to the current value"


def _status_kib(key: str) -> int | None:
    """A ``kB`` value of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), ``None`` where there is none."""
    try:
        for line in _STATUS.read_text(encoding="ascii").splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _release_freed_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the system (glibc's ``malloc_trim``, if any)."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux); ``False`` where that is not possible."""
    _release_freed_memory()
    try:
        _CLEAR_REFS.write_text(_RESET_PEAK_RSS, encoding="ascii")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None and _status_kib("VmRSS") is not None


def _max_rss_bytes() -> int | None:
    """The process's lifetime peak RSS from ``getrusage`` (KiB on Linux, bytes on macOS); ``None`` without it."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class PeakMemory:
    """Context manager: the peak memory the code inside it added, in MiB (:attr:`peak_mib`).

    Args:
        accelerator: The job's accelerator; ``cpu`` measures RSS, anything else measures CUDA memory when a CUDA
            device is available (RSS otherwise).
        device: The CUDA device (default: the current one).
    """

    def __init__(self, accelerator: str, device: int | torch.device | None = None) -> None:
        self.cuda = accelerator != "cpu" and torch.cuda.is_available()
        self.device = device
        self.source = ""
        self.peak_mib = math.nan
        self._start = 0

    def __enter__(self) -> PeakMemory:
        """Reset the peak and remember the memory in use."""
        if self.cuda:
            self.source = "cuda_max_memory_allocated"
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        elif _reset_peak_rss():
            self.source = "rss_peak_increase"
            self._start = 1024 * (_status_kib("VmRSS") or 0)
        else:
            self.source = "ru_maxrss_increase"
            self._start = _max_rss_bytes() or 0
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Read the peak (also when the code raised)."""
        peak: int | None
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.source == "rss_peak_increase":
            hwm = _status_kib("VmHWM")
            peak = None if hwm is None else 1024 * hwm
        else:
            peak = _max_rss_bytes()
        self.peak_mib = math.nan if peak is None else max(peak - self._start, 0) / MIB
