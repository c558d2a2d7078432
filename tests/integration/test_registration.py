# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Registration of anomalib-clipad's models in anomalib, checked in real subprocesses of the installed package.

These tests need the package *installed* (``pip install -e .`` or a wheel): the ``anomalib_clipad.pth`` hook and the
``anomalib_clipad_autoload`` module live in site-packages, not in the source tree.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_runner import console_script

TIMEOUT_S = 240


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "COLUMNS": "400", "PYTHONWARNINGS": "ignore::FutureWarning"})
    env.pop("ANOMALIB_CLIPAD_DISABLE_AUTOLOAD", None)
    env.update(extra)
    return env


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    """Run in this interpreter's environment as installed: unlike ``cli_runner.run_process`` it neither puts the
    checkout on ``PYTHONPATH`` (some tests set their own) nor keeps the autoload switch of the calling process."""
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=TIMEOUT_S, env=_env(**env), check=False, cwd=Path.cwd()
    )
    if result.returncode != 0:
        pytest.fail(
            f"{args} exited {result.returncode}\nstdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


def _python(code: str, *flags: str, **env: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, *flags, "-c", textwrap.dedent(code)], **env)


@pytest.fixture(scope="module")
def installed() -> None:
    """Fail (not skip) with a clear message when the hook is not installed in this interpreter's site-packages."""
    if importlib.util.find_spec("anomalib_clipad_autoload") is None:
        pytest.fail("anomalib_clipad_autoload is not importable: install the package first (pip install -e .).")


def _public_names() -> list[str]:
    """Our public model classes: the registry's (a light module: it imports none of the models)."""
    from anomalib_clipad.registry import MODEL_NAMES

    return list(MODEL_NAMES)


def test_public_names_are_read() -> None:
    names = _public_names()
    assert "WinCLIPPlus" in names
    assert all(name.isidentifier() for name in names)


def test_hook_is_lazy_and_can_be_disabled(installed: None) -> None:
    code = """
        import sys
        import anomalib_clipad_autoload as hook
        print("finder", hook._FINDER in sys.meta_path)
        print("anomalib", "anomalib" in sys.modules, "anomalib_clipad" in sys.modules)
    """
    out = _python(code).stdout
    assert "finder True" in out  # installed by the .pth at start-up ...
    assert "anomalib False False" in out  # ... without importing anything heavy
    out = _python(code, ANOMALIB_CLIPAD_DISABLE_AUTOLOAD="1").stdout
    assert "finder False" in out


def test_hook_failure_becomes_runtime_warning(installed: None) -> None:
    # Point the one-shot finder at a cheap stdlib module and a plugin that cannot be imported.
    code = """
        import sys, warnings
        import anomalib_clipad_autoload as hook
        hook.uninstall()
        hook.TARGET_MODULE = "email.mime.text"
        hook.PLUGIN_MODULE = "anomalib_clipad_no_such_plugin"
        sys.modules.pop("email.mime.text", None)
        hook.install()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import email.mime.text
        print("imported", email.mime.text.MIMEText.__name__)
        print("finder", hook._FINDER in sys.meta_path)
        print("warnings", [(w.category.__name__, str(w.message)[:60]) for w in caught])
    """
    out = _python(code).stdout
    assert "imported MIMEText" in out  # the target module itself still loads
    assert "finder False" in out  # one-shot
    assert "RuntimeWarning" in out
    assert "could not register" in out


