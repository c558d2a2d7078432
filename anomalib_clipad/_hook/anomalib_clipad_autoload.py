# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Register anomalib-clipad's models with anomalib, lazily, right after ``anomalib.models`` is imported.

anomalib has no plugin discovery: its CLI resolves ``--model <ShortName>`` only among already-imported
``AnomalibModule`` subclasses, and ``anomalib.models.get_model`` / ``anomalib benchmark`` only among the attributes of
``anomalib.models``. This top-level module is imported by ``anomalib_clipad.pth`` (installed into site-packages next
to it) at interpreter start-up. It must stay cheap: it only inserts a one-shot finder into ``sys.meta_path``. When
``anomalib.models`` is imported later, the finder removes itself, lets the regular finders locate the module, and
wraps its loader so that ``anomalib_clipad.models`` is imported right after ``anomalib.models`` has finished
executing; it makes our classes reachable from ``anomalib.models`` (never overwriting).

* Set ``ANOMALIB_CLIPAD_DISABLE_AUTOLOAD=1`` to disable the hook.
* A failure while importing the plugin becomes a ``RuntimeWarning``; anomalib itself keeps working.
* ``python -S`` skips ``.pth`` files: use the full class path (``--model anomalib_clipad.WinCLIPPlus``) there.

This file is the source of the top-level module ``anomalib_clipad_autoload`` in the wheel (see pyproject.toml,
``force-include``); it must not import anything from ``anomalib_clipad`` at module level.
"""

import os
import sys

TARGET_MODULE = "anomalib.models"
PLUGIN_MODULE = "anomalib_clipad.models"
DISABLE_ENV_VAR = "ANOMALIB_CLIPAD_DISABLE_AUTOLOAD"


def _load_plugin() -> None:
    """Import the plugin package; turn any failure into a ``RuntimeWarning``."""
    try:
        __import__(PLUGIN_MODULE)
    except Exception as exc:  # a broken plugin must never break anomalib itself
        import warnings

        warnings.warn(
            f"anomalib-clipad could not register its models with anomalib ({type(exc).__name__}: {exc}). "
            f"Short model names such as 'WinCLIPPlus' will not resolve; the full class path "
            f"'anomalib_clipad.<Name>' shows the underlying error. Set {DISABLE_ENV_VAR}=1 to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )


class _AnomalibModelsFinder:
    """One-shot ``sys.meta_path`` finder that fires when ``anomalib.models`` is imported."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        """Locate ``anomalib.models`` with the other finders and wrap its loader; ignore every other module.

        Args:
            fullname: Fully qualified name of the module being imported.
            path: Parent package's ``__path__`` (``None`` for top-level modules).
            target: Module object for reloads.

        Returns:
            The module spec with a wrapped loader for ``anomalib.models``, otherwise ``None``.
        """
        if fullname != TARGET_MODULE:
            return None
        uninstall()  # one-shot: never look at any other import again
        spec = None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        original_exec_module = spec.loader.exec_module

        def exec_module(module: object) -> None:
            original_exec_module(module)
            _load_plugin()

        spec.loader.exec_module = exec_module  # the loader instance belongs to this spec only
        return spec


_FINDER = _AnomalibModelsFinder()


def uninstall() -> None:
    """Remove the finder from ``sys.meta_path`` (idempotent)."""
    while _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def install() -> None:
    """Install the finder, or import the plugin at once if ``anomalib.models`` is already imported."""
    if os.environ.get(DISABLE_ENV_VAR, "").strip().lower() in {"1", "true", "yes", "on"}:
        return
    if TARGET_MODULE in sys.modules:
        _load_plugin()
        return
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


install()
