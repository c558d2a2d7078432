# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The models of anomalib-clipad; importing this package registers them with anomalib.

See :mod:`anomalib_clipad.registration`. The classes are also bound in the top-level package, so that
``anomalib_clipad.WinCLIPPlus`` is a plain attribute from then on (class-path resolution may read module dicts).
"""

import sys

from anomalib_clipad.registration import register_in_anomalib

from .anomalyclip import AnomalyCLIP
from .devprompt import DevPrompt
from .promptad import PromptAD
from .simclip import SimCLIP
from .winclip_plus import WinCLIPPlus

__all__ = ["AnomalyCLIP", "DevPrompt", "PromptAD", "SimCLIP", "WinCLIPPlus"]

register_in_anomalib([AnomalyCLIP, DevPrompt, PromptAD, SimCLIP, WinCLIPPlus])
for _cls in (AnomalyCLIP, DevPrompt, PromptAD, SimCLIP, WinCLIPPlus):
    setattr(sys.modules["anomalib_clipad"], _cls.__name__, _cls)
