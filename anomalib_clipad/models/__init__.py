# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The models of anomalib-clipad (the rows of :data:`anomalib_clipad.registry.MODELS`); importing this registers them.

See :mod:`anomalib_clipad.registration`. The classes are also bound in the top-level package, so that
``anomalib_clipad.WinCLIPPlus`` is a plain attribute from then on (class-path resolution may read module dicts).
"""

import sys

from anomalib_clipad.registration import register_in_anomalib
from anomalib_clipad.registry import MODEL_NAMES, MODELS

__all__ = list(MODEL_NAMES)

_CLASSES = [spec.lightning_class for spec in MODELS]
globals().update({cls.__name__: cls for cls in _CLASSES})
register_in_anomalib(_CLASSES)
for _cls in _CLASSES:
    setattr(sys.modules["anomalib_clipad"], _cls.__name__, _cls)
