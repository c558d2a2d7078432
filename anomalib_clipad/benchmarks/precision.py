# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""What each deployment precision costs and changes, per model: one table of eager torch f32 and every OpenVINO IR.

Run::

    python -m anomalib_clipad.benchmarks.precision                        # every model, default backbone and size
    python -m anomalib_clipad.benchmarks.precision --model PromptAD --precision f32 --precision int8_ptq
    python -m anomalib_clipad.benchmarks.precision --tiny                 # tiny random backbones (smoke, minutes)
    python -m anomalib_clipad.benchmarks.precision --pretrained TAG       # the papers' weights (the one flag to add)
    python -m anomalib_clipad.benchmarks.precision --real --profile       # photos instead of drawn images; profiles

For every model of :data:`anomalib_clipad.registry.MODELS` (``--model`` picks some), at its default backbone and input
size (``--tiny``: the registry's tiny settings; ``--backbone`` / ``--image-size`` override both) with **random
weights** unless ``--pretrained`` names a weights tag, and in its most complete setting (the few-shot one of a model
whose default is zero-shot: WinCLIP+ and SimCLIP+ with 1 reference shot, as the speed command times them):

1. **Data** (in a temporary folder, MVTec-AD layout). Scored: ``--images`` images of the target class, about half of
   them anomalous with exact masks (:mod:`anomalib_clipad.data.synthetic`: drawn bottles seen from above with
   scratches, holes, stains; with ``--real``, see below). Held out, never scored: ``2 x --calibration-images`` normal
   images of the same class (its own seed) and as many labelled ones; ``int8_ptq`` and ``int8_acq`` calibrate on
   ``--calibration-images`` of the normal ones (the datamodule's validation split, half of its train split) and
   ``int8_acq`` validates on the labelled ones (its test split).
2. **The model, set up as its learning protocol requires** (the registry's ``Protocol``): WinCLIP+ (``set_up``) is set
   up for the class with its reference shot drawn from the target's train split; PromptAD and DevPrompt
   (``normal_shots``) train ``--epochs`` epochs on their k normal shots of the target's train split; AnomalyCLIP and
   SimCLIP (``auxiliary_data``) train ``--epochs`` epochs on ``--images`` labelled images of another generated class
   (woven textures), then are set up for the target (SimCLIP+ draws its reference shot from the target's train
   split). One epoch (the default) puts the graph in its trained state, which is all a deployment comparison needs;
   pass the recipe's count (PromptAD / DevPrompt 100, AnomalyCLIP 15, SimCLIP 5) with ``--pretrained`` for the
   papers' scores. The post-processor's normalisation is set from torch's raw outputs on the scored images as the
   speed command's ``--openvino`` does (:func:`~anomalib_clipad.benchmarks.openvino_speed.calibrate_post_processor`:
   their span plus 10 % on each side, thresholds at mid-range), so that no output is clamped and the differences are
   in units of that span; thresholds play no part (everything is compared before thresholding).
3. **Exports**, one per precision (:func:`anomalib_clipad.precision.export_openvino`: ``to_openvino`` with the
   precision's compression; ``bf16`` runs the ``f32`` IR), each compiled for its inference precision
   (:func:`anomalib_clipad.precision.compile_config`). The ONNX graph every IR is converted from is traced once per
   model (:func:`onnx_traced_once`). ``int8_acq`` re-validates after each quantiser it reverts, with no bound on the
   iterations; it is stopped after ``--acq-budget`` seconds (300 with ``--tiny``, else 1800) and its row then says
   so.
4. **One timed run**: eager torch (the whole pipeline, ``module(images)`` under ``torch.inference_mode``) and every IR
   get the same ``--images`` ``[0, 1]`` images, in calls of ``--batch`` images (default: all in one call), in
   ``--repeats`` interleaved rounds after one warm-up round
   (:func:`~anomalib_clipad.benchmarks.timing.interleaved_times`); the outputs compared are those of the warm-up round.
   Every compiled IR holds its activations for the batch it last ran, all at once: a ViT-L model at 518 px with six
   IRs and a batch of 6 outgrew 24 GB, so pass ``--batch 1`` for the ViT-L models on such a machine.

The table (one per model), a row per precision, eager torch f32 first:

* ``runs at``: the inference precision OpenVINO compiled it to (``bf16`` falls back to ``f32`` on a CPU without bf16
  support: AVX512-BF16 or AMX);
* ``ms/image``: median time of one round (all images) over the rounds, per image, in this process's CPU time (all
  threads; a shared machine disturbs it less than wall time), and ``x torch``: eager torch f32's time over this one (the
  speed-up, > 1 is faster); ``wall ms``: the same on the wall clock;
* ``peak MiB``: the memory that loading the model and scoring one image adds (peak RSS increase,
  :class:`~anomalib_clipad.benchmarks.memory.PeakMemory`): for OpenVINO reading the IR (memory-mapped, OpenVINO's
  default), compiling it and one inference; for eager torch the bytes of the module's parameters and buffers (the
  whole module, text tower included: what an eager deployment holds) plus the peak increase of one forward;
* ``IR MiB``: the IR's ``.xml`` + ``.bin``; ``export s``: the time ``export_openvino`` took (NNCF's calibration and
  validation included);
* ``max|Δscore|``, ``max|Δmap|``: the largest absolute difference to eager torch f32 of ``pred_score`` and
  ``anomaly_map`` (the pipeline's outputs before thresholding: normalised, or raw probabilities for AnomalyCLIP and
  SimCLIP, which report them raw) over the scored images;
* ``Spearman``: the rank correlation of the image scores with eager torch f32's (``n/a`` where one side gave every
  image the same score);
* ``ΔAUROC img`` / ``ΔAUROC px``: this row's image / pixel AUROC minus eager torch f32's, in points (the masks are
  resized to the maps' size, nearest neighbour); torch's own AUROCs are in the model's heading line.

Then a **recommended deployment precision** per model: the fastest row whose Spearman is at least 0.99 and whose
ΔAUROC px is within ±0.5 point (eager torch f32 always qualifies; a precision OpenVINO ran at another one, ``bf16``
on a CPU without bf16, never does: it is the f32 IR again), and whether it is at least 2.5x faster than eager
torch f32. Where it is not, or with ``--profile``, OpenVINO's per-node-type profile of that IR (``PERF_COUNT``, one
image; the fastest qualifying IR when eager torch is recommended) shows what limits it. A precision whose export or
compilation fails gets a row saying so, and the run goes on. With 10 images or fewer one swap of two neighbouring
scores puts Spearman below 0.99 (:func:`one_swap_spearman`); a footnote names the rows that failed the rank test by at
most one swap, to be rerun with more ``--images``.

