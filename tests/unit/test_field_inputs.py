# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Bad input, as a new user gives it: each ends in one clear error that says what to change, and nothing else.

* an auxiliary-data root with a typo, a category folder given as the root, a category that is not on disk: an error
  naming the root, the layout looked for and the categories found; no download is started, nothing is created;
* a layer the backbone does not have: the model argument to change and the backbone's depth;
* a truncated image in a test folder or among the reference images: the file is named;
* an ONNX / OpenVINO export without the export extra: the extra to install.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from anomalib_clipad.clip import TINY_BACKBONE
from anomalib_clipad.data.auxiliary import AuxiliaryData
from anomalib_clipad.data.shots import load_reference_folder
from anomalib_clipad.data.synthetic import generate_synthetic_dataset

LAYOUT = "<root>/<category>/test/<defect>/<image>"


@pytest.fixture(scope="module")
def aux_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two categories in MVTec AD layout (do not modify: module-scoped)."""
    root = tmp_path_factory.mktemp("field_aux")
    for seed, category in enumerate(("cloth", "widget")):
        generate_synthetic_dataset(
            root, category=category, n_train=2, n_test_good=1, n_test_defect=1, image_size=32, seed=seed
        )
    return root


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Make any anomalib dataset download fail loudly (and at once: no network here); returns the roots asked for."""
    from anomalib.data.datamodules.image import mvtecad, visa

    started: list[Path] = []

    def download_and_extract(root: Path, *args: object, **kwargs: object) -> None:
        started.append(Path(root))
        msg = f"a download into {root} was started"
        raise AssertionError(msg)

    monkeypatch.setattr(mvtecad, "download_and_extract", download_and_extract)
    monkeypatch.setattr(visa, "download_and_extract", download_and_extract)
    return started


def _prepare_and_set_up(datamodule: AuxiliaryData) -> None:
    """What ``Engine.fit`` does with a datamodule before training."""
    datamodule.prepare_data()
    datamodule.setup()


# ------------------------------------------------------------------------------------------------ auxiliary root
def test_mistyped_auxiliary_root_names_root_and_layout_and_creates_nothing(tmp_path, no_download) -> None:
    typo = tmp_path / "MVTecADD"
    (tmp_path / "MVTecAD").mkdir()  # the folder the user meant, next to the typo
    datamodule = AuxiliaryData(root=typo, categories=["bottle"], num_workers=0)
    with pytest.raises(FileNotFoundError) as raised:
        _prepare_and_set_up(datamodule)
    message = str(raised.value)
    assert str(typo) in message
    assert LAYOUT in message
    assert "MVTecAD" in message.replace(str(typo), "")  # the neighbouring folder is listed
    assert no_download == []
    assert not typo.exists()


def test_default_categories_under_a_missing_root_start_no_download(tmp_path, no_download) -> None:
    missing = tmp_path / "datasets" / "MVTecAD"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _prepare_and_set_up(AuxiliaryData(root=missing, num_workers=0))
    assert no_download == []
    assert not missing.exists()


def test_category_folder_given_as_root_says_which_root_and_category_to_pass(aux_root, no_download) -> None:
    category_dir = aux_root / "widget"
    with pytest.raises(ValueError, match="category folder") as raised:
        _prepare_and_set_up(AuxiliaryData(root=category_dir, num_workers=0))
    message = str(raised.value)
    assert str(category_dir) in message
    assert LAYOUT in message
    assert f"root={aux_root}" in message
    assert "categories=['widget']" in message
    assert no_download == []


def test_category_not_on_disk_lists_the_categories_found(aux_root, no_download) -> None:
    with pytest.raises(ValueError, match=r"'bottle'") as raised:
        _prepare_and_set_up(AuxiliaryData(root=aux_root, categories=["bottle"], num_workers=0))
    message = str(raised.value)
    assert str(aux_root) in message
    assert LAYOUT in message
    assert "['cloth', 'widget']" in message
    assert no_download == []
    assert not (aux_root / "bottle").exists()


def test_root_without_any_category_lists_what_it_holds(tmp_path, no_download) -> None:
    (tmp_path / "notes").mkdir()
    with pytest.raises(ValueError, match="No MVTecAD category") as raised:
        _prepare_and_set_up(AuxiliaryData(root=tmp_path, num_workers=0))
    message = str(raised.value)
    assert LAYOUT in message
    assert "notes" in message
    assert no_download == []


