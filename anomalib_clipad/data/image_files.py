# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Read an image or mask file; a file that cannot be decoded is an error that names it.

anomalib's ``read_image`` / ``read_mask`` raise PIL's error as it is: a PNG cut in half stops a run with
``OSError: image file is truncated`` and no file name, somewhere among thousands of images. Our datamodule
(:class:`~anomalib_clipad.data.auxiliary.AuxiliaryData`) and the reference-image reads (:mod:`.shots`) read through
:func:`read_image_file` and :func:`read_mask_file`, which raise :class:`UnreadableImageError` naming the file.

Example:
    >>> from anomalib_clipad.data.image_files import read_image_file
    >>> image = read_image_file("datasets/MVTecAD/bottle/test/good/000.png")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from anomalib.data.utils import read_image, read_mask

__all__ = ["UnreadableImageError", "read_image_file", "read_mask_file"]


class UnreadableImageError(OSError):
    """An image or mask file that does not exist or cannot be decoded (truncated, corrupt, not an image)."""


def _read(path: str | Path, reader: Callable[..., torch.Tensor], what: str) -> torch.Tensor:
    try:
        return reader(path, as_tensor=True)
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, zlib.error, ... for a broken file
        if not Path(path).is_file():
            msg = f"The {what} file {path} does not exist (moved or deleted after the images were listed?)."
        else:
            msg = (
                f"Cannot read the {what} file {path}: it is truncated, corrupt or not an image "
                f"({type(error).__name__}: {error}). Replace the file or remove it from the folder."
            )
        raise UnreadableImageError(msg) from error


def read_image_file(path: str | Path) -> torch.Tensor:
    """Read an image like anomalib's ``read_image(path, as_tensor=True)`` (``(3, H, W)`` in ``[0, 1]``).

    Raises:
        UnreadableImageError: the file is missing, truncated, corrupt or not an image.
    """
    return _read(path, read_image, "image")


def read_mask_file(path: str | Path) -> torch.Tensor:
    """Read a mask like anomalib's ``read_mask(path, as_tensor=True)`` (a ``Mask``).

    Raises:
        UnreadableImageError: the file is missing, truncated, corrupt or not an image.
    """
    return _read(path, read_mask, "mask")