**With random weights** (the default) the differences measure how sensitive each graph is to the lower precision,
not the accuracy of the papers' weights, and the AUROCs mean nothing; the table says so. ``--pretrained TAG`` is the
one flag to rerun with real weights.

``--real`` replaces the drawn images by photos bundled with scikit-image (a dependency of anomalib; ``skimage.data``
needs no download for these): normal images are random crops of its grey ``brick`` wall texture, resized to the
source size, the scored ones from the lower half of the photo and every held-out one from the upper half (no pixel in
common); an anomalous image is a normal crop with a CutPaste-style rectangle (2-8 % of the image, aspect 1:3 to 3:1)
pasted from one of ``astronaut``, ``coffee``, ``chelsea``, ``rocket``, ``immunohistochemistry`` (colour photos), its
mask the rectangle. The auxiliary class stays generated. It is a real-photo sanity check, not an industrial dataset.

Progress goes to stderr. The work per model is bounded by ``--images`` (default 8), ``--repeats`` (3),
``--calibration-images`` (8), ``--epochs`` (1) and ``--acq-budget``. ``--threads`` (default 1: on a shared CPU, one
thread keeps a core taken by another job from leaving threads spinning) sets torch's and OpenVINO's threads; 0 leaves
their defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from anomalib_clipad.benchmarks.memory import MIB, PeakMemory
from anomalib_clipad.benchmarks.openvino_speed import calibrate_post_processor, profile_openvino
from anomalib_clipad.benchmarks.speed import add_model_arguments, model_arguments, quiet
from anomalib_clipad.benchmarks.timing import clock_name, interleaved_times
from anomalib_clipad.precision import (
    PRECISIONS,
    Precision,
    compile_config,
    export_openvino,
    named_outputs,
    parse_precision,
)
from anomalib_clipad.registry import MODELS, ModelSpec, Protocol, get_spec

BANNER = (
    "RANDOM WEIGHTS (pretrained=None): the differences below measure each graph's numerical sensitivity to the "
    "lower precision, NOT accuracy with the papers' weights; the AUROCs on generated data mean nothing. Rerun with "
    "--pretrained TAG for the papers' weights."
)
TORCH = "torch f32"
"""The label of the baseline row (eager torch, float32)."""
MIN_SPEARMAN = 0.99
MAX_PIXEL_AUROC_POINTS = 0.5
TARGET_SPEEDUP = 2.5
"""The recommendation: the fastest row with Spearman >= 0.99 and |ΔAUROC px| <= 0.5 point; is it >= 2.5x torch?"""
CATEGORY = "bottle"
AUXILIARY_CATEGORY = "weave"
REAL_CATEGORY = "brick"
SOURCE_SIZE, TINY_SOURCE_SIZE = 256, 64
"""Side of the images on disk (at least the model's input size, so that the in-graph resize never enlarges)."""
REAL_PATCH_SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
CPU = torch.device("cpu")
OUTPUTS_COMPARED = ("pred_score", "anomaly_map")
"""The outputs compared with eager torch (before thresholding), put together from the calls of ``--batch``."""


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser, tiny="smoke", pretrained="random weights")
    parser.add_argument(
        "--precision",
        action="append",
        dest="precisions",
        metavar="NAME",
        help=f"an OpenVINO precision ({', '.join(p.value for p in PRECISIONS)}); repeatable; default: all",
    )
    parser.add_argument("--images", type=int, default=8, help="scored images (about half anomalous); timed batch")
    parser.add_argument("--batch", type=int, help="images per inference call (default: all --images in one call)")
    parser.add_argument("--repeats", type=int, default=3, help="timed interleaved rounds (after one warm-up round)")
    parser.add_argument("--calibration-images", type=int, default=8, help="held-out images calibrating INT8 PTQ/ACQ")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of the models that train")
    parser.add_argument("--max-drop", type=float, default=0.01, help="INT8_ACQ's accepted metric drop (anomalib's)")
    parser.add_argument(
        "--acq-budget",
        type=float,
        help="seconds an int8_acq export may take before it is stopped (default: 300 with --tiny, else 1800)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenVINO CPU threads (0: their defaults)")
    parser.add_argument("--real", action="store_true", help="photos bundled with scikit-image instead of drawn images")
    parser.add_argument("--profile", action="store_true", help="OpenVINO's profile of every recommended IR")
    args = parser.parse_args(argv)
    try:
        args.specs = [get_spec(name) for name in args.models] if args.models else list(MODELS)
        args.ov_precisions = (
            list(dict.fromkeys(parse_precision(name) for name in args.precisions)) if args.precisions else PRECISIONS
        )
    except (KeyError, ValueError) as error:
        parser.error(str(error.args[0]))
    if args.acq_budget is None:
        args.acq_budget = 300.0 if args.tiny else 1800.0
    if args.images < 2 or args.repeats < 1 or args.calibration_images < 1 or args.epochs < 1:
        parser.error("--images must be at least 2, --repeats, --calibration-images and --epochs at least 1.")
    if args.batch is None:
        args.batch = args.images
    if args.batch < 1:
        parser.error("--batch must be at least 1.")
    return args


