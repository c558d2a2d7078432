# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""What every training process saw, under distributed data parallel (DDP).

With ``--trainer.strategy ddp`` each process trains on its own shard of the batches, yet process 0 alone writes the
checkpoint and the learned-state file, and every process runs the leakage guard. So each training step shares the
paths of its images with all processes (:func:`gather_from_all_processes`), and every process records all of them.
In a single process nothing is exchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.distributed as dist


def gather_from_all_processes(items: Sequence[str]) -> list[str]:
    """The items of every process, process by process (a collective: every process must call it at the same step).

    Args:
        items: this process's items (e.g. the paths of its batch).

    Returns:
        ``items`` followed by nothing in a single process; under DDP, the items of process 0, then 1, ...
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(items)
    gathered: list[list[str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in part or []]
