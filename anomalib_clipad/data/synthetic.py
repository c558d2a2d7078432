# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""A small MVTec-AD-layout dataset of synthetic objects or textures with synthetic defects and exact masks.

Used by the ``anomalib-clipad demo`` command, the notebook, the tests and the sample benchmark, so that everything
runs on a machine with no dataset at hand. The layout is exactly MVTec AD's, so the folder loads with
``anomalib.data.MVTecAD(root=root, category=category)`` as well as with ``anomalib.data.Folder``::

    <root>/<category>/train/good/000.png ...
    <root>/<category>/test/good/000.png ...
    <root>/<category>/test/<defect_type>/000.png ...
    <root>/<category>/ground_truth/<defect_type>/000_mask.png ...   (uint8, 0 = normal, 255 = defect)

Images are drawn with OpenCV: ``kind="object"`` is a shaded disc (a bottle seen from above: body, rim, inner
shadow) on a slightly uneven background, with small per-image variations of position, size and lighting;
``kind="texture"`` is a woven pattern (oriented sinusoids plus fine noise) with random phase. Each defect is drawn
*through* its mask (a binary mask is rasterised first, then only its pixels are recoloured), so no pixel outside
the mask changes and the masks are exact:

* ``scratch``: a thin bright or dark curved line,
* ``hole``: a dark elliptic hole with a lit lower rim,
* ``stain``: an irregular colour blob (union of discs) blended with a saturated colour.

Example:
    >>> from anomalib_clipad.data.synthetic import generate_synthetic_dataset
    >>> path = generate_synthetic_dataset("datasets/synthetic", category="widget", kind="object")  # doctest: +SKIP
    >>> from anomalib.data import MVTecAD
    >>> datamodule = MVTecAD(root="datasets/synthetic", category="widget", num_workers=0)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

__all__ = ["DEFECT_TYPES", "KINDS", "generate_synthetic_dataset", "synthetic_folder_kwargs"]

KINDS = ("object", "texture")
DEFECT_TYPES = ("scratch", "hole", "stain")

_MIN_IMAGE_SIZE = 32


