# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

r"""Labelled auxiliary data: anomalous images *with masks* of another dataset, served as **training** data.

AnomalyCLIP and SimCLIP learn their prompts once on a labelled auxiliary dataset (anomalous images with pixel masks,
e.g. the test split of VisA), then detect zero-shot on any other dataset. No anomalib 2.7 datamodule puts anomalies
into a train split (``Folder`` sends ``abnormal_dir`` to test, ``Tabular`` rejects anomalous training samples), so
:class:`AuxiliaryData` reads the labelled split itself and serves it as the train split:

* ``dataset="MVTecAD"`` or ``"Visa"`` (any MVTec-AD-layout dataset works with ``"MVTecAD"``):
  ``<root>/<category>/<split>/<defect>/<image>`` with masks in ``<root>/<category>/ground_truth/<defect>/``
  (``<stem>.png`` or ``<stem>_mask.png``). VisA is read from ``<root>/visa_pytorch`` (anomalib's converted layout)
  when that folder exists, else from ``<root>`` itself. All categories found on disk by default.
* ``dataset="Folder"``: ``abnormal_dir`` (required), ``mask_dir`` and ``normal_dir`` (optional), relative to ``root``.

Normal images of the split are included (label 0, all-zero mask). Anomalous images without a mask file get an
all-zero mask and ``has_mask=False``: they can only train the image-level loss. Each batch is an
:class:`AuxiliaryImageBatch`, an :class:`~anomalib.data.ImageBatch` with two extra fields, ``category`` (the class
name of each image, for class-aware prompts) and ``has_mask`` (``(B,)`` bool: whether ``gt_mask`` is ground truth).

The datamodule serves **training only**: its validation and test sets are empty, so ``Engine.fit`` runs no
validation and ``Engine.test`` on it tests nothing; the target dataset is given to ``anomalib test`` separately.
:func:`check_no_overlap` refuses training images that are also images of the target's test set.

Example:
    >>> from anomalib_clipad.data.auxiliary import AuxiliaryData
    >>> datamodule = AuxiliaryData(dataset="Visa", root="./datasets/visa", num_workers=0)  # doctest: +SKIP
    >>> datamodule.setup()  # doctest: +SKIP
    >>> batch = next(iter(datamodule.train_dataloader()))  # doctest: +SKIP
    >>> batch.category, batch.has_mask, batch.gt_mask.shape  # doctest: +SKIP

    From the command line::

        anomalib fit --model ... --data anomalib_clipad.data.auxiliary.AuxiliaryData \\
            --data.dataset Visa --data.root ./datasets/visa
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
from anomalib.data.dataclasses import ImageBatch, ImageItem
from anomalib.data.datamodules.base.image import AnomalibDataModule
from anomalib.data.datasets.base.image import AnomalibDataset
from anomalib.data.utils import LabelName
from anomalib.utils.path import resolve_dataset_root
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import Transform
from torchvision.tv_tensors import Mask

from anomalib_clipad.data.image_files import read_image_file, read_mask_file

__all__ = [
    "SUPPORTED_DATASETS",
    "AuxiliaryData",
    "AuxiliaryDataset",
    "AuxiliaryImageBatch",
    "AuxiliaryImageItem",
    "DataLeakageError",
    "check_no_overlap",
    "image_paths_of",
]

logger = logging.getLogger(__name__)

SUPPORTED_DATASETS = ("MVTecAD", "Visa", "Folder")
_ALIASES = {"mvtecad": "MVTecAD", "mvtec": "MVTecAD", "visa": "Visa", "folder": "Folder"}
_DEFAULT_ROOT_NAME = {"MVTecAD": "MVTecAD", "Visa": "visa"}
# Image extensions of the anomalib datasets (mvtecad.IMG_EXTENSIONS, visa.EXTENSIONS); masks may be any image type.
_LAYOUT_EXTENSIONS = {"MVTecAD": (".png",), "Visa": (".png", ".jpg")}
_ANY_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_SPLITS = ("train", "test", "full")
_NORMAL_LABEL = "good"
_COLUMNS = ["image_path", "mask_path", "label", "label_index", "split", "category", "has_mask"]


# ----------------------------------------------------------------------------------------------------------------
# Item and batch: anomalib's image dataclasses plus the class name and the mask-validity flag
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class AuxiliaryImageItem(ImageItem):
    """An :class:`~anomalib.data.ImageItem` with the image's class name and whether its mask is ground truth.

    Attributes:
        category: class (category) name of the image, e.g. ``"candle"``.
        has_mask: scalar bool tensor: ``True`` when ``gt_mask`` is ground truth (normal images: all zeros;
            anomalous images with a mask file), ``False`` for an anomalous image without a mask (its ``gt_mask`` is
            all zeros and must not train a pixel loss).
    """

    category: str | None = None
    has_mask: torch.Tensor | None = None

    @staticmethod
    def validate_mask_path(mask_path: str | None) -> str:
        """Keep ``""`` for "no mask file" so that every item has a ``mask_path`` and batches collate it.

        anomalib's validator turns ``""`` into ``None``, and ``ImageBatch.collate`` then drops ``mask_path`` from the
        batch when the first item has none, or collates ``None`` among the strings otherwise.
        """
        return str(mask_path) if mask_path else ""

    def to_numpy(self) -> Any:
        """Convert to anomalib's numpy item, dropping the two extra fields (the numpy classes do not have them)."""
        return ImageItem(**{f.name: getattr(self, f.name) for f in fields(ImageItem)}).to_numpy()