def progress(message: str) -> None:
    """One progress line on stderr (the table goes to stdout)."""
    print(f"[precision {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------- rows
@dataclass
class PrecisionRow:
    """One row of a model's table: a way of running it, against eager torch f32.

    Attributes:
        label: ``torch f32`` or the OpenVINO precision's name.
        runs_at: the inference precision it ran at.
        seconds: median seconds per image on the measurement clock (NaN: it failed).
        wall_seconds: the same on the wall clock.
        speedup: eager torch f32's time over this row's.
        peak_mib: memory added by loading the model and scoring one image.
        ir_mib: size of the IR's ``.xml`` + ``.bin`` (NaN for torch).
        export_seconds: time of the export (NaN for torch).
        max_score_diff: largest ``|Δ pred_score|`` to eager torch f32.
        max_map_diff: largest ``|Δ anomaly_map|`` to eager torch f32.
        spearman: rank correlation of the image scores with eager torch f32's.
        auroc_image: image AUROC (fraction).
        auroc_pixel: pixel AUROC (fraction).
        delta_image_points: image AUROC minus eager torch f32's, in points.
        delta_pixel_points: pixel AUROC minus eager torch f32's, in points.
        error: why the row has no figures (``None``: it has).
    """

    label: str
    runs_at: str = ""
    seconds: float = math.nan
    wall_seconds: float = math.nan
    speedup: float = math.nan
    peak_mib: float = math.nan
    ir_mib: float = math.nan
    export_seconds: float = math.nan
    max_score_diff: float = math.nan
    max_map_diff: float = math.nan
    spearman: float = math.nan
    auroc_image: float = math.nan
    auroc_pixel: float = math.nan
    delta_image_points: float = math.nan
    delta_pixel_points: float = math.nan
    error: str | None = None

    @property
    def fell_back(self) -> bool:
        """Whether OpenVINO ran it at another precision than asked (``bf16`` on a CPU without bf16: f32 again)."""
        if self.error is not None or self.label == TORCH or not self.runs_at:
            return False
        return self.runs_at != compile_config(self.label)["INFERENCE_PRECISION_HINT"]

    @property
    def judged(self) -> bool:
        """Whether its accuracy is judged: an OpenVINO row with figures, run at the precision asked."""
        return self.error is None and self.label != TORCH and not self.fell_back

    @property
    def pixel_auroc_kept(self) -> bool:
        """Whether its pixel AUROC is within :data:`MAX_PIXEL_AUROC_POINTS` of eager torch f32's (NaN never is)."""
        return abs(self.delta_pixel_points) <= MAX_PIXEL_AUROC_POINTS + 1e-9

    @property
    def acceptable(self) -> bool:
        """Whether it meets the recommendation's accuracy conditions (eager torch f32 does; NaN never does)."""
        if self.error is None and self.label == TORCH:
            return True
        return self.judged and self.spearman >= MIN_SPEARMAN and self.pixel_auroc_kept


@dataclass
class ModelResult:
    """One model's table, recommendation and profile.

    Attributes:
        model: the registry name.
        heading: what was built and scored (printed above the table).
        rows: eager torch f32 first, then the OpenVINO precisions in order.
        recommended: the recommended row's label (``None``: no row qualified, impossible while torch ran).
        profile: OpenVINO profile lines of the recommended IR (empty unless printed).
        notes: footnotes printed under the table.
        reference: eager torch f32's outputs on the scored images.
    """

    model: str
    heading: str
    rows: list[PrecisionRow] = field(default_factory=list)
    recommended: str | None = None
    profile: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reference: Outputs | None = None

    def row(self, label: str) -> PrecisionRow:
        """The row of ``label``."""
        return next(row for row in self.rows if row.label == label)


COLUMNS = (
    ("precision", 9),
    ("runs at", 7),
    ("ms/image", 9),
    ("x torch", 7),
    ("wall ms", 9),
    ("peak MiB", 8),
    ("IR MiB", 7),
    ("export s", 8),
    ("max|Δscore|", 11),
    ("max|Δmap|", 9),
    ("Spearman", 8),
    ("ΔAUROC img", 10),
    ("ΔAUROC px", 9),
)
"""The table's columns and their widths."""


def _cell(value: float, spec: str, missing: str = "-") -> str:
    return missing if value is None or not math.isfinite(value) else format(value, spec)


def format_row(row: PrecisionRow) -> str:
    """One table line."""
    if row.error is not None:
        cells = [row.label, row.runs_at or "-", f"FAILED: {row.error}"]
        return (
            "  ".join(cell.ljust(width) for cell, (_, width) in zip(cells[:2], COLUMNS, strict=False)) + "  " + cells[2]
        )
    baseline = row.label == TORCH
    cells = [
        row.label,
        row.runs_at,
        _cell(row.seconds * 1e3, ".1f"),
        _cell(row.speedup, ".2f") + "x",
        _cell(row.wall_seconds * 1e3, ".1f"),
        _cell(row.peak_mib, ".0f"),
        _cell(row.ir_mib, ".1f"),
        _cell(row.export_seconds, ".1f"),
        "ref" if baseline else _cell(row.max_score_diff, ".1e"),
        "ref" if baseline else _cell(row.max_map_diff, ".1e"),
        "ref" if baseline else _cell(row.spearman, ".4f", missing="n/a"),
        "ref" if baseline else _cell(row.delta_image_points, "+.2f"),
        "ref" if baseline else _cell(row.delta_pixel_points, "+.2f"),
    ]
    return "  ".join(
        cell.rjust(width) if index > 1 else cell.ljust(width)
        for index, (cell, (_, width)) in enumerate(zip(cells, COLUMNS, strict=True))
    )


def format_table(result: ModelResult) -> list[str]:
    """The model's heading, table and recommendation lines."""
    header = "  ".join(
        name.rjust(width) if index > 1 else name.ljust(width) for index, (name, width) in enumerate(COLUMNS)
    )
    lines = [result.heading, header, "-" * len(header)]
    lines += [format_row(row) for row in result.rows]
    lines += result.notes
    lines.append(recommendation_line(result))
    return lines


def recommend(rows: Sequence[PrecisionRow]) -> PrecisionRow | None:
    """The fastest row meeting the accuracy conditions (Spearman >= 0.99, |ΔAUROC px| <= 0.5 point)."""
    candidates = [row for row in rows if row.acceptable and math.isfinite(row.seconds)]
    return min(candidates, key=lambda row: row.seconds) if candidates else None


def recommendation_line(result: ModelResult) -> str:
    """``recommended: ...`` with the speed-up and whether it reaches :data:`TARGET_SPEEDUP`."""
    if result.recommended is None:
        return f"{result.model}: recommended deployment precision: none (no row ran)"
    row = result.row(result.recommended)
    runtime = "eager torch f32" if row.label == TORCH else f"OpenVINO {row.label}"
    reached = "yes" if row.speedup >= TARGET_SPEEDUP else "NO"
    return (
        f"{result.model}: recommended deployment precision: {runtime} (fastest with Spearman >= {MIN_SPEARMAN} and "
        f"|ΔAUROC px| <= {MAX_PIXEL_AUROC_POINTS} point): {row.speedup:.2f}x eager torch f32; "
        f">= {TARGET_SPEEDUP}x: {reached}"
    )


# ---------------------------------------------------------------------------------------------------------- metrics
def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); NaN without both classes."""
    from scipy.stats import rankdata

    scores, labels = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels, dtype=bool).ravel()
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    from scipy.stats import rankdata

    a, b = rankdata(np.ravel(first)), rankdata(np.ravel(second))
    a, b = a - a.mean(), b - b.mean()
    norm = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 0 else math.nan


@dataclass(frozen=True)
class Outputs:
    """Image scores ``(n,)`` and anomaly maps ``(n, H, W)`` of one way of running the model, as float64 arrays."""

    scores: np.ndarray
    maps: np.ndarray

    @classmethod
    def of(cls, pred_score: Any, anomaly_map: Any) -> Outputs:
        """From torch tensors or numpy arrays of any of the pipeline's shapes."""
        scores = np.asarray(pred_score.detach() if isinstance(pred_score, torch.Tensor) else pred_score)
        maps = np.asarray(anomaly_map.detach() if isinstance(anomaly_map, torch.Tensor) else anomaly_map)
        scores = scores.astype(np.float64).reshape(-1)
        return cls(scores, maps.astype(np.float64).reshape(scores.size, *maps.shape[-2:]))


