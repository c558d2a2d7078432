# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Logging of training losses, the same way for every recipe."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule


def log_losses(pl_module: LightningModule, losses: dict[str, torch.Tensor], batch_size: int) -> None:
    """Log ``train_loss`` (progress bar) and every other term as ``train_<name>``, per epoch."""
    terms = {f"train_{name}": value.detach() for name, value in losses.items() if name != "loss"}
    pl_module.log_dict(terms, batch_size=batch_size, on_step=False, on_epoch=True)
    pl_module.log("train_loss", losses["loss"].detach(), batch_size=batch_size, prog_bar=True, on_epoch=True)