@dataclass
class AuxiliaryImageBatch(ImageBatch):
    """An :class:`~anomalib.data.ImageBatch` with per-image class names and mask-validity flags.

    Attributes:
        category: list of the ``B`` class names, in batch order.
        has_mask: ``(B,)`` bool tensor; ``False`` marks anomalous images whose ``gt_mask`` is not ground truth
            (no mask file): train the image loss only on them.
    """

    item_class: ClassVar[type[ImageItem]] = AuxiliaryImageItem

    category: list[str] | None = None
    has_mask: torch.Tensor | None = None

    def to_numpy(self) -> Any:
        """Convert to anomalib's numpy batch, dropping the two extra fields (the numpy classes do not have them)."""
        return ImageBatch(**{f.name: getattr(self, f.name) for f in fields(ImageBatch)}).to_numpy()


# ----------------------------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------------------------


class AuxiliaryDataset(AnomalibDataset):
    """Labelled images (normal and anomalous, with masks where available) of one or more categories.

    The samples DataFrame has anomalib's columns (``image_path``, ``mask_path`` (``""`` when there is none),
    ``label`` (defect type, ``"good"`` for normal images), ``label_index``, ``split``) plus ``category`` (class name)
    and ``has_mask`` (bool, see :class:`AuxiliaryImageItem`). Items always carry a ``gt_mask`` (all zeros when
    there is no mask file) so that any batch collates.

    Args:
        samples: the samples DataFrame (see above); ``None`` gives an empty dataset.
        augmentations: augmentations applied to image and mask together. Defaults to ``None``.
    """

    def __init__(self, samples: pd.DataFrame | None = None, augmentations: Transform | None = None) -> None:
        super().__init__(augmentations=augmentations)
        if samples is None:
            samples = pd.DataFrame({column: [] for column in _COLUMNS})
        missing = [column for column in _COLUMNS if column not in samples.columns]
        if missing:
            msg = f"AuxiliaryDataset samples lack the column(s) {missing}; expected {_COLUMNS}."
            raise ValueError(msg)
        samples = samples.copy()
        samples.attrs["task"] = "segmentation" if bool(samples["has_mask"].any()) else "classification"
        self.samples = samples
        categories = self.categories
        self.category = categories[0] if len(categories) == 1 else "_".join(categories)

    @property
    def categories(self) -> list[str]:
        """Sorted class names present in the dataset."""
        return sorted(str(category) for category in self.samples["category"].unique())

    @property
    def n_without_mask(self) -> int:
        """Number of anomalous images without a mask file (they train the image loss only)."""
        samples = self.samples
        return int(((samples["label_index"] == LabelName.ABNORMAL) & ~samples["has_mask"].astype(bool)).sum())

    def __getitem__(self, index: int) -> AuxiliaryImageItem:
        """Load image ``index`` with its mask (all zeros when none), label, class name and mask flag.

        Args:
            index: sample index.

        Returns:
            The item.

        Raises:
            UnreadableImageError: the image or mask file is truncated, corrupt or missing (the error names it).
        """
        row = self.samples.iloc[index]
        image = read_image_file(row.image_path)
        if row.mask_path:
            gt_mask = read_mask_file(row.mask_path)
        else:
            gt_mask = Mask(torch.zeros(image.shape[-2:], dtype=torch.uint8))
        if self.augmentations:
            image, gt_mask = self.augmentations(image, gt_mask)
        return AuxiliaryImageItem(
            image=image,
            gt_mask=gt_mask,
            gt_label=torch.tensor(int(row.label_index)),
            image_path=str(row.image_path),
            mask_path=str(row.mask_path),
            category=str(row.category),
            has_mask=torch.tensor(bool(row.has_mask)),
        )

    @property
    def collate_fn(self) -> Any:
        """Collate into an :class:`AuxiliaryImageBatch`."""
        return AuxiliaryImageBatch.collate


