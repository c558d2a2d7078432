# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The job, job generator and pipeline of ``anomalib-clipad benchmark`` (anomalib's pipeline classes, fixed).

The configuration format and what is fixed against anomalib 2.7's ``anomalib benchmark`` are described in
:mod:`anomalib_clipad.benchmarks.pipeline`, whose :func:`~anomalib_clipad.benchmarks.pipeline.run_benchmark` runs
:class:`ClipadBenchmark`. This module imports anomalib's pipeline classes (and with them ``anomalib.engine``) at import
time, so the pipeline module imports it only when a benchmark runs.

Every class here is a module-level class whose state is passed explicitly, so that anomalib's
:class:`~anomalib.pipelines.components.runners.ParallelRunner` (one process per GPU, ``spawn`` start method) can pickle
a job and run it in another process:

* :class:`ClipadBenchmarkJob` holds its configuration (plain data), never a built model or datamodule;
* :class:`TrainedModels` keeps the model fitted on a ``train_data`` entry for the next jobs with the same entry, within
  one process: a pickled copy starts empty, so a job run in another process fits its own model;
* :class:`BenchmarkResults` is what the runners call after the jobs (``name``, ``collect``, ``save``), bound to the
  run's folder (anomalib's runners take these from the generator's ``job_class``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, NamedTuple

import pandas as pd
import torch
from anomalib.pipelines.benchmark.job import BenchmarkJob
from anomalib.pipelines.components import JobGenerator
from anomalib.pipelines.components.base import Pipeline
from anomalib.pipelines.components.runners import ParallelRunner, SerialRunner
from anomalib.pipelines.components.utils import get_iterator_from_grid_dict

from anomalib_clipad.benchmarks.deploy import (
    DEPLOY_KEY,
    OPENVINO_DEVICE,
    TORCH_F32,
    Deployment,
    compile_ir,
    deployment_columns,
    export_ir,
    inference_precision,
    parse_deployments,
    score_openvino,
    torch_precision,
)
from anomalib_clipad.benchmarks.memory import PeakMemory
from anomalib_clipad.benchmarks.pipeline import (
    RESULTS_DIR,
    TRAIN_DATA_KEY,
    TRAINER_KEY,
    _flatten,
    _init_args,
    _short_class_name,
    build_evaluator,
    category_of,
    expand_model_grid,
    held_out_calibration,
    instantiate,
    setting_label,
    split_model_entry,
    summary_table,
)
from anomalib_clipad.training.progress import InferenceTiming

logger = logging.getLogger(__name__)

SUPPORTED_ACCELERATORS = ("cpu", "cuda", "gpu", "auto")
_PRINTED_METRICS = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO")


