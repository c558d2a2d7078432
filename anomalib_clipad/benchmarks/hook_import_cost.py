# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Measure the import-time cost of the registration hook (``anomalib_clipad.pth`` + ``anomalib_clipad_autoload``).

Runs fresh interpreters (``sys.executable``, i.e. the environment the package is installed in) and prints median
wall-clock times over ``--repeats`` runs:

* ``python -c pass`` with the hook, and with ``ANOMALIB_CLIPAD_DISABLE_AUTOLOAD=1`` (the ``.pth`` still imports the tiny
  autoload module, but installs no finder);
* ``python -c "import anomalib.models"`` with the hook (anomalib-clipad and its models are imported right after
  ``anomalib.models``) and with the hook disabled;
* ``python -c "import anomalib_clipad.data.synthetic"``: a light part of the package (what
  ``anomalib-clipad generate-data`` needs), which must not import anomalib's model zoo (the package loads its model
  classes on first access);
* the self time of importing ``anomalib_clipad_autoload`` at start-up, from ``python -X importtime``.

Usage::

    python -m anomalib_clipad.benchmarks.hook_import_cost --repeats 7
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

DISABLE = {"ANOMALIB_CLIPAD_DISABLE_AUTOLOAD": "1"}


def _time_command(code: str, repeats: int, extra_env: dict[str, str] | None = None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "ANOMALIB_CLIPAD_DISABLE_AUTOLOAD"}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", **(extra_env or {})})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _autoload_import_us() -> int:
    env = {k: v for k, v in os.environ.items() if k != "ANOMALIB_CLIPAD_DISABLE_AUTOLOAD"}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "pass"], env=env, check=True, capture_output=True, text=True
    )
    match = re.search(r"import time:\s+(\d+) \|\s+(\d+) \|\s+anomalib_clipad_autoload\s*$", result.stderr, re.M)
    if match is None:
        msg = "anomalib_clipad_autoload was not imported at start-up: is the package installed (pip install -e .)?"
        raise RuntimeError(msg)
    return int(match.group(2))


def main(argv: list[str] | None = None) -> None:
    """Print the measured import times.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)

    print(f"python: {sys.executable}; median of {args.repeats} runs (seconds)")
    print(f"autoload module import at start-up (cumulative, -X importtime): {_autoload_import_us()} us")
    rows = [
        ("python -c pass", "pass"),
        ('python -c "import anomalib.models"', "import anomalib.models"),
        ("import anomalib_clipad.data.synthetic", "import anomalib_clipad.data.synthetic"),
    ]
    print(f"{'command':<38} {'hook on':>9} {'hook off':>9} {'difference':>11}")
    for label, code in rows:
        on = _time_command(code, args.repeats)
        off = _time_command(code, args.repeats, DISABLE)
        print(f"{label:<38} {on:>9.3f} {off:>9.3f} {on - off:>+11.3f}")


if __name__ == "__main__":
    main()