# ----------------------------------------------------------------------------------------------------------------
# Datamodule
# ----------------------------------------------------------------------------------------------------------------


class AuxiliaryData(AnomalibDataModule):
    """Serve the labelled images of another dataset (anomalous with masks, and normal) as **training** data.

    Args:
        dataset: ``"MVTecAD"`` (any MVTec-AD-layout dataset), ``"Visa"`` or ``"Folder"`` (case-insensitive).
            Defaults to ``"MVTecAD"``.
        root: dataset root. MVTecAD/Visa: the folder holding the category folders (Visa: the folder holding
            ``visa_pytorch/``, or ``visa_pytorch`` itself); default anomalib's dataset folder
            (``./datasets/MVTecAD``, ``./datasets/visa``). Folder: the folder the ``*_dir`` arguments are relative to.
        categories: categories to use; ``None`` (default) uses every category found under ``root``. Folder: at most
            one name, the class name given to its images (default: the name of ``root``, else of ``abnormal_dir``).
        split: which split of the auxiliary dataset to serve: ``"test"`` (default, the labelled split, as the
            reference implementations), ``"train"`` or ``"full"`` (both). Ignored by Folder.
        include_normal: also serve the split's normal images (label 0, all-zero mask). Defaults to ``True``.
        normal_dir: Folder only: folder(s) of normal images. Defaults to ``None``.
        abnormal_dir: Folder only: folder(s) of anomalous images (required for Folder).
        mask_dir: Folder only: folder(s) of masks, paired with the anomalous images by file stem (``000.png`` or
            ``000_mask.png``). As many mask folders as abnormal folders: the i-th holds the masks of the i-th
            (anomalib's Folder convention); otherwise equal stems are told apart by their nearest folder names.
            Defaults to ``None``.
        extensions: image file extensions (case-insensitive). Default: anomalib's per dataset (MVTecAD ``.png``;
            Visa ``.png``, ``.jpg``; Folder the common image types).
        train_batch_size: training batch size. Defaults to ``8``.
        eval_batch_size: batch size of the (empty) validation and test loaders. Defaults to ``32``.
        num_workers: dataloader workers. Defaults to ``8``.
        train_augmentations: augmentations of the training images (and masks). Defaults to ``None``. Frozen-feature
            caches keyed by path assume there are no random ones.
        augmentations: used when ``train_augmentations`` is not given. Defaults to ``None``.
        seed: seed of the training shuffle; ``None`` (default): unseeded, as anomalib's datamodules.
        download: MVTecAD/Visa only: let anomalib download (and, for VisA, convert) the dataset into ``root`` when
            the categories are not there. Defaults to ``False``: nothing is downloaded or created; a root without
            the expected layout is an error that names what was looked for.

    Raises:
        ValueError: unknown ``dataset`` or ``split``; several ``categories`` for Folder; Folder without
            ``abnormal_dir``; ``download`` for Folder.

    Setup raises ``FileNotFoundError`` (missing root or folder) or ``ValueError`` (a category folder given as the
    root, unknown category, no image, no anomalous image, ambiguous mask pairing); each names the root, the layout
    looked for and the categories found. Anomalous images without mask are logged with a warning.

    Example:
        >>> datamodule = AuxiliaryData(dataset="MVTecAD", root="./datasets/MVTecAD", categories=["bottle"])
        >>> datamodule.setup()  # doctest: +SKIP
        >>> datamodule.train_data.samples[["category", "label", "has_mask"]].head()  # doctest: +SKIP
    """

    def __init__(  # noqa: PLR0917 (anomalib-style hyper-parameters)
        self,
        dataset: str = "MVTecAD",
        root: str | Path | None = None,
        categories: list[str] | str | None = None,
        split: str = "test",
        include_normal: bool = True,
        normal_dir: str | Path | Sequence[str | Path] | None = None,
        abnormal_dir: str | Path | Sequence[str | Path] | None = None,
        mask_dir: str | Path | Sequence[str | Path] | None = None,
        extensions: Sequence[str] | None = None,
        train_batch_size: int = 8,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        train_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        seed: int | None = None,
        download: bool = False,
    ) -> None:
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            augmentations=augmentations,
            val_split_mode="none",
            test_split_mode="none",
            seed=seed,
        )
        self.dataset = _canonical_dataset(dataset)
        split = str(split).lower()
        if split not in _SPLITS:
            msg = f"Unknown auxiliary split {split!r}; choose one of {list(_SPLITS)}."
            raise ValueError(msg)
        self.split = split
        self.include_normal = include_normal
        self.download = bool(download)
        if self.download and self.dataset == "Folder":
            msg = "download=True needs dataset='MVTecAD' or 'Visa': a Folder auxiliary set is read from disk only."
            raise ValueError(msg)
        if isinstance(categories, str):
            categories = [categories]
        self.requested_categories: list[str] | None = list(categories) if categories is not None else None
        if self.requested_categories is not None and not self.requested_categories:
            msg = "categories=[] selects no category; pass None to use every category."
            raise ValueError(msg)
        self.extensions = tuple(ext.lower() for ext in extensions) if extensions else None
        if self.extensions and not all(ext.startswith(".") for ext in self.extensions):
            msg = f"Extensions must start with a dot, got {list(extensions or [])}."
            raise ValueError(msg)

        if self.dataset == "Folder":
            if abnormal_dir is None:
                msg = "AuxiliaryData(dataset='Folder') needs abnormal_dir: the folder(s) of anomalous images."
                raise ValueError(msg)
            if self.requested_categories is not None and len(self.requested_categories) > 1:
                msg = (
                    f"A Folder auxiliary set is one category; got categories={self.requested_categories}. "
                    "Pass one name (the class name of its images) or None."
                )
                raise ValueError(msg)
            self.root = Path(root) if root is not None else None
            self.normal_dir = _as_path_list(normal_dir, self.root)
            self.abnormal_dir = _as_path_list(abnormal_dir, self.root)
            self.mask_dir = _as_path_list(mask_dir, self.root)
            if self.requested_categories:
                self.category = self.requested_categories[0]
            else:
                self.category = (self.root or self.abnormal_dir[0]).resolve().name
        else:
            if normal_dir is not None or abnormal_dir is not None or mask_dir is not None:
                msg = f"normal_dir, abnormal_dir and mask_dir are Folder arguments; dataset={self.dataset!r}."
                raise ValueError(msg)
            self.root = resolve_dataset_root(root, _DEFAULT_ROOT_NAME[self.dataset])
            self.normal_dir = self.abnormal_dir = self.mask_dir = []
            self.category = "_".join(self.requested_categories) if self.requested_categories else "all"

    @property
    def name(self) -> str:
        """Name used for the results folder: ``Auxiliary<dataset>``, e.g. ``AuxiliaryVisa``."""
        return f"Auxiliary{self.dataset}"

    @property
    def categories(self) -> list[str]:
        """Categories served (after :meth:`setup`: those found; before: the requested ones, or ``[]``)."""
        if hasattr(self, "train_data"):
            return self.train_data.categories
        return list(self.requested_categories or [])

    # ------------------------------------------------------------------------------------------------------------
    # Lightning hooks
    # ------------------------------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """With ``download=True`` only: download or convert MVTec AD / VisA through anomalib when not on disk.

        Categories already present are left alone (no network access). VisA's raw download is converted into
        ``visa_pytorch/`` by anomalib's ``Visa.prepare_data``. Without ``download`` (the default) nothing is done
        here: :meth:`setup` reads the disk and explains what is missing.
        """
        if self.dataset == "Folder" or not self.download:
            return
        from anomalib.data import MVTecAD, Visa
        from anomalib.data.datamodules.image.visa import VISA_CATEGORIES
        from anomalib.data.datasets.image.mvtecad import CATEGORIES as MVTEC_CATEGORIES

        datamodule_class, known = (MVTecAD, MVTEC_CATEGORIES) if self.dataset == "MVTecAD" else (Visa, VISA_CATEGORIES)
        wanted = self.requested_categories
        if wanted is None:
            if self.root.is_dir() and self._found_categories():
                return
            wanted = [known[0]]  # anomalib downloads (and, for VisA, converts) every category at once
        for category in wanted:
            if category in known and category not in self._found_categories():
                datamodule_class(root=self.root, category=category).prepare_data()

    def _setup(self, _stage: str | None = None) -> None:
        """Build the training set; validation and test sets are empty (this datamodule serves training only)."""
        samples = self._build_samples()
        self.train_data = AuxiliaryDataset(samples, augmentations=self.train_augmentations)
        self.val_data = AuxiliaryDataset()
        self.test_data = AuxiliaryDataset()
        self._log_summary()

    def train_dataloader(self) -> DataLoader:
        """Shuffled training loader of :class:`AuxiliaryImageBatch` batches (seeded when ``seed`` is given)."""
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        return DataLoader(
            dataset=self.train_data,
            shuffle=True,
            batch_size=self.train_batch_size,
            num_workers=self.num_workers,
            collate_fn=self.external_collate_fn or self.train_data.collate_fn,
            generator=generator,
        )

    def check_no_overlap(self, target: Any, **kwargs: Any) -> None:
        """Raise :class:`DataLeakageError` if a training image of this datamodule is an image of ``target``.

        Args:
            target: the target's datamodule (its test and validation sets are compared), dataset or image paths.
            **kwargs: passed to :func:`check_no_overlap` (e.g. ``compare_content=True``).
        """
        if not hasattr(self, "train_data"):
            self.setup()
        kwargs.setdefault("train_name", f"{self.name} training images")
        check_no_overlap(self.train_data, target, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    # Samples
    # ------------------------------------------------------------------------------------------------------------

    def _layout_root(self) -> Path:
        """Folder holding the category folders (VisA: ``visa_pytorch`` when present)."""
        if self.dataset == "Visa" and (self.root / "visa_pytorch").is_dir():
            return self.root / "visa_pytorch"
        return self.root

    def _split_names(self) -> tuple[str, ...]:
        return ("train", "test") if self.split == "full" else (self.split,)

    def _found_categories(self) -> list[str]:
        """Category folders under the layout root that hold at least one of the requested split folders."""
        layout_root = self._layout_root()
        if not layout_root.is_dir():
            return []
        return sorted(
            path.name
            for path in layout_root.iterdir()
            if path.is_dir()
            and not path.name.startswith(".")
            and any((path / split).is_dir() for split in self._split_names())
        )

    def _expected_layout(self) -> str:
        """The layout looked for, e.g. ``<root>/<category>/test/<defect>/<image>, masks in ...``."""
        splits = self._split_names()
        split = splits[0] if len(splits) == 1 else "{" + ",".join(splits) + "}"
        root = "visa_pytorch/ (anomalib's converted VisA) or the folder holding it" if self.dataset == "Visa" else ""
        return (
            f"the {self.dataset} layout <root>/<category>/{split}/<defect>/<image> with the masks in "
            f"<root>/<category>/ground_truth/<defect>/ (<root>: {root or 'the folder holding the category folders'})"
        )

    def _checked_categories(self) -> list[str]:
        """The categories to read; raise an error naming root, expected layout and what is there when it fails.

        Raises:
            FileNotFoundError: the root does not exist.
            ValueError: the root is a category folder, holds no category, or lacks a requested category.
        """
        layout_root = self._layout_root()
        if not self.root.is_dir():
            existing = next(parent for parent in self.root.absolute().parents if parent.is_dir())
            msg = (
                f"Auxiliary {self.dataset} root {self.root} does not exist. Expected {self._expected_layout()}. "
                f"The nearest existing folder, {existing}, holds {_folder_names(existing)}. Pass the folder that "
                f"holds the category folders as root (--data.root), or download=True (--data.download true) to have "
                f"anomalib download {self.dataset} into it."
            )
            raise FileNotFoundError(msg)
        found = self._found_categories()
        if not found and any((layout_root / name).is_dir() for name in (*self._split_names(), "ground_truth")):
            msg = (
                f"Auxiliary {self.dataset} root {layout_root} is a category folder (it holds "
                f"{_folder_names(layout_root)}), not the folder holding the category folders. Expected "
                f"{self._expected_layout()}. Pass root={layout_root.parent} and categories=['{layout_root.name}'] "
                f"(--data.root {layout_root.parent} --data.categories '[{layout_root.name}]')."
            )
            raise ValueError(msg)
        if self.requested_categories is None:
            if not found:
                msg = (
                    f"No {self.dataset} category with a {'/'.join(self._split_names())} folder under {layout_root} "
                    f"(it holds {_folder_names(layout_root)}). Expected {self._expected_layout()}."
                )
                raise ValueError(msg)
            return found
        unknown = [category for category in self.requested_categories if category not in found]
        if unknown:
            msg = (
                f"Unknown {self.dataset} categor{'y' if len(unknown) == 1 else 'ies'} {unknown}: no "
                f"{'/'.join(self._split_names())} folder under {layout_root}. Available: {found} (the categories "
                f"found there). Expected {self._expected_layout()}."
            )
            raise ValueError(msg)
        return self.requested_categories

    def _build_samples(self) -> pd.DataFrame:
        if self.dataset == "Folder":
            rows = self._folder_rows()
            where = f"Folder abnormal_dir={[str(p) for p in self.abnormal_dir]}"
        else:
            rows = self._layout_rows()
            where = f"{self.dataset} split {self.split!r} under {self._layout_root()}"
        samples = pd.DataFrame(rows, columns=_COLUMNS)
        if not self.include_normal:
            samples = samples[samples["label_index"] != LabelName.NORMAL]
        if samples.empty:
            msg = f"The auxiliary set is empty: no image found in {where} (extensions {self._image_extensions()})."
            raise ValueError(msg)
        if not (samples["label_index"] == LabelName.ABNORMAL).any():
            msg = (
                f"The auxiliary set ({where}) holds no anomalous image: {len(samples)} normal images only. Prompt "
                "learning on auxiliary data needs labelled anomalies, e.g. the test split of MVTec AD or VisA "
                "(train splits hold normal images only)."
            )
            raise ValueError(msg)
        samples["label_index"] = samples["label_index"].astype(int)
        samples["has_mask"] = samples["has_mask"].astype(bool)
        return samples.reset_index(drop=True)

    def _image_extensions(self) -> tuple[str, ...]:
        if self.extensions:
            return self.extensions
        return _LAYOUT_EXTENSIONS.get(self.dataset, _ANY_IMAGE_EXTENSIONS)

    def _layout_rows(self) -> list[dict[str, Any]]:
        """Rows of an MVTec-AD-layout dataset: ``<category>/<split>/<label>/<image>``, ``ground_truth/<label>``."""
        categories = self._checked_categories()
        extensions = self._image_extensions()
        rows: list[dict[str, Any]] = []
        for category in categories:
            category_dir = self._layout_root() / category
            for split in self._split_names():
                split_dir = category_dir / split
                if not split_dir.is_dir():
                    continue
                for label_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
                    label = label_dir.name
                    is_normal = label == _NORMAL_LABEL
                    images = sorted(p for p in label_dir.iterdir() if p.is_file() and p.suffix.lower() in extensions)
                    mask_folder = category_dir / "ground_truth" / label
                    masks = [] if is_normal else _list_images(mask_folder, _ANY_IMAGE_EXTENSIONS)
                    pairs = _pair_masks(images, masks)
                    rows.extend(
                        _row(image, pairs.get(image), label, is_normal=is_normal, split=split, category=category)
                        for image in images
                    )
        return rows

    def _folder_rows(self) -> list[dict[str, Any]]:
        for folder in [*self.normal_dir, *self.abnormal_dir, *self.mask_dir]:
            if not folder.is_dir():
                msg = f"Auxiliary Folder directory {folder} does not exist."
                raise FileNotFoundError(msg)
        extensions = self._image_extensions()
        abnormal = sorted({image for folder in self.abnormal_dir for image in _list_images(folder, extensions)})
        pairs: dict[Path, Path] = {}
        if len(self.mask_dir) == len(self.abnormal_dir):
            # parallel lists (anomalib's Folder convention): the i-th mask folder holds the masks of the i-th
            # abnormal folder
            for abnormal_folder, mask_folder in zip(self.abnormal_dir, self.mask_dir, strict=True):
                images = _list_images(abnormal_folder, extensions)
                pairs.update(_pair_masks(images, _list_images(mask_folder, _ANY_IMAGE_EXTENSIONS)))
        elif self.mask_dir:
            masks = sorted({m for folder in self.mask_dir for m in _list_images(folder, _ANY_IMAGE_EXTENSIONS)})
            pairs = _pair_masks(abnormal, masks)
        rows = [
            _row(image, pairs.get(image), image.parent.name, is_normal=False, split="test", category=self.category)
            for image in abnormal
        ]
        if self.include_normal:
            normal = sorted({image for folder in self.normal_dir for image in _list_images(folder, extensions)})
            rows.extend(
                _row(image, None, _NORMAL_LABEL, is_normal=True, split="test", category=self.category)
                for image in normal
            )
        return rows

    def _log_summary(self) -> None:
        samples = self.train_data.samples
        anomalous = samples["label_index"] == LabelName.ABNORMAL
        per_category = samples.groupby("category")["label_index"].agg(["size", "sum"])
        details = ", ".join(f"{name} {int(r['sum'])}/{int(r['size'])}" for name, r in per_category.iterrows())
        logger.info(
            "%s: %d training images (%d anomalous, %d normal) of %d categories from the %s data "
            "(anomalous/total per category: %s).",
            self.name,
            len(samples),
            int(anomalous.sum()),
            int((~anomalous).sum()),
            len(per_category),
            "Folder" if self.dataset == "Folder" else f"{self.split!r} split of the {self.dataset}",
            details,
        )
        n_without = self.train_data.n_without_mask
        if n_without:
            logger.warning(
                "%s: %d anomalous images have no mask: they train the image loss only (has_mask=False, all-zero "
                "gt_mask).",
                self.name,
                n_without,
            )


# ----------------------------------------------------------------------------------------------------------------
# Leakage guard
# ----------------------------------------------------------------------------------------------------------------


class DataLeakageError(ValueError):
    """Training images are also images of the target's evaluation set."""


