# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""A fixed version of anomalib's benchmark pipeline: zero-/few-shot models, any class path, mixed configurations.

anomalib 2.7's ``anomalib benchmark`` has three problems for this project (see the notes in the README):

1. ``BenchmarkJob.run`` calls ``engine.fit(model, datamodule)`` positionally, so the datamodule lands in
   ``train_dataloaders`` and every ZERO_SHOT / FEW_SHOT model (built-in ``WinClip`` included) fails with
   "``val_dataloader`` must be implemented". Here ``fit`` and ``test`` get keyword arguments.
2. ``anomalib.models.get_model`` only accepts short names reachable from ``anomalib.models`` or dotted paths inside
   anomalib; here any dotted class path (``anomalib_clipad.WinCLIPPlus``) or short name resolves, through
   jsonargparse exactly like ``anomalib train --model``.
3. ``BenchmarkJob.collect`` needs identical keys in every job (a model with ``init_args`` beside one without gives
   "All arrays must be of the same length" and no CSV). Here the table is the union of the keys (empty cells where a
   job has no such key). Models and datamodules are also built inside each job, so one bad configuration fails only
   its own job instead of aborting the run before any CSV is written, and the command's exit code says whether
   every job succeeded.

One default differs from upstream, so that calibration never uses the scored images: thresholds and min-max
normalisation come from the validation split, and the default of MVTecAD and Visa (``val_split_mode`` =
``same_as_test``) makes that split the test set itself. When a job's datamodule would default to it and its
configuration does not set ``val_split_mode``, the job uses ``from_test`` (a held-out part of the test set, the
datamodule's ``val_split_ratio``; the scored images are the rest) and says so. A configuration that asks for
``same_as_test`` explicitly keeps it, with a warning (and the models' own warning).

Metrics: every job is tested with the same :class:`anomalib.metrics.Evaluator`, passed to the model as
``evaluator=`` (unless its ``init_args`` set one): by default image AUROC, AP (average precision), F1 (anomalib's,
at the calibrated threshold) and F1-max, pixel AUROC, AUPRO (anomalib's ``AUPRO``, FPR limit 0.3) and F1 (see
:data:`DEFAULT_METRICS`, :data:`METRICS`). Each row also has ``seconds_per_image`` (wall time of the test batches,
pre-processing and forward pass, divided by the number of test images), ``n_test_images``, ``dataset``,
``category`` and ``k_shot``. Models are built with ``visualizer=False`` unless their ``init_args`` set one (the
run's folder is temporary). Each job prints ``job i of N: <model> <setting> <category> (elapsed ...)`` when it starts
and its main metrics and time per image when it ends.

The configuration format is anomalib's (``accelerator`` plus a ``benchmark`` section whose values may be
``{grid: [...]}``), with these optional additions:

* ``synthetic_dataset``: a mapping (or a list of mappings) of keyword arguments of
  :func:`anomalib_clipad.data.synthetic.generate_synthetic_dataset`; each dataset is generated first when its folder
  does not exist yet.
* ``metrics``: the names of the test metrics (keys of :data:`METRICS`), instead of :data:`DEFAULT_METRICS`.
* In an entry of ``benchmark.model.grid``: ``{grid: [...]}`` values anywhere in the entry (e.g.
  ``init_args: {k_shot: {grid: [0, 1, 2, 4]}}``) expand into one entry per value, and ``train_data`` (a datamodule
  configuration, e.g. ``anomalib_clipad.data.AuxiliaryData`` of another dataset): the model is fitted on it and
  tested on ``benchmark.data`` (cross-dataset protocol of AnomalyCLIP and SimCLIP). Consecutive jobs with the same
  model, ``train_data`` and seed train **once**: the fitted model is reused for every target (``fit_reused``).
* ``published``: the papers' numbers, read by :mod:`anomalib_clipad.benchmarks.results_page` only.

Results are written to ``runs/benchmark/<timestamp>/results.csv`` like upstream, with a copy of the configuration
file (same name) beside it, which ``anomalib-clipad results`` reads for the ``published`` numbers.

Example:
    .. code-block:: bash

        anomalib-clipad benchmark --config configs/benchmark/patchcore_vs_clipad.yaml
        anomalib-clipad results --csv runs/benchmark/<timestamp>/results.csv --out docs/results
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, NamedTuple

import pandas as pd
import torch
import yaml

logger = logging.getLogger(__name__)

RESULTS_DIR = Path("runs") / "benchmark"
LOG_FILE = Path("runs") / "pipeline.log"
_SUPPORTED_ACCELERATORS = ("cpu", "cuda", "gpu", "auto")

# Test metrics by column name: (anomalib metric class name, batch fields, strict). Pixel metrics are not strict, so
# that a datamodule without masks still gets its image metrics.
METRICS: dict[str, tuple[str, tuple[str, str], bool]] = {
    "image_AUROC": ("AUROC", ("pred_score", "gt_label"), True),
    "image_AP": ("AP", ("pred_score", "gt_label"), True),
    "image_AUPR": ("AUPR", ("pred_score", "gt_label"), True),
    "image_F1Score": ("F1Score", ("pred_label", "gt_label"), True),
    "image_F1Max": ("F1Max", ("pred_score", "gt_label"), True),
    "pixel_AUROC": ("AUROC", ("anomaly_map", "gt_mask"), False),
    "pixel_AUPRO": ("AUPRO", ("anomaly_map", "gt_mask"), False),
    "pixel_F1Score": ("F1Score", ("pred_mask", "gt_mask"), False),
    "pixel_F1Max": ("F1Max", ("anomaly_map", "gt_mask"), False),
}
"""The metrics a benchmark can compute, by result column. ``AP`` is torchmetrics' ``BinaryAveragePrecision`` (the
papers' "AP", scikit-learn's ``average_precision_score``); ``AUPR`` is anomalib's trapezoidal area under the
precision-recall curve; ``F1Score`` uses the threshold calibrated on the validation split, ``F1Max`` the best one."""

DEFAULT_METRICS = (
    "image_AUROC",
    "image_AP",
    "image_F1Score",
    "image_F1Max",
    "pixel_AUROC",
    "pixel_AUPRO",
    "pixel_F1Score",
)
"""The test metrics of a benchmark whose configuration has no ``metrics`` entry."""


def _average_precision_class() -> type:
    """``AP``: torchmetrics' binary average precision as an anomalib metric (built on first use, importable)."""
    cls = globals().get("AP")
    if cls is None:
        from anomalib.metrics import AnomalibMetric
        from torchmetrics.classification import BinaryAveragePrecision

        cls = type("AP", (AnomalibMetric, BinaryAveragePrecision), {"__module__": __name__, "__qualname__": "AP"})
        cls.__doc__ = "Average precision (area under the step precision-recall curve) on batch fields."
        globals()["AP"] = cls  # picklable by reference, like a module-level class
    return cls


def build_evaluator(names: list[str] | tuple[str, ...] | None = None) -> Any:
    """The :class:`anomalib.metrics.Evaluator` of a benchmark job.

    Args:
        names: Metric names (keys of :data:`METRICS`); default :data:`DEFAULT_METRICS`.

    Returns:
        An ``Evaluator`` with these test metrics (logged as the names), no validation metrics.

    Raises:
        ValueError: If a name is not a key of :data:`METRICS`.
    """
    import anomalib.metrics
    from anomalib.metrics import Evaluator

    names = list(DEFAULT_METRICS if names is None else names)
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        msg = f"Unknown benchmark metric(s) {unknown}; choose from {list(METRICS)}."
        raise ValueError(msg)
    metrics = []
    for name in names:
        class_name, fields, strict = METRICS[name]
        cls = _average_precision_class() if class_name == "AP" else getattr(anomalib.metrics, class_name)
        prefix = name.removesuffix(class_name)
        metrics.append(cls(fields=list(fields), prefix=prefix, strict=strict))
    return Evaluator(test_metrics=metrics)


def _as_class_config(value: Any, key: str) -> dict[str, Any]:
    """Normalise ``"Name"`` or ``{"class_path": ..., "init_args": ...}`` to the dict form."""
    if isinstance(value, str):
        return {"class_path": value}
    if isinstance(value, dict) and "class_path" in value:
        return value
    msg = f"benchmark.{key} must be a class path string or a mapping with 'class_path', got {value!r}."
    raise ValueError(msg)


def instantiate(value: Any, base_class: type, key: str, defaults: dict[str, Any] | None = None) -> Any:
    """Build an instance of a ``base_class`` subclass from a class path (short or dotted) and ``init_args``.

    Resolution is jsonargparse's, the same as ``anomalib train --model ... --data ...``: a dotted path is imported,
    a short name is looked up among the imported subclasses of ``base_class`` (anomalib's and, through the
    registration hook, anomalib-clipad's).

    Args:
        value: ``"Patchcore"``, ``"anomalib_clipad.WinCLIPPlus"`` or ``{"class_path": ..., "init_args": {...}}``.
        base_class: ``AnomalibModule`` or ``AnomalibDataModule``.
        key: ``"model"`` or ``"data"`` (for messages).
        defaults: Constructor arguments (objects, e.g. ``{"evaluator": Evaluator(...)}``) used where ``value`` does
            not set them and the class takes them.

    Returns:
        The instance.
    """
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base_class, key, required=True)
    class_config = _as_class_config(value, key)
    config = parser.parse_object({key: class_config})
    given = class_config.get("init_args") or {}
    init_args = config[key].get("init_args")
    for name, default in (defaults or {}).items():
        if init_args is not None and name not in given and hasattr(init_args, name):
            setattr(init_args, name, default)
    return parser.instantiate_classes(config)[key]


HELD_OUT_VAL_SPLIT = "from_test"
_SCORED_IMAGES_SPLIT = "same_as_test"


def _split_name(mode: Any) -> str:
    """``"same_as_test"`` for ``ValSplitMode.SAME_AS_TEST`` or its string (any case)."""
    return str(getattr(mode, "value", mode)).lower()


def _default_val_split_mode(data: dict[str, Any]) -> str | None:
    """The ``val_split_mode`` the datamodule of ``data`` gets when the configuration does not set it.

    Resolved like :func:`instantiate` (jsonargparse fills in the class defaults), without building the datamodule.

    Returns:
        The split name, or ``None`` when the datamodule takes no ``val_split_mode`` or cannot be resolved (its job
        then fails on its own, with the real error).
    """
    from anomalib.data import AnomalibDataModule
    from jsonargparse import ArgumentParser

    try:
        parser = ArgumentParser(exit_on_error=False)
        parser.add_subclass_arguments(AnomalibDataModule, "data", required=True)
        init_args = parser.parse_object({"data": data})["data"].get("init_args")
        mode = None if init_args is None else init_args.get("val_split_mode")
    except Exception:  # the job reports it itself, with its traceback
        return None
    return None if mode is None else _split_name(mode)


class DataSplit(NamedTuple):
    """A job's datamodule configuration after :func:`held_out_calibration`.

    Attributes:
        config: The ``{"class_path": ..., "init_args": ...}`` to build the datamodule from.
        message: What was changed or what is wrong, for the console and the log; ``None``: nothing to say.
        level: The logging level of ``message``.
    """

    config: Any
    message: str | None = None
    level: int = logging.INFO


def held_out_calibration(data: Any) -> DataSplit:
    """The datamodule configuration of a job, with a validation split that is not the scored images by default.

    Args:
        data: The job's ``data`` entry (class path string or ``{"class_path": ..., "init_args": ...}``).

    Returns:
        The configuration to use: ``data`` itself, or, when the datamodule's default is ``same_as_test`` and ``data``
        does not set ``val_split_mode``, a copy with ``init_args.val_split_mode: from_test`` and a message saying so.
        An entry that asks for ``same_as_test`` itself is kept, with a warning message.
    """
    try:
        config = dict(_as_class_config(data, "data"))
    except ValueError:  # the job reports it when it builds the datamodule
        return DataSplit(data)
    init_args = config.get("init_args") or {}
    if not isinstance(init_args, dict):
        return DataSplit(data)
    config["init_args"] = dict(init_args)
    name = str(config["class_path"])
    if "val_split_mode" in init_args:
        if _split_name(init_args["val_split_mode"]) != _SCORED_IMAGES_SPLIT:
            return DataSplit(data)
        message = (
            f"benchmark.data {name} sets val_split_mode: {_SCORED_IMAGES_SPLIT}: thresholds and normalisation are "
            "calibrated on the scored images, so F1 scores are optimistic (AUROC is not affected). Remove it or set "
            f"{HELD_OUT_VAL_SPLIT} for a held-out calibration split."
        )
        return DataSplit(data, message, logging.WARNING)
    if _default_val_split_mode(config) != _SCORED_IMAGES_SPLIT:
        return DataSplit(data)
    config["init_args"]["val_split_mode"] = HELD_OUT_VAL_SPLIT
    message = (
        f"benchmark.data {name}: val_split_mode {HELD_OUT_VAL_SPLIT} instead of its default {_SCORED_IMAGES_SPLIT}, "
        "so that thresholds and normalisation are calibrated on held-out test images, not on the scored ones "
        "(set val_split_mode in the configuration to choose)."
    )
    return DataSplit(config, message)


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(f"{prefix}.{key}" if prefix else str(key), item))
        return flat
    if isinstance(value, list | tuple):
        return {prefix: str(list(value))}
    return {prefix: value}


