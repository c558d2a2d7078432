# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Have Lightning's fit loop read a loader the recipe derived, without changing the user's datamodule.

When a datamodule is given to ``Trainer.fit``, Lightning reads ``datamodule.train_dataloader()``, and the
LightningModule's own ``train_dataloader`` hook is ignored. Replacing the datamodule's method, dataset or batch size
would survive the fit and surprise the user (a later ``Engine.train`` on the same datamodule would see only k images).
Instead the recipe points the fit loop's data source at its own loader, which Lightning supports as a source
(``_DataLoaderSource`` accepts a DataLoader instance); this module is the one place that touches that attribute.
"""

from __future__ import annotations

from lightning.pytorch import Trainer
from lightning.pytorch.trainer.connectors.data_connector import _DataLoaderSource
from torch.utils.data import DataLoader


def serve_train_loader(trainer: Trainer, loader: DataLoader | None) -> None:
    """Make ``loader`` the training data of the running fit (call it during ``setup("fit")``).

    Raises:
        RuntimeError: no loader, or this Lightning version has no fit-loop data source to point at it.
    """
    fit_loop = getattr(trainer, "fit_loop", None)
    if loader is None or not hasattr(fit_loop, "_data_source"):
        msg = "Cannot serve the training loader: no loader, or Lightning's fit loop has no data source attribute."
        raise RuntimeError(msg)
    fit_loop._data_source = _DataLoaderSource(loader, "train_dataloader")