def image_paths_of(source: Any, subsets: Sequence[str] = ("test", "val")) -> list[str]:
    """Image paths of a datamodule, a dataset, a samples DataFrame or an iterable of paths.

    Args:
        source: an :class:`~anomalib.data.AnomalibDataModule` (the ``<subset>_data`` sets named in ``subsets``; it
            is set up first when it has none of them), an :class:`~anomalib.data.datasets.AnomalibDataset`, a
            DataFrame with an ``image_path`` column, a single path or an iterable of paths.
        subsets: datamodule subsets to read. Defaults to ``("test", "val")``.

    Returns:
        The image paths, as strings.

    Raises:
        TypeError: ``source`` is none of the above.
    """
    if isinstance(source, AnomalibDataModule):
        if not any(hasattr(source, f"{subset}_data") for subset in subsets):
            source.setup()
        paths: list[str] = []
        for subset in subsets:
            dataset = getattr(source, f"{subset}_data", None)
            if dataset is not None:
                paths.extend(image_paths_of(dataset))
        return paths
    if isinstance(source, AnomalibDataset):
        return [str(path) for path in source.samples["image_path"]]
    if isinstance(source, pd.DataFrame):
        return [str(path) for path in source["image_path"]]
    if isinstance(source, str | os.PathLike):
        return [os.fspath(source)]
    if isinstance(source, Iterable):
        return [os.fspath(path) for path in source]
    msg = f"Cannot read image paths from a {type(source).__name__}."
    raise TypeError(msg)


