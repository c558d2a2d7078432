# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Where CLIP weights come from, as a new user meets it: offline tags fail fast with one complete message, and a
randomly initialised CLIP is the same CLIP in every run."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_runner import run_command

from anomalib_clipad.clip import TINY_BACKBONE, PretrainedWeightsError, load_clip
from anomalib_clipad.clip.loading import PRETRAINED_ARGUMENT

# No HF_HUB_OFFLINE, and nothing listens on the discard port of this machine: "no network", refused at once.
ONLINE_WITHOUT_NETWORK = {"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"}
BACKBONE, TAG = "ViT-B-16-plus-240", "laion400m_e31"  # a hub tag that is never in this machine's cache


def _assert_complete_offline_message(message: str, argument: str) -> None:
    assert f"{TAG!r}" in message
    assert f"{BACKBONE!r}" in message
    assert f"`{argument} /path/to/{BACKBONE}.pt`" in message
    assert " ." not in message  # nothing cut out of a sentence ("Please . This needs ...")
    assert message.rstrip().endswith(".")


# --------------------------------------------------------------------------------------------------- offline tags
def test_offline_tag_is_one_complete_message_without_hub_noise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    start = time.perf_counter()
    with caplog.at_level(logging.INFO), pytest.raises(PretrainedWeightsError) as raised:
        load_clip(BACKBONE, TAG)
    assert time.perf_counter() - start < 10
    message = str(raised.value)
    _assert_complete_offline_message(message, PRETRAINED_ARGUMENT)
    assert "HF_HUB_OFFLINE" in message
    assert "--model.pretrained checkpoint" in message  # the way to test a trained model offline
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "Failed" in r.getMessage()]
    output = "".join(capfd.readouterr())
    assert "Retrying" not in output
    assert "Failed to download" not in output


def test_the_demo_names_its_own_flag() -> None:
    error = PretrainedWeightsError("Could not obtain X.", advice="Pass `{argument} /path/to/X.pt`.")
    assert str(error) == "Could not obtain X. Pass `--model.pretrained /path/to/X.pt`."
    assert (
        error.message("--pretrained", mention_checkpoint=False)
        == "Could not obtain X. Pass `--pretrained /path/to/X.pt`."
    )


def test_unreachable_hub_fails_fast_without_retry_lines(tmp_path: Path) -> None:
    """No HF_HUB_OFFLINE: the hub is asked once (here a closed local port stands for "no network"), no retries."""
    script = (
        "import logging; logging.basicConfig()\n"
        "from anomalib_clipad.clip import PretrainedWeightsError, load_clip\n"
        "try:\n"
        f"    load_clip({BACKBONE!r}, {TAG!r})\n"
        "except PretrainedWeightsError as error:\n"
        "    print('ERROR:', error)\n"
    )
    start = time.perf_counter()
    output = run_command(
        [sys.executable, "-c", script], tmp_path, env=ONLINE_WITHOUT_NETWORK | {"HF_HOME": str(tmp_path)}
    )
    elapsed = time.perf_counter() - start
    errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, output
    _assert_complete_offline_message(errors[0], PRETRAINED_ARGUMENT)
    assert "cannot be reached" in errors[0]
    assert "Retrying" not in output
    assert "huggingface_hub" not in output
    assert elapsed < 40, f"{elapsed:.0f} s\n{output}"


# --------------------------------------------------------------------------------------------------- random init
def test_random_init_is_the_same_clip_in_every_build_and_keeps_the_callers_rng() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = load_clip(TINY_BACKBONE, None).state_dict()
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is not touched
    torch.manual_seed(7)
    second = load_clip(TINY_BACKBONE, None).state_dict()
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key
    other = load_clip(TINY_BACKBONE, None, seed=1).state_dict()
    assert not torch.equal(other["visual.conv1.weight"], first["visual.conv1.weight"])