TRAIN_DATA_KEY = "train_data"
"""Key of a model entry holding the datamodule the model is fitted on (the job's ``data`` is then the target)."""


def _has_grid(value: Any) -> bool:
    if isinstance(value, dict):
        return "grid" in value or any(_has_grid(item) for item in value.values())
    return False


def _expand_entry(entry: Any) -> list[Any]:
    """One model entry per combination of the ``{grid: [...]}`` values inside it (the entry itself if none)."""
    if not _has_grid(entry):
        return [entry]
    from anomalib.pipelines.components.utils import get_iterator_from_grid_dict

    return list(get_iterator_from_grid_dict(entry))


def expand_model_grid(args: dict[str, Any]) -> dict[str, Any]:
    """The ``benchmark`` section with the grids inside the entries of ``model.grid`` expanded.

    anomalib expands ``{grid: [...]}`` values of the section itself, but an entry of a ``model: {grid: [...]}`` list
    is taken whole. Here ``{class_path: PromptAD, init_args: {k_shot: {grid: [1, 2, 4]}}}`` in that list becomes
    three entries, in place (so jobs stay ordered by model, then grid value, then data).

    Args:
        args: The ``benchmark`` section.

    Returns:
        A copy of ``args`` with the model entries expanded (``args`` itself when there is nothing to expand).
    """
    model = args.get("model")
    if not (isinstance(model, dict) and isinstance(model.get("grid"), list)):
        return args
    entries = [expanded for entry in model["grid"] for expanded in _expand_entry(entry)]
    return {**args, "model": {**model, "grid": entries}}


