"""Fixtures shared by the test files."""

from __future__ import annotations

import os
from pathlib import Path

import huggingface_hub
import pytest

# Real published artifacts (tokenizers, a tiny checkpoint, text) live next to the repository.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def need_shared_data() -> Path:
    """Return ``../shared/data``; skip the calling test when it is absent, but fail on CI."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    reason = f"real test artifacts not found at {SHARED_DATA} (see its README.md)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must provide them")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return need_shared_data()


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, with huggingface_hub in offline mode pointed at it.

    huggingface_hub copies HF_HUB_CACHE / HF_HUB_OFFLINE into huggingface_hub.constants at
    import time and reads the constants when downloading, so both are set.
    """
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache
