# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""anomalib-clipad: CLIP-based zero-/few-shot anomaly detection models for anomalib.

The public model classes are importable from here (``anomalib_clipad.WinCLIPPlus``, ...); that full class path works
everywhere anomalib accepts a class path (CLI ``--model``, YAML ``class_path``), even under ``python -S``.

Importing this package also makes the classes reachable from ``anomalib.models`` (added only where the name is absent,
never overwriting a built-in), so that ``anomalib.models.get_model("WinCLIPPlus")`` and stock ``anomalib benchmark``
find them. After ``pip install``, the ``anomalib_clipad.pth`` hook imports this package right after
``anomalib.models`` is imported, so ``anomalib train --model WinCLIPPlus`` works without any change to anomalib.

This module must not import ``anomalib.engine``, ``anomalib.callbacks`` or ``anomalib.cli`` at top level: the hook can
fire while those are half-initialised.
"""

import anomalib.models as _anomalib_models
from anomalib.models import AnomalibModule as _AnomalibModule

from .models.devprompt import DevPrompt
from .models.promptad import PromptAD
from .models.winclip_plus import WinCLIPPlus

__version__ = "0.1.0"

__all__ = ["DevPrompt", "PromptAD", "WinCLIPPlus"]


class ModelNameCollisionError(RuntimeError):
    """Raised when a model class name of anomalib-clipad collides (case-insensitively) with an anomalib model."""


def _builtin_model_names() -> set[str]:
    """Lower-case names of anomalib's own models (direct ``AnomalibModule`` subclasses and ``anomalib.models``)."""
    names = {name.lower() for name in getattr(_anomalib_models, "__all__", [])}
    names |= {
        cls.__name__.lower() for cls in _AnomalibModule.__subclasses__() if cls.__module__.startswith("anomalib.")
    }
    return names


def _register_in_anomalib(classes: list[type]) -> None:
    """Make ``classes`` reachable as ``anomalib.models.<Name>`` without ever overwriting an existing attribute.

    Args:
        classes: Our public ``AnomalibModule`` subclasses.

    Raises:
        ModelNameCollisionError: If a class name equals an anomalib built-in model name case-insensitively
            (``anomalib.models.get_model`` matches names case-insensitively and the last match wins, so such a name
            would silently hijack the built-in).
    """
    builtin = _builtin_model_names()
    for cls in classes:
        name = cls.__name__
        if name.lower() in builtin:
            msg = (
                f"anomalib-clipad model class {name!r} collides case-insensitively with an anomalib built-in model; "
                "anomalib.models.get_model would silently return the wrong class. Rename it."
            )
            raise ModelNameCollisionError(msg)
        existing = getattr(_anomalib_models, name, None)
        if existing is None:
            setattr(_anomalib_models, name, cls)
        # An existing attribute with this name (ours from an earlier import, or anything else) is left untouched.


_register_in_anomalib([globals()[name] for name in __all__])
