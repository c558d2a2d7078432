# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Calibration from normal images only (``calibration="normal_only"``), the same for every model of the registry.

* the argument exists on all five models, with the same default and the same documentation;
* the false-alarm rate measured on *other* good images is what was asked: the count lies in the 99.9 % interval of its
  exact (beta-binomial) distribution, derived from the numbers of calibration and test images. With ~20 calibration
  images that interval is wide (it catches a scoring path that differs between calibration and test, e.g. thresholds
  that never reach the labels: every good image flagged); the quantile itself is checked exactly (``n - k``
  calibration images above the threshold);
* too few normal images: a message with the count, the need and the fix;
* only the k shots: leave-one-out (each shot scored against a memory of the others), checked against a model built
  with the other shots; one shot and nothing else: an error;
* thresholds never come from the scored images (the test split), and do not depend on them;
* the thresholds (and the normalisation range) go to the learned-state file and the checkpoint (set at validation
  already, over the validation split's F1 thresholds), and are reused for the same class and rate;
* the raw-score models' labels use their raw thresholds.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from anomalib.data import InferenceBatch, MVTecAD

from anomalib_clipad.benchmarks.false_alarm import (
    central_interval,
    false_alarm_distribution,
    measure_false_alarms,
)
from anomalib_clipad.components.memory import ReferenceMemory
from anomalib_clipad.models.base import CALIBRATION_KEY
from anomalib_clipad.models.learned_state import LEARNED_STATE_FILE, LearnedState
from anomalib_clipad.registry import MODELS, get_spec
from anomalib_clipad.training.normal_calibration import leaving_out, quantile_rank, read_images
from anomalib_clipad.training.thresholds import RawScorePostProcessor, get_thresholds, set_thresholds

CLASS = "widget"
RATE = 0.1
SPECS = [pytest.param(spec, id=spec.name) for spec in MODELS]


def _dataset(synthetic_dataset, n_train: int, n_test_good: int = 2) -> Path:
    return synthetic_dataset([CLASS], n_train=n_train, n_test_good=n_test_good, n_test_defect=0, image_size=64)


def _target(root: Path) -> MVTecAD:
    datamodule = MVTecAD(root=root, category=CLASS, num_workers=0)
    datamodule.setup()
    return datamodule


def _trainer(datamodule: object, root: Path | None = None) -> SimpleNamespace:
    return SimpleNamespace(datamodule=datamodule, is_global_zero=root is not None, default_root_dir=str(root or "."))


def _winclip(k_shot: int, **overrides: object):
    torch.manual_seed(0)  # the same random CLIP for every build
    settings = {"k_shot": k_shot, "calibration": "normal_only", "false_alarm_rate": RATE, **overrides}
    model = get_spec("WinCLIPPlus").build_tiny(**settings)
    model.configure_model()
    model.eval()
    return model


# ------------------------------------------------------------------------------------------------ the argument
@pytest.mark.parametrize("spec", SPECS)
def test_same_argument_on_every_model(spec) -> None:
    cls = spec.lightning_class
    parameters = inspect.signature(cls.__init__).parameters
    assert parameters["calibration"].default == "held_out"
    assert parameters["false_alarm_rate"].default == 0.01
    documented = re.search(r"\n( +calibration:.*?)\n +pre_processor:", cls.__doc__, re.DOTALL)
    assert documented is not None, f"{spec.name} does not document calibration / false_alarm_rate"
    first = re.search(r"\n( +calibration:.*?)\n +pre_processor:", MODELS[0].lightning_class.__doc__, re.DOTALL)
    assert documented.group(1) == first.group(1), "the same argument is documented alike on every model"
    assert "false_alarm_rate:" in documented.group(1)


def test_unknown_mode_or_rate_refused() -> None:
    spec = get_spec("WinCLIPPlus")
    with pytest.raises(ValueError, match="calibration must be one of"):
        spec.build_tiny(calibration="f1")
    for rate in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="false_alarm_rate must be strictly between 0 and 1"):
            spec.build_tiny(calibration="normal_only", false_alarm_rate=rate)


# ------------------------------------------------------------------------------------------------ the rate
@pytest.mark.parametrize("spec", SPECS)
def test_false_alarm_rate_on_other_good_images(spec, synthetic_dataset) -> None:
    """Calibrated on ~20 good images, scored on 30 others: the count of flags is where its distribution says."""
    root = _dataset(synthetic_dataset, n_train=20, n_test_good=30)
    run = measure_false_alarms(spec, root, seed=0, rate=RATE)
    assert not set(run.calibration_paths) & set(run.test_paths)
    assert run.n_calibration >= 19
    assert run.n_test == 30
    # by construction: exactly n - k calibration scores lie above the k-th smallest (no ties among float scores)
    assert run.calibration_above == run.n_calibration - quantile_rank(run.n_calibration, RATE)
    # the exact distribution of the count over calibration sets (beta-binomial), its 99.9 % interval
    low, high = central_interval(false_alarm_distribution(run.n_calibration, run.n_test, RATE), 0.999)
    assert low <= run.false_alarms <= high, (run.false_alarms, (low, high))


