# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""A bounded cache of frozen-encoder outputs, keyed by image path, with a disk spill.

Prompt learning on auxiliary data runs the *frozen* CLIP image encoder on the same images every epoch. The
:class:`FeatureCache` keeps its outputs (detached, on CPU) so that each image is encoded once:

* entries go to memory until ``max_bytes`` is reached, then to files in a spill folder (``torch.save``, read back
  with ``torch.load(weights_only=True)``), and when spilling is disabled or the disk is unavailable they are not
  stored and are **recomputed** at each use. Each fallback is announced once by a log warning naming the limit.
* nothing is evicted: a training epoch visits every image once, so evicting (LRU) a cache smaller than the data set
  would evict each entry just before its next use; keeping the first entries gives that many hits per epoch.
* ``compute`` is called at most once per :meth:`FeatureCache.get_or_compute` call, on the missing images only; the
  counters (``compute_calls``, ``computed_images``, ``hits``, ``misses``) let tests count encoder calls.

The cache trusts that a key always stands for the same input: random augmentations or a changed transform would
serve stale features. With ``verify_inputs=True`` (default) a cheap fingerprint of each input image (shape, sum,
sum of squares) is kept and a mismatch raises an error instead.

One cache per process (DDP ranks each hold their own; each spills into its own sub-folder); not thread-safe.

Example:
    >>> import torch
    >>> from anomalib_clipad.training.feature_cache import FeatureCache
    >>> cache = FeatureCache(max_bytes=2**20)
    >>> encode = lambda images: {"tokens": images.flatten(1)[:, :4] * 2}
    >>> out = cache.get_or_compute(["a.png", "b.png"], torch.ones(2, 3, 4, 4), encode)
    >>> out = cache.get_or_compute(["b.png", "a.png"], torch.ones(2, 3, 4, 4), encode)
    >>> cache.compute_calls, cache.hits, cache.misses
    (1, 2, 2)
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["FeatureCache", "default_max_bytes"]

logger = logging.getLogger(__name__)

GIB = 1 << 30
DEFAULT_MAX_BYTES_CAP = 16 * GIB
DEFAULT_MAX_BYTES_FRACTION = 0.25
FALLBACK_MAX_BYTES = 4 * GIB
DEFAULT_MIN_FREE_DISK_BYTES = GIB


