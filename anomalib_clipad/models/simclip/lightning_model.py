# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

r"""SimCLIP / SimCLIP+ for anomalib: realign CLIP once on labelled auxiliary data, detect zero-/few-shot anywhere.

Deng et al., "SimCLIP: Refining Image-Text Alignment with Simple Prompts for Zero-/Few-shot Anomaly Detection",
ACM MM 2024.

Example:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from anomalib_clipad import SimCLIP
    >>> from anomalib_clipad.data import AuxiliaryData
    >>> model = SimCLIP()  # doctest: +SKIP
    >>> engine = Engine()  # doctest: +SKIP
    >>> engine.fit(model, datamodule=AuxiliaryData(dataset="Visa", root="datasets/VisA"))  # doctest: +SKIP
    >>> engine.test(model, datamodule=MVTecAD(category="screw", val_split_mode="from_test"))  # doctest: +SKIP

CLI::

    anomalib train --model SimCLIP --data anomalib_clipad.data.AuxiliaryData --data.dataset Visa \
        --data.root datasets/VisA
    anomalib test --model SimCLIP --model.pretrained checkpoint --ckpt_path <model.ckpt> \
        --data MVTecAD --data.category screw --data.val_split_mode from_test
    anomalib test --model SimCLIP --model.prompts <prompts.pt> --data MVTecAD --data.category screw
    anomalib test --model SimCLIP --model.k_shot 1 --model.prompts <prompts.pt> --data MVTecAD --data.category screw

The adapters, IPT and CLIP's two projection heads train for ``epochs`` (5) with Adam on the auxiliary data
(:class:`~anomalib_clipad.training.auxiliary.AuxiliaryDataRecipe`, which caches the frozen image features once per
image), each image with the prompts of its own class (``batch.category``); the last state is used. After training the
learned weights alone are written next to the checkpoint as a small file (``weights/prompts/prompts.pt``) that
``--model.prompts`` takes, as it takes the reference's published weights (its ``{"clip": ...}`` and
``{"trainable_linearlayer": ...}`` files, through
:func:`~anomalib_clipad.models.simclip.torch_model.convert_reference_weights`).

On a target, the text prototypes are computed for the target's class with the learned IPT (any class: a model trained
on VisA tests on any MVTec AD category, with a log line); SimCLIP+ (``k_shot >= 1``) fills its memory gallery with
``k_shot`` normal images drawn (seeded) from the target's **train** split, their paths logged and stored in the
checkpoint. Thresholds are calibrated on a held-out split of the target
(:class:`~anomalib_clipad.training.calibration.TargetCalibration`); scores are reported raw.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.models import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch import Callback, LightningModule, Trainer

from anomalib_clipad.data.shots import collect_shots
from anomalib_clipad.export import QuietExportMixin
from anomalib_clipad.models.checkpoint_policy import ClipCheckpointPolicy
from anomalib_clipad.models.common import (
    BuiltOnFirstUse,
    build_torch_model,
    clip_pre_processor,
    clip_transform,
    load_without_original_weights,
    resolve_class_name,
    warn_if_calibrating_on_test,
)
from anomalib_clipad.training.auxiliary import AuxiliaryDataRecipe
from anomalib_clipad.training.calibration import TargetCalibration
from anomalib_clipad.training.progress import InferenceTiming

from .torch_model import IMAGE_SCORE_MAPS, SimCLIPModel, convert_reference_weights

logger = logging.getLogger(__name__)

__all__ = ["SimCLIP", "load_learned_weights", "save_learned_weights"]

PROMPTS_FILE = Path("weights") / "prompts" / "prompts.pt"
"""Where training writes the learned weights, relative to the run's folder."""
FORMAT = "anomalib_clipad.simclip.weights"
FORMAT_VERSION = 1
_ANOMALYCLIP_FORMAT = "anomalib_clipad.anomalyclip.prompts"
_REFERENCE_CLIP_KEY = "clip"
_REFERENCE_ADAPTER_KEY = "trainable_linearlayer"
_REFERENCE_PATHS_KEY = "simclip_reference_paths"
_REFERENCE_CLASS_KEY = "simclip_reference_class"
_TRAINING_CLASSES_KEY = "simclip_training_classes"