def split_model_entry(entry: Any) -> tuple[Any, Any]:
    """``(model configuration, train_data or None)`` of a model entry (``train_data`` removed from the former)."""
    if isinstance(entry, dict) and TRAIN_DATA_KEY in entry:
        model = {key: value for key, value in entry.items() if key != TRAIN_DATA_KEY}
        return model, entry[TRAIN_DATA_KEY]
    return entry, None


def _init_args(config: Any) -> dict[str, Any]:
    if isinstance(config, dict) and isinstance(config.get("init_args"), dict):
        return config["init_args"]
    return {}


def _short_class_name(config: Any) -> str:
    class_path = config.get("class_path", "?") if isinstance(config, dict) else str(config)
    return str(class_path).rsplit(".", 1)[-1]


def category_of(data: Any) -> str:
    """The category a datamodule configuration selects (``category``, else ``name``, else its class)."""
    init_args = _init_args(data)
    for key in ("category", "name"):
        if init_args.get(key) is not None:
            return str(init_args[key])
    return _short_class_name(data)


def setting_label(k_shot: Any) -> str:
    """``"0-shot"``, ``"4-shot"``, or ``""`` when the model has no ``k_shot``."""
    if k_shot is None or pd.isna(k_shot):
        return ""
    return f"{int(k_shot)}-shot"