def test_false_alarm_distribution_matches_a_simulation() -> None:
    """The beta-binomial the check above uses is the distribution of the count (simulated with uniform scores)."""
    n, m, draws = 19, 30, 4000
    distribution = false_alarm_distribution(n, m, RATE)
    assert sum(distribution) == pytest.approx(1.0, abs=1e-9)
    mean = sum(count * p for count, p in enumerate(distribution))
    deviation = sum((count - mean) ** 2 * p for count, p in enumerate(distribution)) ** 0.5
    generator = torch.Generator().manual_seed(0)
    calibration, test = torch.rand(draws, n, generator=generator), torch.rand(draws, m, generator=generator)
    thresholds = calibration.kthvalue(quantile_rank(n, RATE), dim=1).values
    counts = (test > thresholds[:, None]).sum(dim=1).double()
    assert float(counts.mean()) == pytest.approx(mean, abs=5 * deviation / draws**0.5)
    assert mean == pytest.approx(m * RATE, abs=1e-9)  # (n + 1) * rate is whole: the expected rate is the requested one
    low, high = central_interval(distribution, 0.999)
    assert float(((counts < low) | (counts > high)).double().mean()) <= 0.001 + 5 * (0.001 / draws) ** 0.5
    assert high < m  # flagging every good image fails the check


# ------------------------------------------------------------------------------------------------ too few / shots
def test_too_few_normal_images_message(synthetic_dataset) -> None:
    datamodule = _target(_dataset(synthetic_dataset, n_train=5))
    model = _winclip(k_shot=1)
    with pytest.raises(ValueError, match="needs at least 10 normal images") as error:
        model.prepare_for_scoring(_trainer(datamodule), "test")
    message = str(error.value)
    assert "there are 4 held-out normal images" in message
    assert "--model.false_alarm_rate 0.25" in message
    assert "normal_dir" in message


def test_leave_one_out_over_the_shots(synthetic_dataset) -> None:
    """Only the k=3 shots exist: each is scored against a memory of the other two (a k=2 model agrees)."""
    datamodule = _target(_dataset(synthetic_dataset, n_train=3))
    rate = 0.34  # 3 images serve a rate of 1/3 or more: the threshold is the largest of the three scores
    model = _winclip(k_shot=3, false_alarm_rate=rate)
    model.prepare_for_scoring(_trainer(datamodule), "test")
    calibration = model.normal_calibration
    assert calibration.method == "leave_one_out"
    assert list(calibration.paths) == model.reference_paths
    assert len(model.reference_paths) == 3
    shots = model.reference_paths
    expected = []
    for index, shot in enumerate(shots):
        others = [path for position, path in enumerate(shots) if position != index]
        reference = _winclip(k_shot=2)
        reference.set_class(CLASS)
        transform = reference.pre_processor.transform
        with torch.no_grad():
            reference.model.set_references(next(read_images(others, transform)))
            expected.append(float(reference.model(next(read_images([shot], transform))).pred_score))
    assert calibration.image == pytest.approx(max(expected), rel=1e-5, abs=1e-6)
    with torch.no_grad():  # the full memory is back (the shot against itself scores lower than against the others)
        full = float(model.model(next(read_images([shots[0]], model.pre_processor.transform))).pred_score)
    assert full < expected[0]


def test_leaving_out_removes_one_shots_entries_from_every_memory_then_restores_them() -> None:
    module = torch.nn.Module()
    module.first, module.second = ReferenceMemory(4, keep_raw=True), ReferenceMemory(4)
    shots = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0))  # 3 shots, 2 entries each
    module.first.fill(shots)
    module.second.fill(shots[:, :1])
    saved = module.first.features.clone(), module.first.raw.clone(), module.second.features.clone()
    with leaving_out(module, 1, 3):
        torch.testing.assert_close(module.first.raw, shots[[0, 2]].reshape(-1, 4))
        assert len(module.first) == 4
        assert len(module.second) == 2
    for restored, original in zip(
        (module.first.features, module.first.raw, module.second.features), saved, strict=True
    ):
        assert torch.equal(restored, original)


def test_one_shot_and_nothing_else_is_an_error(synthetic_dataset) -> None:
    datamodule = _target(_dataset(synthetic_dataset, n_train=1))
    model = _winclip(k_shot=1)
    with pytest.raises(ValueError, match=r"leave-one-out needs k_shot >= 2"):
        model.prepare_for_scoring(_trainer(datamodule), "test")


# ------------------------------------------------------------------------------------------------ scored images
def test_thresholds_never_from_the_scored_images(synthetic_dataset) -> None:
    root = _dataset(synthetic_dataset, n_train=20, n_test_good=30)
    datamodule = _target(root)
    train, test = datamodule.train_data.samples, datamodule.test_data.samples

    def calibrate(test_samples):
        target = SimpleNamespace(train_data=datamodule.train_data, test_data=SimpleNamespace(samples=test_samples))
        target.category = CLASS
        model = _winclip(k_shot=1)
        model.prepare_for_scoring(_trainer(target), "test")
        return model, model.normal_calibration

    model, first = calibrate(test)
    train_paths = set(map(str, train["image_path"]))
    assert set(first.paths) == train_paths - set(model.reference_paths)
    assert not set(first.paths) & set(map(str, test["image_path"]))
    # other scored images: the same thresholds (they never enter the calibration)
    _, other = calibrate(test.iloc[:5])
    assert other.paths == first.paths
    assert other.image == pytest.approx(first.image, abs=1e-6)
    # train images that are also scored are left out of the calibration
    overlapping = train.iloc[:6]
    model, leaving = calibrate(overlapping)
    assert not set(leaving.paths) & set(map(str, overlapping["image_path"]))
    assert len(leaving.paths) == len(
        train_paths - set(map(str, overlapping["image_path"])) - set(model.reference_paths)
    )


