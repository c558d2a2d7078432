# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Each log record of anomalib-clipad appears once on the console, also under anomalib's CLI.

anomalib's CLI (``anomalib.loggers.configure_logger``) gives the root logger two console handlers: a plain one
(``logging.basicConfig``: ``2026-01-01 12:00:00,000 - name - INFO - message`` on stderr) and a ``RichHandler`` on
stdout. Every record that reaches the root is therefore printed twice, once plainly and once by rich (wrapped over
several lines). Our modules log through ``logging.getLogger(__name__)`` under the ``anomalib_clipad`` logger, so each
of our lines came twice.

:func:`install` (run when :mod:`anomalib_clipad` is imported) puts a handler on the ``anomalib_clipad`` logger that
prints nothing itself. It sees each of our records before the root's handlers do and, when the root has a rich
handler *and* a plain console handler, adds a filter to the rich one that drops records of ``anomalib_clipad``: our
lines are printed once, by the plain handler (whole, with the logger's name, unwrapped: what a log file or ``grep``
needs). Nothing else changes: anomalib's own lines, other loggers, file handlers, pytest's log capture and a root
without handlers (Python's last-resort output of warnings) behave as before.

Example:
    >>> import logging
    >>> from anomalib_clipad.console_log import install
    >>> install()  # idempotent; done on import of anomalib_clipad
    >>> logging.getLogger("anomalib_clipad.clip").warning("once")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sys

__all__ = ["PACKAGE_LOGGER", "install"]

PACKAGE_LOGGER = "anomalib_clipad"


def _is_ours(record: logging.LogRecord) -> bool:
    return record.name == PACKAGE_LOGGER or record.name.startswith(PACKAGE_LOGGER + ".")


class _SkipOurRecords(logging.Filter):
    """On the root's rich handler that a plain console handler duplicates: let every record through but ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _is_ours(record)


def _is_plain_console(handler: logging.Handler) -> bool:
    return type(handler) is logging.StreamHandler and handler.stream in {sys.stderr, sys.stdout, sys.__stderr__}


def _skip_duplicated_console() -> None:
    """Add :class:`_SkipOurRecords` to the root's rich handlers when a plain console handler prints the same."""
    handlers = logging.getLogger().handlers
    if not any(_is_plain_console(handler) for handler in handlers):
        return
    for handler in handlers:
        is_rich = type(handler).__name__ == "RichHandler"
        if is_rich and not any(isinstance(f, _SkipOurRecords) for f in handler.filters):
            handler.addFilter(_SkipOurRecords())


class _OnceOnTheConsole(logging.Handler):
    """The ``anomalib_clipad`` logger's handler: prints nothing, keeps our records from being printed twice."""

    def handle(self, record: logging.LogRecord) -> bool:
        """Run before the root's handlers: de-duplicate them; stand in for Python's last resort when alone.

        Args:
            record: a record of an ``anomalib_clipad`` logger.

        Returns:
            ``True``.
        """
        _skip_duplicated_console()
        # A handler here counts as "a handler found", so Python would no longer print warnings through its last
        # resort when nothing else is configured (a plain script): do it in its place.
        last_resort = logging.lastResort
        if last_resort is not None and record.levelno >= last_resort.level and not self._others_reached(record):
            last_resort.handle(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Print nothing (see :meth:`handle`)."""

    def _others_reached(self, record: logging.LogRecord) -> bool:
        """Whether the record reaches another handler on its way from its logger to the root."""
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            if any(handler is not self for handler in logger.handlers):
                return True
            if not logger.propagate:
                return False
            logger = logger.parent
        return False


def install() -> None:
    """Put the de-duplicating handler on the ``anomalib_clipad`` logger (idempotent)."""
    package_logger = logging.getLogger(PACKAGE_LOGGER)
    if not any(isinstance(handler, _OnceOnTheConsole) for handler in package_logger.handlers):
        package_logger.addHandler(_OnceOnTheConsole())