def _format_elapsed(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


_SUMMARY_COLUMNS = (
    "model",
    "k_shot",
    "category",
    "image_AUROC",
    "pixel_AUROC",
    "pixel_AUPRO",
    "image_AP",
    "image_F1Score",
    "seconds_per_image",
    "fit_duration",
    "test_duration",
    "error",
)


def summary_table(result: pd.DataFrame) -> str:
    """A compact text table of the main columns (anomalib's rich table of every column is unreadable when wide).

    Args:
        result: The collected results, one row per job.

    Returns:
        The table as text; the CSV keeps every column.
    """
    table = result.copy()
    if "model.class_path" in table.columns:
        short = table["model.class_path"].astype(str).str.rsplit(".", n=1).str[-1]
        table["model"] = table["model"].fillna(short) if "model" in table.columns else short
    if "k_shot" not in table.columns and "model.init_args.k_shot" in table.columns:
        table["k_shot"] = table["model.init_args.k_shot"]
    columns = [column for column in _SUMMARY_COLUMNS if column in table.columns]
    table = table[columns]
    if "k_shot" in table.columns:
        table["k_shot"] = table["k_shot"].map(lambda value: "" if pd.isna(value) else str(int(value)))
    if "error" in table.columns:
        table["error"] = table["error"].fillna("").astype(str).str.slice(0, 60)
    return table.to_string(index=False, float_format=lambda value: f"{value:.3f}", na_rep="")


def _load_anomalib_benchmark_classes() -> tuple[type, type, type, type]:
    """Import anomalib's pipeline classes lazily (they import ``anomalib.engine``)."""
    from anomalib.pipelines.benchmark.job import BenchmarkJob
    from anomalib.pipelines.components import JobGenerator
    from anomalib.pipelines.components.base import Pipeline
    from anomalib.pipelines.components.runners import ParallelRunner

    return BenchmarkJob, JobGenerator, Pipeline, ParallelRunner


def _inference_timer_class() -> type:
    """A Lightning callback that times the test batches (pre-processing and forward pass) and counts the images."""
    from lightning.pytorch import Callback

    class InferenceTimer(Callback):
        """Wall time from each test batch's start to its end hooks (before post-processing and metrics)."""

        def __init__(self) -> None:
            self.seconds = 0.0
            self.images = 0
            self._start: float | None = None

        @staticmethod
        def _synchronise(pl_module: Any) -> None:
            device = getattr(pl_module, "device", None)
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)

        def on_test_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, *args: Any) -> None:
            del trainer, batch, batch_idx, args
            self._synchronise(pl_module)
            self._start = time.perf_counter()

        def on_test_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, *args: Any
        ) -> None:
            del trainer, outputs, batch_idx, args
            if self._start is None:
                return
            self._synchronise(pl_module)
            self.seconds += time.perf_counter() - self._start
            self._start = None
            image = getattr(batch, "image", None)
            self.images += int(image.shape[0]) if image is not None else len(getattr(batch, "image_path", []) or [])

        @property
        def seconds_per_image(self) -> float:
            """Mean test-batch time per image (NaN before any batch)."""
            return self.seconds / self.images if self.images else float("nan")

    return InferenceTimer