@dataclass(frozen=True)
class Truth:
    """The scored images' labels ``(n,)`` and masks ``(n, S, S)`` (bool)."""

    labels: np.ndarray
    masks: torch.Tensor

    def masks_at(self, shape: tuple[int, int]) -> np.ndarray:
        """The masks resized (nearest neighbour) to a map's ``(H, W)``."""
        resized = torch.nn.functional.interpolate(self.masks[:, None].float(), size=shape, mode="nearest")
        return resized[:, 0].numpy() > 0.5


def compare(row: PrecisionRow, outputs: Outputs, reference: Outputs, truth: Truth) -> None:
    """Fill ``row``'s differences to eager torch f32 and its AUROCs."""
    row.max_score_diff = float(np.abs(outputs.scores - reference.scores).max())
    row.max_map_diff = float(np.abs(outputs.maps - reference.maps).max())
    row.spearman = spearman(outputs.scores, reference.scores)
    row.auroc_image = auroc(outputs.scores, truth.labels)
    row.auroc_pixel = auroc(outputs.maps, truth.masks_at(outputs.maps.shape[-2:]))
    base_image, base_pixel = (
        auroc(reference.scores, truth.labels),
        auroc(reference.maps, truth.masks_at(reference.maps.shape[-2:])),
    )
    row.delta_image_points = 100 * (row.auroc_image - base_image)
    row.delta_pixel_points = 100 * (row.auroc_pixel - base_pixel)


