# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Shared pytest fixtures: offline hub, a session-scoped synthetic MVTec-layout dataset."""

import os

# Hub look-ups (open_clip / timm) otherwise hang about a minute before failing: there is no internet here.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path

import pytest

SYNTHETIC_CATEGORY = "widget"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a small synthetic MVTec-AD-layout dataset, category ``widget`` (objects), 64 px images.

    ``train/good``: 4 images; ``test/good``: 4; ``test/{scratch,hole,stain}``: 2 each, with masks in
    ``ground_truth/<defect>/NNN_mask.png``. Load it with ``MVTecAD(root=synthetic_root, category="widget")`` or
    ``Folder(**synthetic_folder_kwargs(synthetic_root / "widget"))``. Do not modify it (session-scoped, shared).
    """
    from anomalib_clipad.data.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic_mvtec")
    generate_synthetic_dataset(
        root,
        category=SYNTHETIC_CATEGORY,
        kind="object",
        n_train=4,
        n_test_good=4,
        n_test_defect=2,
        image_size=64,
        seed=0,
    )
    return root


@pytest.fixture(scope="session")
def synthetic_category() -> str:
    """Category name of :func:`synthetic_root` (``"widget"``)."""
    return SYNTHETIC_CATEGORY


@pytest.fixture(scope="session")
def synthetic_category_dir(synthetic_root: Path) -> Path:
    """``<synthetic_root>/widget``: the category folder (``train/``, ``test/``, ``ground_truth/``)."""
    return synthetic_root / SYNTHETIC_CATEGORY