class _TrainedModel(NamedTuple):
    """A model fitted on a job's ``train_data``, kept for the next jobs with the same configuration."""

    key: str
    model: Any
    fit_duration: float
    job: str
    error: str | None = None


_PRINTED_METRICS = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO")


def _build_classes() -> tuple[type, type, type]:
    """Create the job, generator and pipeline subclasses (deferred so that importing this module stays light)."""
    BenchmarkJob, JobGenerator, Pipeline, ParallelRunner = _load_anomalib_benchmark_classes()  # noqa: N806
    from anomalib.pipelines.components.runners import SerialRunner
    from anomalib.pipelines.components.utils import get_iterator_from_grid_dict

    inference_timer_class = _inference_timer_class()
    trained: list[_TrainedModel] = []  # at most one: consecutive jobs share it, then it is dropped

    class ClipadBenchmarkJob(BenchmarkJob):
        """One benchmark run: build the model and datamodule, ``fit`` then ``test`` them (keyword arguments)."""

        name = "benchmark"
        run_dir: Path | None = None  # set by the pipeline: where ``save`` writes results.csv

        def __init__(  # noqa: PLR0917 (anomalib's job signature plus the job's place in the run)
            self,
            accelerator: str,
            config: dict[str, Any],
            seed: int,
            flat_cfg: dict[str, Any],
            metrics: list[str] | None = None,
            index: int = 1,
            total: int = 1,
            start_time: float | None = None,
        ) -> None:
            # Keep the picklable configuration, not instances: models are built inside ``run`` (one process per
            # job with ParallelRunner; one failing configuration does not abort the others).
            self.accelerator = accelerator
            self.config = config
            self.seed = seed
            self.flat_cfg = flat_cfg
            self.metrics = metrics
            self.index = index
            self.total = total
            self.start_time = time.time() if start_time is None else start_time

        @property
        def label(self) -> str:
            """``"WinCLIPPlus 1-shot bottle"``: model class, setting and target category, for the console."""
            model = self.config["model"]
            parts = [_short_class_name(model), setting_label(_init_args(model).get("k_shot"))]
            parts.append(category_of(self.config["data"]))
            return " ".join(part for part in parts if part)

        def _train_key(self) -> str:
            config = {"model": self.config["model"], "train_data": self.config.get(TRAIN_DATA_KEY), "seed": self.seed}
            return json.dumps(config, sort_keys=True, default=str)

        def _fit(self, model: Any, engine_factory: Callable[[], Any], datamodule: Any) -> tuple[Any, float, bool]:
            """Fit ``model`` (on ``train_data`` when the entry has one, reusing an earlier job's fit of it).

            A ZERO_SHOT / FEW_SHOT model without ``train_data`` (WinCLIPPlus) is not fitted: anomalib's
            ``Engine.fit`` only runs its validation (shots, thresholds), which ``Engine.test`` runs again anyway.

            Returns:
                The fitted model, the fit duration and whether an earlier fit was reused.
            """
            from anomalib import LearningType
            from anomalib.data import AnomalibDataModule

            train_data = self.config.get(TRAIN_DATA_KEY)
            if train_data is None and model.learning_type in {LearningType.ZERO_SHOT, LearningType.FEW_SHOT}:
                return model, 0.0, False  # Engine.fit would only validate, and Engine.test validates again
            if train_data is None:
                start = time.time()
                engine_factory().fit(model=model, datamodule=datamodule)
                return model, time.time() - start, False
            key = self._train_key()
            if trained and trained[0].key == key:
                previous = trained[0]
                if previous.error is not None:
                    msg = f"training on train_data failed in {previous.job}: {previous.error}"
                    raise RuntimeError(msg)
                print(f"  reusing the model trained on train_data in {previous.job}", flush=True)
                return previous.model, previous.fit_duration, True
            trained.clear()  # free the previous model before training the next one
            start = time.time()
            job = f"job {self.index}"
            try:
                train_datamodule = instantiate(train_data, AnomalibDataModule, "train_data")
                engine_factory().fit(model=model, datamodule=train_datamodule)
            except Exception as exc:
                trained.append(_TrainedModel(key, None, 0.0, job, f"{type(exc).__name__}: {exc}"))
                raise
            fit_duration = time.time() - start
            trained.append(_TrainedModel(key, model, fit_duration, job))
            return model, fit_duration, False

        def run(self, task_id: int | None = None) -> dict[str, Any]:
            """Fit and test one model on one datamodule.

            Args:
                task_id: Device index when run by the parallel runner.

            Returns:
                Durations, the flattened configuration and the test metrics; for a failed job, the configuration
                and an ``error`` entry (the traceback goes to the log).
            """
            from anomalib.data import AnomalibDataModule
            from anomalib.engine import Engine
            from anomalib.models import AnomalibModule
            from lightning import seed_everything

            devices: str | list[int] = "auto" if task_id is None else [task_id]
            job_start = time.time()
            print(
                f"job {self.index} of {self.total}: {self.label} "
                f"(elapsed {_format_elapsed(job_start - self.start_time)})",
                flush=True,
            )
            identity = {
                "dataset": _short_class_name(self.config["data"]),
                "category": category_of(self.config["data"]),
                "k_shot": _init_args(self.config["model"]).get("k_shot"),
            }
            try:
                seed_everything(self.seed)
                evaluator = build_evaluator(self.metrics)
                model = instantiate(
                    self.config["model"], AnomalibModule, "model", {"evaluator": evaluator, "visualizer": False}
                )
                datamodule = instantiate(self.config["data"], AnomalibDataModule, "data")
                identity.update(dataset=type(datamodule).__name__, k_shot=getattr(model.hparams, "k_shot", None))
                with TemporaryDirectory() as temp_dir:

                    def engine_factory(callbacks: list[Any] | None = None) -> Any:
                        return Engine(
                            accelerator=self.accelerator,
                            devices=devices,
                            default_root_dir=temp_dir,
                            callbacks=callbacks,
                        )

                    fitted, fit_duration, reused = self._fit(model, engine_factory, datamodule)
                    if reused and fitted.evaluator is not None and "evaluator" not in _init_args(self.config["model"]):
                        fitted.evaluator = evaluator  # fresh metrics for this target
                    timer = inference_timer_class()
                    test_start = time.time()
                    test_results = engine_factory([timer]).test(model=fitted, datamodule=datamodule)
            except Exception as exc:
                # A failed job still gets its row (with the error), and the pipeline's exit code reports it.
                logger.exception("Benchmark job failed: %s", self.flat_cfg)
                error = f"{type(exc).__name__}: {exc}"
                print(f"job {self.index} of {self.total} FAILED: {error[:300]}", flush=True)
                return {"accelerator": self.accelerator, **identity, **self.flat_cfg, "error": error}
            job_end = time.time()
            metrics = test_results[0] if test_results else {}
            output = {
                "accelerator": self.accelerator,
                "job_duration": job_end - job_start,
                "fit_duration": fit_duration,
                "test_duration": job_end - test_start,
                "seconds_per_image": timer.seconds_per_image,
                "n_test_images": timer.images,
                "fit_reused": reused,
                "model": type(model).__name__,
                **identity,
                **self.flat_cfg,
                **metrics,
            }
            shown = "  ".join(f"{name} {metrics[name]:.3f}" for name in _PRINTED_METRICS if name in metrics)
            print(
                f"job {self.index} of {self.total} done in {job_end - job_start:.1f} s: {shown}  "
                f"{timer.seconds_per_image:.3f} s per image ({timer.images} test images)",
                flush=True,
            )
            logger.info("Completed with result %s", output)
            return output

        @staticmethod
        def collect(results: list[dict[str, Any]]) -> pd.DataFrame:
            """One row per job, columns = union of all jobs' keys (empty where a job has no such key)."""
            return pd.DataFrame(results)

        @staticmethod
        def save(result: pd.DataFrame) -> None:
            """Print the table and write ``runs/benchmark/<timestamp>/results.csv``."""
            if len(result):
                print(summary_table(result))
            run_dir = ClipadBenchmarkJob.run_dir or RESULTS_DIR / datetime.now().strftime("%Y-%m-%d-%H_%M_%S")
            path = run_dir / "results.csv"
            counter = 1
            while path.exists():  # several runners (accelerators) in one run
                path = run_dir / f"results_{counter}.csv"
                counter += 1
            path.parent.mkdir(parents=True, exist_ok=True)
            result.to_csv(path, index=False)
            print(f"Saved benchmark results ({len(result)} rows) to {path}")

    class ClipadBenchmarkJobGenerator(JobGenerator):
        """Expand the ``grid`` entries of the ``benchmark`` section into one job per combination."""

        def __init__(self, accelerator: str, metrics: list[str] | None = None) -> None:
            self.accelerator = accelerator
            self.metrics = metrics

        @property
        def job_class(self) -> type:
            """The job class (:class:`ClipadBenchmarkJob`)."""
            return ClipadBenchmarkJob

        def generate_jobs(self, args: dict, previous_stage_result: Any = None) -> Iterator[Any]:
            """Yield one job per grid combination, each knowing its place in the run.

            Args:
                args: The ``benchmark`` section (``seed``, ``model``, ``data``, any of them with ``grid``; grids
                    inside the entries of ``model.grid`` too, see :func:`expand_model_grid`).
                previous_stage_result: Unused.

            Yields:
                Jobs, each holding its own configuration.

            Raises:
                ValueError: If ``model`` or ``data`` is missing.
            """
            del previous_stage_result
            for key in ("model", "data"):
                if key not in args:
                    msg = f"The benchmark section needs a '{key}' entry."
                    raise ValueError(msg)
            start_time = time.time()
            reported: set[str] = set()
            containers = list(get_iterator_from_grid_dict(expand_model_grid(args)))
            print(f"Benchmark: {len(containers)} jobs", flush=True)
            for index, container in enumerate(containers, start=1):
                split = held_out_calibration(container["data"])
                container["data"] = split.config
                if split.message and split.message not in reported:
                    reported.add(split.message)
                    logger.log(split.level, split.message)
                    print(split.message)  # the log itself goes to runs/pipeline.log only
                model, train_data = split_model_entry(container["model"])
                config = {"model": model, "data": container["data"]}
                if train_data is not None:
                    config[TRAIN_DATA_KEY] = train_data
                yield ClipadBenchmarkJob(
                    accelerator=self.accelerator,
                    config=config,
                    seed=int(container.get("seed", 42)),
                    flat_cfg=_flatten("", container),
                    metrics=self.metrics,
                    index=index,
                    total=len(containers),
                    start_time=start_time,
                )

    class ClipadBenchmark(Pipeline):
        """anomalib's benchmark pipeline with :class:`ClipadBenchmarkJob`; ``run`` returns whether all jobs passed."""

        @staticmethod
        def _setup_runners(args: dict) -> list:
            accelerators = args.get("accelerator", "cpu")
            accelerators = accelerators if isinstance(accelerators, list) else [accelerators]
            metrics = args.get("metrics")
            build_evaluator(metrics)  # an unknown metric name stops the run before any job
            runners = []
            for accelerator in accelerators:
                if accelerator not in _SUPPORTED_ACCELERATORS:
                    msg = f"Unsupported accelerator {accelerator!r}; expected one of {_SUPPORTED_ACCELERATORS}."
                    raise ValueError(msg)
                device_count = torch.cuda.device_count()
                generator = ClipadBenchmarkJobGenerator(accelerator, metrics)
                if accelerator == "cpu" or device_count <= 1:
                    runners.append(SerialRunner(generator))
                else:
                    runners.append(ParallelRunner(generator, n_jobs=device_count))
            return runners

        def run_config(self, config: dict[str, Any], run_dir: Path | None = None) -> bool:
            """Run every job of ``config``.

            Args:
                config: The parsed YAML configuration.
                run_dir: Folder of ``results.csv`` (default: ``runs/benchmark/<timestamp>``).

            Returns:
                ``True`` when every job succeeded (a CSV is written either way).
            """
            runners = self._setup_runners(config)
            ClipadBenchmarkJob.run_dir = run_dir
            ok = True
            for runner in runners:
                try:
                    results = runner.run(config.get("benchmark") or {}, None)
                except Exception:
                    logger.exception("Benchmark runner %s reported failures.", type(runner).__name__)
                    ok = False
                    continue
                if "error" in results.columns and results["error"].notna().any():
                    ok = False
            trained.clear()
            return ok

    return ClipadBenchmarkJob, ClipadBenchmarkJobGenerator, ClipadBenchmark