def check_no_overlap(
    train: Any,
    target: Any,
    *,
    train_subsets: Sequence[str] = ("train",),
    target_subsets: Sequence[str] = ("test", "val"),
    compare_content: bool = False,
    train_name: str = "auxiliary training images",
    target_name: str = "target evaluation images",
    max_listed: int = 5,
) -> None:
    """Raise :class:`DataLeakageError` when training images are images of the target's test (or validation) set.

    Two paths are the same image when they resolve to the same real path (relative paths, ``..``, symbolic links)
    or the same file (hard links: equal device and inode). With ``compare_content=True`` files with equal bytes
    (copies) count too; only files of equal size are hashed.

    Args:
        train: training images: a datamodule (its ``train_subsets``), a dataset, a DataFrame or paths.
        target: target images: a datamodule (its ``target_subsets``), a dataset, a DataFrame or paths.
        train_subsets: datamodule subsets of ``train``. Defaults to ``("train",)``.
        target_subsets: datamodule subsets of ``target``. Defaults to ``("test", "val")``.
        compare_content: also catch byte-identical copies. Defaults to ``False``.
        train_name: how the error names the training images.
        target_name: how the error names the target images.
        max_listed: number of overlapping pairs listed in the error. Defaults to ``5``.

    Raises:
        DataLeakageError: at least one training image is a target image.
    """
    train_paths = image_paths_of(train, train_subsets)
    target_paths = image_paths_of(target, target_subsets)
    target_by_real = {os.path.realpath(path): path for path in target_paths}
    target_by_inode: dict[tuple[int, int], str] = {}
    target_stats: dict[str, os.stat_result] = {}
    for path in target_paths:
        stat = _stat(path)
        if stat is not None:
            target_by_inode.setdefault((stat.st_dev, stat.st_ino), path)
            target_stats[path] = stat

    overlaps: list[tuple[str, str]] = []
    unmatched: list[tuple[str, os.stat_result]] = []
    for path in train_paths:
        match = target_by_real.get(os.path.realpath(path))
        stat = _stat(path)
        if match is None and stat is not None:
            match = target_by_inode.get((stat.st_dev, stat.st_ino))
        if match is not None:
            overlaps.append((path, match))
        elif stat is not None:
            unmatched.append((path, stat))

    if compare_content and unmatched:
        overlaps.extend(_content_matches(unmatched, target_stats))

    if overlaps:
        listed = "; ".join(f"{a} = {b}" for a, b in overlaps[:max_listed])
        more = f" (and {len(overlaps) - max_listed} more)" if len(overlaps) > max_listed else ""
        msg = (
            f"Data leakage: {len(overlaps)} of the {len(train_paths)} {train_name} are also {target_name} "
            f"(same files): {listed}{more}. Train on another dataset, or leave out the target's categories."
        )
        raise DataLeakageError(msg)


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def _canonical_dataset(dataset: str) -> str:
    key = str(dataset).lower().replace("_", "").replace("-", "").replace(" ", "")
    if key not in _ALIASES:
        msg = f"Unknown auxiliary dataset {dataset!r}; choose one of {list(SUPPORTED_DATASETS)}."
        raise ValueError(msg)
    return _ALIASES[key]


