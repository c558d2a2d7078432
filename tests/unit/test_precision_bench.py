# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Smoke test of ``python -m anomalib_clipad.benchmarks.precision --tiny``, and of its small parts.

The end-to-end test runs the script's ``main --tiny`` on DevPrompt (the quickest of the five to export), with the
registry's tiny settings on the 2-block micro backbone (the ``micro_registry`` fixture: its ONNX export is the test's
main cost, and takes half the time of the 8-block tiny backbone's), at three precisions: f32, int8 (weights compressed)
and bf16 (the f32 IR at the bf16 hint). It checks the table's rows and columns, that the f32 IR matches eager torch
within float32 rounding (the export tests measure <= 1.9e-6) while the figures are real (torch's scores differ between
images, int8 moves the maps, the int8 IR is smaller), and that the recommendation (and, below 2.5x, the profile) is
printed. The timings themselves are not checked: one round on a shared machine is noise. Its duration is printed
(``-s``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from anomalib_clipad.benchmarks.precision import (
    BANNER,
    COLUMNS,
    TARGET_SPEEDUP,
    TORCH,
    PrecisionRow,
    auroc,
    footnotes,
    generate_real_dataset,
    main,
    make_data,
    one_swap_spearman,
    parse_arguments,
    recommend,
    spearman,
)

TINY = ["--tiny", "--model", "DevPrompt", "--images", "6", "--batch", "4", "--repeats", "1"]
TINY += ["--calibration-images", "2"]
"""6 images in calls of 4 and 2: the outputs of the calls are put together in order (f32 matches torch)."""
PRECISIONS = ["--precision", "f32", "--precision", "int8", "--precision", "bf16"]
F32_TOLERANCE = 1e-4


@pytest.mark.usefixtures("micro_registry")
def test_devprompt_table_at_three_precisions(capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    (result,) = main([*TINY, *PRECISIONS])
    seconds = time.perf_counter() - start
    printed = capsys.readouterr().out
    with capsys.disabled():
        print(f"\nprecision benchmark, micro DevPrompt at f32, int8, bf16: {seconds:.1f} s")

    assert BANNER in printed  # random weights: the differences are the graph's sensitivity, said loudly
    lines = printed.splitlines()
    header = next(line for line in lines if line.startswith("precision "))
    for column, _ in COLUMNS:
        assert column in header
    table = {line.split("  ")[0].strip(): line for line in lines if line.startswith((TORCH, "f32 ", "int8 ", "bf16 "))}
    assert set(table) == {TORCH, "f32", "int8", "bf16"}, table
    for label, line in table.items():
        assert "FAILED" not in line, line
        assert len(line.split()) == len(COLUMNS) + (label == TORCH), line  # "torch f32" is two words
    assert [row.label for row in result.rows] == [TORCH, "f32", "int8", "bf16"]

    reference = result.reference
    assert reference is not None
    assert np.ptp(reference.scores) > 0  # real scores, not a constant
    assert np.ptp(reference.maps) > 0
    f32, int8, bf16 = (result.row(label) for label in ("f32", "int8", "bf16"))
    assert f32.max_score_diff < F32_TOLERANCE, f32
    assert f32.max_map_diff < F32_TOLERANCE, f32
    assert abs(f32.delta_pixel_points) < 0.01, f32
    assert int8.max_map_diff > f32.max_map_diff  # int8 weights move the maps: the comparison sees a difference
    assert int8.ir_mib < f32.ir_mib  # and the IR is smaller
    assert bf16.ir_mib == pytest.approx(f32.ir_mib)  # bf16 runs the f32 IR
    for row in result.rows:
        assert row.error is None, row
        assert row.seconds > 0, row  # NaN fails too
        assert row.speedup > 0, row
        assert math.isfinite(row.peak_mib), row
        assert math.isfinite(row.auroc_image), row
        assert math.isfinite(row.auroc_pixel), row
    assert result.row(TORCH).speedup == pytest.approx(1.0)

    assert "DevPrompt: recommended deployment precision:" in printed
    assert result.recommended in {row.label for row in result.rows}
    if result.row(result.recommended).speedup < TARGET_SPEEDUP:
        assert "OpenVINO profile" in printed  # what limits it


def test_recommendation_is_the_fastest_acceptable_row() -> None:
    def row(label: str, seconds: float, rho: float, pixel: float) -> PrecisionRow:
        return PrecisionRow(label, seconds=seconds, spearman=rho, delta_pixel_points=pixel)

    rows = [
        row(TORCH, 1.0, math.nan, math.nan),  # torch always qualifies
        row("f32", 0.9, 1.0, 0.0),
        row("int8", 0.5, 0.999, -0.4),
        row("int8_ptq", 0.3, 0.98, 0.0),  # rank order changed
        row("int8_acq", 0.2, 1.0, 0.6),  # pixel AUROC moved
    ]
    assert recommend(rows).label == "int8"
    assert recommend(rows[:1]).label == TORCH
    assert recommend([*rows[:1], PrecisionRow("f32", error="export failed")]).label == TORCH


def test_a_footnote_names_the_rows_one_swap_kept_from_the_recommendation() -> None:
    torch_scores = np.arange(8.0)
    swapped = torch_scores.copy()
    swapped[[3, 4]] = swapped[[4, 3]]
    one_swap = spearman(torch_scores, swapped)
    assert one_swap == pytest.approx(one_swap_spearman(8))
    assert one_swap < 0.99  # 0.9762: at 8 images the bound allows no swap
    assert one_swap_spearman(11) >= 0.99 > one_swap_spearman(10)

    def row(label: str, rho: float, pixel: float = 0.0) -> PrecisionRow:
        return PrecisionRow(label, runs_at=label, seconds=0.1, spearman=rho, delta_pixel_points=pixel)

    rows = [row(TORCH, math.nan), row("bf16", one_swap), row("int8_ptq", one_swap, pixel=-0.8)]
    rows += [row("int8_acq", spearman(torch_scores, swapped[::-1]))]  # far from one swap
    notes = [note for note in footnotes(rows, 1.0, 8) if "Spearman over" in note]
    assert len(notes) == 1
    assert "so bf16 failed" in notes[0]  # not int8_ptq (pixel AUROC) nor int8_acq (more than one swap)
    assert "--images 11" in notes[0]
    assert not [note for note in footnotes(rows[:2], 1.0, 32) if "Spearman over" in note]  # 32: a finer test


def test_auroc_and_spearman() -> None:
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == pytest.approx(1.0)
    assert auroc(np.array([0.5, 0.5, 0.5, 0.5]), np.array([0, 1, 0, 1])) == pytest.approx(0.5)  # ties count half
    assert auroc(np.array([0.9, 0.1, 0.8]), np.array([0, 1, 0])) == pytest.approx(0.0)
    assert math.isnan(auroc(np.array([0.1, 0.2]), np.array([1, 1])))
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 35.0])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert math.isnan(spearman(np.array([1.0, 2.0]), np.array([1.0, 1.0])))


