# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""anomalib-clipad: CLIP-based zero-/few-shot anomaly detection models for anomalib.

The public model classes are importable from here (``anomalib_clipad.WinCLIPPlus``, ...); that full class path works
everywhere anomalib accepts a class path (CLI ``--model``, YAML ``class_path``), even under ``python -S``.

The classes are loaded on first access (``anomalib_clipad.PromptAD`` imports :mod:`anomalib_clipad.models`), so that
light parts such as :mod:`anomalib_clipad.data.synthetic` or ``anomalib-clipad generate-data`` do not pay for
importing anomalib's model zoo. Importing :mod:`anomalib_clipad.models` also makes the classes reachable from
``anomalib.models`` (:mod:`anomalib_clipad.registration`), so that ``anomalib.models.get_model("WinCLIPPlus")`` and
stock ``anomalib benchmark`` find them. After ``pip install``, the ``anomalib_clipad.pth`` hook imports
:mod:`anomalib_clipad.models` right after ``anomalib.models`` is imported, so ``anomalib train --model WinCLIPPlus``
works without any change to anomalib.
"""

from __future__ import annotations

import importlib
from typing import Any

from anomalib_clipad.console_log import install as _install_console_log

__version__ = "0.1.0"

from anomalib_clipad.registry import MODEL_NAMES

__all__ = list(MODEL_NAMES)

_LAZY = {"ModelNameCollisionError": "anomalib_clipad.registration"}

_install_console_log()  # each of our log lines once under anomalib's CLI (its root logger has two console handlers)


def __getattr__(name: str) -> Any:
    """Load a public model class (or the registration error) on first access."""
    if name in __all__:
        value = getattr(importlib.import_module("anomalib_clipad.models"), name)
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_LAZY})