def test_download_only_when_asked_for(tmp_path, no_download) -> None:
    root = tmp_path / "MVTecAD"
    with pytest.raises(AssertionError, match="download"):
        AuxiliaryData(root=root, categories=["bottle"], download=True, num_workers=0).prepare_data()
    assert no_download == [root]


# ------------------------------------------------------------------------------------------------ model layers
@pytest.mark.parametrize(
    ("model", "kwargs", "argument"),
    [
        ("AnomalyCLIP", {"feature_layers": (6, 12, 18, 24)}, "feature_layers"),
        ("AnomalyCLIP", {"feature_layers": (6, 7), "dpam_start_layer": 0}, "dpam_start_layer"),
        ("SimCLIP", {"feature_layers": (6, 12, 18, 24)}, "feature_layers"),
        ("PromptAD", {"memory_layers": (12,)}, "memory_layers"),
        ("DevPrompt", {"memory_layers": (3, 24)}, "memory_layers"),
        ("DevPrompt", {"memory_layers": (3, 8), "vv_start_layer": 10}, "vv_start_layer"),
    ],
)
def test_missing_layer_names_the_argument_and_the_backbone_depth(model: str, kwargs: dict, argument: str) -> None:
    from anomalib_clipad.registry import get_spec

    torch_class = get_spec(model).torch_class
    with pytest.raises(ValueError, match=r"does not exist") as raised:
        torch_class(backbone=TINY_BACKBONE, pretrained=None, image_size=64, **kwargs)
    message = str(raised.value)
    assert f"--model.{argument}" in message
    assert "8 blocks" in message
    assert TINY_BACKBONE in message


# ------------------------------------------------------------------------------------------------ truncated images
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("folder", ["test/hole", "ground_truth/hole"], ids=["image", "mask"])
def test_truncated_image_or_mask_in_the_auxiliary_data_is_named(aux_root, tmp_path, folder: str) -> None:
    root = tmp_path / "aux"
    shutil.copytree(aux_root / "widget", root / "widget")
    broken = next((root / "widget" / folder).glob("*.png"))
    _truncate(broken)
    datamodule = AuxiliaryData(root=root, num_workers=0, train_batch_size=64)
    datamodule.setup()
    with pytest.raises(OSError, match="truncated") as raised:
        list(datamodule.train_dataloader())
    assert str(broken) in str(raised.value)


def test_truncated_reference_image_is_named(aux_root, tmp_path) -> None:
    folder = tmp_path / "references"
    shutil.copytree(aux_root / "widget" / "train" / "good", folder)
    for path in folder.glob("*.png"):
        _truncate(path)
    with pytest.raises(OSError, match="truncated") as raised:
        load_reference_folder(folder, k_shot=1, seed=0, transform=None)
    assert str(folder) in str(raised.value)
    assert ".png" in str(raised.value)


def test_reference_file_that_is_no_image_is_named(tmp_path) -> None:
    folder = tmp_path / "references"
    folder.mkdir()
    (folder / "000.png").write_text("not an image")
    with pytest.raises(OSError, match=r"000\.png"):
        load_reference_folder(folder, k_shot=1, seed=0, transform=None)


# ------------------------------------------------------------------------------------------------ export extra
@pytest.fixture(scope="module")
def tiny_winclip():
    from anomalib_clipad.models.winclip_plus import WinCLIPPlus

    model = WinCLIPPlus(backbone=TINY_BACKBONE, pretrained=None, image_size=64, class_name="widget")
    model.configure_model()
    model.model.set_class("widget")  # ready to export: only the missing package can stop it
    return model


@pytest.mark.parametrize(
    ("export", "missing"), [("to_openvino", "openvino"), ("to_onnx", "onnxscript"), ("to_onnx", "onnx")]
)
def test_export_without_the_export_extra_says_what_to_install(
    tiny_winclip, tmp_path, monkeypatch: pytest.MonkeyPatch, export: str, missing: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # what an environment without the package looks like
    assert importlib.util.find_spec(missing) is None
    exported = tmp_path / "export"
    with pytest.raises(ModuleNotFoundError) as raised:
        getattr(tiny_winclip, export)(exported)
    message = str(raised.value)
    assert 'pip install "anomalib-clipad[export]"' in message
    assert repr(missing) in message
    assert raised.value.name == missing
    assert not exported.exists()