def test_quantisation_calibrates_on_held_out_normal_images(tmp_path: Path) -> None:
    args = parse_arguments(["--tiny", "--images", "6", "--calibration-images", "3"])
    data = make_data(tmp_path, args, k_shot=1, source_size=64)
    scored = set(data.target.test_data.samples["image_path"])
    assert len(scored) == 6
    held_out = data.held_out
    held_out.setup("fit")
    calibration = held_out.val_data.samples  # what anomalib's INT8_PTQ / INT8_ACQ calibrate on
    assert len(calibration) == 3
    assert (calibration["label_index"] == 0).all()  # normal images only
    every_held_out = {*held_out.train_data.samples["image_path"], *held_out.test_data.samples["image_path"]}
    assert not scored & every_held_out  # never the scored images (other files, another seed)


def test_real_photos_give_exact_cutpaste_masks(tmp_path: Path) -> None:
    from anomalib.data.utils import read_mask

    folder = generate_real_dataset(
        tmp_path, "brick", n_train=1, n_test_good=1, n_test_defect=3, image_size=64, seed=0, half="lower"
    )
    masks = sorted((folder / "ground_truth" / "cutpaste").glob("*_mask.png"))
    assert len(masks) == 3
    assert len(list((folder / "test" / "cutpaste").glob("*.png"))) == 3
    for path in masks:
        mask = np.asarray(read_mask(path)) > 0
        assert 0.015 <= mask.mean() <= 0.09  # 2-8 % of the image (rounded to whole pixels)
        rows, cols = np.nonzero(mask)
        assert mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # one rectangle
