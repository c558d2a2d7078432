# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Prompt sets: WinCLIP's compositional prompt ensemble and the per-category defect vocabulary of MVTec AD and VisA.

The vocabulary (``prompt_vocabulary.json``) is data from the PromptAD reference implementation (public-domain
Unlicense); it keeps the reference's spelling (e.g. "particals") so that scores stay comparable. ``"{}"`` in a state
phrase stands for the class name.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

WINCLIP_TEMPLATES: tuple[str, ...] = (
    "a cropped photo of the {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of the {}.",
    "a dark photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
)
"""WinCLIP's 22 distinct templates (paper Table 7); ``{}`` is the state phrase.

anomalib 2.7's ``WinClip`` lists 21 (``"a cropped photo of a {}."`` missing, ``"a jpeg corrupted photo of the {}."``
twice); we keep the paper's 22, each with its trailing period.
"""

NORMAL_STATES: tuple[str, ...] = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)
"""WinCLIP's normal state words; ``{}`` is the class name."""

ANOMALOUS_STATES: tuple[str, ...] = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")
"""WinCLIP's generic anomalous state words; ``{}`` is the class name."""

_VOCABULARY_FILE = Path(__file__).with_name("prompt_vocabulary.json")


@lru_cache(maxsize=1)
def _vocabulary() -> dict:
    with _VOCABULARY_FILE.open(encoding="utf-8") as file:
        return json.load(file)


def prompt_class_name(category: str) -> str:
    """The class name used in prompts for a dataset category.

    Mapped as the reference vocabulary does (``metal_nut`` -> ``"metal nut"``, ``pcb1`` -> ``"printed circuit
    board"``); other names get underscores replaced by spaces.

    Raises:
        ValueError: the category is empty.
    """
    if not category or not category.strip():
        msg = "A class name is needed to build prompts; got an empty one. Pass `class_name` (e.g. 'bottle')."
        raise ValueError(msg)
    mapping = _vocabulary()["class_name_mapping"]
    return mapping.get(category, category.replace("_", " "))


def generic_anomalous_states() -> list[str]:
    """PromptAD's 8 generic anomalous states (``"damaged {}"``, ..., ``"{} with damage"``)."""
    return list(_vocabulary()["generic_anomalous_states"])


def class_specific_anomalous_states(category: str) -> list[str] | None:
    """Defect-type states of an MVTec AD or VisA category, or ``None`` when it has no built-in list.

    Example: bottle -> ``["{} with large breakage", "{} with small breakage", "{} with contamination"]``.
    """
    states = _vocabulary()["class_specific_anomalous_states"].get(category)
    return list(states) if states is not None else None


def known_categories() -> list[str]:
    """Categories with a built-in defect list (MVTec AD and VisA)."""
    return sorted(_vocabulary()["class_specific_anomalous_states"])