# ---------------------------------------------------------------------------------------------- learned-weights files
def save_learned_weights(
    model: SimCLIPModel,
    path: str | os.PathLike,
    training_classes: Sequence[str] = (),
    training_paths: Sequence[str] = (),
) -> Path:
    """Write a model's learned weights (adapters, IPT, projections) as a small file for ``--model.prompts``.

    Format: ``{"format": "anomalib_clipad.simclip.weights", "version": 1, "weights": {name: tensor}, "backbone",
    "feature_layers", "image_size", "quick_gelu", "training_classes"}``, the names those of
    :meth:`~anomalib_clipad.models.simclip.torch_model.SimCLIPModel.learnable_state_dict`.

    Args:
        model: the torch model.
        path: where to write it (parent folders are created).
        training_classes: the classes of the training images (recorded for the logs).
        training_paths: the auxiliary training images, so that a model scoring with the file alone still refuses a
            target made of them (the leakage guard).

    Returns:
        The path written.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {name: tensor.float().contiguous() for name, tensor in model.learnable_state_dict().items()}
    content = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "weights": weights,
        "backbone": model.backbone,
        "feature_layers": list(model.feature_layers),
        "image_size": model.image_size,
        "quick_gelu": bool(model.clip_hparams.get("quick_gelu", True)),
        "training_classes": sorted(training_classes),
        "training_paths": sorted(training_paths),
    }
    torch.save(content, path)
    return path


def _read(path: Path) -> Any:
    if not path.is_file():
        msg = f"SimCLIP learned-weights file {str(path)!r} does not exist."
        raise FileNotFoundError(msg)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
        first_line = str(error).splitlines()[0][:300] if str(error) else ""
        msg = (
            f"{str(path)!r} is not a SimCLIP learned-weights file that can be read safely (weights_only=True): "
            f"{type(error).__name__}: {first_line}"
        )
        raise ValueError(msg) from error


def _check_recorded_architecture(content: Mapping[str, Any], model: SimCLIPModel, source: str) -> None:
    expected = {"backbone": model.backbone, "feature_layers": list(model.feature_layers)}
    for name, value in expected.items():
        stored = content.get(name)
        if stored is None:
            continue
        stored = list(stored) if isinstance(stored, list | tuple) else stored
        if stored != value:
            msg = (
                f"{source} holds SimCLIP weights learned with {name}={stored!r}, but this model has {name}={value!r}. "
                f"Build the model with the file's setting (CLI: `--model.{name} {stored}`)."
            )
            raise ValueError(msg)


def load_learned_weights(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    model: SimCLIPModel,
) -> dict[str, Any]:
    """Load learned weights into a model: our file, or the reference's published pair of files.

    Accepted:

    * **ours** (:func:`save_learned_weights`), one file;
    * **the reference's** (ChengHaodeng/SimCLIP ``train.py``): the CLIP file ``{"clip": state_dict}`` (its IPT and
      fine-tuned projections) and the adapter file ``{"trainable_linearlayer": state_dict}``, given as two paths in
      any order (or one file holding both keys). They were trained on plain GELU (see the model's ``quick_gelu``).

    All files are read with ``torch.load(..., weights_only=True)``.

    Args:
        paths: one path, or a sequence of paths (the reference's two files).
        model: the torch model; its text prototypes are recomputed if it has a class, cleared otherwise.

    Returns:
        What the file records besides the weights (ours: ``backbone``, ``feature_layers``, ``image_size``,
        ``quick_gelu``, ``training_classes``; nothing for the reference's files).

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: a file cannot be read safely, is of another format or model (e.g. an AnomalyCLIP prompts file),
            was made for another backbone or feature layers, or the reference pair is incomplete.
    """
    single = isinstance(paths, str | os.PathLike)
    files = [Path(path).expanduser() for path in ([paths] if single else paths)]
    if not files:
        msg = "No SimCLIP learned-weights file given."
        raise ValueError(msg)
    reference: dict[str, Mapping[str, Any]] = {}
    for path in files:
        content, source = _read(path), repr(str(path))
        if not isinstance(content, Mapping):
            msg = f"{source} holds a {type(content).__name__}, not a SimCLIP learned-weights dictionary."
            raise ValueError(msg)
        if content.get("format") == FORMAT:
            if len(files) > 1:
                msg = f"{source} is a complete SimCLIP learned-weights file: pass it alone."
                raise ValueError(msg)
            model.load_learnable_state_dict(_our_weights(content, model, source))
            return {key: value for key, value in content.items() if key not in {"format", "version", "weights"}}
        if content.get("format") == _ANOMALYCLIP_FORMAT:
            msg = f"{source} is an AnomalyCLIP prompts file, not SimCLIP weights: use it with `--model AnomalyCLIP`."
            raise ValueError(msg)
        kinds = {
            "clip": _REFERENCE_CLIP_KEY in content or "x_learner_proj.linear.weight" in content,
            "adapters": _REFERENCE_ADAPTER_KEY in content or "fc.0.weight" in content,
        }
        if not any(kinds.values()):
            msg = (
                f"{source} is neither an anomalib-clipad SimCLIP learned-weights file nor one of the reference SimCLIP "
                f"files ({{'{_REFERENCE_CLIP_KEY}': ...}}, {{'{_REFERENCE_ADAPTER_KEY}': ...}}); its keys: "
                f"{list(content)[:8]}."
            )
            raise ValueError(msg)
        reference.update({kind: content for kind, found in kinds.items() if found})
    model.load_learnable_state_dict(_reference_weights(reference, model))
    return {}


def _our_weights(content: Mapping[str, Any], model: SimCLIPModel, source: str) -> dict[str, torch.Tensor]:
    """The weights of our file, after checking its version and the architecture it records."""
    if content.get("version") != FORMAT_VERSION:
        msg = (
            f"{source} is a SimCLIP learned-weights file of version {content.get('version')}; this version reads "
            f"{FORMAT_VERSION}."
        )
        raise ValueError(msg)
    _check_recorded_architecture(content, model, source)
    recorded_gelu, current_gelu = content.get("quick_gelu"), bool(model.clip_hparams.get("quick_gelu", True))
    if recorded_gelu is not None and bool(recorded_gelu) != current_gelu:
        logger.warning(
            "SimCLIP: the weights of %s were learned with quick_gelu=%s, this model uses quick_gelu=%s: scores will "
            "differ from the training run's (build it with `--model.quick_gelu %s`).",
            source,
            bool(recorded_gelu),
            current_gelu,
            str(bool(recorded_gelu)).lower(),
        )
    weights = content.get("weights")
    if not isinstance(weights, Mapping):
        msg = f"{source} has no 'weights' dictionary."
        raise ValueError(msg)
    return dict(weights)


def _reference_weights(reference: Mapping[str, Mapping[str, Any]], model: SimCLIPModel) -> dict[str, torch.Tensor]:
    """Our weights from the reference's CLIP and adapter files (both needed)."""
    if "clip" not in reference or "adapters" not in reference:
        missing = (
            "CLIP file ({'clip': ...})" if "clip" not in reference else "adapter file ({'trainable_linearlayer': ...})"
        )
        msg = (
            f"The reference SimCLIP weights come as two files; the {missing} is missing. Pass both: "
            "`--model.prompts '[clip.pth, adapters.pth]'`."
        )
        raise ValueError(msg)
    adapters = reference["adapters"]
    adapter_state = adapters.get(_REFERENCE_ADAPTER_KEY, adapters)
    n_adapters = sum(1 for key in adapter_state if key.startswith("fc.") and key.endswith(".weight"))
    if n_adapters != len(model.feature_layers):
        msg = (
            f"The reference adapters hold {n_adapters} layers, this model reads {len(model.feature_layers)} "
            f"(feature_layers={list(model.feature_layers)})."
        )
        raise ValueError(msg)
    try:
        weights = convert_reference_weights(reference["clip"], adapters, model.feature_layers)
    except KeyError as error:
        raise ValueError(str(error.args[0]) if error.args else str(error)) from error
    if model.clip_hparams.get("quick_gelu", True):
        logger.warning(
            "SimCLIP: the reference trained its published weights on plain GELU (its open_clip builds ViT-L-14-336 at "
            "518 px without QuickGELU); this model uses QuickGELU. Build it with `--model.quick_gelu false` to "
            "reproduce the reference's numbers."
        )
    return weights


# ---------------------------------------------------------------------------------------------- the target set-up
class _TargetSetup(Callback):
    """Before scoring a target: prompts of its class, and for SimCLIP+ the memory of its normal train images.

    Runs after the checkpoint policy (which re-builds the prompts for another class where it can) and before the
    target calibration (which scores the held-out split with them).
    """

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Prepare the target (see the class docstring)."""
        pl_module.prepare_target(trainer)

    on_test_start = on_validation_start
    on_predict_start = on_validation_start


class SimCLIP(QuietExportMixin, AnomalibModule):
    """SimCLIP (``k_shot=0``) and SimCLIP+ (``k_shot >= 1``): MHVA adapters and IPT on a frozen OpenAI CLIP.

    Args:
        backbone: open_clip architecture (paper: ``ViT-L-14-336``).
        pretrained: open_clip tag (paper: ``openai``), path of a local weight file, ``None`` (random weights, tests
            only), or ``"checkpoint"``: the architecture only, weights from the checkpoint loaded next
            (``--ckpt_path``; ``load_from_checkpoint`` uses it by default).
        quick_gelu: QuickGELU (``True``: the activation OpenAI's CLIP, which the paper names, was trained with) or
            plain GELU (``False``: what the reference code actually runs on the OpenAI weights at 518 px, and what its
            published weights were trained with; use it to evaluate those). ``None`` (default): the weights' own,
            i.e. QuickGELU for ``ViT-L-14-336`` / ``openai``. Recorded in checkpoints; a model reloaded with
            ``pretrained="checkpoint"`` and no explicit value takes the checkpoint's.
        image_size: input size (518; position embeddings are resized once at load, bicubic, as the reference does).
        feature_layers: image-tower blocks read by the adapters and SimCLIP+'s memory gallery (``[6, 12, 18, 24]``).
        k_shot: 0 for zero-shot SimCLIP; ``k >= 1`` for SimCLIP+, whose memory gallery holds ``k`` normal images
            drawn from the **target** datamodule's train split at test time (seeded; paths logged and stored).
        seed: seed of the initialisation of the adapters and IPT, and of the SimCLIP+ reference images.
        class_name: class name of the prompts on the target (default: the datamodule's ``category``, used as given,
            e.g. ``metal_nut``); in training each image uses its own class (``batch.category``) when the batch has
            one (AuxiliaryData), else this one.
        prompt_size: size of IPT's ``P_s`` (8).
        prompt_hidden_size: hidden width of IPT's MLP (256).
        logit_scale: scale of the cosine similarities before every softmax (100).
        train_projections: train CLIP's image and text projection heads too (the paper; ``False`` freezes them).
        classification_weight: weight of the image cross-entropy in the loss (1.3, reference ``train.py``).
        segmentation_weight: weight of the summed focal and dice terms (0.08, reference ``train.py``).
        focal_gamma: focusing parameter of the focal loss (2).
        sigma: Gaussian sigma of the maps at 518 px (7; scaled with the input size).
        image_score_map: SimCLIP+ map whose maximum enters the image score: ``"final"`` (the paper's few-shot map)
            or ``"unrevised"`` (zero-shot map plus ``M_v`` without the prior-aware revision, as the reference).
        refined_image_prompt: score images against the IPT-refined prompts (the paper's wording) instead of the plain
            prompts (the reference code; default).
        epochs: training epochs (5, the paper); the last state is used.
        lr: Adam learning rate (1e-3).
        betas: Adam betas ((0.5, 0.999), reference ``train.py``).
        prompts: learned weights to score with, without training or a checkpoint: a file written after training
            (``weights/prompts/prompts.pt``), or the reference's two published files as a list
            (``[clip.pth, adapters.pth]``).
        cache_max_bytes: memory budget of the training feature cache (``None``: a quarter of the free memory, at
            most 16 GiB); past it, features go to ``cache_dir`` (default: a temporary folder), then are recomputed.
        cache_dir: folder of cache entries that do not fit in memory.
        pre_processor: anomalib pre-processor, or ``True`` for :meth:`configure_pre_processor`.
        post_processor: anomalib post-processor, or ``True`` for :meth:`configure_post_processor`.
        evaluator: anomalib evaluator or ``True`` for the default.
        visualizer: anomalib visualizer or ``True`` for the default.

    Raises:
        ValueError: negative ``k_shot``, unknown ``image_score_map``, ``epochs`` below 1 or a negative ``lr``.
        FileNotFoundError: a ``prompts`` file does not exist.
    """

    model = BuiltOnFirstUse()

    def __init__(  # noqa: PLR0917 (anomalib-style hyper-parameters)
        self,
        backbone: str = "ViT-L-14-336",
        pretrained: str | None = "openai",
        quick_gelu: bool | None = None,
        image_size: int = 518,
        feature_layers: Sequence[int] = (6, 12, 18, 24),
        k_shot: int = 0,
        seed: int = 111,
        class_name: str | None = None,
        prompt_size: int = 8,
        prompt_hidden_size: int = 256,
        logit_scale: float = 100.0,
        train_projections: bool = True,
        classification_weight: float = 1.3,
        segmentation_weight: float = 0.08,
        focal_gamma: float = 2.0,
        sigma: float = 7.0,
        image_score_map: str = "final",
        refined_image_prompt: bool = False,
        epochs: int = 5,
        lr: float = 1e-3,
        betas: Sequence[float] = (0.5, 0.999),
        prompts: str | list[str] | None = None,
        cache_max_bytes: int | None = None,
        cache_dir: str | None = None,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        if k_shot < 0:
            msg = f"k_shot must be 0 (zero-shot SimCLIP) or positive (SimCLIP+), got {k_shot}."
            raise ValueError(msg)
        if image_score_map not in IMAGE_SCORE_MAPS:
            msg = f"image_score_map must be one of {IMAGE_SCORE_MAPS}, got {image_score_map!r}."
            raise ValueError(msg)
        for path in [prompts] if isinstance(prompts, str) else list(prompts or []):
            if not Path(path).expanduser().is_file():
                msg = f"The prompts file {path!r} does not exist."
                raise FileNotFoundError(msg)
        if isinstance(pre_processor, bool) and pre_processor:
            pre_processor = self.configure_pre_processor(image_size)
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.save_hyperparameters(ignore=["pre_processor", "post_processor", "evaluator", "visualizer"])
        self.recipe = AuxiliaryDataRecipe(
            type(self).__name__,
            epochs=epochs,
            lr=lr,
            betas=tuple(betas),
            refresh=self._refresh_text_features,
            cache_max_bytes=cache_max_bytes,
            cache_dir=cache_dir,
        )
        self.timing = InferenceTiming(type(self).__name__)
        self.checkpoint_policy = ClipCheckpointPolicy(
            type(self).__name__,
            ("backbone", "image_size", "feature_layers", "prompt_size", "prompt_hidden_size"),
            requested_quick_gelu=quick_gelu,
            rebuild_for_class=self._rebuild_for_class,
        )
        self.target_setup = _TargetSetup()
        self.calibration = TargetCalibration(type(self).__name__)
        self.reference_paths: list[str] = []
        """SimCLIP+: the normal train images of the memory gallery."""
        self.reference_class: str | None = None
        """SimCLIP+: the class whose images are in the memory gallery."""
        self.training_classes: set[str] = set()
        """The classes of the auxiliary training images."""

    def configure_model(self) -> None:
        """Build the torch model and its CLIP (once); with ``prompts``, load the learned weights from there."""
        if self._modules.get("model") is not None:
            return
        build_torch_model(self, SimCLIPModel)
        if self.hparams.prompts is not None:
            recorded = load_learned_weights(self.hparams.prompts, self.model)
            self.training_classes.update(recorded.get("training_classes", []))
            self.recipe.training_paths.update(recorded.get("training_paths", []))  # for the leakage guard
            logger.info("SimCLIP scores with the learned weights of %s (no training).", self.hparams.prompts)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> SimCLIP:
        """Lightning's ``load_from_checkpoint`` building the CLIP architecture only (every weight is in it).

        The checkpoint holds the learned weights, so a ``prompts`` file it was made with is not read again.
        """
        kwargs.setdefault("prompts", None)
        return load_without_original_weights(super().load_from_checkpoint, checkpoint_path, *args, **kwargs)

    # ---------------------------------------------------------------------------------------------- anomalib
    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | int | None = None) -> PreProcessor:
        """Resize (bicubic) to the model input (518 by default) and CLIP mean/std normalisation."""
        return clip_pre_processor(image_size if image_size is not None else 518)

    @staticmethod
    def configure_post_processor() -> PostProcessor:
        """Scores are probabilities, reported raw (no normalisation); thresholds come from the target."""
        return PostProcessor(enable_normalization=False)

    @property
    def learning_type(self) -> LearningType:
        """``ONE_CLASS``: anomalib's engine trains it through Lightning's loop (on labelled auxiliary data)."""
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """The recipe's: ``epochs`` fixed epochs and no sanity validation."""
        return self.recipe.trainer_arguments

    def configure_callbacks(self) -> list[Callback]:
        """Callbacks: anomalib's, the recipe, the checkpoint policy, the target set-up and calibration."""
        return [
            *super().configure_callbacks(),
            self.recipe,
            self.checkpoint_policy,
            self.target_setup,
            self.calibration,
            self.timing,
        ]

    def configure_optimizers(self) -> Any:
        """Adam (the recipe's) on the trainable parameters: adapters, IPT and the two projection heads."""
        return self.recipe.configure_optimizers(p for p in self.model.parameters() if p.requires_grad)

    def setup(self, stage: str) -> None:
        """Build the model; warn when a target calibrates on its test split."""
        del stage
        self.configure_model()
        warn_if_calibrating_on_test(self._trainer, type(self).__name__)

    # ---------------------------------------------------------------------------------------------- steps
    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> Any:
        """The loss on the cached features of a labelled batch, each image with its own class's prompts.

        Raises:
            ValueError: the batch has no masks or labels (train on labelled data, e.g. AuxiliaryData), or no class
                name can be found for its images.
        """
        del args, kwargs
        if batch.gt_mask is None or batch.gt_label is None:
            msg = (
                "SimCLIP trains on labelled images with masks (anomalous and normal), e.g. "
                "`--data anomalib_clipad.data.AuxiliaryData`; this batch has no labels or masks."
            )
            raise ValueError(msg)
        names = self._class_names(batch)
        self.training_classes.update(names)
        return self.recipe.training_step(
            self,
            batch,
            self.model.encode_images,
            lambda features, data: self.model.losses(
                features,
                data.gt_label,
                data.gt_mask,
                class_names=names,
                has_mask=getattr(data, "has_mask", None),
            ),
        )

    def _class_names(self, batch: Batch) -> list[str]:
        """Each image's class: ``batch.category`` (AuxiliaryData), else ``class_name`` or the datamodule's."""
        size = len(batch.image)
        category = getattr(batch, "category", None)
        if isinstance(category, str):
            category = [category] * size
        if category is not None and len(category) == size:
            return [str(name) for name in category]
        try:
            name = resolve_class_name(self.hparams.class_name, self._trainer)
        except ValueError as error:
            msg = (
                f"SimCLIP: the training images have no class name for their prompts ({error}) Train on "
                "`anomalib_clipad.data.AuxiliaryData`, whose batches carry each image's class, or pass one."
            )
            raise ValueError(msg) from error
        return [name] * size

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> Batch:
        """Image scores and maps of a batch (thresholds are calibrated on these)."""
        del args, kwargs
        return batch.update(**self.model(batch.image)._asdict())

    def _refresh_text_features(self) -> None:
        """Recompute the stored text prototypes from the current weights, for the class set on the model (if any)."""
        if self.model.class_name is not None:
            self.model.update_text_features()

    def on_train_end(self) -> None:
        """Write the learned weights alone, for ``--model.prompts`` on any other dataset (no checkpoint needed)."""
        trainer = self._trainer
        if trainer is not None and trainer.is_global_zero:
            self.recipe.refresh_if_stale()
            path = Path(trainer.default_root_dir) / PROMPTS_FILE
            save_learned_weights(
                self.model, path, sorted(self.training_classes), training_paths=sorted(self.recipe.training_paths)
            )
            logger.info("SimCLIP: learned weights written to %s (use them with --model.prompts).", path)

    # ---------------------------------------------------------------------------------------------- the target
    def _rebuild_for_class(self, class_name: str) -> None:
        """The checkpoint policy's hook: text prototypes of another class, with the learned IPT."""
        self.model.set_class(class_name)
        logger.info(
            "SimCLIP: prompts rebuilt for class %r with the learned IPT and adapters (trained on: %s).",
            class_name,
            ", ".join(sorted(self.training_classes)) or "not recorded",
        )

    def prepare_target(self, trainer: Trainer | None) -> None:
        """Prompts of the target's class and, for SimCLIP+, the memory gallery of its normal train images.

        Called at the start of validation, test and prediction (after any checkpoint restore and the policy's class
        check). Kept when they already belong to the target.

        Raises:
            ValueError: no class name (neither ``class_name`` nor a datamodule ``category``, and none restored), or
                SimCLIP+ without a train split to draw its reference images from (and none restored for the class).
        """
        model = self.model
        try:
            requested = resolve_class_name(self.hparams.class_name, trainer)
        except ValueError as error:
            if model.class_name is None:
                msg = f"SimCLIP builds class-aware prompts. {error}"
                raise ValueError(msg) from error
            requested = model.class_name
        prototypes_ready = all(prototypes.is_ready for prototypes in model.text_prototypes.values())
        if model.class_name != requested or not prototypes_ready:
            model.set_class(requested)
            logger.info(
                "SimCLIP: prompts built for class %r with the learned IPT and adapters (trained on: %s).",
                requested,
                ", ".join(sorted(self.training_classes)) or "not recorded",
            )
        self.checkpoint_policy.class_name = requested
        if self.hparams.k_shot:
            self._prepare_memory(trainer, requested)

    def _prepare_memory(self, trainer: Trainer | None, class_name: str) -> None:
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        train_data = getattr(datamodule, "train_data", None)
        k_shot, seed = int(self.hparams.k_shot), int(self.hparams.seed)
        if train_data is None:
            if self.model.references_ready and self.reference_class == class_name:
                return
            msg = (
                f"SimCLIP+ (k_shot={k_shot}) draws its {k_shot} normal reference image(s) from the train split of the "
                f"target datamodule, but {type(datamodule).__name__ if datamodule is not None else 'none'} has none, "
                f"and no memory of class {class_name!r} was restored: test with a datamodule of the target (e.g. "
                "`--data MVTecAD --data.category ...`), or a checkpoint of a SimCLIP+ test on that class."
            )
            raise ValueError(msg)
        transform = getattr(self.pre_processor, "transform", None) or clip_transform(self.hparams.image_size)
        shots = collect_shots(train_data, k_shot, seed, transform)
        if shots.paths == self.reference_paths and self.reference_class == class_name and self.model.references_ready:
            return
        self.model.set_references(shots.images.to(self.device))
        self.reference_paths, self.reference_class = shots.paths, class_name
        logger.info(
            "SimCLIP+ memory gallery of class %r from %d normal train image(s) of the target (seed %d): %s",
            class_name,
            k_shot,
            seed,
            shots.paths,
        )

    # ---------------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the policy's fields, the memory gallery's images and class, and the training classes."""
        super().on_save_checkpoint(checkpoint)
        self.checkpoint_policy.save(checkpoint)
        checkpoint[_REFERENCE_PATHS_KEY] = list(self.reference_paths)
        checkpoint[_REFERENCE_CLASS_KEY] = self.reference_class
        checkpoint[_TRAINING_CLASSES_KEY] = sorted(self.training_classes)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse another architecture or activation; restore the training image paths and the gallery's record."""
        self.checkpoint_policy.load(checkpoint, self)
        super().on_load_checkpoint(checkpoint)
        self.recipe.load(checkpoint)
        self.reference_paths = list(checkpoint.get(_REFERENCE_PATHS_KEY, []))
        self.reference_class = checkpoint.get(_REFERENCE_CLASS_KEY)
        self.training_classes = set(checkpoint.get(_TRAINING_CLASSES_KEY, []))
