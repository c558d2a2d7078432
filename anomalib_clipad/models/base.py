# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The Lightning surface every anomalib-clipad model shares, written once.

Every model is declared as ``class PromptAD(ClipModelMixin, AnomalibModule)``: a mixin first, then anomalib's
``AnomalibModule`` *directly* (anomalib's ``get_model`` / ``list_models`` see only direct subclasses of
``AnomalibModule``, which the registration tests check; anomalib's own ``Patchcore(MemoryBankMixin, AnomalibModule)``
is built the same way). A model file keeps its explicit ``__init__`` signature (jsonargparse builds ``--model.<arg>``
from it) and what is particular to its paper: its checks, its training step and the class attributes below.

What the mixin provides:

* **Building.** ``model`` is the torch model (a :class:`~anomalib_clipad.models.interface.ClipAnomalyDetector`),
  built from the hyper-parameters where Lightning configures the model (``configure_model``), so that weight-loading
  errors reach the user unwrapped; ``load_from_checkpoint`` builds the CLIP architecture only.
* **anomalib's surface.** ``configure_pre_processor`` (bicubic resize + CLIP normalisation),
  ``configure_post_processor`` (raw probabilities for the auxiliary-data models), ``learning_type``,
  ``trainer_arguments`` and ``configure_optimizers`` (the training recipe's), ``configure_callbacks``,
  ``validation_step``, quiet ONNX/OpenVINO export.
* **State with one owner.** The model owns what it was set up or trained for: the torch model's ``class_name``, the
  images the learned state was fitted on (:attr:`ClipModelMixin.training_paths`, for the leakage guard) and the
  normal images of its reference memory (:attr:`ClipModelMixin.reference_paths`). Callbacks (the training recipe,
  the checkpoint policy) read it or ask the model to change it; nothing depends on the order of callbacks.
* **Before scoring** (:meth:`ClipModelMixin.prepare_for_scoring`, at the start of validation, test and prediction, in
  one fixed sequence): real weights; the inference state current; the requested class (re-built where the method can,
  refused where its learned state belongs to another class); the reference memory of the target (drawn, seeded, from
  its train split, for the set-up-time few-shot models); the leakage guard; readiness; and, for the models reporting
  raw probabilities, thresholds from a held-out split of the target; with ``calibration="normal_only"``, every
  model's thresholds (and normalisation) from held-out normal images of the target at a chosen false-alarm rate
  (:mod:`anomalib_clipad.training.normal_calibration`), stored in the learned-state file and the checkpoint.
* **The learned-state file** (:mod:`anomalib_clipad.models.learned_state`): written after every fit or few-shot
  set-up to ``<run>/weights/learned_state.pt``, and again with the thresholds once a test has calibrated them (a
  held-out split's or normal-only ones); ``learned_state=<file>`` scores from it with no training, and
  ``anomalib predict --data <folder>`` with its thresholds (a folder has no validation split to calibrate on).
* **Checkpoints** record the class and the provenance, refuse another architecture or activation
  (:class:`~anomalib_clipad.models.checkpoint_policy.ClipCheckpointPolicy`), and hold every weight.
"""

from __future__ import annotations

import csv
import inspect
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from anomalib_clipad.data.shots import draw_reference_shots
from anomalib_clipad.export import QuietExportMixin
from anomalib_clipad.models.checkpoint_policy import ClassMismatchError, ClipCheckpointPolicy
from anomalib_clipad.models.common import (
    BuiltOnFirstUse,
    build_torch_model,
    clip_pre_processor,
    clip_transform,
    load_without_original_weights,
    resolve_class_name,
    warn_if_calibrating_on_test,
)
from anomalib_clipad.models.learned_state import LEARNED_STATE_FILE, LearnedState, Provenance, read_learned_state
from anomalib_clipad.training.calibration import calibrate_on_target
from anomalib_clipad.training.distributed import gather_from_all_processes
from anomalib_clipad.training.evaluation import ComputableMetricsEvaluator
from anomalib_clipad.training.normal_calibration import (
    HELD_OUT,
    NORMAL_ONLY,
    NormalCalibration,
    calibrate_on_normal_images,
    check_calibration_arguments,
)
from anomalib_clipad.training.progress import InferenceTiming
from anomalib_clipad.training.thresholds import (
    RawScorePostProcessor,
    get_thresholds,
    set_normalization,
    set_thresholds,
)

logger = logging.getLogger(__name__)

ANOMALIB_COMPONENTS = ("pre_processor", "post_processor", "evaluator", "visualizer")
"""Constructor arguments that are anomalib components, not hyper-parameters."""

TRAINING_PATHS_KEY = "clipad_training_paths"
REFERENCE_PATHS_KEY = "clipad_reference_paths"
PREDICTIONS_FILE = "predictions.csv"
"""Where ``predict`` writes every image's score and decision, relative to the run's folder."""
CALIBRATION_KEY = "clipad_normal_calibration"
TRAINING_CLASSES_KEY = "clipad_training_classes"


class ClipModelMixin(QuietExportMixin):
    """The shared Lightning surface of anomalib-clipad's models (see the module docstring).

    A model sets these class attributes:

    Attributes:
        torch_model_class: the torch model it builds from its hyper-parameters.
        default_image_size: the input size of :meth:`configure_pre_processor` when none is given.
        raw_scores: ``True`` when scores are probabilities reported raw, with thresholds calibrated on the target
            (the auxiliary-data models); ``False``: anomalib's post-processor with normalisation.
        learns_per_class: ``True`` when the learned state belongs to one class (PromptAD, DevPrompt): the class is set
            before training and another class is refused; ``False``: any class is set up at scoring.
        needs_class_name: ``False`` when the method scores without a class name (AnomalyCLIP's object-agnostic
            prompts); the class is then recorded when known.
        draws_references: ``True`` when the reference memory of ``k_shot`` normal images is drawn from the target's
            train split at scoring (WinCLIP+, SimCLIP+); PromptAD's and DevPrompt's memories come from their shots.
        renamed_torch_arguments: torch-model argument -> hyper-parameter, where the names differ.
    """

    torch_model_class: ClassVar[type[torch.nn.Module]]
    default_image_size: ClassVar[int]
    raw_scores: ClassVar[bool] = False
    learns_per_class: ClassVar[bool] = False
    needs_class_name: ClassVar[bool] = True
    draws_references: ClassVar[bool] = False
    renamed_torch_arguments: ClassVar[dict[str, str]] = {}

    model = BuiltOnFirstUse()

    def __init__(
        self,
        *,
        image_size: int,
        pre_processor: PreProcessor | bool,
        post_processor: PostProcessor | bool,
        evaluator: Any,
        visualizer: Any,
    ) -> None:
        if isinstance(pre_processor, bool) and pre_processor:
            pre_processor = self.configure_pre_processor(image_size)
        super().__init__(  # type: ignore[call-arg]
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        # the hyper-parameters are the arguments of the model's own __init__ (the frame that called this one)
        self.save_hyperparameters(ignore=list(ANOMALIB_COMPONENTS), frame=inspect.currentframe().f_back)  # type: ignore[attr-defined]
        check_calibration_arguments(self.calibration_mode, self.hparams.get("false_alarm_rate", 0.01))
        name = type(self).__name__
        self.recipe: Callback | None = None
        """The training recipe the model owns (``None``: nothing is trained)."""
        self.training_paths: set[str] = set()
        """The images the learned state was fitted on (shots or auxiliary images): the leakage guard refuses them."""
        self.training_classes: set[str] = set()
        """The classes of those images."""
        self.reference_paths: list[str] = []
        """The normal images of the reference memory, in memory order."""
        self.normal_calibration: NormalCalibration | None = None
        """The thresholds set from normal images only (``calibration="normal_only"``), with their source."""
        self.timing = InferenceTiming(name)
        self.checkpoint_policy = ClipCheckpointPolicy(name, requested_quick_gelu=self.hparams.get("quick_gelu"))
        self._references_class: str | None = None
        self._inference_state_stale = False
        self._thresholds_written: dict[str, Any] | None = None  # those of the last learned-state file written

    # ------------------------------------------------------------------------------------------------- building
    def configure_model(self) -> None:
        """Build the torch model and its CLIP (once); with ``learned_state``, score from that file."""
        if self._modules.get("model") is not None:
            return
        source = self.hparams.get("learned_state")
        for path in [source] if isinstance(source, str | Path) else list(source or []):
            if not Path(path).expanduser().is_file():  # checked here, not in __init__: the CLI shows this error last
                msg = f"The learned-state file {str(path)!r} of {type(self).__name__} does not exist (`learned_state`)."
                raise FileNotFoundError(msg)
        build_torch_model(self, self.torch_model_class, **self.renamed_torch_arguments)
        if source is not None:
            state = read_learned_state(source, self.model, type(self).__name__)
            self.adopt_learned_state(state)
            logger.info("%s scores with the learned state of %s (no training).", type(self).__name__, source)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:
        """Lightning's ``load_from_checkpoint``, building the CLIP architecture only (every weight is in it).

        The checkpoint holds the learned state too, so a ``learned_state`` file the model was built with is not read
        again (it may have moved).
        """
        kwargs.setdefault("learned_state", None)
        return load_without_original_weights(super().load_from_checkpoint, checkpoint_path, *args, **kwargs)  # type: ignore[misc]

    # ------------------------------------------------------------------------------------------------- anomalib
    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | int | None = None) -> PreProcessor:
        """Bicubic resize to the model input (the model's default size unless given) and CLIP mean/std."""
        return clip_pre_processor(image_size if image_size is not None else cls.default_image_size)

    @classmethod
    def configure_post_processor(cls) -> PostProcessor:
        """Anomalib's post-processor; for :attr:`raw_scores` models, raw probabilities thresholded at raw thresholds."""
        return RawScorePostProcessor() if cls.raw_scores else PostProcessor()

    @staticmethod
    def configure_evaluator() -> ComputableMetricsEvaluator:
        """Anomalib's default metrics; those no batch fed (pixel metrics without masks) are left out, said once."""
        return ComputableMetricsEvaluator.default()

    @property
    def learning_type(self) -> LearningType:
        """``ONE_CLASS`` when trained through Lightning's loop; else ``FEW_SHOT`` with shots, ``ZERO_SHOT`` without."""
        if self.recipe is not None:
            return LearningType.ONE_CLASS
        return LearningType.FEW_SHOT if self.hparams.get("k_shot") else LearningType.ZERO_SHOT

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """The training recipe's (fixed epochs, no sanity validation); none when nothing is trained."""
        return dict(self.recipe.trainer_arguments) if self.recipe is not None else {}

    def configure_callbacks(self) -> list[Callback]:
        """Anomalib's component callbacks, the training recipe, the checkpoint policy and the timing."""
        owned = [self.recipe, self.checkpoint_policy, self.timing]
        return [*super().configure_callbacks(), *(callback for callback in owned if callback is not None)]  # type: ignore[misc]

    def configure_optimizers(self) -> Any:
        """The recipe's optimiser on the trainable parameters; nothing when nothing is trained."""
        if self.recipe is None:
            return None
        parameters = [parameter for parameter in self.model.parameters() if parameter.requires_grad]
        return self.recipe.configure_optimizers(parameters, self.trainer)

    def setup(self, stage: str) -> None:
        """Build the model; before training a per-class model, set its class; warn when calibrating on the test set.

        Raises:
            ValueError: training a per-class model without a class name.
        """
        self.configure_model()
        if self.calibration_mode != NORMAL_ONLY:  # normal-only thresholds never come from the validation split
            warn_if_calibrating_on_test(self._trainer, type(self).__name__)
        if stage == "fit" and self.learns_per_class:
            self.set_class(resolve_class_name(self.hparams.get("class_name"), self._trainer))

    @property
    def calibration_mode(self) -> str:
        """``"held_out"`` (F1-adaptive, on a held-out split) or ``"normal_only"`` (the ``calibration`` argument)."""
        return str(self.hparams.get("calibration") or HELD_OUT)

    def val_dataloader(self) -> list:
        """No validation data of the model's own (Lightning asks the model only when there is no datamodule).

        ``anomalib predict --data <folder>`` of a zero-/few-shot model without ``--ckpt_path`` validates first, to
        calibrate thresholds, with no datamodule. When the thresholds are calibrated already (the learned-state file
        holds them) there is nothing to validate: no batches, and the thresholds stay.

        Raises:
            ValueError: validating without a datamodule when the thresholds are not calibrated, naming the fixes.
        """
        trainer = self._trainer
        validating = trainer is not None and trainer.state.fn == TrainerFn.VALIDATING
        if not validating or self.post_processor is None:
            return []
        if self.is_calibrated:
            logger.info("%s: no validation data (a folder of images): its thresholds stay.", type(self).__name__)
            return []
        msg = (
            f"{type(self).__name__}: `anomalib predict` on a folder of images calibrates the thresholds on a "
            "validation split first, and a folder has none; this model holds no calibrated thresholds. Predict from "
            "a run that calibrated them: its checkpoint (`--ckpt_path <run>/weights/lightning/model.ckpt`) or its "
            "learned-state file (`--model.learned_state <run>/weights/learned_state.pt`) written by `anomalib test` "
            "with a held-out split (`--data.val_split_mode from_test`) or with `--model.calibration normal_only`; "
            "or pass a datamodule with a validation split (e.g. `--data MVTecAD --data.category <name>`) instead of "
            "the folder."
        )
        raise ValueError(msg)

    def _post_processor_thresholds(self) -> dict[str, float] | None:
        """The post-processor's image and pixel thresholds (NaN until set); ``None`` when it has none."""
        post_processor = self.post_processor
        if post_processor is None or not hasattr(post_processor, "_image_threshold"):
            return None
        return get_thresholds(post_processor)

    @property
    def is_calibrated(self) -> bool:
        """Whether the post-processor's thresholds are set (none is NaN).

        Set by a calibration here, or restored from a learned-state file or a checkpoint; normal-only thresholds are
        set on the post-processor too.
        """
        thresholds = self._post_processor_thresholds()
        return thresholds is not None and not any(math.isnan(value) for value in thresholds.values())

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> Batch:
        """Image scores and maps of a batch (anomalib calibrates thresholds and normalisation on these)."""
        del args, kwargs
        return batch.update(**self.model(batch.image)._asdict())

    # ------------------------------------------------------------------------------------------------- the class
    def anomaly_states(self, class_name: str) -> Sequence[str] | None:
        """The class-specific anomalous states of the prompts (``None``: the method's own); models override."""
        del class_name
        return None

    def set_class(self, class_name: str) -> None:
        """Set the torch model up for ``class_name`` (its prompts or text prototypes); its text side is then stale."""
        self.model.set_class(class_name, self.anomaly_states(class_name))
        self._inference_state_stale = True

    def _prepare_class(self, trainer: Trainer | None) -> str | None:
        """Set up, re-build for, or refuse the requested class; return it (``None`` for class-agnostic scoring).

        Raises:
            ClassMismatchError: the learned state belongs to another class and cannot be re-built for it.
            ValueError: no class name can be found and the model has none.
        """
        model = self.model
        try:
            requested = resolve_class_name(self.hparams.get("class_name"), trainer)
        except ValueError:
            if model.class_name is not None or not self.needs_class_name:
                return model.class_name
            raise
        current = model.class_name
        if current is not None and _same_class(current, requested):
            if not model.is_ready and not self.learns_per_class:
                self.set_class(requested)
            return requested
        if current is not None and self.learns_per_class:
            msg = (
                f"This {type(self).__name__} was trained for class {current!r}, but is asked to score class "
                f"{requested!r} (from `class_name` or the datamodule's category): its learned prompts and memory "
                f"belong to {current!r}. Train a model on {requested!r} (e.g. `anomalib train ... --data.category "
                f"{requested}`), or test this one on {current!r}."
            )
            raise ClassMismatchError(msg)
        learned_on = f"; learned on: {', '.join(sorted(self.training_classes))}" if self.training_classes else ""
        if current is not None:
            message = f"re-building for class {requested!r} (it was set up for {current!r}{learned_on})"
        else:
            message = f"set up for class {requested!r}" + (f" ({learned_on[2:]})" if learned_on else "")
        logger.info("%s: %s.", type(self).__name__, message)
        self.set_class(requested)
        return requested

    # ------------------------------------------------------------------------------------------------- references
    def _prepare_references(self, trainer: Trainer | None, class_name: str | None) -> None:
        """Draw the ``k_shot`` normal reference images of the target and fill the memory (kept if they are the same).

        Raises:
            ValueError: no source of reference images and no memory restored for the class.
        """
        k_shot = int(self.hparams.get("k_shot") or 0)
        if not (self.draws_references and k_shot):
            return
        transform = getattr(self.pre_processor, "transform", None) or clip_transform(self.hparams.image_size)
        shots = draw_reference_shots(
            trainer,
            k_shot,
            int(self.hparams.get("seed") or 0),
            transform,
            folder=self.hparams.get("few_shot_source"),
        )
        if shots is None:
            if self.model.references_ready and self._references_class == class_name:
                return
            datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
            msg = (
                f"{type(self).__name__} with k_shot={k_shot} draws its {k_shot} normal reference image(s) from the "
                "train split of the target datamodule, but "
                + (f"{type(datamodule).__name__} has no train split" if datamodule is not None else "there is none")
                + f", and no reference memory of class {class_name!r} was restored. Test with a datamodule that has "
                "a train split of the target (e.g. `--data MVTecAD --data.category ...`), pass a folder of normal "
                "images (`few_shot_source`, where the model has it), or a checkpoint or learned-state file of that "
                "class."
            )
            raise ValueError(msg)
        if shots.paths == self.reference_paths and self._references_class == class_name and self.model.references_ready:
            return
        self.model.set_references(shots.images.to(self.device))
        self.reference_paths = list(shots.paths)
        self._references_class = class_name
        logger.info(
            "%s: reference memory of class %r from %d normal image(s) (seed %s): %s",
            type(self).__name__,
            class_name,
            k_shot,
            self.hparams.get("seed"),
            shots.paths,
        )

    # ------------------------------------------------------------------------------------------------- scoring
    def prepare_for_scoring(self, trainer: Trainer | None, stage: str) -> None:
        """Everything that must hold before images are scored, in one fixed order (see the module docstring).

        Args:
            trainer: the trainer (its datamodule is the target).
            stage: ``"validate"``, ``"test"`` or ``"predict"``.
        """
        self.checkpoint_policy.check_weights(self)
        self.refresh_inference_state()
        class_before, references_before = self.model.class_name, list(self.reference_paths)
        class_name = self._prepare_class(trainer)
        self.refresh_inference_state()
        self._prepare_references(trainer, class_name)
        if self.training_paths and stage == "test":
            self._check_no_leakage(trainer)
        self.model.require_ready()
        calibrated = False
        if self.calibration_mode == NORMAL_ONLY:
            calibrated = self._calibrate_on_normal_images(trainer, stage)
        elif stage == "test" and trainer is not None:
            if self.raw_scores:
                calibrate_on_target(trainer, self)
            # the others' thresholds come from anomalib's validation before the test; all are kept in the file, so
            # that an export, or a prediction on a folder of images, can use them
            thresholds = self.held_out_thresholds()
            calibrated = thresholds is not None and thresholds != self._thresholds_written
        set_up_now = self.recipe is None and self.model.class_name != class_before
        if set_up_now or calibrated or self.reference_paths != references_before:  # keep what was made now
            self.write_learned_state(trainer)

    def _calibrate_on_normal_images(self, trainer: Trainer | None, stage: str) -> bool:
        """Set the normal-only thresholds (:mod:`~anomalib_clipad.training.normal_calibration`); whether they changed.

        At validation (where a checkpoint of a set-up or trained model is written) a failure is only a warning: the
        thresholds are set again, or the error raised, before testing or predicting.
        """
        try:
            calibration = calibrate_on_normal_images(trainer, self)
        except ValueError as error:
            if stage != "validate":
                raise
            logger.warning("%s: normal-only thresholds not set at validation: %s", type(self).__name__, error)
            return False
        changed = calibration != self.normal_calibration
        self.normal_calibration = calibration
        return changed

    def on_validation_epoch_end(self) -> None:
        """With ``calibration="normal_only"``, keep the normal-only thresholds (not the validation split's F1 ones).

        anomalib's post-processor sets its thresholds and normalisation from the validation split at the end of the
        epoch (its callback hook runs before this one); the checkpoint written after validation holds these.
        """
        super().on_validation_epoch_end()  # type: ignore[misc]
        calibration = self.normal_calibration
        if self.calibration_mode == NORMAL_ONLY and calibration is not None and self.post_processor is not None:
            calibration.apply_to(self.post_processor)

    def _check_no_leakage(self, trainer: Trainer | None) -> None:
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        if datamodule is None or getattr(datamodule, "test_data", None) is None:
            return
        from anomalib_clipad.data.auxiliary import check_no_overlap

        check_no_overlap(sorted(self.training_paths), datamodule, train_name=f"{type(self).__name__}'s training images")

    def on_validation_start(self) -> None:
        """Prepare for scoring (see :meth:`prepare_for_scoring`)."""
        super().on_validation_start()  # type: ignore[misc]
        self.prepare_for_scoring(self._trainer, "validate")

    def on_test_start(self) -> None:
        """Prepare for scoring (see :meth:`prepare_for_scoring`)."""
        super().on_test_start()  # type: ignore[misc]
        self.prepare_for_scoring(self._trainer, "test")

    def on_predict_start(self) -> None:
        """Prepare for scoring (see :meth:`prepare_for_scoring`); start the table of predictions."""
        super().on_predict_start()  # type: ignore[misc]
        self.prepare_for_scoring(self._trainer, "predict")
        self._predictions: list[tuple[str, float, int | str]] = []

    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Note each image's score and decision (anomalib's post-processor has thresholded them by now)."""
        del batch, batch_idx, dataloader_idx
        labels = getattr(outputs, "pred_label", None)
        for index, (path, score) in enumerate(zip(outputs.image_path, outputs.pred_score.flatten(), strict=True)):
            label = int(labels.flatten()[index]) if labels is not None else ""
            self._predictions.append((str(path), float(score), label))

    def on_predict_end(self) -> None:
        """Write every image's score and decision to ``<run>/predictions.csv`` (the overlays are anomalib's images)."""
        root = getattr(self._trainer, "default_root_dir", None)
        if root is None or not getattr(self._trainer, "is_global_zero", True) or not self._predictions:
            return
        path = Path(root) / PREDICTIONS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["image_path", "pred_score", "pred_label"])
            writer.writerows(self._predictions)
        anomalous = sum(1 for *_, label in self._predictions if label == 1)
        logger.info(
            "%s: %d image(s) scored, %d anomalous; scores and decisions in %s.",
            type(self).__name__,
            len(self._predictions),
            anomalous,
            path,
        )

    # ------------------------------------------------------------------------------------------------- training
    def record_training_images(self, paths: Sequence[str], classes: Sequence[str] = ()) -> None:
        """Note the images (and their classes) a training step fits the learned state on; it is now stale.

        The training recipe calls this from every step. Under DDP every process records the images of all processes'
        batches (:func:`~anomalib_clipad.training.distributed.gather_from_all_processes`): process 0 writes the
        checkpoint and the learned-state file, and each process's leakage guard must know every training image.
        """
        step = ([str(path) for path in paths], [str(name) for name in classes])
        for process_paths, process_classes in gather_from_all_processes(step):  # one exchange a step
            self.training_paths.update(process_paths)
            self.training_classes.update(process_classes)
        self._inference_state_stale = True

    def use_shots_as_references(self, paths: Sequence[str], features: Any) -> None:
        """Fill the reference memory with the encoded training shots (PromptAD, DevPrompt); the recipe calls this."""
        self.model.set_references(features)
        self.reference_paths = [str(path) for path in paths]
        self._references_class = self.model.class_name

    def refresh_inference_state(self) -> bool:
        """Recompute the state scored against (text features) from the learned parameters, if a step changed them.

        Returns:
            Whether it was recomputed.
        """
        if not self._inference_state_stale:
            return False
        if self.model.class_name is not None or not self.needs_class_name:
            self.model.update_text_features()  # class-aware text sides wait for a class (set_class computes them)
        self._inference_state_stale = False
        return True

    def on_train_epoch_end(self) -> None:
        """After the last epoch, refresh the inference state (the checkpoint written then holds the final state)."""
        trainer = self._trainer
        if trainer is not None and trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs:
            self.refresh_inference_state()

    def on_train_end(self) -> None:
        """Refresh the inference state (also when stopped early) and write the learned-state file."""
        self.refresh_inference_state()
        self.write_learned_state(self._trainer)

    # ------------------------------------------------------------------------------------------------- learned state
    def learned_state(self) -> LearnedState:
        """What the model scores with besides the public CLIP weights, with its provenance.

        The state is class-specific (it records the class) when it belongs to one: learned for a class, set up for
        one (nothing trained), or holding a reference memory; learned weights that serve any class record none.
        """
        class_specific = self.needs_class_name and (
            self.learns_per_class or self.recipe is None or bool(self.reference_paths)
        )
        state = LearnedState.from_model(
            self.model,
            type(self).__name__,
            class_name=self.model.class_name if class_specific else None,
            provenance=Provenance(
                training_paths=tuple(sorted(self.training_paths)),
                reference_paths=tuple(self.reference_paths),
                training_classes=tuple(sorted(self.training_classes)),
            ),
        )
        calibration = self.normal_calibration
        if calibration is not None and calibration.belongs_to(self.model.class_name):
            state.thresholds = calibration.to_dict()
        elif calibration is None:
            state.thresholds = self.held_out_thresholds()
        return state

    def held_out_thresholds(self) -> dict[str, Any] | None:
        """The post-processor's calibrated thresholds (and normalisation range) from a held-out split, if any."""
        thresholds = self._post_processor_thresholds()
        if thresholds is None or not self.is_calibrated:
            return None
        post_processor = self.post_processor
        content: dict[str, Any] = {"source": HELD_OUT, **thresholds, "class_name": self.model.class_name}
        if post_processor.enable_normalization:
            content["normalization"] = {
                name: float(getattr(post_processor, name))
                for name in ("image_min", "image_max", "pixel_min", "pixel_max")
            }
        return content

    def adopt_learned_state(self, state: LearnedState) -> None:
        """Load a learned state (already checked against the model) and its provenance."""
        state.apply_to(self.model)
        self.training_paths.update(state.provenance.training_paths)
        self.training_classes.update(state.provenance.training_classes)
        self.reference_paths = list(state.provenance.reference_paths)
        self._references_class = state.class_name if self.reference_paths else None
        self._adopt_normal_calibration(state.thresholds)

    def _adopt_normal_calibration(self, content: dict[str, Any] | None) -> None:
        """Restore stored thresholds: normal-only ones (this mode's), or a held-out split's; set them."""
        if content is not None and content.get("source") == HELD_OUT and self.post_processor is not None:
            set_thresholds(self.post_processor, content["image"], content["pixel"])
            if self.post_processor.enable_normalization and content.get("normalization"):
                set_normalization(
                    self.post_processor,
                    (content["normalization"]["image_min"], content["normalization"]["image_max"]),
                    (content["normalization"]["pixel_min"], content["normalization"]["pixel_max"]),
                )
            logger.info(
                "%s: thresholds of the learned state (held-out split of class %r): image %.4f, pixel %.4f.",
                type(self).__name__,
                content.get("class_name"),
                content["image"],
                content["pixel"],
            )
            return
        calibration = NormalCalibration.from_dict(content)
        if calibration is None:
            return
        self.normal_calibration = calibration
        if self.post_processor is not None:
            calibration.apply_to(self.post_processor)

    def write_learned_state(self, trainer: Trainer | None) -> Path | None:
        """Write the learned state to ``<run>/weights/learned_state.pt`` (on the rank-zero process).

        Returns:
            The path written, or ``None`` (no trainer or run folder, another rank, or a set-up model not set up yet).
        """
        root = getattr(trainer, "default_root_dir", None)
        if root is None or not getattr(trainer, "is_global_zero", True):
            return None
        if self.recipe is None and not self.model.is_ready:  # a set-up model has nothing until it is set up
            return None
        state = self.learned_state()
        self._thresholds_written = state.thresholds
        return state.save(Path(root) / LEARNED_STATE_FILE)

    # ------------------------------------------------------------------------------------------------- export
    def warn_if_uncalibrated(self) -> bool:
        """Say so when the thresholds an export bakes into the graph were never calibrated; whether it did."""
        thresholds = self._post_processor_thresholds()
        if thresholds is None or self.is_calibrated:
            return False
        fallback = (
            "labels and masks use the probability 0.5"
            if self.raw_scores
            else "labels and masks are not meaningful (anomalib's thresholds are NaN)"
        )
        logger.warning(
            "%s is exported with uncalibrated thresholds (image %s, pixel %s): %s. Calibrate first (a test with a "
            "held-out split, `--data.val_split_mode from_test`, or `--model.calibration normal_only`), then export "
            "from that run's checkpoint or its learned-state file (`--model.learned_state <run>/weights/"
            "learned_state.pt`).",
            type(self).__name__,
            thresholds["image"],
            thresholds["pixel"],
            fallback,
        )
        return True

    def to_torch(self, *args: Any, **kwargs: Any) -> Any:
        """Anomalib's torch export, after :meth:`warn_if_uncalibrated`."""
        self.warn_if_uncalibrated()
        return super().to_torch(*args, **kwargs)  # type: ignore[misc]

    def to_onnx(self, *args: Any, **kwargs: Any) -> Any:
        """The quiet ONNX export, after :meth:`warn_if_uncalibrated` (once, also inside an OpenVINO export)."""
        if not getattr(self, "_exporting_openvino", False):
            self.warn_if_uncalibrated()
        return super().to_onnx(*args, **kwargs)

    def to_openvino(self, *args: Any, **kwargs: Any) -> Any:
        """The quiet OpenVINO export, after :meth:`warn_if_uncalibrated`."""
        self.warn_if_uncalibrated()
        self._exporting_openvino = True
        try:
            return super().to_openvino(*args, **kwargs)
        finally:
            self._exporting_openvino = False

    # ------------------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the class and the provenance; the saved weights hold the current inference state."""
        if self.refresh_inference_state():
            checkpoint["state_dict"] = {**checkpoint.get("state_dict", {}), **self.state_dict()}
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        self.checkpoint_policy.save(checkpoint, self.model.class_name)
        checkpoint[TRAINING_PATHS_KEY] = sorted(self.training_paths)
        checkpoint[TRAINING_CLASSES_KEY] = sorted(self.training_classes)
        checkpoint[REFERENCE_PATHS_KEY] = list(self.reference_paths)
        if self.normal_calibration is not None:
            checkpoint[CALIBRATION_KEY] = self.normal_calibration.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse another architecture or activation; restore the class and the provenance."""
        class_name = self.checkpoint_policy.load(checkpoint, self)
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        self.model.class_name = class_name
        self.training_paths = set(checkpoint.get(TRAINING_PATHS_KEY, []))
        self.training_classes = set(checkpoint.get(TRAINING_CLASSES_KEY, []))
        self.reference_paths = list(checkpoint.get(REFERENCE_PATHS_KEY, []))
        self._references_class = class_name if self.reference_paths else None
        self._adopt_normal_calibration(checkpoint.get(CALIBRATION_KEY))
        self._inference_state_stale = False


def _same_class(first: str, second: str) -> bool:
    from anomalib_clipad.components.prompts import prompt_class_name

    return prompt_class_name(first) == prompt_class_name(second)
