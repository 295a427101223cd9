"""The README's test command set up on a fresh machine: a new ``python3 -m venv`` (pip, maybe an old
setuptools, no wheel, nothing else), the README's own install commands run verbatim in a copy of
the clone, then, in that environment, every test module collected (all that the tests import is
installed) and tests/test_install.py run (it builds the kit with the environment's build tools).
Nothing here relies on what the machine running the suite happens to have installed.

It takes a minute or two (pip downloads the test extra), so it is not part of the main suite:
``.ci/run`` runs it after the README's command, as ``MINILLM_FRESH_VENV=1 python -m pytest
tests/test_fresh_venv.py``; elsewhere it skips with that line. Where no package index answers it
skips with the reason, except under CI=true (CI reaches PyPI), where it fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ON_CI = os.environ.get("CI") == "true"
RUN_ALONE = "MINILLM_FRESH_VENV=1 python -m pytest tests/test_fresh_venv.py"


def readme_test_command() -> str:
    """The one-line command under README.md's "### Run the tests" (the line .ci/run checks)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Run the tests"):]
    block = re.search(r"```bash\n(.*?)\n```", section, flags=re.S)
    assert block, "README.md's 'Run the tests' section lost its ```bash block"
    return block.group(1).strip()


def _skip_or_fail(reason: str) -> None:
    if ON_CI:
        pytest.fail(f"{reason}; under CI=true the fresh-venv check must run")
    pytest.skip(reason)


def _index_url() -> str:
    """The package index pip installs from: PIP_INDEX_URL, else pip's configured index-url, else PyPI."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"].split()[0]
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60)
    for line in listed.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".index-url"):
            return value.strip().strip("'\"").split()[0]
    return "https://pypi.org/simple"


def _index_unreachable() -> str | None:
    """Why the package index does not answer (None when it does): one page of it, 10 s at most, so an
    offline machine answers in seconds. Not `pip download`: local find-links and file:// mirrors in pip's
    configuration can serve a small package without any network."""
    import ssl
    import urllib.request

    url = _index_url().rstrip("/") + "/pip/"
    cafile = os.environ.get("PIP_CERT") or None
    try:
        with urllib.request.urlopen(url, timeout=10, context=ssl.create_default_context(cafile=cafile)) as page:
            page.read(1)
    except (OSError, ValueError) as err:      # URLError, timeouts, refused connections are OSErrors
        return f"the package index does not answer ({url}: {err})"
    return None


def _copy_clone(dest: Path) -> Path:
    """What a fresh clone holds: git's tracked files (or, without git, the tree less caches and builds)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, timeout=60) if shutil.which("git") else None
    if listed is not None and listed.returncode == 0 and listed.stdout:
        for name in listed.stdout.decode().split("\0"):
            if name and (REPO / name).is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, dest / name)
    else:
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", ".venv"))
    return dest


def test_readme_test_command_installs_in_a_fresh_venv(tmp_path):
    if os.environ.get("MINILLM_FRESH_VENV") != "1":
        if ON_CI:
            pytest.skip(f"runs on its own after the suite (.ci/run: {RUN_ALONE})")
        pytest.skip(f"a minute or two of pip: run it on its own with {RUN_ALONE}")
    why = _index_unreachable()
    if why:
        _skip_or_fail(why)

    command = readme_test_command()
    install, sep, suite = command.partition(" && python -m pytest ")
    assert sep and install.startswith("pip install torch==") and suite.startswith("tests"), (
        f"README's test command is no longer 'pip install torch==... && ... && python -m pytest tests ...': {command}")

    clone = _copy_clone(tmp_path / "minillm")
    venv = tmp_path / "venv"
    python3 = shutil.which("python3") or sys.executable      # what a new user types: python3 -m venv
    subprocess.run([python3, "-m", "venv", str(venv)], check=True, capture_output=True, text=True, timeout=300)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    # As after `source venv/bin/activate`: the venv's pip and python first; nothing of ours on sys.path.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTEST_ADDOPTS", "MINILLM_FRESH_VENV")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv))

    def run(cmd: list[str] | str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=timeout,
                              shell=isinstance(cmd, str), executable="/bin/bash" if isinstance(cmd, str) else None)

    proc = run(install, timeout=1500)                        # the README's install commands, verbatim
    assert proc.returncode == 0, f"`{install}` failed in a fresh venv:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    python = str(bin_dir / "python")
    where = run([python, "-c", "import minillm, torch; print(minillm.__file__); print(torch.__version__)"], timeout=300)
    assert where.returncode == 0, where.stderr[-3000:]
    origin, torch_version = where.stdout.split()
    assert Path(origin) == clone / "minillm" / "__init__.py"           # the editable install of this clone
    assert torch_version.split("+")[0] == install.split()[2].removeprefix("torch=="), torch_version

    # Every test module imports in that environment: the test extra names all the tests need.
    collect = run([python, "-m", "pytest", *suite.split(), "--collect-only", "-q", "-p", "no:cacheprovider"], timeout=600)
    errors = "\n".join(line for line in collect.stdout.splitlines() if line.startswith(("ERROR", "E ")))
    assert collect.returncode == 0, f"collecting the suite failed in the fresh venv:\n{errors[-4000:]}\n{collect.stderr[-2000:]}"
    assert re.search(r"^\d+ tests collected", collect.stdout, flags=re.M), collect.stdout[-2000:]
    # The test that builds the kit with the environment's own setuptools (offline, no build isolation).
    built = run([python, "-m", "pytest", "tests/test_install.py", "-q", "-p", "no:cacheprovider"], timeout=600)
    assert built.returncode == 0, f"tests/test_install.py failed in the fresh venv:\n{built.stdout[-4000:]}\n{built.stderr[-2000:]}"
