# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Reload trained models without their original CLIP weights.

A checkpoint of our models holds every CLIP weight (the frozen towers are part of the state dict), so reloading it
needs only the architecture. :class:`ClipCheckpointMixin` makes that the rule:

* ``Model.load_from_checkpoint(path)`` (and therefore ``anomalib export --ckpt_path``) builds the model with
  ``pretrained="checkpoint"`` (:data:`~anomalib_clipad.clip.loading.FROM_CHECKPOINT`) unless told otherwise: no
  download, no weight file, no network, which is what an offline inspection PC needs;
* on the command line, ``anomalib test|predict --ckpt_path ... --model.pretrained checkpoint`` does the same;
* whether the CLIP uses QuickGELU (OpenAI weights) is not in a state dict, so the model records it as the
  ``quick_gelu`` hyper-parameter and a checkpoint with the other activation is refused with a clear error;
* a model built with ``pretrained="checkpoint"`` refuses to train, validate, test or predict unless a checkpoint was
  actually loaded (its random weights would give meaningless scores).

Use it before ``AnomalibModule`` in the bases, and call :meth:`record_clip_activation` after building the CLIP.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from anomalib_clipad.clip.loading import FROM_CHECKPOINT, PretrainedWeightsError, uses_quick_gelu
from anomalib_clipad.models.common import refuse_other_checkpoint_hparams


class ClipCheckpointMixin:
    """Mixin for an ``AnomalibModule`` whose state dict holds its whole CLIP (see the module docstring)."""

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:
        """Lightning's ``load_from_checkpoint``, building the CLIP architecture only (weights from the checkpoint).

        Pass ``pretrained=...`` to build it from a tag or file first anyway.
        """
        kwargs.setdefault("pretrained", FROM_CHECKPOINT)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)  # type: ignore[misc]

    def record_clip_activation(self, clip: nn.Module) -> None:
        """Store whether ``clip`` uses QuickGELU as the ``quick_gelu`` hyper-parameter (saved in checkpoints)."""
        self.hparams["quick_gelu"] = uses_quick_gelu(clip)  # type: ignore[attr-defined]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint whose CLIP used the other activation; note that the weights were restored.

        Raises:
            ValueError: the checkpoint's ``quick_gelu`` differs from this model's.
        """
        refuse_other_checkpoint_hparams(checkpoint, self.hparams, ("quick_gelu",), type(self).__name__)  # type: ignore[attr-defined]
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        self.__dict__["_clip_weights_restored"] = True

    def check_clip_weights(self) -> None:
        """Raise if the CLIP was built for checkpoint weights that were never loaded.

        Raises:
            PretrainedWeightsError: ``pretrained="checkpoint"`` and no checkpoint was loaded.
        """
        if self.hparams.get("pretrained") == FROM_CHECKPOINT and not self.__dict__.get("_clip_weights_restored"):  # type: ignore[attr-defined]
            msg = (
                f"{type(self).__name__} was built with pretrained={FROM_CHECKPOINT!r} (weights from a trained "
                "checkpoint), but no checkpoint was loaded: pass `--ckpt_path` (or use `load_from_checkpoint`), or "
                "give a pretrained tag or weight file."
            )
            raise PretrainedWeightsError(msg)

    def on_train_start(self) -> None:
        """The CLIP weights must be real before training."""
        self.check_clip_weights()
        super().on_train_start()  # type: ignore[misc]

    def on_validation_start(self) -> None:
        """The CLIP weights must be real before validation."""
        self.check_clip_weights()
        super().on_validation_start()  # type: ignore[misc]

    def on_test_start(self) -> None:
        """The CLIP weights must be real before testing."""
        self.check_clip_weights()
        super().on_test_start()  # type: ignore[misc]

    def on_predict_start(self) -> None:
        """The CLIP weights must be real before prediction."""
        self.check_clip_weights()
        super().on_predict_start()  # type: ignore[misc]
