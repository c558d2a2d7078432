# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The speed benchmarks' reference passes compute what open_clip computes (so the ratios divide by real work)."""

from __future__ import annotations

import time

import pytest
import torch

from anomalib_clipad.benchmarks.references import plain_image_forward, plain_text_forward_backward
from anomalib_clipad.benchmarks.timing import clock_for, interleaved_times, median_times
from anomalib_clipad.clip import TINY_BACKBONE, ClipTextTower


def test_plain_image_forward_is_encode_image(tiny_clip16: torch.nn.Module) -> None:
    images = torch.randn(2, 3, 240, 240)
    with torch.no_grad():
        expected = tiny_clip16.encode_image(images)
    torch.testing.assert_close(plain_image_forward(tiny_clip16, images), expected)


def test_plain_text_pass_has_the_gradient_of_our_truncated_text_pass(tiny_clip16: torch.nn.Module) -> None:
    text = ClipTextTower(tiny_clip16, TINY_BACKBONE)
    tokens = text.tokenize(["X X X X a photo of a flawless bottle.", "X X X X a damaged bottle."])
    assert text.used_length(tokens) < tokens.shape[1]  # ours stops early, the plain pass runs all positions
    embeddings = text.embed_tokens(tokens).detach().requires_grad_(True)
    text(tokens, token_embeddings=embeddings).sum().backward()

    plain = plain_text_forward_backward(tiny_clip16, tokens)
    assert plain.shape == embeddings.shape
    # float32 summation order differs between the 77-position and the truncated pass: compare relative to the scale
    scale = embeddings.grad.abs().max()
    assert (plain - embeddings.grad).abs().max() / scale < 1e-5  # measured 8e-7
    assert plain.abs().sum() > 0
    assert all(parameter.grad is None for parameter in tiny_clip16.parameters())  # frozen weights get no gradient


def test_plain_text_pass_needs_an_inlined_text_tower() -> None:
    with pytest.raises(TypeError, match="text tower"):
        plain_text_forward_backward(torch.nn.Linear(2, 2), torch.zeros(1, 77, dtype=torch.long))


def test_interleaved_times_calls_each_function_once_per_round() -> None:
    calls: list[str] = []
    timings = interleaved_times(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, torch.device("cpu"), warmup=1
    )
    assert calls == ["a", "b"] * 4
    assert {name: len(values) for name, values in timings.items()} == {"a": 3, "b": 3}
    assert clock_for(torch.device("cpu")) is time.process_time
    medians = median_times({"sleep": lambda: time.sleep(0.01)}, 1, torch.device("cpu"), clock=time.perf_counter)
    assert medians["sleep"] >= 0.009
