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

The configuration format is anomalib's (``accelerator`` plus a ``benchmark`` section whose values may be
``{grid: [...]}``), with one optional addition: a top-level ``synthetic_dataset`` mapping of keyword arguments of
:func:`anomalib_clipad.data.synthetic.generate_synthetic_dataset`; that dataset is generated first when its folder
does not exist yet. Results are written to ``runs/benchmark/<timestamp>/results.csv`` like upstream.

Example:
    .. code-block:: bash

        anomalib-clipad benchmark --config configs/benchmark/patchcore_vs_clipad.yaml
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
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


def _as_class_config(value: Any, key: str) -> dict[str, Any]:
    """Normalise ``"Name"`` or ``{"class_path": ..., "init_args": ...}`` to the dict form."""
    if isinstance(value, str):
        return {"class_path": value}
    if isinstance(value, dict) and "class_path" in value:
        return value
    msg = f"benchmark.{key} must be a class path string or a mapping with 'class_path', got {value!r}."
    raise ValueError(msg)


def instantiate(value: Any, base_class: type, key: str) -> Any:
    """Build an instance of a ``base_class`` subclass from a class path (short or dotted) and ``init_args``.

    Resolution is jsonargparse's, the same as ``anomalib train --model ... --data ...``: a dotted path is imported,
    a short name is looked up among the imported subclasses of ``base_class`` (anomalib's and, through the
    registration hook, anomalib-clipad's).

    Args:
        value: ``"Patchcore"``, ``"anomalib_clipad.WinCLIPPlus"`` or ``{"class_path": ..., "init_args": {...}}``.
        base_class: ``AnomalibModule`` or ``AnomalibDataModule``.
        key: ``"model"`` or ``"data"`` (for messages).

    Returns:
        The instance.
    """
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base_class, key, required=True)
    config = parser.parse_object({key: _as_class_config(value, key)})
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