def generate_synthetic_dataset(
    root: str | os.PathLike,
    category: str = "widget",
    *,
    kind: str = "object",
    n_train: int = 8,
    n_test_good: int = 4,
    n_test_defect: int = 2,
    image_size: int = 96,
    seed: int = 0,
    defect_types: tuple[str, ...] | list[str] = DEFECT_TYPES,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic MVTec-AD-layout dataset and return the category folder ``<root>/<category>``.

    Args:
        root: Dataset root; the category folder is created below it.
        category: Category (folder) name; also what ``MVTecAD(category=...)`` and the models' class name use.
        kind: ``"object"`` (shaded disc on a background) or ``"texture"`` (woven pattern).
        n_train: Number of normal training images (``train/good``).
        n_test_good: Number of normal test images (``test/good``).
        n_test_defect: Number of defective test images **per defect type** (``test/<defect_type>``).
        image_size: Side of the square RGB images in pixels (at least 32).
        seed: Seed of the random generator; the same arguments always give the same files.
        defect_types: Defect types to generate, a non-empty subset of :data:`DEFECT_TYPES`.
        overwrite: Regenerate even if ``<root>/<category>`` already exists. Without it, an existing non-empty
            category folder is an error (it would silently mix two datasets).

    Returns:
        Path of the category folder.

    Raises:
        ValueError: On an unknown ``kind`` or defect type, negative counts, no normal training image, or an
            image size below 32 pixels.
        FileExistsError: If the category folder exists, is not empty, and ``overwrite`` is false.
    """
    if kind not in KINDS:
        msg = f"Unknown kind {kind!r}; expected one of {KINDS}."
        raise ValueError(msg)
    defect_types = tuple(defect_types)
    unknown = [d for d in defect_types if d not in DEFECT_TYPES]
    if unknown or not defect_types:
        msg = f"Defect types must be a non-empty subset of {DEFECT_TYPES}, got {defect_types!r}."
        raise ValueError(msg)
    if n_train < 1 or n_test_good < 0 or n_test_defect < 0:
        msg = f"Need n_train >= 1 and non-negative test counts, got {n_train=}, {n_test_good=}, {n_test_defect=}."
        raise ValueError(msg)
    if image_size < _MIN_IMAGE_SIZE:
        msg = f"image_size must be at least {_MIN_IMAGE_SIZE} pixels, got {image_size}."
        raise ValueError(msg)
    if not category or any(sep in category for sep in ("/", "\\")) or category in {".", ".."}:
        msg = f"category must be a plain folder name, got {category!r}."
        raise ValueError(msg)

    category_dir = Path(root) / category
    if category_dir.exists() and any(category_dir.iterdir()):
        if not overwrite:
            msg = f"{category_dir} exists and is not empty; pass overwrite=True to regenerate it."
            raise FileExistsError(msg)
        _remove_tree(category_dir)

    rng = np.random.default_rng(seed)
    style = _Style.sample(rng, kind)

    for index in range(n_train):
        _write_image(category_dir / "train" / "good" / f"{index:03d}.png", style.render(rng, image_size))
    for index in range(n_test_good):
        _write_image(category_dir / "test" / "good" / f"{index:03d}.png", style.render(rng, image_size))
    for defect_type in defect_types:
        for index in range(n_test_defect):
            image = style.render(rng, image_size)
            image, mask = _add_defect(rng, image, defect_type, style.support_mask(image_size))
            _write_image(category_dir / "test" / defect_type / f"{index:03d}.png", image)
            _write_image(category_dir / "ground_truth" / defect_type / f"{index:03d}_mask.png", mask)
    return category_dir


def synthetic_folder_kwargs(category_dir: str | os.PathLike, defect_types: tuple[str, ...] | list[str] | None = None):
    """Keyword arguments for ``anomalib.data.Folder`` reading a dataset written by :func:`generate_synthetic_dataset`.

    Args:
        category_dir: The category folder returned by :func:`generate_synthetic_dataset`.
        defect_types: Defect types to include; default: every ``test/<defect>`` folder present.

    Returns:
        A dict with ``name``, ``root``, ``normal_dir``, ``abnormal_dir``, ``normal_test_dir`` and ``mask_dir``
        (abnormal and mask folders as parallel lists), to be completed with loader options such as
        ``num_workers=0``.
    """
    category_dir = Path(category_dir)
    if defect_types is None:
        defect_types = sorted(p.name for p in (category_dir / "test").iterdir() if p.is_dir() and p.name != "good")
    return {
        "name": category_dir.name,
        "root": str(category_dir),
        "normal_dir": "train/good",
        "abnormal_dir": [f"test/{d}" for d in defect_types],
        "normal_test_dir": "test/good",
        "mask_dir": [f"ground_truth/{d}" for d in defect_types],
    }


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------


class _Style:
    """The per-dataset appearance (colours, pattern frequencies); individual images jitter around it."""

    def __init__(self, kind: str, params: dict[str, np.ndarray | float]) -> None:
        self.kind = kind
        self.params = params

    @classmethod
    def sample(cls, rng: np.random.Generator, kind: str) -> _Style:
        if kind == "object":
            params = {
                "background": rng.uniform(0.15, 0.35, size=3),
                "body": rng.uniform(0.45, 0.8, size=3),
                "radius": rng.uniform(0.30, 0.36),
            }
        else:
            params = {
                "base": rng.uniform(0.35, 0.6, size=3),
                "tint": rng.uniform(-0.15, 0.15, size=3),
                "freq_u": rng.uniform(5.0, 8.0),
                "freq_v": rng.uniform(5.0, 8.0),
            }
        return cls(kind, params)

    def support_mask(self, size: int) -> np.ndarray:
        """Boolean (size, size) map of where defects may be centred (on the object, or anywhere on a texture)."""
        if self.kind == "texture":
            margin = max(2, size // 8)
            support = np.zeros((size, size), dtype=bool)
            support[margin:-margin, margin:-margin] = True
            return support
        yy, xx = np.mgrid[0:size, 0:size]
        radius = float(self.params["radius"]) * size * 0.75
        return (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius**2

    def render(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Render one normal RGB image as float32 (size, size, 3) in [0, 1]."""
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        light = rng.uniform(0.9, 1.1)
        if self.kind == "object":
            background = np.asarray(self.params["background"], dtype=np.float32)
            image = background * (0.85 + 0.3 * yy[..., None]) * light
            # Body: a disc with radial shading (light from the top-left), a rim and a darker centre (the neck).
            cy, cx = 0.5 + rng.uniform(-0.03, 0.03, size=2)
            radius = float(self.params["radius"]) * rng.uniform(0.96, 1.04)
            dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            body = np.asarray(self.params["body"], dtype=np.float32)
            shading = 1.0 - 0.5 * np.clip(((yy - cy) + (xx - cx)) / (2 * radius) + 0.5, 0, 1) ** 2
            inside = dist <= radius
            image[inside] = (body * shading[..., None] * light)[inside]
            rim = np.abs(dist - radius * 0.82) < radius * 0.05
            image[rim] *= 1.25
            neck = dist < radius * 0.35
            image[neck] *= 0.6
        else:
            phase_u, phase_v = rng.uniform(0, 2 * np.pi, size=2)
            angle = rng.uniform(-0.05, 0.05)
            u = xx * np.cos(angle) + yy * np.sin(angle)
            v = -xx * np.sin(angle) + yy * np.cos(angle)
            weave = 0.5 + 0.25 * np.sin(2 * np.pi * float(self.params["freq_u"]) * u + phase_u) * np.sin(
                2 * np.pi * float(self.params["freq_v"]) * v + phase_v
            )
            base = np.asarray(self.params["base"], dtype=np.float32)
            tint = np.asarray(self.params["tint"], dtype=np.float32)
            image = (base + tint * weave[..., None]) * (0.7 + 0.6 * weave[..., None]) * light
        image = image + rng.normal(0.0, 0.015, size=image.shape)
        return np.clip(image, 0.0, 1.0).astype(np.float32)


def _add_defect(
    rng: np.random.Generator,
    image: np.ndarray,
    defect_type: str,
    support: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect of ``defect_type`` into a copy of ``image``; return it with its exact uint8 mask."""
    size = image.shape[0]
    candidates = np.argwhere(support)
    cy, cx = candidates[rng.integers(len(candidates))]
    mask = np.zeros((size, size), dtype=np.uint8)
    if defect_type == "scratch":
        length = rng.uniform(0.25, 0.4) * size
        angle = rng.uniform(0, np.pi)
        bend = rng.uniform(-0.15, 0.15) * length
        t = np.linspace(-0.5, 0.5, 16)
        xs = cx + t * length * np.cos(angle) - bend * (1 - 4 * t**2) * np.sin(angle)
        ys = cy + t * length * np.sin(angle) + bend * (1 - 4 * t**2) * np.cos(angle)
        points = np.stack([xs, ys], axis=1).round().astype(np.int32)
        cv2.polylines(mask, [points], isClosed=False, color=255, thickness=max(1, size // 48))
        target = np.full(3, 0.95 if image[cy, cx].mean() < 0.5 else 0.05, dtype=np.float32)
        alpha = 0.9
    elif defect_type == "hole":
        axes = (int(rng.uniform(0.05, 0.09) * size) + 1, int(rng.uniform(0.04, 0.07) * size) + 1)
        cv2.ellipse(mask, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 255, thickness=-1)
        target = np.zeros(3, dtype=np.float32)
        alpha = 0.92
    else:  # stain
        for _ in range(int(rng.integers(3, 6))):
            offset = rng.normal(0, 0.04 * size, size=2)
            radius = int(rng.uniform(0.03, 0.06) * size) + 1
            cv2.circle(mask, (int(cx + offset[0]), int(cy + offset[1])), radius, 255, thickness=-1)
        target = np.asarray([0.55, 0.25, 0.05], dtype=np.float32)[rng.permutation(3)] + 0.3
        alpha = 0.75
    inside = mask > 0
    out = image.copy()
    blended = (1 - alpha) * out[inside] + alpha * target
    if defect_type == "hole":  # a lit lower rim inside the hole, for a bit of depth
        blended = blended + 0.08 * (np.argwhere(inside)[:, :1] > cy)
    out[inside] = np.clip(blended, 0.0, 1.0)
    return out, mask


def _write_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        msg = f"Could not write {path}."
        raise OSError(msg)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)
