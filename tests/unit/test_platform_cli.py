# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""In-process tests of the ``anomalib-clipad`` CLI plumbing and the benchmark pipeline helpers (no Engine runs)."""

from pathlib import Path

import pandas as pd
import pytest

from anomalib_clipad.benchmarks.pipeline import (
    _as_class_config,
    _flatten,
    instantiate,
    prepare_synthetic_dataset,
    run_benchmark,
    summary_table,
)
from anomalib_clipad.cli import main


def test_generate_data_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "d"
    assert (
        main(["generate-data", "--root", str(root), "--n-train", "2", "--n-test-good", "1", "--image-size", "32"]) == 0
    )
    assert "Wrote" in capsys.readouterr().out
    assert len(list((root / "bottle" / "train" / "good").glob("*.png"))) == 2
    assert main(["generate-data", "--root", str(root)]) == 2  # exists, no --overwrite
    assert "overwrite" in capsys.readouterr().err
    assert main(["generate-data", "--root", str(root), "--kind", "texture", "--overwrite", "--n-train", "1"]) == 0


def test_demo_rejects_random_weights_with_pretrained(capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--random-weights", "--pretrained", "laion400m_e31"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_benchmark_bad_configuration_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["benchmark", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("accelerator: cpu\nmodel: Patchcore\n")
    assert main(["benchmark", "--config", str(bad)]) == 2
    assert "'benchmark' section" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        run_benchmark(tmp_path / "missing.yaml")


def test_class_config_forms() -> None:
    assert _as_class_config("Patchcore", "model") == {"class_path": "Patchcore"}
    spec = {"class_path": "anomalib_clipad.WinCLIPPlus", "init_args": {"k_shot": 1}}
    assert _as_class_config(spec, "model") is spec
    with pytest.raises(ValueError, match="class_path"):
        _as_class_config({"init_args": {}}, "model")


def test_instantiate_resolves_short_and_dotted_paths_and_rejects_unknown() -> None:
    from anomalib.data import AnomalibDataModule, Folder
    from anomalib.models import AnomalibModule

    from anomalib_clipad import WinCLIPPlus
    from anomalib_clipad.clip import TINY_BACKBONE

    args = {"backbone": TINY_BACKBONE, "pretrained": None, "image_size": 64, "class_name": "bottle"}
    for class_path in ("WinCLIPPlus", "anomalib_clipad.WinCLIPPlus", "anomalib_clipad.models.winclip_plus.WinCLIPPlus"):
        model = instantiate({"class_path": class_path, "init_args": args}, AnomalibModule, "model")
        assert type(model) is WinCLIPPlus
        assert model.hparams.image_size == 64
    data = instantiate(
        {"class_path": "Folder", "init_args": {"name": "x", "root": "r", "normal_dir": "n"}}, AnomalibDataModule, "data"
    )
    assert isinstance(data, Folder)
    with pytest.raises(Exception, match="NoSuchModel"):
        instantiate("anomalib_clipad.NoSuchModel", AnomalibModule, "model")


def test_flatten_and_summary_table() -> None:
    flat = _flatten("", {"model": {"class_path": "P", "init_args": {"layers": ["a", "b"], "k": 1}}, "seed": 3})
    assert flat == {"model.class_path": "P", "model.init_args.layers": "['a', 'b']", "model.init_args.k": 1, "seed": 3}
    frame = pd.DataFrame(
        [
            {"model.class_path": "Patchcore", "image_AUROC": 0.91234, "fit_duration": 1.0},
            {"model.class_path": "X", "model.init_args.k_shot": 1, "error": "ValueError: boom"},
        ]
    )
    text = summary_table(frame)
    assert "0.912" in text
    assert "ValueError: boom" in text
    assert "k_shot" in text


def test_prepare_synthetic_dataset(tmp_path: Path) -> None:
    assert prepare_synthetic_dataset({"benchmark": {}}) is None
    spec = {"root": str(tmp_path), "category": "cap", "n_train": 1, "n_test_good": 1, "n_test_defect": 1}
    folder = prepare_synthetic_dataset({"synthetic_dataset": dict(spec, image_size=32)})
    assert folder == tmp_path / "cap"
    before = sorted(p.stat().st_mtime_ns for p in folder.rglob("*.png"))
    assert prepare_synthetic_dataset({"synthetic_dataset": dict(spec, image_size=32)}) == folder  # reused
    assert sorted(p.stat().st_mtime_ns for p in folder.rglob("*.png")) == before