def prepare_synthetic_dataset(config: dict[str, Any]) -> Path | list[Path] | None:
    """Generate the dataset(s) of the optional top-level ``synthetic_dataset`` entry whose folder is missing.

    Args:
        config: The parsed YAML configuration; ``synthetic_dataset`` is a mapping of keyword arguments of
            :func:`~anomalib_clipad.data.synthetic.generate_synthetic_dataset` or a list of such mappings.

    Returns:
        The category folder (a list of them for a list), or ``None`` when the configuration has no
        ``synthetic_dataset`` entry.
    """
    spec = config.get("synthetic_dataset")
    if not spec:
        return None
    if isinstance(spec, list):
        return [_prepare_one_synthetic_dataset(item) for item in spec]
    return _prepare_one_synthetic_dataset(spec)


def _prepare_one_synthetic_dataset(spec: dict[str, Any]) -> Path:
    from anomalib_clipad.data.synthetic import generate_synthetic_dataset

    spec = dict(spec)
    root = Path(spec.pop("root"))
    category = spec.pop("category", "widget")
    folder = root / category
    if folder.is_dir() and any(folder.iterdir()):
        print(f"Using the existing synthetic dataset {folder}")
        return folder
    generate_synthetic_dataset(root, category, **spec)
    print(f"Generated the synthetic dataset {folder}")
    return folder


