# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The command lines as a new user meets them, in real subprocesses: the offline demo stops with one complete
message naming its own flag, and each of our log lines appears once under anomalib's CLI."""

from __future__ import annotations

import re
from pathlib import Path

from cli_runner import anomalib, anomalib_clipad, console_script, run_process

from anomalib_clipad.clip import TINY_BACKBONE

OFFLINE_ERROR = "error: Could not obtain pretrained weights 'laion400m_e31' for CLIP backbone 'ViT-B-16-plus-240'"


def _assert_one_clear_offline_error(output: str) -> None:
    assert output.count(OFFLINE_ERROR) == 1, output[-5000:]
    error = next(line for line in output.splitlines() if line.startswith(OFFLINE_ERROR))
    assert " ." not in error  # complete sentences ("Please . This needs network access" was cut)
    assert "`--pretrained /path/to/ViT-B-16-plus-240.pt`" in error  # the demo's flag ...
    assert "--model.pretrained" not in output  # ... not the Lightning models' one
    assert "Retrying" not in output
    assert "Failed to download" not in output
    assert "Traceback" not in output
    hub_lines = [
        line
        for line in output.splitlines()
        if re.search(r"hugging|hf_hub|retry|download|urlopen", line, flags=re.IGNORECASE) and line != error
    ]
    assert hub_lines == []  # one message, no log of the attempt


def test_offline_demo_is_one_complete_message(tmp_path: Path) -> None:
    output = anomalib_clipad(["demo", "--shots", "0", "--root", "data", "--results", "results"], tmp_path, 2)
    _assert_one_clear_offline_error(output)
    assert "HF_HUB_OFFLINE" in output
    assert not (tmp_path / "results").exists()


def test_offline_demo_without_hf_hub_offline_fails_fast(tmp_path: Path) -> None:
    """Without HF_HUB_OFFLINE the hub is asked once; a closed local port stands for "no network" (no retries)."""
    env = {"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "", "HF_HOME": str(tmp_path / "hf")}  # an empty cache
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens on the discard port: connection refused at once
    result = run_process(
        [console_script("anomalib-clipad"), "demo", "--shots", "0", "--root", "data", "--results", "results"],
        tmp_path,
        expected_rc=2,
        env=env,
    )
    output = result.stdout + result.stderr
    _assert_one_clear_offline_error(output)
    assert "cannot be reached" in output
    assert "retry" not in output.lower(), "huggingface_hub retried (each retry waits; the hub is asked once)"


def test_each_log_line_of_ours_appears_once_under_the_anomalib_cli(
    synthetic_root: Path, synthetic_category: str, tmp_path: Path
) -> None:
    output = anomalib(
        [
            "test", "--model", "anomalib_clipad.WinCLIPPlus", "--model.backbone", TINY_BACKBONE,
            "--model.pretrained", "null", "--model.image_size", "64", "--model.k_shot", "1",
            "--data", "anomalib.data.MVTecAD", "--data.root", str(synthetic_root), "--data.category",
            synthetic_category, "--data.num_workers", "0", "--data.eval_batch_size", "8",
            "--default_root_dir", str(tmp_path / "results"),
        ],
        cwd=tmp_path,
    )  # fmt: skip
    for line in (
        "is RANDOMLY INITIALISED (pretrained=None)",  # anomalib_clipad.clip.loading
        "WinCLIP+ reference images (k=1, seed=0)",  # the Lightning model
        "WinCLIP prompts for 'widget'",  # the torch model
        "WinCLIPPlus scored ",  # anomalib_clipad.training.progress
    ):
        assert output.count(line) == 1, (line, output[-5000:])
