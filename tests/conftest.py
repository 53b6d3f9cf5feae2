"""Shared test settings: fixtures, and the hypothesis profiles.

Helper functions (waiting on a condition, reading server messages, canned events) are in
tests/helpers.py, imported as `from tests.helpers import ...`.

Hypothesis: the profile is chosen by the HYPOTHESIS_PROFILE environment variable, "ci" when unset.

- "ci": derandomized (the examples are the same on every run and every machine, so a failure
  replays by running the test again) and no example database; a failure prints a
  `@reproduce_failure` blob.
- "explore": random examples, saved to the example database (.hypothesis/) so that a failure
  found once is tried first next time; a failure prints its blob as well.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import settings

# The fuzzing tests (test_hostile_clients.py) drive a live server example by example: the time an
# example takes is network round trips and a busy machine's scheduling, so no deadline. No health
# check is suppressed: none fires, in either profile, on an idle machine or one kept busy.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, deadline=None)
settings.register_profile("explore", derandomize=False, print_blob=True, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture()
def one_torch_thread() -> Iterator[None]:
    """Small models run their many tiny ops fastest on one intra-op thread (and a busy CPU hurts more
    with several)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `EMOSTREAM_CACHE` for the tests that load the live models: the bundled checkpoint's step
    and text encoder are exported to ONNX once per test run, not once per test module."""
    return tmp_path_factory.mktemp("engine-cache")


@pytest.fixture(scope="module")
def shared(engine_cache: Path) -> Any:
    """The live models for the default `PipelineConfig`, loaded once per test module (a module whose
    dialogues need another config defines its own `shared`)."""
    from emostream.realtime.config import PipelineConfig
    from emostream.realtime.runtime import load_shared_models

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOSTREAM_CACHE", str(engine_cache))
        return load_shared_models(PipelineConfig())