# ---------------------------------------------------------------------------------------------------------- data
def _split_counts(images: int) -> tuple[int, int, tuple[str, ...]]:
    """``(normal, anomalous per defect type, defect types)`` of ``images`` images, about half of them anomalous."""
    from anomalib_clipad.data.synthetic import DEFECT_TYPES

    per_type = (images // 2) // len(DEFECT_TYPES)
    types, per_type = (DEFECT_TYPES, per_type) if per_type else (DEFECT_TYPES[:1], 1)
    return images - per_type * len(types), per_type, types


def _real_photos() -> tuple[np.ndarray, list[np.ndarray]]:
    """scikit-image's bundled ``brick`` texture (RGB float) and the colour photos the patches come from."""
    from skimage import data as photos

    brick = photos.brick().astype(np.float32) / 255.0
    patches = [getattr(photos, name)()[..., :3].astype(np.float32) / 255.0 for name in REAL_PATCH_SOURCES]
    return np.repeat(brick[..., None], 3, axis=2), patches


def _write_image(path: Path, image: np.ndarray) -> None:
    """Write a float RGB ``[0, 1]`` image or a uint8 mask as PNG."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if image.dtype != np.uint8:
        image = cv2.cvtColor((np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        msg = f"Could not write {path}."
        raise OSError(msg)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def generate_real_dataset(
    root: Path,
    category: str,
    *,
    n_train: int,
    n_test_good: int,
    n_test_defect: int,
    image_size: int,
    seed: int,
    half: str,
) -> Path:
    """An MVTec-AD-layout dataset of ``brick`` crops, anomalies CutPaste-style rectangles from other photos.

    Args:
        root: the dataset root (``<root>/<category>/...`` is written).
        category: the category folder.
        n_train: normal train images.
        n_test_good: normal test images.
        n_test_defect: anomalous test images (``test/cutpaste``, masks in ``ground_truth/cutpaste``).
        image_size: side of the written images.
        seed: the crops' and patches' seed.
        half: ``"upper"`` or ``"lower"``: the half of the brick photo the crops come from (the scored and the held-out
            images take different halves, so that they share no pixel).

    Returns:
        The category folder.
    """
    rng = np.random.default_rng(seed)
    brick, sources = _real_photos()
    rows = brick.shape[0] // 2
    region = brick[:rows] if half == "upper" else brick[rows:]

    def crop() -> np.ndarray:
        side = int(rng.integers(int(0.6 * rows), rows + 1))
        top = int(rng.integers(0, region.shape[0] - side + 1))
        left = int(rng.integers(0, region.shape[1] - side + 1))
        return _resize(region[top : top + side, left : left + side], image_size)

    def pasted() -> tuple[np.ndarray, np.ndarray]:
        image = crop()
        area = rng.uniform(0.02, 0.08) * image_size**2
        aspect = math.exp(rng.uniform(math.log(1 / 3), math.log(3)))
        height = max(2, min(image_size - 1, round(math.sqrt(area * aspect))))
        width = max(2, min(image_size - 1, round(math.sqrt(area / aspect))))
        source = sources[int(rng.integers(len(sources)))]
        top = int(rng.integers(0, source.shape[0] - height + 1))
        left = int(rng.integers(0, source.shape[1] - width + 1))
        y, x = int(rng.integers(0, image_size - height + 1)), int(rng.integers(0, image_size - width + 1))
        image[y : y + height, x : x + width] = source[top : top + height, left : left + width]
        mask = np.zeros((image_size, image_size), dtype=np.uint8)
        mask[y : y + height, x : x + width] = 255
        return image, mask

    folder = Path(root) / category
    for index in range(n_train):
        _write_image(folder / "train" / "good" / f"{index:03d}.png", crop())
    for index in range(n_test_good):
        _write_image(folder / "test" / "good" / f"{index:03d}.png", crop())
    for index in range(n_test_defect):
        image, mask = pasted()
        _write_image(folder / "test" / "cutpaste" / f"{index:03d}.png", image)
        _write_image(folder / "ground_truth" / "cutpaste" / f"{index:03d}_mask.png", mask)
    return folder


@dataclass
class Data:
    """The datasets of one model's measurement.

    Attributes:
        category: the target class.
        target: scored dataset (its test split) with the shots / references (its train split).
        held_out: the INT8 PTQ / ACQ datamodule (its own images).
        auxiliary_root: the auxiliary class's dataset root (``auxiliary_data`` models).
        description: what the scored images are, for the heading.
    """

    category: str
    target: Any
    held_out: Any
    auxiliary_root: Path
    description: str


def make_data(folder: Path, args: argparse.Namespace, k_shot: int, source_size: int) -> Data:
    """Write the scored, held-out and auxiliary datasets under ``folder`` and build their datamodules."""
    from anomalib.data import MVTecAD

    from anomalib_clipad.data.synthetic import DEFECT_TYPES, generate_synthetic_dataset

    n_good, per_type, types = _split_counts(args.images)
    n_held, held_per_type, held_types = _split_counts(2 * args.calibration_images)
    train = max(k_shot, 1)
    if args.real:
        category = REAL_CATEGORY
        n_defect = args.images - n_good
        generate_real_dataset(
            folder / "target",
            category,
            n_train=train,
            n_test_good=n_good,
            n_test_defect=n_defect,
            image_size=source_size,
            seed=0,
            half="lower",
        )
        generate_real_dataset(
            folder / "held_out",
            category,
            n_train=2 * args.calibration_images,
            n_test_good=n_held,
            n_test_defect=2 * args.calibration_images - n_held,
            image_size=source_size,
            seed=1,
            half="upper",
        )
        description = (
            f"{n_good} normal + {n_defect} CutPaste {source_size} px crops of scikit-image's 'brick' photo (lower half)"
        )
    else:
        category = CATEGORY
        generate_synthetic_dataset(
            folder / "target",
            category,
            n_train=train,
            n_test_good=n_good,
            n_test_defect=per_type,
            image_size=source_size,
            seed=0,
            defect_types=types,
        )
        generate_synthetic_dataset(
            folder / "held_out",
            category,
            n_train=2 * args.calibration_images,
            n_test_good=n_held,
            n_test_defect=held_per_type,
            image_size=source_size,
            seed=1,
            defect_types=held_types,
        )
        description = (
            f"{n_good} normal + {per_type * len(types)} anomalous ({', '.join(types)}) generated "
            f"{source_size} px images"
        )
    n_aux_good, aux_per_type, aux_types = _split_counts(max(args.images, 2))
    generate_synthetic_dataset(
        folder / "auxiliary",
        AUXILIARY_CATEGORY,
        kind="texture",
        n_train=1,
        n_test_good=n_aux_good,
        n_test_defect=aux_per_type,
        image_size=source_size,
        seed=2,
        defect_types=aux_types or DEFECT_TYPES[:1],
    )
    target = MVTecAD(
        root=folder / "target",
        category=category,
        num_workers=0,
        val_split_mode="none",
        train_batch_size=max(k_shot, 1),
        eval_batch_size=args.images,
    )
    target.setup()
    held_out = MVTecAD(
        root=folder / "held_out",
        category=category,
        num_workers=0,
        val_split_mode="from_train",
        val_split_ratio=0.5,
        train_batch_size=args.calibration_images,
        eval_batch_size=args.calibration_images,
        seed=0,
    )
    return Data(category, target, held_out, folder / "auxiliary", description)


def scored_images(datamodule: Any) -> tuple[torch.Tensor, Truth]:
    """The target's test split as one ``[0, 1]`` batch, with its labels and masks."""
    from anomalib.data.utils import read_image, read_mask

    samples = datamodule.test_data.samples.sort_values("image_path")
    images = torch.stack([read_image(path, as_tensor=True) for path in samples["image_path"]])
    masks = torch.zeros(len(images), *images.shape[-2:], dtype=torch.bool)
    for index, path in enumerate(samples["mask_path"]):
        if isinstance(path, str) and path:
            masks[index] = read_mask(path, as_tensor=True).reshape(images.shape[-2:]) > 0
    labels = samples["label_index"].to_numpy().astype(bool)
    return images.contiguous(), Truth(labels, masks)


# ---------------------------------------------------------------------------------------------------------- model
def build_module(spec: ModelSpec, args: argparse.Namespace) -> Any:
    """The Lightning model at the chosen settings, in its most complete setting (few-shot where it has one)."""
    arguments = model_arguments(spec, args)
    torch.manual_seed(0)
    module = spec.lightning_class(**arguments)
    if spec.few_shot and not module.model.uses_references:
        torch.manual_seed(0)
        module = spec.lightning_class(**arguments, **spec.few_shot)
    module.configure_model()
    return module


def _fit(module: Any, datamodule: Any, epochs: int, folder: Path) -> None:
    """``Trainer.fit`` on the CPU for ``epochs`` epochs, no validation, nothing written but the run folder."""
    from lightning.pytorch import Trainer

    arguments = {
        **module.trainer_arguments,
        "max_epochs": epochs,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
        "default_root_dir": str(folder),
    }
    Trainer(**arguments).fit(module, datamodule=datamodule)


def set_up(spec: ModelSpec, module: Any, data: Data, args: argparse.Namespace, folder: Path) -> str:
    """Set the model up as its protocol requires (see the module docstring); returns what was done."""
    if spec.protocol is Protocol.SET_UP:
        done = "set up (nothing trained)"
    else:
        datamodule = data.target  # normal shots: the k shots of the target's train split
        if spec.protocol is Protocol.AUXILIARY_DATA:
            from anomalib_clipad.data.auxiliary import AuxiliaryData

            datamodule = AuxiliaryData(
                dataset="MVTecAD",
                root=data.auxiliary_root,
                categories=[AUXILIARY_CATEGORY],
                train_batch_size=min(args.images, 8),
                num_workers=0,
                seed=0,
            )
        _fit(module, datamodule, args.epochs, folder / "fit")
        if not module.training_paths:
            msg = f"{spec.name} trained on no image: the benchmark's training data is wrong."
            raise RuntimeError(msg)
        what = "normal shot(s)" if spec.protocol is Protocol.NORMAL_SHOTS else f"labelled '{AUXILIARY_CATEGORY}' images"
        done = f"trained {args.epochs} epoch(s) on {len(module.training_paths)} {what}"
    module.cpu().eval()
    trainer = SimpleNamespace(datamodule=data.target, is_global_zero=False, default_root_dir=str(folder))
    with torch.no_grad():
        module.prepare_for_scoring(trainer, "predict")
    k_shot = int(module.hparams.get("k_shot") or 0)
    setting = f"{k_shot}-shot" if module.model.uses_references else "zero-shot"
    return f"{setting}, {done}"


def _files_mib(xml: Path) -> float:
    return sum(path.stat().st_size for path in (xml, xml.with_suffix(".bin")) if path.exists()) / MIB


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Progress bars printed during an export (NNCF's) go to stderr, away from the table."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _runs_at(compiled: Any) -> str:
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    text = value.to_string() if hasattr(value, "to_string") else str(value)
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(text, text)


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text[:160]}"


@contextlib.contextmanager
def onnx_traced_once(module: Any, folder: Path) -> Iterator[dict[str, float]]:
    """While inside, ``module.to_onnx`` traces each distinct call once; a repeated call returns the same file.

    Every IR of a model is converted from the same ONNX graph (the compression comes after the conversion), so tracing
    it once per model spares the slowest part of every export but the first, without changing what is exported: a
    call with other arguments traces again. Yields ``{"seconds": ...}``, the time spent tracing so far.
    """
    original = module.to_onnx
    cache: dict[str, Any] = {}
    spent = {"seconds": 0.0}

    def to_onnx(export_root: Path | str, model_file_name: str = "model", input_size: Any = None, **kwargs: Any) -> Any:
        del export_root  # the cached file lives in ``folder`` until the model's measurement ends
        key = repr((model_file_name, input_size, sorted(kwargs.items(), key=lambda item: item[0])))
        if key not in cache:
            start = time.perf_counter()
            cache[key] = original(folder / f"onnx_{len(cache)}", model_file_name, input_size, **kwargs)
            spent["seconds"] += time.perf_counter() - start
        return cache[key]

    module.to_onnx = to_onnx
    try:
        yield spent
    finally:
        del module.to_onnx


def _warm_core() -> Any:
    """An OpenVINO ``Core`` whose CPU plugin has run a trivial model: its one-time set-up is billed to no precision."""
    import openvino as ov
    from openvino import opset13

    core = ov.Core()
    parameter = opset13.parameter([1, 8], np.float32)
    trivial = ov.Model([opset13.relu(parameter)], [parameter])
    core.compile_model(trivial, "CPU")(np.zeros((1, 8), np.float32))
    return core


@dataclass
class Deployed:
    """An OpenVINO precision's IR, compiled, with its row."""

    precision: Precision
    row: PrecisionRow
    ov_model: Any = None
    compiled: Any = None
    xml: Path | None = None


class BudgetExceededError(RuntimeError):
    """An export ran past its time budget (``--acq-budget``)."""


class _DeadlineLoader:
    """A data loader that raises :class:`BudgetExceededError` when a batch is asked for after the deadline."""

    def __init__(self, loader: Any, deadline: float, budget: float) -> None:
        self._loader, self._deadline, self._budget = loader, deadline, budget

    def __iter__(self) -> Iterator[Any]:
        for batch in self._loader:
            if time.monotonic() > self._deadline:
                msg = f"stopped after its time budget of {self._budget:.0f} s (--acq-budget)"
                raise BudgetExceededError(msg)
            yield batch

    def __len__(self) -> int:
        return len(self._loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


@contextlib.contextmanager
def time_budget(datamodule: Any, seconds: float) -> Iterator[None]:
    """While inside, the datamodule's loaders stop what reads them once ``seconds`` have passed.

    NNCF's accuracy-controlled quantisation (``int8_acq``) re-validates the model after each quantiser it reverts, with
    no bound on the iterations that anomalib's ``to_openvino`` lets us set: on a model whose metric drops by more than
    ``max_drop`` it ranks and reverts quantisers one by one, each time compiling and validating again (minutes per
    step at full size). Every validation reads the datamodule, so a deadline on its loaders bounds the export.
    """
    deadline = time.monotonic() + seconds
    names = ("train_dataloader", "val_dataloader", "test_dataloader")
    for name in names:
        original = getattr(datamodule, name)
        setattr(datamodule, name, lambda original=original: _DeadlineLoader(original(), deadline, seconds))
    try:
        yield
    finally:
        for name in names:
            delattr(datamodule, name)


class Deployer:
    """Exports a model's IRs (each once: ``bf16`` runs the ``f32`` one) and compiles them, one precision at a time.

    Args:
        module: the set-up Lightning model (its post-processor calibrated).
        data: the model's datasets (``int8_ptq`` / ``int8_acq`` calibrate on ``data.held_out``).
        folder: where the IRs are written.
        args: the parsed command line (``--threads``, ``--max-drop``).
        name: the model's name, for the progress lines.
    """

    def __init__(self, module: Any, data: Data, folder: Path, args: argparse.Namespace, name: str) -> None:
        self.module, self.data, self.folder, self.args, self.name = module, data, folder, args, name
        self.threads = {"INFERENCE_NUM_THREADS": args.threads} if args.threads else {}
        self.core = _warm_core()
        self.exports: dict[Precision, tuple[Path, float] | BaseException] = {}
        self._kernels_warm = False

    def export(self, precision: Precision, tracing: dict[str, float]) -> tuple[Path, float] | BaseException:
        """The IR of ``precision`` and its export seconds (ONNX tracing excluded), or why it failed."""
        if precision not in self.exports:
            progress(f"{self.name}: exporting the {precision.value} IR ...")
            start, traced = time.perf_counter(), tracing["seconds"]
            acq = precision is Precision.INT8_ACQ
            extra = {"max_drop": self.args.max_drop} if acq else {}
            budget = time_budget(self.data.held_out, self.args.acq_budget) if acq else contextlib.nullcontext()
            try:
                with _stdout_to_stderr(), budget:
                    xml = export_openvino(
                        self.module,
                        self.folder / precision.value,
                        precision,
                        datamodule=self.data.held_out if precision.needs_data else None,
                        **extra,
                    )
            except Exception as error:  # a failed precision is a row; the run goes on
                self.exports[precision] = error
                progress(f"{self.name}: the {precision.value} export failed: {_short(error)}")
            else:
                seconds = time.perf_counter() - start - (tracing["seconds"] - traced)
                self.exports[precision] = (Path(xml), seconds)
                progress(f"{self.name}: {precision.value} IR written in {time.perf_counter() - start:.1f} s")
        return self.exports[precision]

    def deploy(self, precision: Precision, tracing: dict[str, float], one_image: np.ndarray) -> Deployed:
        """Export (once per IR), read and compile ``precision``, measuring the memory of loading it and one image."""
        row = PrecisionRow(precision.value)
        item = Deployed(precision, row)
        export = self.export(Precision.F32 if precision is Precision.BF16 else precision, tracing)
        if isinstance(export, BaseException):
            row.error = f"export: {_short(export)}"
            return item
        item.xml, row.export_seconds = export
        row.ir_mib = _files_mib(item.xml)
        config = {**compile_config(precision), **self.threads}
        try:
            if not self._kernels_warm:  # the first real graph's one-time kernel set-up is billed to no precision
                self.core.compile_model(self.core.read_model(str(item.xml)), "CPU", config)(one_image)
                self._kernels_warm = True
            gc.collect()
            with PeakMemory("cpu") as memory:
                item.ov_model = self.core.read_model(str(item.xml))  # memory-mapped, as deployed
                item.compiled = self.core.compile_model(item.ov_model, "CPU", config)
                item.compiled(one_image)
            row.peak_mib = memory.peak_mib
            row.runs_at = _runs_at(item.compiled)
        except Exception as error:  # a failed precision is a row; the run goes on
            row.error = f"compile: {_short(error)}"
            progress(f"{self.name}: compiling {precision.value} failed: {_short(error)}")
        return item

    def deploy_all(self, precisions: Sequence[Precision], one_image: np.ndarray) -> tuple[list[Deployed], float]:
        """Every precision's :class:`Deployed`, in order, and the seconds spent tracing ONNX (once per model)."""
        with onnx_traced_once(self.module, self.folder / "onnx") as tracing:
            deployed = [self.deploy(precision, tracing, one_image) for precision in precisions]
        return deployed, tracing["seconds"]


def _torch_peak_mib(module: Any, one_image: torch.Tensor) -> float:
    """The module's parameter and buffer bytes plus the peak memory one forward of one image adds."""
    weights = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()]) / MIB
    gc.collect()
    with torch.inference_mode(), PeakMemory("cpu") as memory:
        module(one_image)
    return weights + memory.peak_mib


