# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""What every training process saw, under distributed data parallel (DDP).

With ``--trainer.strategy ddp`` each process trains on its own shard of the batches, yet process 0 alone writes the
checkpoint and the learned-state file, and every process runs the leakage guard. So each training step shares the
paths and classes of its images with all processes in one exchange (:func:`gather_from_all_processes`), and every
process records all of them.
In a single process nothing is exchanged.
"""

from __future__ import annotations

from typing import TypeVar, cast

import torch.distributed as dist

T = TypeVar("T")


def gather_from_all_processes(item: T) -> list[T]:
    """Every process's ``item``, in process order (a collective: every process must call it at the same step).

    Args:
        item: this process's picklable object (e.g. the paths and classes of its batch).

    Returns:
        ``[item]`` in a single process; under DDP, the items of process 0, 1, ...
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [item]
    gathered: list[T | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, item)
    return cast("list[T]", gathered)  # every slot is filled by its process
