# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Keep a trained model's inference state (e.g. text prototypes) in step with its learnable parameters.

Prompt-learning models score against state computed from their parameters (the text features of the learned
prompts), not against the parameters themselves. After a training step changed the parameters, that state is stale;
:class:`InferenceStateRefresh` recomputes it once, just before it is used or saved: before validation, testing and
prediction, before a checkpoint is written, after the last epoch and when training ends. Both training recipes
(:mod:`.k_shot`, :mod:`.auxiliary`) are such a callback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class InferenceStateRefresh(Callback):
    """Run ``refresh`` when the parameters changed since the last run, before the state is read or saved.

    Args:
        refresh: recomputes the model's inference state from its current parameters.
    """

    def __init__(self, refresh: Callable[[], None]) -> None:
        self.refresh = refresh
        self.stale = False

    def mark_stale(self) -> None:
        """Note that a training step is changing the parameters."""
        self.stale = True

    def refresh_if_stale(self) -> None:
        """Run ``refresh`` if a training step changed the parameters since the last refresh."""
        if self.stale:
            self.refresh()
            self.stale = False

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Refresh after the last epoch, so that the checkpoint written then holds the final state."""
        del pl_module
        if trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs:
            self.refresh_if_stale()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Refresh when training stops (also when stopped early)."""
        del trainer, pl_module
        self.refresh_if_stale()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The state must reflect the current parameters before scoring."""
        del trainer, pl_module
        self.refresh_if_stale()

    on_test_start = on_validation_start
    on_predict_start = on_validation_start

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """The saved state must reflect the current parameters."""
        del trainer, pl_module, checkpoint
        self.refresh_if_stale()
