# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Data: synthetic MVTec-layout datasets, k-shot selection, and labelled auxiliary data for training.

``anomalib_clipad.data.AuxiliaryData`` (the class path ``anomalib train --data`` takes) is loaded on first access, so
that the light modules (:mod:`.synthetic`) do not import anomalib's data stack.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["AuxiliaryData", "DataLeakageError", "check_no_overlap"]


def __getattr__(name: str) -> Any:
    """Load the auxiliary-data names on first access."""
    if name in __all__:
        value = getattr(importlib.import_module("anomalib_clipad.data.auxiliary"), name)
        globals()[name] = value
        return value
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
