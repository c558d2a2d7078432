# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""FeatureCache: hit/miss counting, memory limit -> disk spill -> same values, recompute fallback, clear, checks."""

import copy
import logging

import pytest
import torch

from anomalib_clipad.training.feature_cache import FeatureCache, default_max_bytes

LOGGER = "anomalib_clipad.training.feature_cache"


class CountingEncoder:
    """A deterministic 'frozen encoder' that records the images of each call.

    Its features are element-wise functions of each image's pixels (no reduction), so an image's features are the same
    bits whatever batch it is encoded in: a cache entry must then equal a fresh encoding exactly (see _assert_same).
    """

    def __init__(self) -> None:
        self.calls: list[torch.Tensor] = []

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls.append(images.clone())
        flat = images.flatten(1)
        return {"pooled": flat[:, :1] * 3.0 + flat[:, 1:2], "tokens": torch.stack([flat[:, :6], flat[:, 6:12]], 1)}


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))


def _entry_bytes() -> int:
    return (1 + 2 * 6) * 4  # pooled (1,) + tokens (2, 6), float32


def _assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Cached features (stored copies, from memory or disk) against a fresh encoding: exact, see CountingEncoder."""
    assert set(actual) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=0, atol=0)


def test_hits_and_misses_compute_only_the_missing_images_in_one_call():
    images = _images(5)
    paths = [f"img{i}.png" for i in range(5)]
    encoder = CountingEncoder()
    cache = FeatureCache(max_bytes=1 << 20)

    out = cache.get_or_compute(paths[:3], images[:3], encoder)
    _assert_same(out, CountingEncoder()(images[:3]))
    assert (cache.compute_calls, cache.computed_images, cache.hits, cache.misses) == (1, 3, 0, 3)

    # two cached, two new, in a shuffled order: one call on the two new images, results in batch order
    order = [4, 1, 3, 0]
    out = cache.get_or_compute([paths[i] for i in order], images[order], encoder)
    _assert_same(out, CountingEncoder()(images[order]))
    assert (cache.compute_calls, cache.computed_images, cache.hits, cache.misses) == (2, 5, 2, 5)
    torch.testing.assert_close(encoder.calls[-1], images[[4, 3]])

    # everything cached: no call
    out = cache.get_or_compute(paths[::-1], images.flip(0), encoder)
    _assert_same(out, CountingEncoder()(images.flip(0)))
    assert (cache.compute_calls, cache.hits) == (2, 7)
    assert len(cache) == 5
    assert "img0.png" in cache
    assert cache.stats["in_memory"] == 5
    assert cache.memory_bytes == 5 * _entry_bytes()


def test_repeated_key_in_a_batch_is_computed_once():
    images = _images(1).repeat(3, 1, 1, 1)
    encoder = CountingEncoder()
    cache = FeatureCache(max_bytes=1 << 20)
    out = cache.get_or_compute(["a", "a", "a"], images, encoder)
    assert cache.computed_images == 1
    assert out["tokens"].shape == (3, 2, 6)
    torch.testing.assert_close(out["pooled"][0], out["pooled"][2])


def test_entries_are_detached_cpu_copies_that_do_not_hold_the_batch():
    images = _images(4)
    cache = FeatureCache(max_bytes=1 << 20)

    def compute(x: torch.Tensor) -> dict[str, torch.Tensor]:
        assert not torch.is_grad_enabled()  # runs under no_grad
        weight = torch.ones(1, requires_grad=True)
        return {"f": x.flatten(1) * weight}

    out = cache.get_or_compute(list("abcd"), images, compute)
    assert not out["f"].requires_grad
    assert out["f"].device == images.device
    stored = cache._memory["b"]["f"]
    assert stored.device.type == "cpu"
    assert not stored.requires_grad
    assert stored.untyped_storage().nbytes() == stored.numel() * stored.element_size()  # not a view of the batch


def test_memory_limit_spills_to_disk_with_one_warning_and_same_values(tmp_path, caplog):
    images = _images(6)
    paths = [f"img{i}.png" for i in range(6)]
    encoder = CountingEncoder()
    cache = FeatureCache(max_bytes=2 * _entry_bytes(), spill_dir=tmp_path / "spill", min_free_disk_bytes=0)
    expected = CountingEncoder()(images)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        _assert_same(cache.get_or_compute(paths[:3], images[:3], encoder), {k: v[:3] for k, v in expected.items()})
        _assert_same(cache.get_or_compute(paths[3:], images[3:], encoder), {k: v[3:] for k, v in expected.items()})
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1, warnings
    assert "memory limit of 104 B" in warnings[0]
    assert str(tmp_path / "spill") in warnings[0]

    assert cache.stats["in_memory"] == 2
    assert cache.stats["on_disk"] == 4
    assert cache.spill_dir is not None
    assert cache.spill_dir.parent == tmp_path / "spill"
    assert len(list(cache.spill_dir.glob("*.pt"))) == 4

    calls = cache.compute_calls
    _assert_same(cache.get_or_compute(paths, images, encoder), expected)  # two from memory, four from disk
    assert cache.compute_calls == calls
    assert cache.disk_hits == 4

    # a spilled file that vanished is recomputed, not an error
    next(cache.spill_dir.glob("*.pt")).unlink()
    _assert_same(cache.get_or_compute(paths, images, encoder), expected)
    assert cache.compute_calls == calls + 1
    assert cache.computed_images == 7


def test_without_disk_entries_that_do_not_fit_are_recomputed(caplog):
    images = _images(4)
    paths = list("abcd")
    encoder = CountingEncoder()
    cache = FeatureCache(max_bytes=_entry_bytes(), spill_to_disk=False)
    expected = CountingEncoder()(images)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        _assert_same(cache.get_or_compute(paths, images, encoder), expected)
        _assert_same(cache.get_or_compute(paths, images, encoder), expected)
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1, warnings
    assert "memory limit of 52 B" in warnings[0]
    assert "spilling to disk is disabled" in warnings[0]
    assert "recomputed" in warnings[0]
    assert len(cache) == 1
    assert cache.computed_images == 4 + 3  # only "a" was kept
    torch.testing.assert_close(encoder.calls[-1], images[1:])
    assert cache.spill_dir is None


def test_unusable_spill_dir_falls_back_to_recompute(tmp_path, caplog):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    cache = FeatureCache(max_bytes=0, spill_dir=not_a_dir)
    encoder = CountingEncoder()
    images = _images(2)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        _assert_same(cache.get_or_compute(["a", "b"], images, encoder), CountingEncoder()(images))
        cache.get_or_compute(["a", "b"], images, encoder)
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1
    assert "disk spill failed" in warnings[0]
    assert cache.compute_calls == 2
    assert len(cache) == 0


def test_disk_budget_limits_the_spill(tmp_path, caplog):
    cache = FeatureCache(max_bytes=0, spill_dir=tmp_path, max_disk_bytes=2 * _entry_bytes(), min_free_disk_bytes=0)
    images = _images(3)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cache.get_or_compute(list("abc"), images, CountingEncoder())
    assert cache.stats["on_disk"] == 2
    messages = " ".join(r.getMessage() for r in caplog.records if r.name == LOGGER)
    assert "disk budget of 104 B" in messages


def test_clear_drops_entries_and_spill_files(tmp_path):
    images = _images(3)
    encoder = CountingEncoder()
    cache = FeatureCache(max_bytes=_entry_bytes(), spill_dir=tmp_path, min_free_disk_bytes=0)
    cache.get_or_compute(list("abc"), images, encoder)
    spill_dir = cache.spill_dir
    assert spill_dir is not None
    assert spill_dir.is_dir()
    assert len(cache) == 3

    cache.clear()
    assert len(cache) == 0
    assert cache.memory_bytes == cache.disk_bytes == 0
    assert not spill_dir.exists()
    assert tmp_path.is_dir()  # the user's folder stays
    assert cache.compute_calls == 1  # counters are kept ...
    cache.get_or_compute(list("abc"), images, encoder)
    assert cache.compute_calls == 2  # ... and everything is computed again
    assert cache.computed_images == 6
    cache.reset_stats()
    assert cache.stats["compute_calls"] == 0


def test_default_temporary_spill_dir_is_removed_with_the_cache():
    cache = FeatureCache(max_bytes=0, min_free_disk_bytes=0)
    cache.get_or_compute(["a"], _images(1), CountingEncoder())
    spill_dir = cache.spill_dir
    assert spill_dir is not None
    assert spill_dir.is_dir()
    del cache
    assert not spill_dir.exists()


def test_a_changed_image_for_a_cached_key_is_refused():
    images = _images(2)
    cache = FeatureCache(max_bytes=1 << 20)
    cache.get_or_compute(["a", "b"], images, CountingEncoder())
    cache.get_or_compute(["b", "a"], images.flip(0), CountingEncoder())  # same images: fine
    with pytest.raises(ValueError, match="differs from the one its features were cached for"):
        cache.get_or_compute(["a"], images[1:], CountingEncoder())
    unchecked = FeatureCache(max_bytes=1 << 20, verify_inputs=False)
    unchecked.get_or_compute(["a"], images[:1], CountingEncoder())
    stale = unchecked.get_or_compute(["a"], images[1:], CountingEncoder())
    _assert_same(stale, CountingEncoder()(images[:1]))


def test_bad_arguments_and_outputs():
    cache = FeatureCache(max_bytes=1 << 20)
    images = _images(2)
    with pytest.raises(ValueError, match="2 paths for a batch of 1"):
        cache.get_or_compute(["a", "b"], images[:1], CountingEncoder())
    with pytest.raises(TypeError, match="dict of tensors"):
        cache.get_or_compute(["a", "b"], images, lambda x: x)
    with pytest.raises(ValueError, match="given 2 images"):
        cache.get_or_compute(["a", "b"], images, lambda x: {"f": x[:1]})
    cache.get_or_compute(["a"], images[:1], lambda x: {"f": x})
    with pytest.raises(ValueError, match="same names"):
        cache.get_or_compute(["a", "b"], images, lambda x: {"g": x})
    with pytest.raises(ValueError, match="max_bytes must be >= 0"):
        FeatureCache(max_bytes=-1)
    assert cache.get_or_compute([], images[:0], CountingEncoder()) == {}


def test_copy_is_an_empty_cache_with_the_same_settings():
    cache = FeatureCache(max_bytes=1234, spill_to_disk=False)
    cache.get_or_compute(["a"], _images(1), CountingEncoder())
    clone = copy.deepcopy(cache)
    assert len(clone) == 0
    assert clone.max_bytes == 1234
    assert not clone.spill_to_disk
    assert clone.compute_calls == 0
    assert len(cache) == 1
    assert "FeatureCache(" in repr(clone)


def test_default_memory_budget():
    budget = default_max_bytes()
    assert 0 < budget <= 16 * (1 << 30)
    assert FeatureCache().max_bytes > 0
