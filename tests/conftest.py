"""Shared test settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


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
