# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""A benchmark job survives what anomalib's ParallelRunner does with it: pickled, then run in a spawned process.

With several GPUs the pipeline runs one job per GPU through anomalib's ``ParallelRunner``, which submits ``job.run``
to a ``ProcessPoolExecutor`` with the ``spawn`` start method: the job is pickled in the parent and unpickled in a fresh
interpreter. The test does exactly that with a tiny random-init WinCLIPPlus (zero-shot: no fit) on a tiny generated
dataset, on the CPU.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from anomalib.pipelines.components.runners import ParallelRunner

from anomalib_clipad.benchmarks.jobs import (
    ClipadBenchmarkJob,
    ClipadBenchmarkJobGenerator,
    TrainedModels,
    _TrainedModel,
)
from anomalib_clipad.registry import TINY_BACKBONE

CATEGORY = "bottle"


def _benchmark_section(root: Path) -> dict:
    model = {"class_path": "anomalib_clipad.WinCLIPPlus", "init_args": {"backbone": TINY_BACKBONE, "pretrained": None}}
    model["init_args"]["image_size"] = 64
    data = {
        "class_path": "MVTecAD",
        "init_args": {"root": str(root), "category": CATEGORY, "eval_batch_size": 4, "num_workers": 0, "seed": 0},
    }
    return {"seed": 0, "model": model, "data": data}


def test_a_job_pickles_and_runs_in_a_spawned_process(tmp_path: Path, synthetic_dataset: Callable[..., Path]) -> None:
    root = synthetic_dataset([CATEGORY], n_train=1, n_test_good=2, n_test_defect=1, image_size=64)
    run_dir = tmp_path / "run"
    generator = ClipadBenchmarkJobGenerator("cpu", run_dir=run_dir)
    (job,) = generator.generate_jobs(_benchmark_section(root))
    copy = pickle.loads(pickle.dumps(job))
    assert isinstance(copy, ClipadBenchmarkJob)
    assert (copy.config, copy.flat_cfg, copy.seed) == (job.config, job.flat_cfg, job.seed)

    # anomalib's ParallelRunner: job.run(task_id=0) submitted to a ProcessPoolExecutor with the spawn start method
    table = ParallelRunner(generator, n_jobs=1).run(_benchmark_section(root))
    assert len(table) == 1
    result = table.iloc[0]
    assert "error" not in table.columns, result.get("error")
    assert result["model"] == "WinCLIPPlus"
    assert result["category"] == CATEGORY
    assert 0.0 <= result["image_AUROC"] <= 1.0
    assert result["n_test_images"] > 0
    assert math.isfinite(result["seconds_per_image"])
    assert result["seconds_per_image"] > 0
    assert result["images_per_second"] > 0  # test images / test wall time
    assert result["images_per_second"] <= 1 / result["seconds_per_image"]  # the test run holds the timed batches
    assert result["peak_memory_MiB"] > 0  # measured in the spawned process that built the model
    saved = pd.read_csv(run_dir / "results.csv")  # written into the run's folder by the runner
    assert saved.loc[0, "image_AUROC"] == pytest.approx(result["image_AUROC"])


def test_a_trained_model_stays_in_its_process() -> None:
    cache = TrainedModels()
    cache.put(_TrainedModel("key", object(), 1.0, "job 1"))
    assert cache.get("key") is not None
    assert cache.get("other") is None
    assert pickle.loads(pickle.dumps(cache)).get("key") is None  # a pickled copy (another process) starts empty
    job = ClipadBenchmarkJob("cpu", {"model": "Padim", "data": "MVTecAD"}, 0, {}, trained=cache)
    assert pickle.loads(pickle.dumps(job)).trained.get("key") is None
    assert job.trained.get("key") is not None