def _as_path_list(value: str | Path | Sequence[str | Path] | None, root: Path | None) -> list[Path]:
    if value is None:
        return []
    values = [value] if isinstance(value, str | os.PathLike) else list(value)
    return [Path(v) if Path(v).is_absolute() or root is None else root / v for v in values]


def _folder_names(folder: Path, limit: int = 20) -> str:
    """``['a', 'b', ...]``: the (non-hidden) sub-folders of ``folder``, at most ``limit`` of them, for messages."""
    try:
        names = sorted(path.name for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))
    except OSError:
        return "nothing readable"
    if not names:
        return "no folder"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{names[:limit]}{more}"


def _list_images(folder: Path, extensions: Sequence[str]) -> list[Path]:
    """Image files below ``folder`` (recursive, hidden files and folders skipped); ``[]`` when it does not exist."""
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in extensions
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def _mask_stem(path: Path) -> str:
    stem = path.stem
    return stem[: -len("_mask")] if stem.endswith("_mask") else stem


def _common_tail(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    count = 0
    for x, y in zip(reversed(a), reversed(b), strict=False):
        if x != y:
            break
        count += 1
    return count


def _pair_masks(images: Sequence[Path], masks: Sequence[Path]) -> dict[Path, Path]:
    """Pair images with masks of the same stem (``000.png`` ↔ ``000.png`` / ``000_mask.png``).

    Masks of equal stem in several folders (``ground_truth/hole/000_mask.png``, ``ground_truth/scratch/...``) are
    told apart by the number of trailing folder names they share with the image (``test/hole/000.png``).

    Raises:
        ValueError: two masks fit an image equally well.
    """
    by_stem: dict[str, list[Path]] = {}
    for mask in masks:
        by_stem.setdefault(_mask_stem(mask), []).append(mask)
    pairs: dict[Path, Path] = {}
    for image in images:
        candidates = by_stem.get(image.stem, [])
        if len(candidates) > 1:
            scores = [_common_tail(image.parent.parts, mask.parent.parts) for mask in candidates]
            best = max(scores)
            candidates = [mask for mask, score in zip(candidates, scores, strict=True) if score == best]
            if len(candidates) > 1:
                msg = f"Ambiguous masks for {image}: {[str(m) for m in candidates]} fit equally well."
                raise ValueError(msg)
        if candidates:
            pairs[image] = candidates[0]
    return pairs


def _row(image: Path, mask: Path | None, label: str, *, is_normal: bool, split: str, category: str) -> dict[str, Any]:
    return {
        "image_path": str(image),
        "mask_path": str(mask) if mask is not None else "",
        "label": label,
        "label_index": int(LabelName.NORMAL if is_normal else LabelName.ABNORMAL),
        "split": split,
        "category": category,
        "has_mask": is_normal or mask is not None,
    }


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _content_matches(
    train: list[tuple[str, os.stat_result]],
    target_stats: dict[str, os.stat_result],
) -> list[tuple[str, str]]:
    """Training files byte-identical to a target file (only files of a size that occurs in both are hashed)."""
    target_by_size: dict[int, list[str]] = {}
    for path, stat in target_stats.items():
        target_by_size.setdefault(stat.st_size, []).append(path)
    digests: dict[str, str] = {}
    matches: list[tuple[str, str]] = []
    for path, stat in train:
        candidates = target_by_size.get(stat.st_size, [])
        if not candidates:
            continue
        digest = _file_digest(path)
        for candidate in candidates:
            if candidate not in digests:
                digests[candidate] = _file_digest(candidate)
            if digests[candidate] == digest:
                matches.append((path, candidate))
                break
    return matches