def time_and_compare(
    module: Any,
    deployed: Sequence[Deployed],
    images: torch.Tensor,
    truth: Truth,
    *,
    repeats: int,
    name: str,
    batch: int | None = None,
) -> tuple[PrecisionRow, Outputs]:
    """Time eager torch f32 and every compiled IR on ``images`` in interleaved rounds; fill every row.

    Each round runs all ``images`` in calls of ``batch`` images (``None``: one call). The first round is the warm-up:
    its outputs are the ones compared. Returns the torch row and torch's outputs.
    """
    batch = batch or len(images)
    chunks = list(torch.split(images, batch))
    arrays = [chunk.numpy() for chunk in chunks]
    torch_row = PrecisionRow(TORCH, runs_at="f32", peak_mib=_torch_peak_mib(module, images[:1]))
    last: dict[str, Any] = {}

    def run_torch() -> None:  # timed: the calls only; their outputs are put together after the warm-up
        last[TORCH] = [module(chunk) for chunk in chunks]

    def run_openvino(label: str, compiled: Any) -> None:
        last[label] = [named_outputs(compiled, compiled(array)) for array in arrays]

    functions: dict[str, Callable[[], object]] = {TORCH: run_torch}
    for item in deployed:
        if item.compiled is not None:
            functions[item.row.label] = lambda label=item.row.label, compiled=item.compiled: run_openvino(
                label, compiled
            )
    progress(
        f"{name}: timing {len(functions)} way(s), {repeats + 1} round(s) of {len(images)} images in batches of {batch}"
        " ..."
    )
    with torch.inference_mode():
        first = {}
        for label, function in functions.items():  # the warm-up round
            function()
            first[label] = last[label]
        timings = interleaved_times(functions, repeats, CPU, warmup=0)
    reference = Outputs.of(*(torch.cat([getattr(call, key) for call in first[TORCH]]) for key in OUTPUTS_COMPARED))
    for row in [torch_row, *(item.row for item in deployed)]:
        if row.label not in timings.clock:
            continue
        row.seconds = timings.median(row.label) / len(images)
        row.wall_seconds = timings.median_wall(row.label) / len(images)
        calls = first[row.label]
        outputs = (
            reference
            if row.label == TORCH
            else Outputs.of(*(np.concatenate([call[key] for call in calls]) for key in OUTPUTS_COMPARED))
        )
        compare(row, outputs, reference, truth)
        row.speedup = torch_row.seconds / row.seconds
    return torch_row, reference


