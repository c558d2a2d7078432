# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Run the ``anomalib`` / ``anomalib-clipad`` command lines (or a script) in a subprocess and read their metric tables.

The one subprocess runner of the test suite, for unit and integration tests alike: ``from cli_runner import ...``
(``tests/`` is on ``sys.path``: ``pythonpath`` in ``pyproject.toml``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
METRIC_NAMES = ("image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score")
# a row of the metric table Lightning prints after `test`: "│ image_AUROC │ 0.75 │"
METRIC_ROW = re.compile(rf"({'|'.join(METRIC_NAMES)})\s*│\s*([0-9.eE+-]+)")


def console_script(name: str) -> str:
    """Path of a console script installed next to this interpreter (``anomalib``, ``anomalib-clipad``)."""
    script = Path(sys.executable).with_name(name)
    assert script.exists(), f"the {name} console script is missing next to {sys.executable} (pip install -e .)"
    return str(script)


def run_process(
    arguments: list[str], cwd: Path, expected_rc: int = 0, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a command offline (``HF_HUB_OFFLINE=1``) with this checkout importable; ``env``: more variables.

    Raises:
        AssertionError: the exit code is not ``expected_rc`` (the end of the output is in the message).
    """
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",  # Lightning's metric table is not wrapped
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    }
    result = subprocess.run(
        arguments, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == expected_rc, f"exit code {result.returncode}\n{output[-5000:]}"
    return result


def run_command(arguments: list[str], cwd: Path, expected_rc: int = 0, env: Mapping[str, str] | None = None) -> str:
    """:func:`run_process`, returning stdout + stderr."""
    result = run_process(arguments, cwd, expected_rc, env)
    return result.stdout + result.stderr


def anomalib(arguments: list[str], cwd: Path, expected_rc: int = 0) -> str:
    """``anomalib <arguments>`` (see :func:`run_command`)."""
    return run_command([console_script("anomalib"), *arguments], cwd, expected_rc)


def anomalib_clipad(arguments: list[str], cwd: Path, expected_rc: int = 0) -> str:
    """``anomalib-clipad <arguments>`` (see :func:`run_command`)."""
    return run_command([console_script("anomalib-clipad"), *arguments], cwd, expected_rc)


def tiny_model_args(name: str, **overrides: Any) -> list[str]:
    """``--model anomalib_clipad.<name> --model.<argument> <value> ...``: the registry's tiny settings of the model
    (``get_spec(name).tiny``: a tiny random-init CLIP), ``overrides`` on top (``None`` is written ``null``).

    The full class path works with or without anomalib's registration hook.
    """
    from anomalib_clipad.registry import get_spec

    spec = get_spec(name)
    arguments = ["--model", f"anomalib_clipad.{spec.name}"]
    for argument, value in {**spec.tiny, **overrides}.items():
        written = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        arguments += [f"--model.{argument}", written]
    return arguments


def printed_metrics(output: str) -> dict[str, float]:
    """The image and pixel metrics of a ``test`` run's table; all four must be there, each in [0, 1]."""
    metrics = {name: float(value) for name, value in METRIC_ROW.findall(output)}
    assert set(METRIC_NAMES) <= set(metrics), output[-3000:]
    assert all(0.0 <= value <= 1.0 for value in metrics.values()), metrics
    return metrics