_SUMMARY_COLUMNS = (
    "model.class_path",
    "model.init_args.k_shot",
    "image_AUROC",
    "pixel_AUROC",
    "image_F1Score",
    "pixel_F1Score",
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
    columns = [column for column in _SUMMARY_COLUMNS if column in result.columns]
    table = result[columns].rename(columns={"model.class_path": "model", "model.init_args.k_shot": "k_shot"})
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


def _build_classes() -> tuple[type, type, type]:
    """Create the job, generator and pipeline subclasses (deferred so that importing this module stays light)."""
    BenchmarkJob, JobGenerator, Pipeline, ParallelRunner = _load_anomalib_benchmark_classes()  # noqa: N806
    from anomalib.pipelines.components.runners import SerialRunner
    from anomalib.pipelines.components.utils import get_iterator_from_grid_dict

    class ClipadBenchmarkJob(BenchmarkJob):
        """One benchmark run: build the model and datamodule, ``fit`` then ``test`` them (keyword arguments)."""

        name = "benchmark"

        def __init__(self, accelerator: str, config: dict[str, Any], seed: int, flat_cfg: dict[str, Any]) -> None:
            # Keep the picklable configuration, not instances: models are built inside ``run`` (one process per
            # job with ParallelRunner; one failing configuration does not abort the others).
            self.accelerator = accelerator
            self.config = config
            self.seed = seed
            self.flat_cfg = flat_cfg

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
            try:
                seed_everything(self.seed)
                model = instantiate(self.config["model"], AnomalibModule, "model")
                datamodule = instantiate(self.config["data"], AnomalibDataModule, "data")
                with TemporaryDirectory() as temp_dir:
                    engine = Engine(accelerator=self.accelerator, devices=devices, default_root_dir=temp_dir)
                    fit_start = time.time()
                    engine.fit(model=model, datamodule=datamodule)
                    test_start = time.time()
                    test_results = engine.test(model=model, datamodule=datamodule)
            except Exception as exc:
                # A failed job still gets its row (with the error), and the pipeline's exit code reports it.
                logger.exception("Benchmark job failed: %s", self.flat_cfg)
                return {"accelerator": self.accelerator, **self.flat_cfg, "error": f"{type(exc).__name__}: {exc}"}
            job_end = time.time()
            output = {
                "accelerator": self.accelerator,
                "job_duration": job_end - job_start,
                "fit_duration": test_start - fit_start,
                "test_duration": job_end - test_start,
                "model": type(model).__name__,
                **self.flat_cfg,
                **(test_results[0] if test_results else {}),
            }
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
            path = RESULTS_DIR / datetime.now().strftime("%Y-%m-%d-%H_%M_%S") / "results.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            result.to_csv(path, index=False)
            print(f"Saved benchmark results ({len(result)} rows) to {path}")

    class ClipadBenchmarkJobGenerator(JobGenerator):
        """Expand the ``grid`` entries of the ``benchmark`` section into one job per combination."""

        def __init__(self, accelerator: str) -> None:
            self.accelerator = accelerator

        @property
        def job_class(self) -> type:
            """The job class (:class:`ClipadBenchmarkJob`)."""
            return ClipadBenchmarkJob

        def generate_jobs(self, args: dict, previous_stage_result: Any = None) -> Any:
            """Yield one job per grid combination.

            Args:
                args: The ``benchmark`` section (``seed``, ``model``, ``data``, any of them with ``grid``).
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
            reported: set[str] = set()
            for container in get_iterator_from_grid_dict(args):
                split = held_out_calibration(container["data"])
                container["data"] = split.config
                if split.message and split.message not in reported:
                    reported.add(split.message)
                    logger.log(split.level, split.message)
                    print(split.message)  # the log itself goes to runs/pipeline.log only
                yield ClipadBenchmarkJob(
                    accelerator=self.accelerator,
                    config={"model": container["model"], "data": container["data"]},
                    seed=int(container.get("seed", 42)),
                    flat_cfg=_flatten("", container),
                )

    class ClipadBenchmark(Pipeline):
        """anomalib's benchmark pipeline with :class:`ClipadBenchmarkJob`; ``run`` returns whether all jobs passed."""

        @staticmethod
        def _setup_runners(args: dict) -> list:
            accelerators = args.get("accelerator", "cpu")
            accelerators = accelerators if isinstance(accelerators, list) else [accelerators]
            runners = []
            for accelerator in accelerators:
                if accelerator not in _SUPPORTED_ACCELERATORS:
                    msg = f"Unsupported accelerator {accelerator!r}; expected one of {_SUPPORTED_ACCELERATORS}."
                    raise ValueError(msg)
                device_count = torch.cuda.device_count()
                generator = ClipadBenchmarkJobGenerator(accelerator)
                if accelerator == "cpu" or device_count <= 1:
                    runners.append(SerialRunner(generator))
                else:
                    runners.append(ParallelRunner(generator, n_jobs=device_count))
            return runners

        def run_config(self, config: dict[str, Any]) -> bool:
            """Run every job of ``config``.

            Args:
                config: The parsed YAML configuration.

            Returns:
                ``True`` when every job succeeded (a CSV is written either way).
            """
            runners = self._setup_runners(config)
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
            return ok

    return ClipadBenchmarkJob, ClipadBenchmarkJobGenerator, ClipadBenchmark


def prepare_synthetic_dataset(config: dict[str, Any]) -> Path | None:
    """Generate the dataset of the optional top-level ``synthetic_dataset`` entry when its folder is missing.

    Args:
        config: The parsed YAML configuration.

    Returns:
        The category folder, or ``None`` when the configuration has no ``synthetic_dataset`` entry.
    """
    spec = config.get("synthetic_dataset")
    if not spec:
        return None
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
        ``True`` when every job succeeded. Tracebacks of failed jobs go to ``runs/pipeline.log``.

    Raises:
        FileNotFoundError: If the configuration file does not exist.
        ValueError: If the file is not a YAML mapping with a ``benchmark`` section.
    """
    config_path = Path(config_path)
    if not config_path.is_file():
        msg = f"Benchmark configuration {config_path} does not exist."
        raise FileNotFoundError(msg)
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    if not isinstance(config, dict) or not isinstance(config.get("benchmark"), dict):
        msg = f"{config_path} must be a YAML mapping with a 'benchmark' section (anomalib's benchmark format)."
        raise ValueError(msg)
    prepare_synthetic_dataset(config)

    from anomalib.utils.logging import redirect_logs

    _, _, pipeline_class = _build_classes()
    LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
    redirect_logs(str(LOG_FILE))
    ok = pipeline_class().run_config(config)
    if not ok:
        print(f"Some benchmark jobs failed; see {LOG_FILE} for the tracebacks.")
    return ok
