# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Make anomalib-clipad's model classes reachable from ``anomalib.models`` (never overwriting a built-in).

anomalib has no plugin discovery: ``anomalib.models.get_model`` and ``anomalib benchmark`` resolve names only among
the attributes of ``anomalib.models`` and the direct ``AnomalibModule`` subclasses. :mod:`anomalib_clipad.models`
calls :func:`register_in_anomalib` when it is imported, which happens whenever one of our models is imported (any
import path) and, after ``pip install``, right after ``anomalib.models`` itself is imported (the ``.pth`` hook).

This module must not import ``anomalib.engine``, ``anomalib.callbacks`` or ``anomalib.cli``: the hook can fire while
those are half-initialised.
"""

import anomalib.models as anomalib_models
from anomalib.models import AnomalibModule


class ModelNameCollisionError(RuntimeError):
    """Raised when a model class name of anomalib-clipad collides (case-insensitively) with an anomalib model."""


def _builtin_model_names() -> set[str]:
    """Lower-case names of anomalib's own models (direct ``AnomalibModule`` subclasses and ``anomalib.models``)."""
    names = {name.lower() for name in getattr(anomalib_models, "__all__", [])}
    names |= {cls.__name__.lower() for cls in AnomalibModule.__subclasses__() if cls.__module__.startswith("anomalib.")}
    return names


def register_in_anomalib(classes: list[type]) -> None:
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
        existing = getattr(anomalib_models, name, None)
        if existing is None:
            setattr(anomalib_models, name, cls)
        # An existing attribute with this name (ours from an earlier import, or anything else) is left untouched.