def test_get_model_resolution(installed: None) -> None:
    names = _public_names()
    code = f"""
        import sys
        import anomalib.models as models
        from anomalib.models.image.winclip import WinClip
        print("plugin loaded", "anomalib_clipad" in sys.modules)
        import anomalib_clipad
        from anomalib_clipad.clip import TINY_BACKBONE
        # anomalib's built-in is never hijacked (get_model matches case-insensitively, snake_case too).
        for name in ("winclip", "WinClip", "win_clip"):
            assert models._get_model_class_by_name(name) is WinClip, name
        for name in {names!r}:
            cls = getattr(anomalib_clipad, name)
            assert getattr(models, name) is cls, name
            assert models._get_model_class_by_name(name) is cls, name
            assert name in models.list_models(case="pascal"), name
        ours = models.get_model("WinCLIPPlus", backbone=TINY_BACKBONE, pretrained=None)
        print("short", type(ours).__module__, type(ours).__name__)
        init_args = {{"backbone": TINY_BACKBONE, "pretrained": None}}
        spec = {{"class_path": "anomalib.models.WinCLIPPlus", "init_args": init_args}}
        print("dict", type(models.get_model(spec)).__name__)
        print("snake", models._get_model_class_by_name("win_clip_plus").__name__)
        # The CLI's jsonargparse resolution of the short name (same code path as the `anomalib` console script).
        from anomalib.cli.cli import AnomalibCLI
        try:
            AnomalibCLI(["train", "--model.help", "WinCLIPPlus"])
        except SystemExit as exc:
            print("exit", exc.code)
    """
    out = _python(code).stdout
    assert "plugin loaded True" in out  # loaded by the hook, before the explicit import
    assert "short anomalib_clipad.models.winclip_plus.lightning_model WinCLIPPlus" in out
    assert "dict WinCLIPPlus" in out
    assert "snake WinCLIPPlus" in out
    assert "Help for --model.help=anomalib_clipad.WinCLIPPlus" in out
    assert "--model.k_shot" in out
    assert "exit 0" in out


def test_anomalib_cli_lists_our_models(installed: None) -> None:
    listing = _run([console_script("anomalib"), "train", "-h", "-vv"]).stdout
    for name in _public_names():
        assert f"anomalib_clipad.{name}" in listing, f"{name} is not among the known AnomalibModule subclasses"
    assert "anomalib.models.WinClip" in listing


def test_full_class_path_works_without_site(installed: None) -> None:
    # Under `python -S` no .pth file runs: the hook is off, yet the full class path resolves.
    repo_root = Path(importlib.util.find_spec("anomalib_clipad").origin).parents[1]
    paths = [str(repo_root)] + [p for p in sys.path if p and Path(p).is_dir()]
    code = """
        import sys
        assert "anomalib_clipad_autoload" not in sys.modules
        import anomalib.models
        print("plugin loaded", "anomalib_clipad" in sys.modules)
        from anomalib.cli.cli import AnomalibCLI
        try:
            AnomalibCLI(["train", "--model.help", "anomalib_clipad.WinCLIPPlus"])
        except SystemExit as exc:
            print("exit", exc.code)
    """
    out = _python(code, "-S", PYTHONPATH=os.pathsep.join(paths)).stdout
    assert "plugin loaded False" in out
    assert "Help for --model.help=anomalib_clipad.WinCLIPPlus" in out
    assert "exit 0" in out


def test_light_parts_do_not_import_the_model_zoo(installed: None) -> None:
    # The package loads its model classes on first access: generating data must not pay for anomalib.models.
    code = """
        import sys
        import anomalib_clipad
        import anomalib_clipad.cli
        import anomalib_clipad.data.synthetic
        print("zoo", "anomalib.models" in sys.modules, "anomalib_clipad.models" in sys.modules)
        cls = anomalib_clipad.PromptAD  # first access loads and registers the models
        import anomalib.models
        print("loaded", cls.__name__, anomalib.models.PromptAD is cls, "PromptAD" in vars(anomalib_clipad))
    """
    out = _python(code).stdout
    assert "zoo False False" in out
    assert "loaded PromptAD True True" in out


def test_registration_never_overwrites_and_refuses_colliding_names() -> None:
    import anomalib.models as models

    from anomalib_clipad import ModelNameCollisionError, WinCLIPPlus
    from anomalib_clipad.registration import register_in_anomalib

    assert models.WinCLIPPlus is WinCLIPPlus
    impostor = type("WinCLIPPlus", (), {})
    register_in_anomalib([impostor])  # an existing attribute is left untouched
    assert models.WinCLIPPlus is WinCLIPPlus
    for name in ("WinClip", "winclip", "PATCHCORE"):
        with pytest.raises(ModelNameCollisionError, match="collides"):
            register_in_anomalib([type(name, (), {})])
    assert models.WinClip.__module__.startswith("anomalib.")
