# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Does ``calibration="normal_only"`` flag the share of good images it was asked to? Measured for every model.

Run::

    python -m anomalib_clipad.benchmarks.false_alarm                       # every model, 5 seeds, rate 0.1
    python -m anomalib_clipad.benchmarks.false_alarm --rate 0.05 --seeds 5 --n-calibration 59 --n-test 200
    python -m anomalib_clipad.benchmarks.false_alarm --model WinCLIPPlus

For every model of :data:`~anomalib_clipad.registry.MODELS` (its tiny build, **random weights**: what is measured is
the calibration, which holds whatever the scores mean) and every seed, a generated dataset with many good images is
made: ``n_calibration`` (+ the model's k shots) good images in the train split and ``n_test`` *other* good images in
the test split. The model (its shots drawn from the train split, as in a run) calibrates with
``calibration="normal_only"`` on the held-out good images of the train split, then scores the test split's good images
through anomalib's post-processor; every image it flags is a false alarm.

What to expect, exactly: the threshold is the ``k = ceil((n + 1)(1 - rate))``-th smallest of the n calibration scores,
so a later good image (exchangeable with them) is flagged with probability ``(n + 1 - k) / (n + 1)`` (``<= rate``;
equal to it when ``(n + 1) rate`` is whole: the default 39 images at 0.1). Given the calibration, the m test images'
false alarms are binomial; over calibration sets, their count follows the **beta-binomial** distribution
``BetaBinomial(m, n + 1 - k, k)``, whatever the model and the data (:func:`false_alarm_distribution`); the seeds are
independent datasets, so the pooled count follows the convolution of theirs. The table prints the requested rate, the
expected one, the measured rate with its 95 % Clopper-Pearson (binomial) interval from the number of test images, and
whether the pooled count lies in the 99.9 % interval of its exact distribution (the check the unit test makes). The
pixel false-alarm rate (the share of good pixels flagged) is printed too; pixels of one image are not independent, so
it has no interval.
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from anomalib_clipad.registry import MODEL_NAMES, MODELS, ModelSpec, get_spec
from anomalib_clipad.training.normal_calibration import quantile_rank, read_images, score_images

CATEGORY = "widget"
IMAGE_SIZE = 64
DEFAULT_RATE = 0.1
DEFAULT_N_CALIBRATION = 39
DEFAULT_N_TEST = 100
CHECK_CONFIDENCE = 0.999


# ------------------------------------------------------------------------------------------------ statistics
def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def expected_rate(n_calibration: int, rate: float) -> float:
    """The probability that a later good image is flagged: ``(n + 1 - k) / (n + 1)`` (at most ``rate``)."""
    return (n_calibration + 1 - quantile_rank(n_calibration, rate)) / (n_calibration + 1)


def false_alarm_distribution(n_calibration: int, n_test: int, rate: float) -> list[float]:
    """``P(count = x)``, ``x = 0 .. n_test``: false alarms among ``n_test`` good images, over calibration sets.

    The beta-binomial ``BetaBinomial(n_test, n + 1 - k, k)`` of the order statistic the threshold is (exact for
    exchangeable scores without ties, whatever their distribution).
    """
    k = quantile_rank(n_calibration, rate)
    a, b = n_calibration + 1 - k, k
    return [
        math.exp(_log_choose(n_test, x) + _log_beta(x + a, n_test - x + b) - _log_beta(a, b)) for x in range(n_test + 1)
    ]


def pooled_distribution(distributions: Sequence[Sequence[float]]) -> list[float]:
    """The distribution of the sum of independent counts (their convolution)."""
    pooled = [1.0]
    for distribution in distributions:
        result = [0.0] * (len(pooled) + len(distribution) - 1)
        for i, p in enumerate(pooled):
            for j, q in enumerate(distribution):
                result[i + j] += p * q
        pooled = result
    return pooled


def central_interval(distribution: Sequence[float], confidence: float) -> tuple[int, int]:
    """The ``(lo, hi)`` with ``P(count < lo) <= tail`` and ``P(count > hi) <= tail`` (tail: half of 1 - confidence)."""
    tail = (1.0 - confidence) / 2.0
    cumulative, low, high = 0.0, None, len(distribution) - 1
    for value, p in enumerate(distribution):
        cumulative += p
        if low is None and cumulative > tail:
            low = value
        if cumulative >= 1.0 - tail - 1e-12:
            high = value
            break
    return (low or 0), high


def _binomial_cdf(count: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if count >= n else 0.0
    return min(
        1.0, sum(math.exp(_log_choose(n, x) + x * math.log(p) + (n - x) * math.log1p(-p)) for x in range(count + 1))
    )


def binomial_interval(count: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Clopper-Pearson (exact binomial) interval of a rate measured as ``count`` out of ``n``."""
    tail = (1.0 - confidence) / 2.0

    def solve(condition: Any) -> float:
        low, high = 0.0, 1.0
        for _ in range(60):
            middle = (low + high) / 2.0
            low, high = (middle, high) if condition(middle) else (low, middle)
        return (low + high) / 2.0

    lower = 0.0 if count == 0 else solve(lambda p: 1.0 - _binomial_cdf(count - 1, n, p) < tail)
    upper = 1.0 if count == n else solve(lambda p: _binomial_cdf(count, n, p) > tail)
    return lower, upper


# ------------------------------------------------------------------------------------------------ measuring
@dataclass(frozen=True)
class FalseAlarmRun:
    """One model on one seed's data.

    Attributes:
        model: the model's name.
        seed: the data's and the model's seed.
        n_calibration: good images the thresholds came from.
        n_test: other good images scored.
        false_alarms: of those, the flagged ones.
        pixel_rate: the share of the test images' pixels flagged.
        calibration_above: calibration images scoring above the threshold (``n - k`` by construction).
        calibration_paths: the calibration images.
        test_paths: the scored images.
    """

    model: str
    seed: int
    n_calibration: int
    n_test: int
    false_alarms: int
    pixel_rate: float
    calibration_above: int
    calibration_paths: tuple[str, ...]
    test_paths: tuple[str, ...]


def make_dataset(root: Path, seed: int, n_calibration: int, n_test: int, n_shots: int = 1) -> Path:
    """A generated MVTec-AD-layout dataset: ``n_calibration + n_shots`` good train images, ``n_test`` good test ones."""
    from anomalib_clipad.data.synthetic import generate_synthetic_dataset

    generate_synthetic_dataset(
        root,
        CATEGORY,
        n_train=n_calibration + n_shots,
        n_test_good=n_test,
        n_test_defect=0,
        image_size=IMAGE_SIZE,
        seed=seed,
        overwrite=True,
    )
    return root


@torch.no_grad()
def measure_false_alarms(spec: ModelSpec, data_root: Path, seed: int, rate: float) -> FalseAlarmRun:
    """Calibrate a tiny ``spec`` model on the train split's held-out good images; count its flags on the test split.

    Args:
        spec: the registry row.
        data_root: a dataset of :func:`make_dataset` (the model's k shots must fit in its spare train images).
        seed: the seed of the model (its random CLIP, prompts and shot draw).
        rate: the requested false-alarm rate.
    """
    from anomalib.data import MVTecAD

    from anomalib_clipad.data.shots import choose_normal_shots

    datamodule = MVTecAD(root=data_root, category=CATEGORY, num_workers=0)
    datamodule.setup()
    torch.manual_seed(seed)
    model = spec.build_tiny(**spec.few_shot, seed=seed, calibration="normal_only", false_alarm_rate=rate)
    model.configure_model()
    model.eval()
    transform = model.pre_processor.transform
    if model.model.uses_references and not model.draws_references:  # memory of its training shots (no training here)
        train = datamodule.train_data
        chosen = choose_normal_shots(train, int(spec.few_shot["k_shot"]), seed)
        paths = [str(train.samples["image_path"].iloc[index]) for index in chosen]
        model.set_class(CATEGORY)
        model.use_shots_as_references(paths, model.model.encode_images(torch.cat(list(read_images(paths, transform)))))
    trainer = SimpleNamespace(datamodule=datamodule, is_global_zero=False, default_root_dir=str(data_root))
    model.prepare_for_scoring(trainer, "test")
    calibration = model.normal_calibration
    samples = datamodule.test_data.samples
    test_paths = [
        str(path) for path, label in zip(samples["image_path"], samples["label_index"], strict=True) if not label
    ]
    flagged, flagged_pixels, pixels = 0, 0, 0
    for images in read_images(test_paths, transform):
        output = model.post_processor(model.model(images))
        flagged += int(output.pred_label.sum())
        flagged_pixels += int(output.pred_mask.sum())
        pixels += output.pred_mask.numel()
    calibration_scores, _ = score_images(model.model, read_images(list(calibration.paths), transform), model.device)
    return FalseAlarmRun(
        model=spec.name,
        seed=seed,
        n_calibration=len(calibration.paths),
        n_test=len(test_paths),
        false_alarms=flagged,
        pixel_rate=flagged_pixels / max(pixels, 1),
        calibration_above=int((calibration_scores > calibration.image).sum()),
        calibration_paths=calibration.paths,
        test_paths=tuple(test_paths),
    )


def pooled_check(runs: Sequence[FalseAlarmRun], rate: float, confidence: float = CHECK_CONFIDENCE) -> tuple[int, int]:
    """The ``confidence`` interval of the pooled false-alarm count of independent runs (their exact distribution)."""
    distributions = [false_alarm_distribution(run.n_calibration, run.n_test, rate) for run in runs]
    return central_interval(pooled_distribution(distributions), confidence)


# ------------------------------------------------------------------------------------------------ command
def run(models: Sequence[str], seeds: int, rate: float, n_calibration: int, n_test: int) -> bool:
    """Measure and print the table; return whether every model's pooled count is in its 99.9 % interval."""
    specs = [get_spec(name) for name in models] if models else list(MODELS)
    n_shots = max(int(spec.few_shot.get("k_shot", 0)) for spec in specs)
    header = (
        f"{'model':<12} {'requested':>9} {'expected':>8} {'flagged':>9} {'measured':>8} {'95% binomial CI':>17} "
        f"{'99.9% count range':>17} {'pixel rate':>10}  ok"
    )
    print(f"normal_only calibration: {n_calibration} good images, {n_test} other good images scored, {seeds} seed(s)")
    print(header)
    print("-" * len(header))
    all_ok = True
    with tempfile.TemporaryDirectory() as folder:
        roots = [
            make_dataset(Path(folder) / f"seed_{seed}", seed, n_calibration, n_test, n_shots) for seed in range(seeds)
        ]
        for spec in specs:
            runs = [measure_false_alarms(spec, root, seed, rate) for seed, root in enumerate(roots)]
            flagged, scored = sum(run.false_alarms for run in runs), sum(run.n_test for run in runs)
            low, high = binomial_interval(flagged, scored)
            count_low, count_high = pooled_check(runs, rate)
            ok = count_low <= flagged <= count_high
            all_ok &= ok
            expected = sum(expected_rate(run.n_calibration, rate) * run.n_test for run in runs) / scored
            pixel = sum(run.pixel_rate for run in runs) / len(runs)
            print(
                f"{spec.name:<12} {rate:>9.3f} {expected:>8.3f} {flagged:>4}/{scored:<4} {flagged / scored:>8.3f} "
                f"{f'[{low:.3f}, {high:.3f}]':>17} {f'[{count_low}, {count_high}]':>17} {pixel:>10.3f}  "
                f"{'yes' if ok else 'NO'}"
            )
    return all_ok


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", choices=MODEL_NAMES, help="a model (repeat); default: all")
    parser.add_argument("--seeds", type=int, default=5, help="independent datasets and models per model")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="the requested false-alarm rate")
    parser.add_argument("--n-calibration", type=int, default=DEFAULT_N_CALIBRATION, help="good images calibrated on")
    parser.add_argument("--n-test", type=int, default=DEFAULT_N_TEST, help="other good images scored per seed")
    arguments = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    for name in ("anomalib", "anomalib_clipad", "lightning", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    ok = run(arguments.model or [], arguments.seeds, arguments.rate, arguments.n_calibration, arguments.n_test)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
