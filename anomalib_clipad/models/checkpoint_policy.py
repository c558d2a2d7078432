# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""What a checkpoint of one of our models must agree with before it is used, as an object each model owns.

A checkpoint of our models holds every CLIP weight (the frozen towers are part of the state dict), so reloading it
needs only the architecture: ``pretrained="checkpoint"`` (``Model.load_from_checkpoint`` uses it by default, and
``anomalib test|predict|export --ckpt_path ... --model.pretrained checkpoint`` on the command line). The
:class:`ClipCheckpointPolicy` (a Lightning ``Callback`` the model returns from ``configure_callbacks``; the model's
``on_save_checkpoint`` / ``on_load_checkpoint`` call its ``save`` / ``load``; it keeps no state of the model's)
enforces:

* **Same architecture.** Hyper-parameters that shape the weights (the torch model's ``architecture()``: backbone, image
  size, memory layers, ...) must match;
  otherwise a clear error says which, and how to build the model to match.
* **Same activation.** Whether the CLIP uses QuickGELU is not in a state dict, so models record it (``quick_gelu``).
  A model built with ``pretrained="checkpoint"`` and no explicit ``quick_gelu`` takes the checkpoint's (the
  activations hold no weights and are swapped in place); an explicit other value, or real weights of the other
  activation, are refused.
* **Real weights.** A model built with ``pretrained="checkpoint"`` refuses to train, validate, test or predict unless
  a checkpoint was actually loaded (its random weights would give meaningless scores).
* **Same class.** The checkpoint records the class its learned state belongs to; the model (its
  :meth:`~anomalib_clipad.models.base.ClipModelMixin.prepare_for_scoring`) re-builds for another class where the
  method can, with a log line, or stops with :class:`ClassMismatchError` — never a silent mismatch.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from anomalib_clipad.clip.loading import FROM_CHECKPOINT, PretrainedWeightsError, set_quick_gelu
from anomalib_clipad.components.readiness import ClassMismatchError
from anomalib_clipad.models.common import refuse_other_checkpoint_hparams

logger = logging.getLogger(__name__)

__all__ = ["CLASS_NAME_KEY", "ClassMismatchError", "ClipCheckpointPolicy"]

CLASS_NAME_KEY = "prompt_class_name"
"""Checkpoint key of the class the learned state belongs to."""


class ClipCheckpointPolicy(Callback):
    """The checkpoint rules of one model (see the module docstring); it holds no state of the model's.

    Args:
        model_name: the model, for messages.
        requested_quick_gelu: the model's ``quick_gelu`` argument as the user gave it (``None``: not given).
    """

    def __init__(
        self,
        model_name: str,
        requested_quick_gelu: bool | None,
    ) -> None:
        self.model_name = model_name
        self.requested_quick_gelu = requested_quick_gelu
        self.weights_restored = False

    # ------------------------------------------------------------------------------------------- checkpoints
    @staticmethod
    def save(checkpoint: dict[str, Any], class_name: str | None) -> None:
        """Record the class of the model's state (the model calls this from ``on_save_checkpoint``)."""
        checkpoint[CLASS_NAME_KEY] = class_name

    def load(self, checkpoint: dict[str, Any], pl_module: LightningModule) -> str | None:
        """Check a checkpoint against the model before its state dict is loaded, and adopt its activation.

        Returns:
            The class the checkpoint's state belongs to (``None``: not recorded or class-agnostic).

        Raises:
            ValueError: another architecture, or another activation that cannot be adopted.
        """
        hparams = pl_module.hparams
        # the settings that shape the learned tensors and memories: the torch model's architecture()
        architecture = [name for name in pl_module.model.architecture() if name in hparams]
        refuse_other_checkpoint_hparams(checkpoint, hparams, architecture, self.model_name)
        stored = checkpoint.get("hyper_parameters", {}).get("quick_gelu")
        current = hparams.get("quick_gelu")
        if stored is not None and current is not None and bool(stored) != bool(current):
            if hparams.get("pretrained") == FROM_CHECKPOINT and self.requested_quick_gelu is None:
                set_quick_gelu(pl_module.model, bool(stored))
                hparams["quick_gelu"] = bool(stored)
                logger.info("%s: QuickGELU=%s, as the checkpoint records.", self.model_name, bool(stored))
            else:
                refuse_other_checkpoint_hparams(checkpoint, hparams, ("quick_gelu",), self.model_name)
        self.weights_restored = True
        return checkpoint.get(CLASS_NAME_KEY)

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

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The CLIP weights must be real before training."""
        del trainer
        self.check_weights(pl_module)