# ------------------------------------------------------------------------------------------------ kept and reused
def test_stored_in_learned_state_and_checkpoint_and_reused(synthetic_dataset, tmp_path: Path) -> None:
    datamodule = _target(_dataset(synthetic_dataset, n_train=20, n_test_good=30))
    model = _winclip(k_shot=1)
    model.prepare_for_scoring(_trainer(datamodule, tmp_path), "test")
    calibration = model.normal_calibration
    scores = model.model(torch.cat(list(read_images(list(calibration.paths), model.pre_processor.transform))))
    post = model.post_processor
    # normalisation follows the normal images (WinCLIP+ normalises)
    assert float(post.image_min) == pytest.approx(float(scores.pred_score.min()), abs=1e-6)
    assert float(post.image_max) == pytest.approx(float(scores.pred_score.max()), abs=1e-6)
    assert get_thresholds(post)["image"] == pytest.approx(calibration.image, abs=1e-6)

    stored = LearnedState.load(tmp_path / LEARNED_STATE_FILE).thresholds
    assert stored["source"] == "normal_only"
    assert stored["false_alarm_rate"] == RATE
    assert stored["image"] == pytest.approx(calibration.image, abs=1e-6)
    assert stored["class_name"] == CLASS

    # a model scoring from the file alone reuses them where nothing can be calibrated (no datamodule)
    reused = _winclip(k_shot=1, learned_state=str(tmp_path / LEARNED_STATE_FILE))
    assert reused.normal_calibration == calibration
    reused.prepare_for_scoring(_trainer(None), "predict")
    assert get_thresholds(reused.post_processor)["image"] == pytest.approx(calibration.image, abs=1e-6)
    assert float(reused.post_processor.image_max) == pytest.approx(float(post.image_max), abs=1e-6)
    # ... for the rate they were set for only
    other_rate = _winclip(k_shot=1, false_alarm_rate=0.2, learned_state=str(tmp_path / LEARNED_STATE_FILE))
    with pytest.raises(ValueError, match="no normal-only thresholds were stored for this class and rate"):
        other_rate.prepare_for_scoring(_trainer(None), "predict")

    checkpoint: dict = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint[CALIBRATION_KEY]["image"] == pytest.approx(calibration.image, abs=1e-6)
    loaded = _winclip(k_shot=1)
    loaded.on_load_checkpoint(checkpoint)
    assert loaded.normal_calibration == calibration
    # nothing stored and nothing to calibrate on: a clear error, not anomalib's defaults
    with pytest.raises(ValueError, match="no normal-only thresholds were stored"):
        _winclip(k_shot=0, class_name=CLASS).prepare_for_scoring(_trainer(None), "predict")


def test_set_at_validation_and_kept_over_the_validation_splits_thresholds(synthetic_dataset) -> None:
    """The checkpoint written after validation holds the normal-only thresholds; too few images there: a warning."""
    datamodule = _target(_dataset(synthetic_dataset, n_train=20, n_test_good=30))
    model = _winclip(k_shot=1)
    model.prepare_for_scoring(_trainer(datamodule), "validate")
    calibration = model.normal_calibration
    assert calibration is not None
    set_thresholds(model.post_processor, 0.999)  # what anomalib's F1 on the validation split would set
    model.on_validation_epoch_end()
    assert get_thresholds(model.post_processor)["image"] == pytest.approx(calibration.image, abs=1e-6)

    few = _target(_dataset(synthetic_dataset, n_train=5))
    model = _winclip(k_shot=1)
    model.prepare_for_scoring(_trainer(few), "validate")  # no error at validation ...
    assert model.normal_calibration is None
    with pytest.raises(ValueError, match="needs at least 10 normal images"):  # ... but before testing
        model.prepare_for_scoring(_trainer(few), "test")


def test_raw_score_labels_use_the_raw_thresholds() -> None:
    post = RawScorePostProcessor()
    batch = InferenceBatch(pred_score=torch.tensor([0.6, 0.9]), anomaly_map=torch.tensor([[[0.6, 0.9]]] * 2))
    assert post(batch).pred_label.tolist() == [True, True]  # not calibrated: the probability 0.5
    set_thresholds(post, 0.8, 0.7)
    assert post(batch).pred_label.tolist() == [False, True]
    assert post(batch).pred_mask[0].flatten().tolist() == [False, True]
    assert post(batch).pred_score.tolist() == pytest.approx([0.6, 0.9])  # raw, not normalised