def _format_elapsed(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class JobTiming(InferenceTiming):
    """The time per image of a job's test run: :class:`InferenceTiming`, passed to the ``Engine``.

    A type of its own: Lightning drops a trainer callback whose type a model's ``configure_callbacks`` also returns,
    and every anomalib-clipad model returns its own ``InferenceTiming``.
    """


class _TrainedModel(NamedTuple):
    """A model fitted on a job's ``train_data``, kept for the next jobs with the same configuration."""

    key: str
    model: Any
    fit_duration: float
    job: str
    error: str | None = None


class TrainedModels:
    """The last model fitted on a ``train_data`` entry (or its failure), for the next jobs of the same process.

    Consecutive jobs with the same model, ``train_data`` and seed reuse one fit. At most one model is kept: storing
    another drops the previous one. The cache belongs to its process: pickling it (a job sent to another process)
    gives an empty cache.
    """

    def __init__(self) -> None:
        self._last: _TrainedModel | None = None

    def __reduce__(self) -> tuple[type, tuple]:
        """Pickle as an empty cache (a model stays in the process that fitted it)."""
        return TrainedModels, ()

    def get(self, key: str) -> _TrainedModel | None:
        """The kept fit of ``key`` (``None`` when the kept one, if any, is for another configuration)."""
        return self._last if self._last is not None and self._last.key == key else None

    def put(self, entry: _TrainedModel) -> None:
        """Keep ``entry`` instead of the previous one."""
        self._last = entry

    def clear(self) -> None:
        """Drop the kept model (frees its memory)."""
        self._last = None


def save_results(result: pd.DataFrame, run_dir: Path | None = None) -> Path:
    """Print the summary table and write the results CSV.

    Args:
        result: one row per job.
        run_dir: folder of ``results.csv`` (default: ``runs/benchmark/<timestamp>``); when it already has one (several
            runners, one per accelerator, in one run), ``results_1.csv``, ``results_2.csv``, ...

    Returns:
        The CSV's path.
    """
    if len(result):
        print(summary_table(result))
    run_dir = run_dir or RESULTS_DIR / datetime.now().strftime("%Y-%m-%d-%H_%M_%S")
    path = run_dir / "results.csv"
    counter = 1
    while path.exists():
        path = run_dir / f"results_{counter}.csv"
        counter += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(path, index=False)
    print(f"Saved benchmark results ({len(result)} rows) to {path}")
    return path


class ClipadBenchmarkJob(BenchmarkJob):
    """One benchmark run: build the model and datamodule, ``fit`` then ``test`` them (keyword arguments).

    Args:
        accelerator: Lightning accelerator (``cpu``, ``cuda``, ``gpu``, ``auto``).
        config: ``{"model": ..., "data": ...}`` and, for a model entry that has them, ``"train_data"`` (class path
            strings or ``{"class_path": ..., "init_args": ...}``) and ``"trainer"`` (``Engine`` keyword arguments).
        seed: seed of the job.
        flat_cfg: the job's grid combination, flattened (the CSV's configuration columns).
        metrics: test metric names (default: :data:`~anomalib_clipad.benchmarks.pipeline.DEFAULT_METRICS`).
        index: the job's number in the run (from 1), for the console.
        total: the number of jobs of the run.
        start_time: when the run started (``time.time()``), for the elapsed time printed.
        trained: where a model fitted on ``train_data`` is kept for the next jobs of this process (default: a cache
            of this job alone).
        deploy: the deployment names of the job's rows (:mod:`~anomalib_clipad.benchmarks.deploy`; default: the torch
            row only). ``torch`` comes first whatever the order.
    """

    name = "benchmark"

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
        trained: TrainedModels | None = None,
        deploy: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        # Keep the picklable configuration, not instances: models are built inside ``run`` (one process per job with
        # ParallelRunner; one failing configuration does not abort the others).
        self.accelerator = accelerator
        self.config = config
        self.seed = seed
        self.flat_cfg = flat_cfg
        self.metrics = metrics
        self.index = index
        self.total = total
        self.start_time = time.time() if start_time is None else start_time
        self.trained = TrainedModels() if trained is None else trained
        self.deploy = [deployment.name for deployment in parse_deployments(list(deploy or []))]

    @property
    def deployments(self) -> list[Deployment]:
        """The job's deployments: torch first, then those of ``deploy``."""
        return parse_deployments(self.deploy)

    @property
    def label(self) -> str:
        """``"WinCLIPPlus 1-shot bottle"``: model class, setting and target category, for the console."""
        model = self.config["model"]
        parts = [_short_class_name(model), setting_label(_init_args(model).get("k_shot"))]
        parts.append(category_of(self.config["data"]))
        return " ".join(part for part in parts if part)

    def _train_key(self) -> str:
        config = {
            "model": self.config["model"],
            "train_data": self.config.get(TRAIN_DATA_KEY),
            "trainer": self.config.get(TRAINER_KEY),
            "seed": self.seed,
        }
        return json.dumps(config, sort_keys=True, default=str)

    def _devices(self, task_id: int | None) -> str | list[int]:
        """The device of the parallel runner's task on a GPU; Lightning's choice otherwise."""
        return "auto" if task_id is None or self.accelerator == "cpu" else [task_id]

    def _fit(self, model: Any, engine_factory: Callable[[], Any], datamodule: Any) -> tuple[Any, float, bool]:
        """Fit ``model`` (on ``train_data`` when the entry has one, reusing an earlier job's fit of it).

        A ZERO_SHOT / FEW_SHOT model without ``train_data`` (WinCLIPPlus) is not fitted: anomalib's ``Engine.fit``
        only runs its validation (shots, thresholds), which ``Engine.test`` runs again anyway.

        Returns:
            The fitted model, the fit duration and whether an earlier fit was reused.

        Raises:
            RuntimeError: an earlier job failed to fit the same model on the same ``train_data``.
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
        previous = self.trained.get(key)
        if previous is not None:
            if previous.error is not None:
                msg = f"training on train_data failed in {previous.job}: {previous.error}"
                raise RuntimeError(msg)
            print(f"  reusing the model trained on train_data in {previous.job}", flush=True)
            return previous.model, previous.fit_duration, True
        self.trained.clear()  # free the previous model before training the next one
        start = time.time()
        job = f"job {self.index}"
        try:
            train_datamodule = instantiate(train_data, AnomalibDataModule, "train_data")
            engine_factory().fit(model=model, datamodule=train_datamodule)
        except Exception as exc:
            self.trained.put(_TrainedModel(key, None, 0.0, job, f"{type(exc).__name__}: {exc}"))
            raise
        fit_duration = time.time() - start
        self.trained.put(_TrainedModel(key, model, fit_duration, job))
        return model, fit_duration, False

    def run(self, task_id: int | None = None) -> list[dict[str, Any]]:
        """Fit and test one model on one datamodule; then export and score it for each deployment.

        Args:
            task_id: Device index when run by the parallel runner.

        Returns:
            One row per deployment (torch first): durations, the flattened configuration and the test metrics; for a
            failed deployment, the configuration and an ``error`` entry (the traceback goes to the log). When the torch
            part fails (building, fitting or testing the model), every deployment's row has that error.
        """
        from anomalib.data import AnomalibDataModule
        from anomalib.engine import Engine
        from anomalib.models import AnomalibModule
        from lightning import seed_everything

        devices = self._devices(task_id)
        trainer_args = self.config.get(TRAINER_KEY) or {}
        deployments = self.deployments
        job_start = time.time()
        print(
            f"job {self.index} of {self.total}: {self.label} (elapsed {_format_elapsed(job_start - self.start_time)})",
            flush=True,
        )
        identity = {
            "dataset": _short_class_name(self.config["data"]),
            "category": category_of(self.config["data"]),
            "k_shot": _init_args(self.config["model"]).get("k_shot"),
        }
        torch_columns = deployment_columns(TORCH_F32, torch_precision(trainer_args))
        memory = PeakMemory(self.accelerator, None if isinstance(devices, str) else devices[0])
        with TemporaryDirectory() as temp_dir:
            try:
                with memory:
                    seed_everything(self.seed)
                    evaluator = build_evaluator(self.metrics)
                    model = instantiate(
                        self.config["model"], AnomalibModule, "model", {"evaluator": evaluator, "visualizer": False}
                    )
                    datamodule = instantiate(self.config["data"], AnomalibDataModule, "data")
                    identity.update(dataset=type(datamodule).__name__, k_shot=getattr(model.hparams, "k_shot", None))

                    def engine_factory(callbacks: list[Any] | None = None) -> Any:
                        engine_args = {"accelerator": self.accelerator, "devices": devices, **trainer_args}
                        return Engine(**engine_args, default_root_dir=temp_dir, callbacks=callbacks)

                    fitted, fit_duration, reused = self._fit(model, engine_factory, datamodule)
                    if reused and fitted.evaluator is not None and "evaluator" not in _init_args(self.config["model"]):
                        fitted.evaluator = evaluator  # fresh metrics for this target
                    timer = JobTiming(f"job {self.index} ({self.label})")
                    test_start = time.time()
                    test_results = engine_factory([timer]).test(model=fitted, datamodule=datamodule)
                    test_end = time.time()
            except Exception as exc:
                # A failed job still gets its rows (with the error), and the pipeline's exit code reports it.
                logger.exception("Benchmark job failed: %s", self.flat_cfg)
                error = f"{type(exc).__name__}: {exc}"
                print(f"job {self.index} of {self.total} FAILED: {error[:300]}", flush=True)
                columns = [torch_columns, *(deployment_columns(deployment) for deployment in deployments[1:])]
                return [
                    {"accelerator": self.accelerator, **identity, **deployed, **self.flat_cfg, "error": error}
                    for deployed in columns
                ]
            metrics = test_results[0] if test_results else {}
            seconds_per_image = timer.seconds_per_image or math.nan
            test_duration = test_end - test_start
            images_per_second = timer.images / test_duration if timer.images and test_duration > 0 else math.nan
            common = {"fit_duration": fit_duration, "fit_reused": reused, "model": type(model).__name__, **identity}
            output = {
                "accelerator": self.accelerator,
                "job_duration": test_end - job_start,
                "test_duration": test_duration,
                "seconds_per_image": seconds_per_image,
                "n_test_images": timer.images,
                "images_per_second": images_per_second,
                "peak_memory_MiB": memory.peak_mib,
                "peak_memory_source": memory.source,
                **common,
                **torch_columns,
                **self.flat_cfg,
                **metrics,
            }
            shown = "  ".join(f"{name} {metrics[name]:.3f}" for name in _PRINTED_METRICS if name in metrics)
            print(
                f"job {self.index} of {self.total} done in {test_end - job_start:.1f} s: {shown}  "
                f"{seconds_per_image:.3f} s per image ({timer.images} test images), {images_per_second:.1f} "
                f"images/s, peak memory {memory.peak_mib:.0f} MiB ({memory.source})",
                flush=True,
            )
            logger.info("Completed with result %s", output)
            rows = [output]
            for deployment in deployments[1:]:
                rows.append(self._run_deployed(deployment, fitted, datamodule, Path(temp_dir), common))
        return rows

    def _run_deployed(
        self, deployment: Deployment, model: Any, datamodule: Any, temp_dir: Path, common: dict[str, Any]
    ) -> dict[str, Any]:
        """Export the fitted, calibrated ``model`` for ``deployment``, score the test split with the IR: one row.

        Returns:
            The row: the torch row's columns (``fit_duration``, identity), the metrics, ``export_duration``,
            ``compile_duration``, ``test_duration``, ``seconds_per_image`` (IR inference calls), ``images_per_second``
            (test images / wall time of the scoring loop), ``peak_memory_MiB`` (what compiling the IR and scoring
            added, RSS) and ``inference_precision`` (OpenVINO's, read back); or an ``error`` entry.
        """
        start = time.time()
        columns = {"accelerator": self.accelerator, **common, **deployment_columns(deployment)}
        columns["deploy_device"] = OPENVINO_DEVICE
        label = f"job {self.index} of {self.total} {deployment.name}"
        memory = PeakMemory("cpu")  # OpenVINO runs on the CPU whatever the job's accelerator
        try:
            exported = export_ir(model, datamodule, deployment, temp_dir / deployment.name.replace(":", "_"))
            with memory:
                compile_start = time.time()
                compiled = compile_ir(exported.path, deployment)
                compile_duration = time.time() - compile_start
                scores = score_openvino(model, datamodule, compiled, self.metrics)
        except Exception as exc:
            logger.exception("Deployment %s of benchmark job failed: %s", deployment.name, self.flat_cfg)
            error = f"{deployment.name} of {common['model']}: {type(exc).__name__}: {exc}"
            print(f"{label} FAILED: {error[:300]}", flush=True)
            return {**columns, **self.flat_cfg, "error": error}
        seconds_per_image = scores.inference_seconds / scores.images if scores.images else math.nan
        images_per_second = scores.images / scores.seconds if scores.images and scores.seconds > 0 else math.nan
        output = {
            **columns,
            "job_duration": time.time() - start,
            "export_duration": exported.seconds,
            "compile_duration": compile_duration,
            "test_duration": scores.seconds,
            "seconds_per_image": seconds_per_image,
            "n_test_images": scores.images,
            "images_per_second": images_per_second,
            "peak_memory_MiB": memory.peak_mib,
            "peak_memory_source": memory.source,
            "inference_precision": inference_precision(compiled),
            **self.flat_cfg,
            **scores.metrics,
        }
        shown = "  ".join(f"{name} {scores.metrics[name]:.3f}" for name in _PRINTED_METRICS if name in scores.metrics)
        print(
            f"{label} done in {output['job_duration']:.1f} s (export {exported.seconds:.1f} s): {shown}  "
            f"{seconds_per_image:.3f} s per image ({scores.images} test images), {images_per_second:.1f} images/s, "
            f"peak memory {memory.peak_mib:.0f} MiB ({memory.source})",
            flush=True,
        )
        logger.info("Completed with result %s", output)
        return output

    @staticmethod
    def collect(results: list[dict[str, Any] | list[dict[str, Any]]]) -> pd.DataFrame:
        """One row per job and deployment, columns = union of all rows' keys (empty where a row has no such key)."""
        rows = [row for result in results for row in (result if isinstance(result, list) else [result])]
        return pd.DataFrame(rows)

    @staticmethod
    def save(result: pd.DataFrame) -> None:
        """Print the table and write ``runs/benchmark/<timestamp>/results.csv`` (see :func:`save_results`)."""
        save_results(result)


class BenchmarkResults:
    """What anomalib's runners use of a generator's ``job_class`` after the jobs, writing into one run's folder.

    The runners read only ``job_class.name``, call ``job_class.collect(results)`` and ``job_class.save(table)``; this
    object gives them :class:`ClipadBenchmarkJob`'s, with ``save`` writing into ``run_dir``.

    Args:
        run_dir: folder of ``results.csv`` (default: ``runs/benchmark/<timestamp>``).
    """

    name = ClipadBenchmarkJob.name
    collect = staticmethod(ClipadBenchmarkJob.collect)

    def __init__(self, run_dir: Path | None = None) -> None:
        self.run_dir = run_dir

    def save(self, result: pd.DataFrame) -> None:
        """Print the table and write the CSV into :attr:`run_dir` (see :func:`save_results`)."""
        save_results(result, self.run_dir)


class ClipadBenchmarkJobGenerator(JobGenerator):
    """Expand the ``grid`` entries of the ``benchmark`` section into one job per combination.

    Args:
        accelerator: the jobs' accelerator.
        metrics: the test metric names (default: :data:`~anomalib_clipad.benchmarks.pipeline.DEFAULT_METRICS`).
        run_dir: folder of the results CSV (default: ``runs/benchmark/<timestamp>``).
        trained: the cache of fitted models shared by the jobs (default: a new one).
        deploy: the run's deployment names (default: the torch row only); a model entry's ``deploy`` wins for its jobs.
    """

    def __init__(
        self,
        accelerator: str,
        metrics: list[str] | None = None,
        run_dir: Path | None = None,
        trained: TrainedModels | None = None,
        deploy: list[str] | None = None,
    ) -> None:
        self.accelerator = accelerator
        self.metrics = metrics
        self.deploy = [deployment.name for deployment in parse_deployments(deploy, DEPLOY_KEY)]
        self.results = BenchmarkResults(run_dir)
        self.trained = TrainedModels() if trained is None else trained

    @property
    def job_class(self) -> Any:
        """The runners' view of the job class (:class:`BenchmarkResults`: name, collect, save into the run folder)."""
        return self.results

    def generate_jobs(self, args: dict, previous_stage_result: Any = None) -> Iterator[ClipadBenchmarkJob]:
        """Yield one job per grid combination, each knowing its place in the run.

        Args:
            args: The ``benchmark`` section (``seed``, ``model``, ``data``, any of them with ``grid``; grids inside the
                entries of ``model.grid`` too, see :func:`~anomalib_clipad.benchmarks.pipeline.expand_model_grid`).
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
            entry = split_model_entry(container["model"])
            config = {"model": entry.model, "data": container["data"]}
            if entry.train_data is not None:
                config[TRAIN_DATA_KEY] = entry.train_data
            if entry.trainer:
                config[TRAINER_KEY] = entry.trainer
            yield ClipadBenchmarkJob(
                accelerator=self.accelerator,
                config=config,
                seed=int(container.get("seed", 42)),
                flat_cfg=_flatten("", container),
                metrics=self.metrics,
                index=index,
                total=len(containers),
                start_time=start_time,
                trained=self.trained,
                deploy=self.deploy if entry.deploy is None else entry.deploy,
            )


class ClipadBenchmark(Pipeline):
    """anomalib's benchmark pipeline with :class:`ClipadBenchmarkJob`; :meth:`run_config` says whether all passed."""

    @staticmethod
    def _setup_runners(args: dict, run_dir: Path | None = None, trained: TrainedModels | None = None) -> list:
        """One runner per accelerator: serial on a CPU or a single GPU, one process per GPU otherwise."""
        accelerators = args.get("accelerator", "cpu")
        accelerators = accelerators if isinstance(accelerators, list) else [accelerators]
        metrics = args.get("metrics")
        build_evaluator(metrics)  # an unknown metric name stops the run before any job
        deploy = parse_deployments(args.get(DEPLOY_KEY), DEPLOY_KEY)  # so does an unknown deployment
        runners = []
        for accelerator in accelerators:
            if accelerator not in SUPPORTED_ACCELERATORS:
                msg = f"Unsupported accelerator {accelerator!r}; expected one of {SUPPORTED_ACCELERATORS}."
                raise ValueError(msg)
            device_count = torch.cuda.device_count()
            generator = ClipadBenchmarkJobGenerator(
                accelerator, metrics, run_dir, trained, [deployment.name for deployment in deploy]
            )
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
        trained = TrainedModels()
        runners = self._setup_runners(config, run_dir, trained)
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