def default_max_bytes() -> int:
    """Default memory budget: a quarter of the memory available now, at most 16 GiB (4 GiB if unknown).

    A quarter leaves room for the model, the dataloader workers (each a process with its own copy of what it touches)
    and the optimiser; the cap keeps one cache from taking a large shared machine. For scale: ViT-L/14 at 336 px,
    four layers of 577 tokens x 1024 float32 values, is 9.5 MB per image, so VisA's 2,162 test images take 20 GiB:
    what does not fit spills to disk.

    Returns:
        The budget in bytes.
    """
    available: int | None = None
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or unsupported platform: a fixed budget
        available = None
    if not available:
        return FALLBACK_MAX_BYTES
    return int(min(DEFAULT_MAX_BYTES_CAP, available * DEFAULT_MAX_BYTES_FRACTION))


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _entry_bytes(entry: Mapping[str, Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in entry.values())


class FeatureCache:
    """Cache of per-image frozen-encoder outputs, keyed by image path; memory first, then disk, then recompute.

    Args:
        max_bytes: memory budget of the stored tensors in bytes; ``None`` (default): :func:`default_max_bytes`
            (a quarter of the available memory, at most 16 GiB). ``0`` keeps nothing in memory.
        spill_dir: folder for the entries that do not fit in memory; the cache writes into its own new sub-folder
            there and removes it on :meth:`clear` and when the cache is garbage-collected. ``None`` (default): a new
            temporary folder.
        spill_to_disk: spill to disk at all; ``False``: entries that do not fit are recomputed. Defaults to ``True``.
        max_disk_bytes: budget of the spill files in bytes; ``None`` (default): none beyond ``min_free_disk_bytes``.
        min_free_disk_bytes: stop spilling when the spill folder's file system would have less free space than this.
            Defaults to 1 GiB.
        verify_inputs: keep a fingerprint of each cached input image and raise when a key comes back with a different
            image (random augmentations, another transform). Defaults to ``True``.

    Raises:
        ValueError: a negative budget.

    Attributes:
        hits: looked-up images found in the cache (memory or disk).
        disk_hits: the hits read from disk.
        misses: looked-up images not in the cache (computed).
        compute_calls: calls of ``compute``.
        computed_images: images passed to ``compute``.
    """

    def __init__(
        self,
        max_bytes: int | None = None,
        spill_dir: str | Path | None = None,
        *,
        spill_to_disk: bool = True,
        max_disk_bytes: int | None = None,
        min_free_disk_bytes: int = DEFAULT_MIN_FREE_DISK_BYTES,
        verify_inputs: bool = True,
    ) -> None:
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
        for name, value in (("max_bytes", self.max_bytes), ("max_disk_bytes", max_disk_bytes)):
            if value is not None and value < 0:
                msg = f"FeatureCache {name} must be >= 0, got {value}."
                raise ValueError(msg)
        self.spill_root = Path(spill_dir) if spill_dir is not None else None
        self.spill_to_disk = spill_to_disk
        self.max_disk_bytes = max_disk_bytes
        self.min_free_disk_bytes = min_free_disk_bytes
        self.verify_inputs = verify_inputs
        self._init_state()
        self.reset_stats()

    def _init_state(self) -> None:
        self._memory: dict[str, dict[str, Tensor]] = {}
        self._disk: dict[str, Path] = {}
        self._fingerprints: dict[str, tuple[tuple[int, ...], Tensor]] = {}
        self.memory_bytes = 0
        self.disk_bytes = 0
        self._spill_dir: Path | None = None
        self._finalizer: weakref.finalize | None = None
        self._disk_disabled_reason: str | None = None if self.spill_to_disk else "spilling to disk is disabled"
        self._warned_spill = False
        self._warned_recompute = False

    def reset_stats(self) -> None:
        """Set the counters (``hits``, ``disk_hits``, ``misses``, ``compute_calls``, ``computed_images``) to 0."""
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0
        self.compute_calls = 0
        self.computed_images = 0

    @property
    def stats(self) -> dict[str, int]:
        """Counters and sizes: hits, disk_hits, misses, compute_calls, computed_images, entries, bytes."""
        return {
            "hits": self.hits,
            "disk_hits": self.disk_hits,
            "misses": self.misses,
            "compute_calls": self.compute_calls,
            "computed_images": self.computed_images,
            "in_memory": len(self._memory),
            "on_disk": len(self._disk),
            "memory_bytes": self.memory_bytes,
            "disk_bytes": self.disk_bytes,
        }

    @property
    def spill_dir(self) -> Path | None:
        """The sub-folder the spilled entries are in (``None`` until the first spill)."""
        return self._spill_dir

    def __len__(self) -> int:
        """Number of stored entries (memory and disk)."""
        return len(self._memory) + len(self._disk)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` (an image path) is stored."""
        return str(key) in self._memory or str(key) in self._disk

    # ------------------------------------------------------------------------------------------------------------
    # Main entry point
    # ------------------------------------------------------------------------------------------------------------

    def get_or_compute(
        self,
        paths: Sequence[str | Path],
        images: Tensor,
        compute: Callable[[Tensor], Mapping[str, Tensor]],
    ) -> dict[str, Tensor]:
        """Return the encoder outputs of ``images``, computing (once, in one call) only those not cached.

        Args:
            paths: one key (image path) per image, in batch order. A key repeated in the batch is computed once.
            images: ``(B, ...)`` input images; ``compute`` receives the rows of the missing ones, on their device.
            compute: the frozen encoder: images ``(n, ...)`` to a dict of tensors with first dimension ``n``. It runs
                under ``torch.no_grad()``.

        Returns:
            The outputs, each tensor stacked in batch order ``(B, ...)`` on the device of ``images``.

        Raises:
            ValueError: ``len(paths)`` differs from the batch size, ``compute`` returns tensors of a wrong first
                dimension or other names than the cached entries, or (``verify_inputs``) a key comes with an image
                different from the cached one.
            TypeError: ``compute`` does not return a mapping of tensors.
        """
        keys = [str(path) for path in paths]
        if len(keys) != images.shape[0]:
            msg = f"FeatureCache: {len(keys)} paths for a batch of {images.shape[0]} images."
            raise ValueError(msg)
        if not keys:
            return {}
        fingerprints = self._fingerprint(images) if self.verify_inputs else None
        device = images.device

        per_image: list[dict[str, Tensor] | None] = [None] * len(keys)
        first_index: dict[str, int] = {}  # missing key -> first batch index
        for index, key in enumerate(keys):
            if key in first_index:
                continue
            entry = self._lookup(key)
            if entry is None:
                first_index[key] = index
                continue
            if fingerprints is not None:
                self._check_fingerprint(key, images.shape[1:], fingerprints[index])
            self.hits += 1
            per_image[index] = {name: t.to(device) for name, t in entry.items()}

        if first_index:
            self.misses += len(first_index)
            indices = list(first_index.values())
            subset = images if len(indices) == len(keys) else images[torch.tensor(indices, device=device)]
            with torch.no_grad():
                outputs = compute(subset)
            self.compute_calls += 1
            self.computed_images += len(indices)
            self._validate_outputs(outputs, len(indices))
            for row, (key, index) in enumerate(first_index.items()):
                per_image[index] = {name: t[row].detach() for name, t in outputs.items()}
                shape_fp = (tuple(images.shape[1:]), fingerprints[index]) if fingerprints is not None else None
                self._store(key, per_image[index], shape_fp)

        for index, key in enumerate(keys):  # later occurrences of a key computed in this call
            if per_image[index] is None:
                per_image[index] = per_image[first_index[key]]

        names = list(per_image[0])  # type: ignore[arg-type]
        for index, entry in enumerate(per_image):
            if entry is None or set(entry) != set(names):
                got = sorted(entry) if entry is not None else None
                msg = (
                    f"FeatureCache: outputs for {keys[index]!r} have the names {got}, others {sorted(names)}; compute "
                    "must always return the same names (clear() the cache after changing it)."
                )
                raise ValueError(msg)
        return {name: torch.stack([entry[name] for entry in per_image]) for name in names}  # type: ignore[index]

    def clear(self) -> None:
        """Drop every entry (memory and spill files, whose sub-folder is removed); the counters are kept."""
        self._memory.clear()
        self._disk.clear()
        self._fingerprints.clear()
        self.memory_bytes = 0
        self.disk_bytes = 0
        if self._finalizer is not None:
            self._finalizer()  # removes the spill sub-folder
        self._init_state()

    # ------------------------------------------------------------------------------------------------------------
    # Storage
    # ------------------------------------------------------------------------------------------------------------

    def _lookup(self, key: str) -> dict[str, Tensor] | None:
        entry = self._memory.get(key)
        if entry is not None:
            return entry
        path = self._disk.get(key)
        if path is None:
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as error:  # the file vanished or is damaged: compute again
            logger.warning("FeatureCache: cannot read the spilled entry %s (%s); recomputing it.", path, error)
            self._disk.pop(key, None)
            self._fingerprints.pop(key, None)
            return None
        self.disk_hits += 1
        return entry

    def _store(self, key: str, entry: dict[str, Tensor], fingerprint: tuple[tuple[int, ...], Tensor] | None) -> None:
        cpu_entry = {name: t.to("cpu", copy=True).contiguous() for name, t in entry.items()}
        nbytes = _entry_bytes(cpu_entry)
        if self.memory_bytes + nbytes <= self.max_bytes:
            self._memory[key] = cpu_entry
            self.memory_bytes += nbytes
        elif self._spill(key, cpu_entry, nbytes):
            pass
        else:
            self._warn_recompute()
            return
        if fingerprint is not None:
            self._fingerprints[key] = fingerprint

    def _spill(self, key: str, entry: dict[str, Tensor], nbytes: int) -> bool:
        """Write ``entry`` to the spill folder; ``False`` when disk is disabled, full or failing."""
        if self._disk_disabled_reason is not None:
            return False
        if self.max_disk_bytes is not None and self.disk_bytes + nbytes > self.max_disk_bytes:
            self._disk_disabled_reason = f"the disk budget of {_format_bytes(self.max_disk_bytes)} is reached"
            return False
        try:
            folder = self._ensure_spill_dir()
            free = shutil.disk_usage(folder).free
            if free - nbytes < self.min_free_disk_bytes:
                self._disk_disabled_reason = (
                    f"the spill folder {folder} would have less than {_format_bytes(self.min_free_disk_bytes)} free"
                )
                return False
            path = folder / f"{hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()}.pt"
            torch.save(entry, path)
        except OSError as error:
            self._disk_disabled_reason = f"the disk spill failed ({error})"
            return False
        if not self._warned_spill:
            self._warned_spill = True
            logger.warning(
                "FeatureCache: the memory limit of %s is reached (%d entries in memory); further features are "
                "written to %s.",
                _format_bytes(self.max_bytes),
                len(self._memory),
                folder,
            )
        self._disk[key] = path
        self.disk_bytes += nbytes
        return True

    def _ensure_spill_dir(self) -> Path:
        if self._spill_dir is None:
            if self.spill_root is not None:
                self.spill_root.mkdir(parents=True, exist_ok=True)
            self._spill_dir = Path(tempfile.mkdtemp(prefix="clipad_feature_cache_", dir=self.spill_root))
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._spill_dir), ignore_errors=True)
        return self._spill_dir

    def _warn_recompute(self) -> None:
        if not self._warned_recompute:
            self._warned_recompute = True
            logger.warning(
                "FeatureCache: the memory limit of %s is reached (%d entries in memory) and %s; features that do not "
                "fit are recomputed at every use.",
                _format_bytes(self.max_bytes),
                len(self._memory),
                self._disk_disabled_reason,
            )

    # ------------------------------------------------------------------------------------------------------------
    # Checks
    # ------------------------------------------------------------------------------------------------------------

    @staticmethod
    def _fingerprint(images: Tensor) -> Tensor:
        """``(B, 2)`` float64 on CPU: sum and sum of squares of each image."""
        flat = images.detach().flatten(1).double()
        return torch.stack([flat.sum(1), flat.square().sum(1)], dim=1).cpu()

    def _check_fingerprint(self, key: str, shape: torch.Size, fingerprint: Tensor) -> None:
        stored = self._fingerprints.get(key)
        if stored is None:
            return
        stored_shape, stored_fp = stored
        if tuple(shape) != stored_shape or not torch.allclose(fingerprint, stored_fp, rtol=1e-4, atol=1e-4):
            msg = (
                f"FeatureCache: the image for {key!r} differs from the one its features were cached for (shape "
                f"{tuple(shape)} vs {stored_shape}, or its pixel values). Path-keyed features need the same input "
                "each time: disable random augmentations, clear() the cache after changing the transform, or use keys "
                "that include the transform."
            )
            raise ValueError(msg)

    @staticmethod
    def _validate_outputs(outputs: Any, n: int) -> None:
        if not isinstance(outputs, Mapping) or not all(isinstance(t, Tensor) for t in outputs.values()):
            msg = f"FeatureCache: compute must return a dict of tensors, got {type(outputs).__name__}."
            raise TypeError(msg)
        wrong = {name: tuple(t.shape) for name, t in outputs.items() if t.ndim == 0 or t.shape[0] != n}
        if wrong:
            msg = f"FeatureCache: compute was given {n} images but returned tensors of shapes {wrong}."
            raise ValueError(msg)

    # ------------------------------------------------------------------------------------------------------------
    # Copy and pickle: a copy is an empty cache with the same settings (entries and spill files are not shared)
    # ------------------------------------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """Settings only: a pickled or deep-copied cache starts empty."""
        return {
            "max_bytes": self.max_bytes,
            "spill_root": self.spill_root,
            "spill_to_disk": self.spill_to_disk,
            "max_disk_bytes": self.max_disk_bytes,
            "min_free_disk_bytes": self.min_free_disk_bytes,
            "verify_inputs": self.verify_inputs,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore the settings of an empty cache."""
        self.__dict__.update(state)
        self._init_state()
        self.reset_stats()

    def __repr__(self) -> str:
        """Settings and sizes."""
        return (
            f"FeatureCache(max_bytes={_format_bytes(self.max_bytes)}, in_memory={len(self._memory)} "
            f"({_format_bytes(self.memory_bytes)}), on_disk={len(self._disk)} ({_format_bytes(self.disk_bytes)}), "
            f"spill_to_disk={self.spill_to_disk})"
        )