def one_swap_spearman(images: int) -> float:
    """Spearman's rank correlation when two neighbouring scores of ``images`` swap places: ``1 - 12 / (n (n² - 1))``.

    Below :data:`MIN_SPEARMAN` for 10 images or fewer: there a single swap of two near-tied scores fails the bound.
    """
    return 1.0 - 12.0 / (images * (images * images - 1)) if images > 1 else math.nan


def footnotes(rows: Sequence[PrecisionRow], trace_seconds: float, images: int) -> list[str]:
    """Footnotes under a model's table.

    The shared ONNX trace, precisions OpenVINO ran at another precision than asked, and the rows that only the rank
    test rejected where it is too coarse to forgive one swap (``images`` scored: 10 or fewer).
    """
    notes = [f"  export s: the IR's conversion and compression; the ONNX trace they share took {trace_seconds:.1f} s"]
    for row in rows:
        if row.fell_back:
            notes.append(
                f"  {row.label} ran at {row.runs_at}: this CPU lacks {row.label} (for bf16: AVX512-BF16 or AMX), "
                f"so the row repeats the {row.runs_at} IR's figures with fresh timings; it is not recommended"
            )
    if any(row.error is None and not math.isfinite(row.spearman) and row.label != TORCH for row in rows):
        notes.append("  Spearman n/a: that precision gave every image the same score (or torch did)")
    one_swap = one_swap_spearman(images)
    coarse = [
        row.label
        for row in rows
        if row.judged and row.pixel_auroc_kept and one_swap - 1e-9 <= row.spearman < MIN_SPEARMAN
    ]
    if coarse:
        notes.append(
            f"  Spearman over {images} images: one swap of two neighbouring scores gives "
            f"{one_swap:.4f} < {MIN_SPEARMAN}, so {', '.join(coarse)} failed the rank test by at most "
            f"one swap; rerun with --images 11 or more (32: a swap costs 0.0004) before ruling them out"
        )
    return notes


