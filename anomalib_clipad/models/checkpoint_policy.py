# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""What a checkpoint of one of our models must agree with before it is used, as an object each model owns.

A checkpoint of our models holds every CLIP weight (the frozen towers are part of the state dict), so reloading it
needs only the architecture: ``pretrained="checkpoint"`` (``Model.load_from_checkpoint`` uses it by default, and
``anomalib test|predict|export --ckpt_path ... --model.pretrained checkpoint`` on the command line). The
:class:`ClipCheckpointPolicy` (a Lightning ``Callback`` the model returns from ``configure_callbacks``; the model's
``on_save_checkpoint`` / ``on_load_checkpoint`` call its ``save`` / ``load``) enforces:

* **Same architecture.** Hyper-parameters that shape the weights (backbone, image size, memory layers, ...) must match;
  otherwise a clear error says which, and how to build the model to match.
* **Same activation.** Whether the CLIP uses QuickGELU is not in a state dict, so models record it (``quick_gelu``).
  A model built with ``pretrained="checkpoint"`` and no explicit ``quick_gelu`` takes the checkpoint's (the
  activations hold no weights and are swapped in place); an explicit other value, or real weights of the other
  activation, are refused.
* **Real weights.** A model built with ``pretrained="checkpoint"`` refuses to train, validate, test or predict unless
  a checkpoint was actually loaded (its random weights would give meaningless scores).
* **Same class.** The learned state (prompts, memories) belongs to one class. Used on another one (e.g. ``anomalib
  test --data.category B`` with a checkpoint of A), the model either re-builds for the new class with a log line
  (``rebuild_for_class``, where the method can: WinCLIP+) or stops with a clear error — never a silent mismatch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from anomalib_clipad.clip.loading import FROM_CHECKPOINT, PretrainedWeightsError, set_quick_gelu
from anomalib_clipad.components.prompts import prompt_class_name
from anomalib_clipad.components.readiness import ClassMismatchError
from anomalib_clipad.models.common import refuse_other_checkpoint_hparams, resolve_class_name

logger = logging.getLogger(__name__)

__all__ = ["CLASS_NAME_KEY", "ClassMismatchError", "ClipCheckpointPolicy"]

CLASS_NAME_KEY = "prompt_class_name"
"""Checkpoint key of the class the learned state belongs to."""


class ClipCheckpointPolicy(Callback):
    """The checkpoint rules of one model (see the module docstring).

    Args:
        model_name: the model, for messages.
        architecture_hparams: hyper-parameters a checkpoint must share with the model.
        requested_quick_gelu: the model's ``quick_gelu`` argument as the user gave it (``None``: not given).
        rebuild_for_class: re-builds the model's state for another class (``None``: the state cannot be re-built,
            so using the model on another class is an error).
    """

    def __init__(
        self,
        model_name: str,
        architecture_hparams: Sequence[str],
        requested_quick_gelu: bool | None,
        rebuild_for_class: Callable[[str], None] | None = None,
    ) -> None:
        self.model_name = model_name
        self.architecture_hparams = tuple(architecture_hparams)
        self.requested_quick_gelu = requested_quick_gelu
        self.rebuild_for_class = rebuild_for_class
        self.weights_restored = False
        self.class_name: str | None = None
        """The class the model's learned or set-up state belongs to."""

    # ------------------------------------------------------------------------------------------- checkpoints
    def save(self, checkpoint: dict[str, Any]) -> None:
        """Record the class of the state (the model calls this from ``on_save_checkpoint``)."""
        checkpoint[CLASS_NAME_KEY] = self.class_name

    def load(self, checkpoint: dict[str, Any], pl_module: LightningModule) -> None:
        """Check a checkpoint against the model before its state dict is loaded, and adopt its activation and class.

        Raises:
            ValueError: another architecture, or another activation that cannot be adopted.
        """
        hparams = pl_module.hparams
        refuse_other_checkpoint_hparams(checkpoint, hparams, self.architecture_hparams, self.model_name)
        stored = checkpoint.get("hyper_parameters", {}).get("quick_gelu")
        current = hparams.get("quick_gelu")
        if stored is not None and current is not None and bool(stored) != bool(current):
            if hparams.get("pretrained") == FROM_CHECKPOINT and self.requested_quick_gelu is None:
                set_quick_gelu(pl_module.model, bool(stored))
                hparams["quick_gelu"] = bool(stored)
                logger.info("%s: QuickGELU=%s, as the checkpoint records.", self.model_name, bool(stored))
            else:
                refuse_other_checkpoint_hparams(checkpoint, hparams, ("quick_gelu",), self.model_name)
        self.class_name = checkpoint.get(CLASS_NAME_KEY, self.class_name)
        if hasattr(pl_module.model, "class_name"):
            pl_module.model.class_name = self.class_name
        self.weights_restored = True

    # ------------------------------------------------------------------------------------------- guards
    def check_weights(self, pl_module: LightningModule) -> None:
        """Raise if the CLIP was built for checkpoint weights that were never loaded.

        Raises:
            PretrainedWeightsError: ``pretrained="checkpoint"`` and no checkpoint was loaded.
        """
        if pl_module.hparams.get("pretrained") == FROM_CHECKPOINT and not self.weights_restored:
            msg = (
                f"{self.model_name} was built with pretrained={FROM_CHECKPOINT!r} (weights from a trained "
                "checkpoint), but no checkpoint was loaded: pass `--ckpt_path` (or use `load_from_checkpoint`), or "
                "give a pretrained tag or weight file."
            )
            raise PretrainedWeightsError(msg)

    def check_class(self, trainer: Trainer | None, pl_module: LightningModule) -> None:
        """Re-build for, or refuse, a class other than the one the state belongs to.

        The requested class is the model's ``class_name`` or else the datamodule's ``category``; without either,
        the state's own class is used.

        Raises:
            ClassMismatchError: another class, and the state cannot be re-built.
        """
        try:
            requested = resolve_class_name(pl_module.hparams.get("class_name"), trainer)
        except ValueError:
            return
        if self.class_name is None or prompt_class_name(requested) == prompt_class_name(self.class_name):
            return
        if self.rebuild_for_class is not None:
            logger.info(
                "%s: re-building for class %r (it was set up for %r).", self.model_name, requested, self.class_name
            )
            self.rebuild_for_class(requested)
            self.class_name = requested
            return
        msg = (
            f"This {self.model_name} was trained for class {self.class_name!r}, but is asked to score class "
            f"{requested!r} (from `class_name` or the datamodule's category): its learned prompts and memory belong to "
            f"{self.class_name!r}. Train a model on {requested!r} (e.g. `anomalib train ... --data.category "
            f"{requested}`), or test this one on {self.class_name!r}."
        )
        raise ClassMismatchError(msg)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The CLIP weights must be real before training."""
        del trainer
        self.check_weights(pl_module)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Real weights, and the class the state belongs to, before scoring."""
        self.check_weights(pl_module)
        self.check_class(trainer, pl_module)

    on_test_start = on_validation_start
    on_predict_start = on_validation_start
