# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Our log records appear once on a console configured like anomalib's CLI's; nothing else changes."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler

import anomalib_clipad  # noqa: F401 (installs the handler on the anomalib_clipad logger)

FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"  # anomalib.loggers.configure_logger's


@contextmanager
def bare_root() -> Iterator[list[logging.Handler]]:
    """The root logger without handlers (pytest's own removed too), restored afterwards; yields its handler list.

    Used inside the tests: pytest adds its log-capture handlers to the root for the test call, after fixtures.
    """
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers.clear()
    try:
        yield root.handlers
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def test_our_records_are_printed_once_on_anomalibs_two_console_handlers(monkeypatch) -> None:
    plain_stream, rich_stream = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain_stream)
    plain = logging.StreamHandler()  # what logging.basicConfig adds: a stream handler on sys.stderr
    plain.setFormatter(logging.Formatter(FORMAT))
    rich = RichHandler(console=Console(file=rich_stream, width=200))
    with bare_root() as handlers:
        handlers.extend([plain, rich])
        logging.getLogger().setLevel(logging.INFO)
        logging.getLogger("anomalib_clipad.clip.loading").warning("ours, once")
        logging.getLogger("anomalib.engine").info("anomalib's, as anomalib prints it")

    printed = plain_stream.getvalue() + rich_stream.getvalue()
    assert printed.count("ours, once") == 1
    assert "anomalib_clipad.clip.loading - WARNING - ours, once" in plain_stream.getvalue()  # whole, unwrapped
    assert plain_stream.getvalue().count("anomalib's, as anomalib prints it") == 1  # untouched
    assert rich_stream.getvalue().count("anomalib's, as anomalib prints it") == 1


def test_a_single_console_handler_still_prints_our_records() -> None:
    stream = io.StringIO()
    with bare_root() as handlers:
        handlers.append(RichHandler(console=Console(file=stream, width=200)))
        logging.getLogger("anomalib_clipad.data.auxiliary").warning("still printed")
    assert stream.getvalue().count("still printed") == 1


def test_without_logging_configuration_warnings_still_reach_the_last_resort(capsys) -> None:
    with bare_root():
        logging.getLogger("anomalib_clipad.clip.loading").warning("a warning in a plain script")
        logging.getLogger("anomalib_clipad.clip.loading").info("an info record stays silent")
    assert capsys.readouterr().err == "a warning in a plain script\n"