def measure_model(spec: ModelSpec, args: argparse.Namespace) -> ModelResult:
    """Build, set up, export, time and compare one model at every chosen precision (see the module docstring)."""
    name = spec.name
    started = time.perf_counter()
    progress(f"{name}: building ...")
    module = build_module(spec, args)
    architecture = module.model.architecture()
    backbone, size = architecture["backbone"], int(architecture["image_size"])
    source_size = max(TINY_SOURCE_SIZE if args.tiny else SOURCE_SIZE, size)
    with tempfile.TemporaryDirectory(prefix="clipad_precision_") as directory:
        folder = Path(directory)
        data = make_data(folder / "data", args, int(module.hparams.get("k_shot") or 0), source_size)
        progress(f"{name}: setting up ({spec.protocol.value}) ...")
        setting = set_up(spec, module, data, args, folder)
        images, truth = scored_images(data.target)
        calibrate_post_processor(module, images)
        one_image = images[:1].numpy()
        deployed, trace_seconds = Deployer(module, data, folder / "export", args, name).deploy_all(
            args.ov_precisions, one_image
        )
        torch_row, reference = time_and_compare(
            module, deployed, images, truth, repeats=args.repeats, name=name, batch=args.batch
        )
        rows = [torch_row, *(item.row for item in deployed)]
        result = ModelResult(
            name,
            heading=(
                f"{name} ({backbone}, {size} px, {setting}; {data.description}; batch {args.batch}, "
                f"{args.repeats} round(s)): eager torch f32 AUROC image {100 * torch_row.auroc_image:.1f} %, "
                f"pixel {100 * torch_row.auroc_pixel:.1f} %"
            ),
            rows=rows,
            notes=footnotes(rows, trace_seconds, len(reference.scores)),
            reference=reference,
        )
        best = recommend(rows)
        result.recommended = best.label if best is not None else None
        if best is None:  # nothing qualifies: the fastest IR's profile
            fastest = min(
                (row for row in rows[1:] if math.isfinite(row.seconds)), key=lambda row: row.seconds, default=None
            )
            if fastest is not None:
                result.profile = _profile(fastest, deployed, one_image, args, name, why="fastest; none qualifies")
        elif args.profile or best.speedup < TARGET_SPEEDUP:
            result.profile = _profile(best, deployed, one_image, args, name)
            # below the goal, the all-int8 IR too: whether its matrix products run int8 kernels shows what limits it
            quantised = [
                item for item in deployed if item.precision is Precision.INT8_PTQ and item.compiled is not None
            ]
            profiled = " ".join(result.profile[:1])
            if quantised and f"{name} {Precision.INT8_PTQ.value}," not in profiled:
                why = "all-int8 (weights and activations), for comparison"
                result.profile += _profile(quantised[0].row, deployed, one_image, args, name, why=why)
    progress(f"{name}: done in {time.perf_counter() - started:.0f} s")
    return result


def _profile(
    best: PrecisionRow,
    deployed: Sequence[Deployed],
    image: np.ndarray,
    args: argparse.Namespace,
    name: str,
    *,
    why: str | None = None,
) -> list[str]:
    """OpenVINO's per-node-type profile of the recommended IR (the fastest qualifying IR if torch is recommended)."""
    compiled = [item for item in deployed if item.compiled is not None and math.isfinite(item.row.seconds)]
    candidates = (
        [item for item in compiled if item.row.label == best.label]
        or sorted((item for item in compiled if item.row.acceptable), key=lambda item: item.row.seconds)
        or sorted(compiled, key=lambda item: item.row.seconds)
    )
    if not candidates:
        return [f"  ({name}: no OpenVINO IR to profile)"]
    item = candidates[0]
    threads = {"INFERENCE_NUM_THREADS": args.threads} if args.threads else {}
    if why is None:
        why = "recommended" if item.row.label == best.label else "fastest OpenVINO IR; eager torch is recommended"
    progress(f"{name}: profiling {item.precision.value} ...")
    return profile_openvino(
        item.ov_model, image, {**compile_config(item.precision), **threads}, f"{name} {item.precision.value}, {why}"
    )


def main(argv: Sequence[str] | None = None) -> list[ModelResult]:
    """Measure the chosen models and print a table per model.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        Every model's result, in registry order.
    """
    args = parse_arguments(argv)
    from anomalib_clipad.clip.loading import register_model_configs

    register_model_configs()
    saved_threads = torch.get_num_threads()  # restored at the end (main runs inside test processes too)
    if args.threads:
        torch.set_num_threads(args.threads)
    import openvino as ov

    print(BANNER if args.pretrained is None else f"weights: {args.pretrained}")
    print(
        f"torch {torch.__version__}, OpenVINO {ov.get_version().split('-')[0]}, CPU, {torch.get_num_threads()} torch "
        f"thread(s), OpenVINO threads: {args.threads or 'default'}; {clock_name(CPU)} per image; interleaved rounds"
    )
    results: list[ModelResult] = []
    try:
        with quiet():
            for spec in args.specs:
                result = measure_model(spec, args)
                results.append(result)
                print()
                for line in format_table(result):
                    print(line)
                for line in result.profile:
                    print(line)
                sys.stdout.flush()
                gc.collect()
    finally:
        torch.set_num_threads(saved_threads)
    return results


if __name__ == "__main__":
    main()