def run_benchmark(config_path: str | Path) -> bool:
    """Run the benchmark described by a YAML file (anomalib's format, see the module docstring).

    Args:
        config_path: Path of the YAML configuration.

    Returns:
        ``True`` when every job succeeded. Tracebacks of failed jobs go to ``runs/pipeline.log``; the results and a
        copy of the configuration go to ``runs/benchmark/<timestamp>/``.

    Raises:
        FileNotFoundError: If the configuration file does not exist.
        ValueError: If the file is not a YAML mapping with a ``benchmark`` section, or names an unknown metric.
    """
    config_path = Path(config_path)
    if not config_path.is_file():
        msg = f"Benchmark configuration {config_path} does not exist."
        raise FileNotFoundError(msg)
    text = config_path.read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    if not isinstance(config, dict) or not isinstance(config.get("benchmark"), dict):
        msg = f"{config_path} must be a YAML mapping with a 'benchmark' section (anomalib's benchmark format)."
        raise ValueError(msg)
    build_evaluator(config.get("metrics"))  # an unknown metric name is a configuration error
    prepare_synthetic_dataset(config)

    from anomalib.utils.logging import redirect_logs

    _, _, pipeline_class = _build_classes()
    LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
    redirect_logs(str(LOG_FILE))
    run_dir = RESULTS_DIR / datetime.now().strftime("%Y-%m-%d-%H_%M_%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / config_path.name).write_text(text, encoding="utf-8")  # for `anomalib-clipad results`
    ok = pipeline_class().run_config(config, run_dir=run_dir)
    if not ok:
        print(f"Some benchmark jobs failed; see {LOG_FILE} for the tracebacks.")
    return ok
