# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Shared pytest fixtures: offline hub, generated datasets, the tiny random-init CLIPs.

The datasets and the weight file are made once per session and shared between test files: read-only (a test that
changes a dataset copies it first). The in-memory tiny CLIPs are module-scoped: each test module gets its own. The tiny
model settings are not repeated here: they are the registry's (``anomalib_clipad.registry.get_spec(name).tiny``, or
``get_spec(name).build_tiny(**overrides)``; ``cli_runner.tiny_model_args`` writes them as command-line arguments).
"""

import os

# Hub look-ups (open_clip / timm) otherwise hang about a minute before failing: there is no internet here.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import torch

SYNTHETIC_CATEGORY = "widget"

SyntheticDataset = Callable[..., Path]


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    """``synthetic_dataset(categories, **settings) -> root``: a generated MVTec-AD-layout dataset, made once a session.

    ``categories`` are the category folders in order, the i-th generated with seed i; a mapping gives each its own
    :func:`~anomalib_clipad.data.synthetic.generate_synthetic_dataset` arguments (``kind``, ``seed``, counts).
    ``settings`` are that function's arguments common to all categories. The same request returns the same folder, so
    test files asking for the same dataset share it: never modify it.
    """
    from anomalib_clipad.data.synthetic import generate_synthetic_dataset

    made: dict[str, Path] = {}

    def make(categories: Sequence[str] | Mapping[str, Mapping[str, Any]], **settings: Any) -> Path:
        per_category = dict(categories) if isinstance(categories, Mapping) else {name: {} for name in categories}
        key = repr(([(name, sorted(own.items())) for name, own in per_category.items()], sorted(settings.items())))
        if key not in made:
            root = tmp_path_factory.mktemp("synthetic")
            for seed, (category, own) in enumerate(per_category.items()):
                generate_synthetic_dataset(root, category=category, **{"seed": seed, **settings, **own})
            made[key] = root
        return made[key]

    return make


@pytest.fixture(scope="session")
def synthetic_root(synthetic_dataset: SyntheticDataset) -> Path:
    """Root of a small synthetic MVTec-AD-layout dataset, category ``widget`` (objects), 64 px images.

    ``train/good``: 4 images; ``test/good``: 4; ``test/{scratch,hole,stain}``: 2 each, with masks in
    ``ground_truth/<defect>/NNN_mask.png``. Load it with ``MVTecAD(root=synthetic_root, category="widget")`` or
    ``Folder(**synthetic_folder_kwargs(synthetic_root / "widget"))``.
    """
    return synthetic_dataset([SYNTHETIC_CATEGORY], n_train=4, n_test_good=4, n_test_defect=2, image_size=64)


@pytest.fixture(scope="session")
def synthetic_category() -> str:
    """Category name of :func:`synthetic_root` (``"widget"``)."""
    return SYNTHETIC_CATEGORY


@pytest.fixture(scope="session")
def synthetic_category_dir(synthetic_root: Path) -> Path:
    """``<synthetic_root>/widget``: the category folder (``train/``, ``test/``, ``ground_truth/``)."""
    return synthetic_root / SYNTHETIC_CATEGORY


@pytest.fixture(scope="session")
def two_categories(synthetic_dataset: SyntheticDataset) -> Path:
    """Two categories at 64 px: ``alpha`` (training data: its shots, or its labelled test split as auxiliary data) and
    ``beta`` (the target). Each: ``train/good`` 2 images, ``test/good`` 4, 2 per defect type (3 types), with masks."""
    return synthetic_dataset(["alpha", "beta"], n_train=2, n_test_good=4, n_test_defect=2, image_size=64)


@pytest.fixture(scope="session")
def auxiliary_root(synthetic_dataset: SyntheticDataset) -> Path:
    """Auxiliary training data for AnomalyCLIP / SimCLIP: one category ``other`` whose labelled test split holds 4
    images (1 normal, 1 per defect type with its mask), 96 px. ``AuxiliaryData(root=auxiliary_root)`` serves it."""
    return synthetic_dataset(["other"], n_train=1, n_test_good=1, n_test_defect=1)


@pytest.fixture(scope="session")
def bottle_root(synthetic_dataset: SyntheticDataset) -> Path:
    """Category ``bottle`` (a class of the built-in prompt vocabulary), 64 px: ``train/good`` 5 images,
    ``test/good`` 2, ``test/stain`` 2 with masks."""
    return synthetic_dataset(
        ["bottle"], n_train=5, n_test_good=2, n_test_defect=2, image_size=64, defect_types=("stain",)
    )


def _save_random_clip(tmp_path_factory: pytest.TempPathFactory, backbone: str) -> Path:
    """``backbone`` randomly initialised from seed 0, saved to a file; the global random state is left as it was."""
    import torch

    from anomalib_clipad.clip.loading import load_clip

    path = tmp_path_factory.mktemp("weights") / f"{backbone}.pt"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save(load_clip(backbone, pretrained=None).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_clip24_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny 24-layer CLIP (``TINY_BACKBONE_24``) randomly initialised from seed 0, saved to a file.

    What ``pretrained=<file>`` reads: models built in other processes, or later from a learned-weights file without a
    checkpoint, see the same frozen CLIP (``pretrained=None`` would draw new weights each time).
    """
    from anomalib_clipad.registry import TINY_BACKBONE_24

    return _save_random_clip(tmp_path_factory, TINY_BACKBONE_24)


@pytest.fixture(scope="session")
def micro_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The micro CLIP (``tests/micro.py``) randomly initialised from seed 0, saved: ``pretrained=<file>``."""
    from micro import MICRO_BACKBONE

    return _save_random_clip(tmp_path_factory, MICRO_BACKBONE)


@pytest.fixture
def micro_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """For one test, the registry's tiny settings of every model are its micro-backbone settings
    (``micro.micro_settings``): the scripts' ``--tiny`` runs on the micro backbone."""
    from micro import micro_settings

    from anomalib_clipad.registry import MODELS

    for spec in MODELS:
        for key, value in micro_settings(spec.name).items():
            monkeypatch.setitem(spec.tiny, key, value)


@pytest.fixture(scope="module")
def tiny_clip16() -> "torch.nn.Module":
    """The tiny CLIP ``TINY_BACKBONE`` (8 blocks) randomly initialised from torch's seed 0, frozen, in eval mode.

    Module-scoped: each test module gets its own (a module may change it). Seeds torch's global random state, as the
    module fixtures it replaces did.
    """
    import torch

    from anomalib_clipad.clip.loading import load_clip
    from anomalib_clipad.registry import TINY_BACKBONE

    torch.manual_seed(0)
    return load_clip(TINY_BACKBONE, None)


@pytest.fixture(scope="module")
def tiny_clip24() -> "torch.nn.Module":
    """The tiny CLIP ``TINY_BACKBONE_24`` (24 blocks) randomly initialised from torch's seed 0 (see ``tiny_clip16``)."""
    import torch

    from anomalib_clipad.clip.loading import load_clip
    from anomalib_clipad.registry import TINY_BACKBONE_24

    torch.manual_seed(0)
    return load_clip(TINY_BACKBONE_24, None)
