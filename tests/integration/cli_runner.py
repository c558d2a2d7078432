# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Run the ``anomalib`` / ``anomalib-clipad`` command lines in a subprocess and read their metric tables.

Shared by the integration tests (imported as ``from cli_runner import ...``: pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
METRIC_NAMES = ("image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score")
# a row of the metric table Lightning prints after `test`: "│ image_AUROC │ 0.75 │"
METRIC_ROW = re.compile(rf"({'|'.join(METRIC_NAMES)})\s*│\s*([0-9.eE+-]+)")


def console_script(name: str) -> str:
    """Path of a console script installed next to this interpreter (``anomalib``, ``anomalib-clipad``)."""
    script = Path(sys.executable).with_name(name)
    assert script.exists(), f"the {name} console script is missing next to {sys.executable} (pip install -e .)"
    return str(script)


def run_command(arguments: list[str], cwd: Path, expected_rc: int = 0) -> str:
    """Run a command offline (``HF_HUB_OFFLINE=1``) with this checkout importable; return stdout + stderr.

    Raises:
        AssertionError: the exit code is not ``expected_rc`` (the end of the output is in the message).
    """
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",  # Lightning's metric table is not wrapped
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(arguments, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == expected_rc, f"exit code {result.returncode}\n{output[-5000:]}"
    return output


def anomalib(arguments: list[str], cwd: Path, expected_rc: int = 0) -> str:
    """``anomalib <arguments>`` (see :func:`run_command`)."""
    return run_command([console_script("anomalib"), *arguments], cwd, expected_rc)


def printed_metrics(output: str) -> dict[str, float]:
    """The image and pixel metrics of a ``test`` run's table; all four must be there, each in [0, 1]."""
    metrics = {name: float(value) for name, value in METRIC_ROW.findall(output)}
    assert set(METRIC_NAMES) <= set(metrics), output[-3000:]
    assert all(0.0 <= value <= 1.0 for value in metrics.values()), metrics
    return metrics


def anomalib_clipad(arguments: list[str], cwd: Path, expected_rc: int = 0) -> str:
    """``anomalib-clipad <arguments>`` (see :func:`run_command`)."""
    return run_command([console_script("anomalib-clipad"), *arguments], cwd, expected_rc)
