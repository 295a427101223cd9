"""Fixtures shared by the test files."""

from __future__ import annotations

import os
from pathlib import Path

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
