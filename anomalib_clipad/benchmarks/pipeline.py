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
:data:`DEFAULT_METRICS`, :data:`METRICS`), on the same field shapes whatever the model's output shapes
(:mod:`anomalib_clipad.benchmarks.metrics`), so any anomalib model is scored beside ours. Each row also has
``seconds_per_image`` (wall time of the test batches, pre-processing and forward pass, divided by the number of test
images), ``n_test_images``, ``images_per_second`` (test images / wall time of the whole ``Engine.test`` call,
calibration on the validation split included), ``peak_memory_MiB`` and ``peak_memory_source`` (what the job, from
building the model to the end of its test, added to the memory in use: CUDA memory allocated on a GPU, the process's
peak RSS increase on a CPU; :mod:`anomalib_clipad.benchmarks.memory`), ``dataset``, ``category`` and ``k_shot``.
Models are built with ``visualizer=False`` unless their ``init_args`` set one (the run's folder is temporary). Each
job prints ``job i of N: <model> <setting> <category> (elapsed ...)`` when it starts and its main metrics, time per
image, throughput and peak memory when it ends.

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
  model, ``train_data``, ``trainer`` and seed train **once**: the fitted model is reused for every target
  (``fit_reused``).
* In an entry of ``benchmark.model.grid``: ``trainer``, keyword arguments of the jobs' ``Engine`` (Lightning
  ``Trainer``), e.g. ``{max_epochs: 1}`` for an anomalib model whose ``trainer_arguments`` leave the number of
  epochs to Lightning's default (Fastflow, ReverseDistillation).
* An entry ``{anomalib_clipad_models: tiny, auxiliary_train_data: <datamodule>}`` of ``benchmark.model.grid``
  stands for every model of :data:`anomalib_clipad.registry.MODELS` with its ``tiny`` and ``few_shot`` settings
  (WinCLIPPlus zero- and few-shot), the auxiliary-data models fitted on ``auxiliary_train_data``
  (:func:`registry_model_entries`): a new registry row enters such a grid with no change to the configuration.
* ``deploy``: ``torch`` and ``openvino:<precision>`` names (``--deploy`` on the command line replaces it), and
  ``deploy`` in an entry of ``benchmark.model.grid`` for that entry's jobs: each job then also exports its fitted
  model to an OpenVINO IR at each precision and scores the test split with it, one row per deployment beside the
  torch row (:mod:`anomalib_clipad.benchmarks.deploy`; the CSV's ``deploy``, ``runtime`` and ``precision`` columns).
* ``published``: the papers' numbers, read by :mod:`anomalib_clipad.benchmarks.results_page` only.

Results are written to ``runs/benchmark/<timestamp>/results.csv`` like upstream, with a copy of the configuration
file (same name) beside it, which ``anomalib-clipad results`` reads for the ``published`` numbers.

The job, job generator and pipeline classes are in :mod:`anomalib_clipad.benchmarks.jobs` (module-level and picklable:
with several GPUs, anomalib's parallel runner runs each job in its own process); this module holds the configuration
helpers and stays light to import.

Example:
    .. code-block:: bash

        anomalib-clipad benchmark --config configs/benchmark/patchcore_vs_clipad.yaml
        anomalib-clipad results --csv runs/benchmark/<timestamp>/results.csv --out docs/results
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import yaml

from anomalib_clipad.benchmarks.deploy import DEPLOY_KEY, parse_deployments

logger = logging.getLogger(__name__)

RESULTS_DIR = Path("runs") / "benchmark"
LOG_FILE = Path("runs") / "pipeline.log"

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
precision-recall curve; ``F1Score`` uses the threshold calibrated on the validation split, ``F1Max`` the best one.
The classes are those of :mod:`anomalib_clipad.benchmarks.metrics` (anomalib's, fed the same shapes whatever the
model's output shapes)."""

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


def build_evaluator(names: list[str] | tuple[str, ...] | None = None) -> Any:
    """The :class:`anomalib.metrics.Evaluator` of a benchmark job.

    Args:
        names: Metric names (keys of :data:`METRICS`); default :data:`DEFAULT_METRICS`.

    Returns:
        An ``Evaluator`` with these test metrics (logged as the names), no validation metrics.

    Raises:
        ValueError: If a name is not a key of :data:`METRICS`.
    """
    from anomalib.metrics import Evaluator

    from anomalib_clipad.benchmarks.metrics import METRIC_CLASSES

    names = list(DEFAULT_METRICS if names is None else names)
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        msg = f"Unknown benchmark metric(s) {unknown}; choose from {list(METRICS)}."
        raise ValueError(msg)
    metrics = []
    for name in names:
        class_name, fields, strict = METRICS[name]
        prefix = name.removesuffix(class_name)
        metrics.append(METRIC_CLASSES[class_name](fields=list(fields), prefix=prefix, strict=strict))
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
TRAINER_KEY = "trainer"
"""Key of a model entry holding keyword arguments of its jobs' ``Engine`` (Lightning ``Trainer``), e.g.
``{max_epochs: 1}`` for a model whose ``trainer_arguments`` do not set the number of epochs."""
REGISTRY_MODELS_KEY = "anomalib_clipad_models"
"""Key of a model entry standing for every model of :data:`anomalib_clipad.registry.MODELS` (see
:func:`registry_model_entries`)."""
AUXILIARY_TRAIN_DATA_KEY = "auxiliary_train_data"
"""Key, beside :data:`REGISTRY_MODELS_KEY`, of the ``train_data`` of the registry's auxiliary-data models."""
REGISTRY_SIZES = ("tiny",)
"""The values of :data:`REGISTRY_MODELS_KEY`: ``tiny`` builds each model with :attr:`ModelSpec.tiny
<anomalib_clipad.registry.ModelSpec.tiny>` (a tiny randomly initialised CLIP, for CI)."""


class ModelEntry(NamedTuple):
    """A model entry of ``benchmark.model.grid`` split by :func:`split_model_entry`.

    Attributes:
        model: The model configuration (``class_path`` and ``init_args``), without the keys below.
        train_data: The datamodule the model is fitted on (``None``: the job's own datamodule).
        trainer: ``Engine`` keyword arguments of the job (``{}``: anomalib's defaults and the model's own).
        deploy: The entry's own deployment names (``None``: the run's ``deploy``; see
            :mod:`anomalib_clipad.benchmarks.deploy`).
    """

    model: Any
    train_data: Any
    trainer: dict[str, Any]
    deploy: list[str] | None = None


def registry_model_entries(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The model entries an ``{anomalib_clipad_models: tiny}`` entry stands for: every registry row, in its order.

    Each row of :data:`anomalib_clipad.registry.MODELS` gives ``class_path: anomalib_clipad.<Name>`` with
    ``init_args`` = ``spec.tiny`` and ``spec.few_shot`` (its normal reference shots); a model that learns nothing
    (``Protocol.SET_UP``, WinCLIPPlus) with reference shots gives two entries, zero-shot (``spec.tiny`` alone) first.
    A model learned on auxiliary data (``Protocol.AUXILIARY_DATA``, AnomalyCLIP, SimCLIP) gets the entry's
    ``auxiliary_train_data`` as its ``train_data`` (trained once, tested on every ``benchmark.data`` entry). A new
    registry row thus enters every grid that has such an entry with no change to its configuration.

    Args:
        entry: ``{anomalib_clipad_models: tiny, auxiliary_train_data: <datamodule configuration>}``; the latter is
            needed when the registry has an auxiliary-data model.

    Returns:
        The model entries (plain configurations, like hand-written ones).

    Raises:
        ValueError: An unknown size, an unknown key, or no ``auxiliary_train_data`` for an auxiliary-data model.
    """
    from anomalib_clipad.registry import MODELS, Protocol

    size = entry.get(REGISTRY_MODELS_KEY)
    if size not in REGISTRY_SIZES:
        msg = f"{REGISTRY_MODELS_KEY}: {size!r} is not one of {list(REGISTRY_SIZES)}."
        raise ValueError(msg)
    unknown = set(entry) - {REGISTRY_MODELS_KEY, AUXILIARY_TRAIN_DATA_KEY}
    if unknown:
        msg = f"A {REGISTRY_MODELS_KEY} entry takes only {AUXILIARY_TRAIN_DATA_KEY!r} beside it, got {sorted(unknown)}."
        raise ValueError(msg)
    entries: list[dict[str, Any]] = []
    for spec in MODELS:
        settings = [{**spec.tiny, **spec.few_shot}]
        if spec.protocol is Protocol.SET_UP and spec.few_shot:
            settings.insert(0, dict(spec.tiny))
        for init_args in settings:
            model: dict[str, Any] = {"class_path": f"anomalib_clipad.{spec.name}", "init_args": init_args}
            if spec.protocol is Protocol.AUXILIARY_DATA:
                if entry.get(AUXILIARY_TRAIN_DATA_KEY) is None:
                    msg = (
                        f"{spec.name} learns on auxiliary data: give its datamodule as {AUXILIARY_TRAIN_DATA_KEY} "
                        f"beside {REGISTRY_MODELS_KEY} (e.g. anomalib_clipad.data.AuxiliaryData of another dataset)."
                    )
                    raise ValueError(msg)
                model[TRAIN_DATA_KEY] = entry[AUXILIARY_TRAIN_DATA_KEY]
            entries.append(model)
    return entries


def _has_grid(value: Any) -> bool:
    if isinstance(value, dict):
        return "grid" in value or any(_has_grid(item) for item in value.values())
    return False


def _expand_entry(entry: Any) -> list[Any]:
    """One model entry per registry model and per combination of the ``{grid: [...]}`` values inside it."""
    if isinstance(entry, dict) and REGISTRY_MODELS_KEY in entry:
        return [expanded for model in registry_model_entries(entry) for expanded in _expand_entry(model)]
    if not _has_grid(entry):
        return [entry]
    from anomalib.pipelines.components.utils import get_iterator_from_grid_dict

    return list(get_iterator_from_grid_dict(entry))


def expand_model_grid(args: dict[str, Any]) -> dict[str, Any]:
    """The ``benchmark`` section with the entries of ``model.grid`` expanded.

    anomalib expands ``{grid: [...]}`` values of the section itself, but an entry of a ``model: {grid: [...]}`` list
    is taken whole. Here ``{class_path: PromptAD, init_args: {k_shot: {grid: [1, 2, 4]}}}`` in that list becomes
    three entries, and ``{anomalib_clipad_models: tiny}`` one entry per model of the registry
    (:func:`registry_model_entries`), in place (so jobs stay ordered by model, then grid value, then data).

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


def split_model_entry(entry: Any) -> ModelEntry:
    """The model configuration of a model entry, its ``train_data``, ``trainer`` and ``deploy`` values, apart.

    Raises:
        ValueError: A ``trainer`` that is not a mapping, or an unknown deployment name in ``deploy``.
    """
    if not isinstance(entry, dict):
        return ModelEntry(entry, None, {})
    model = {key: value for key, value in entry.items() if key not in {TRAIN_DATA_KEY, TRAINER_KEY, DEPLOY_KEY}}
    trainer = entry.get(TRAINER_KEY) or {}
    if not isinstance(trainer, dict):
        msg = f"A model entry's {TRAINER_KEY} must be a mapping of Engine arguments, got {trainer!r}."
        raise ValueError(msg)
    deploy = None
    if entry.get(DEPLOY_KEY) is not None:
        where = f"{DEPLOY_KEY} of the model entry {_short_class_name(model)}"
        deploy = [deployment.name for deployment in parse_deployments(entry[DEPLOY_KEY], where)]
    return ModelEntry(model, entry.get(TRAIN_DATA_KEY), dict(trainer), deploy)


def run_deployments(config: dict[str, Any]) -> list[str]:
    """The deployment names of a run (its top-level ``deploy``), checked together with every model entry's own.

    Args:
        config: The parsed configuration.

    Returns:
        The run's names, ``torch`` first (:func:`~anomalib_clipad.benchmarks.deploy.parse_deployments`).

    Raises:
        ValueError: An unknown deployment name, at the top or in a model entry; the message lists the choices.
    """
    names = [deployment.name for deployment in parse_deployments(config.get(DEPLOY_KEY), DEPLOY_KEY)]
    benchmark = config.get("benchmark")
    model = benchmark.get("model") if isinstance(benchmark, dict) else None
    entries = model.get("grid") if isinstance(model, dict) and isinstance(model.get("grid"), list) else [model]
    for entry in entries:
        if isinstance(entry, dict) and REGISTRY_MODELS_KEY not in entry:
            split_model_entry(entry)
    return names


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


_SUMMARY_COLUMNS = (
    "model",
    "k_shot",
    "category",
    "deploy",
    "image_AUROC",
    "pixel_AUROC",
    "pixel_AUPRO",
    "image_AP",
    "image_F1Score",
    "seconds_per_image",
    "images_per_second",
    "peak_memory_MiB",
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
    if "deploy" in columns and set(table["deploy"].dropna()) <= {"torch"}:
        columns.remove("deploy")  # torch rows only: nothing to tell apart
    table = table[columns]
    if "k_shot" in table.columns:
        table["k_shot"] = table["k_shot"].map(lambda value: "" if pd.isna(value) else str(int(value)))
    if "error" in table.columns:
        table["error"] = table["error"].fillna("").astype(str).str.slice(0, 60)
    return table.to_string(index=False, float_format=lambda value: f"{value:.3f}", na_rep="")


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


def run_benchmark(config_path: str | Path, deploy: list[str] | None = None) -> bool:
    """Run the benchmark described by a YAML file (anomalib's format, see the module docstring).

    Args:
        config_path: Path of the YAML configuration.
        deploy: Deployment names (``--deploy``) instead of the configuration's top-level ``deploy``; a model entry's
            own ``deploy`` still wins for its jobs.

    Returns:
        ``True`` when every job succeeded. Tracebacks of failed jobs go to ``runs/pipeline.log``; the results and a
        copy of the configuration go to ``runs/benchmark/<timestamp>/``.

    Raises:
        FileNotFoundError: If the configuration file does not exist.
        ValueError: If the file is not a YAML mapping with a ``benchmark`` section, or names an unknown metric or
            deployment.
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
    if deploy is not None:
        config[DEPLOY_KEY] = list(deploy)
    run_deployments(config)  # so is an unknown deployment
    prepare_synthetic_dataset(config)

    from anomalib.utils.logging import redirect_logs

    from anomalib_clipad.benchmarks.jobs import ClipadBenchmark

    LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
    redirect_logs(str(LOG_FILE))
    run_dir = RESULTS_DIR / datetime.now().strftime("%Y-%m-%d-%H_%M_%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / config_path.name).write_text(text, encoding="utf-8")  # for `anomalib-clipad results`
    ok = ClipadBenchmark().run_config(config, run_dir=run_dir)
    if not ok:
        print(f"Some benchmark jobs failed; see {LOG_FILE} for the tracebacks.")
    return ok
