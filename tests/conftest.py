"""Fixtures shared by the test files."""

from __future__ import annotations

import os
from pathlib import Path

import huggingface_hub.constants   # (the submodule itself: offline_cache patches it, and a test file may be the first to ask)
import pytest

# One torch (OpenMP) thread in the test process and in every process it starts (the kit's commands,
# notebook kernels, grader runs), read by torch when it is first imported, after this file. The tests'
# models are tiny: a second thread mostly waits for the first, and on a machine busy with other work
# it spins waiting for a core; measured on the 2-core machine under load, the README family numbers
# and llama2c parity tests took 27.6 s of CPU (121 s wall) on torch's default two threads and 9.0 s
# (35 s wall) on one. Results differ only in float summation order, inside every test's tolerance. A
# test that sets its own threads (`--threads`, torch.set_num_threads, the one_thread fixture) still can.
os.environ["OMP_NUM_THREADS"] = "1"
# The pytest runs the tests start (the autograder on a submission, `minillm grade`'s units, the mistake
# runners) load no third-party plugins from the environment: none grades anything, and hypothesis' and
# anyio's took ~1 s of the ~3.3 s of CPU that starting one grading run costs on this machine. The tests
# of the kit's own plugin (tests/test_pytest_plugin.py) turn it back on for their runs. pytest-xdist's
# worker processes start after this line too, which is why the README's command loads it by name (-p xdist).
os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"

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


@pytest.fixture(scope="session")
def gpt2_tokenizer_folder(tmp_path_factory) -> Path:
    """The real GPT-2 tokenizer as a loadable folder: ../shared/data's gzipped tokenizer.json
    decompressed next to its tokenizer_config.json."""
    import gzip
    import shutil

    source = need_shared_data() / "gpt2-tokenizer"
    folder = tmp_path_factory.mktemp("gpt2-tokenizer")
    (folder / "tokenizer.json").write_bytes(gzip.decompress((source / "tokenizer.json.gz").read_bytes()))
    shutil.copyfile(source / "tokenizer_config.json", folder / "tokenizer_config.json")
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for the rest of the module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    tiny models run fastest on one thread, far slower when a second thread waits for a core another
    process holds, and bit-for-bit comparisons (exact resume) need one summation order."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
