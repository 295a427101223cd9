"""Writing a command's outputs without destroying a user's files.

Three rules the ``minillm`` commands follow:

* check where the outputs go before the work starts (:func:`check_output_folder`,
  :func:`check_output_file`), so that an hour of scoring or a class's grading is not lost
  to an ``--out`` that is a file or cannot be written;
* never replace existing results unless the user says so (:func:`refuse_to_overwrite`);
* build a folder completely in a temporary place next to it, and move it into place only
  when it is whole (:func:`build_then_move`), so that a run that fails half-way leaves the
  old folder (or none) rather than a corrupt one; :func:`build_entries_then_move` does the same
  for several entries of a folder that holds more;
* one run at a time into an output (:func:`hold_output`): a second run started into the same
  ``--out`` while the first is writing is refused, rather than replacing the first one's
  files or mixing its own with them.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from pathlib import Path

from minillm.errors import InputError

try:
    import fcntl
except ImportError:          # Windows
    fcntl = None
    import msvcrt


def _writable_parent(path: Path, flag: str) -> None:
    """The nearest existing folder above ``path`` must be a folder this process can write into."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{flag} {path}: {parent} is a file, not a folder. Choose another {flag}.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: cannot write into {parent} (permission denied). Choose another {flag}.")


def check_output_folder(path: Path, flag: str = "--out") -> None:
    """Raise ValueError, naming ``flag``, unless ``path`` is (or can be created as) a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path} is a file, but a folder is needed for the results. Choose another {flag}.")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"{flag} {path}: cannot write into this folder (permission denied). Choose another {flag}.")
    else:
        _writable_parent(path, flag)


def check_output_file(path: Path, flag: str = "--out") -> None:
    """Raise ValueError, naming ``flag``, unless ``path`` can be written as a file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path} is a folder, but a file name is needed, e.g. {path / 'grades.csv'}.")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{flag} {path}: the file cannot be written (permission denied). Choose another {flag}.")
    _writable_parent(path, flag)


def refuse_to_overwrite(paths: Path | Sequence[Path], what: str, flag: str = "--overwrite",
                        out: str = "--out") -> None:
    """Raise ValueError if one of ``paths`` exists (a file, or a folder that is not empty): replacing
    it needs ``flag``. ``what`` says what they hold; ``out`` names the argument that chose them."""
    paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    taken = [p for p in paths if p.is_file() or (p.is_dir() and any(p.iterdir()))]
    if taken:
        it = "it" if len(taken) == 1 else "them"
        raise InputError(f"{', '.join(map(str, taken))} already hold{'s' if len(taken) == 1 else ''} {what}; "
                         f"refusing to replace {it}. Choose another {out}, or pass {flag} to replace {it}.")


_HELD: set[Path] = set()   # the outputs this process holds (an inner hold_output block of one is a no-op)


def lock_file(target: Path) -> Path:
    """The lock file of an output: beside it (a folder is replaced whole when a run saves, so not inside it)."""
    return target.parent / f".{target.name}.lock"


@contextmanager
def hold_output(target: Path, flag: str = "--out") -> Iterator[None]:
    """Hold ``target`` (a folder or file to be written) for this process for the block, or raise ValueError
    at once, naming ``flag`` and the process that holds it, if another process does.

    The hold is an operating-system lock (``flock``; ``msvcrt.locking`` on Windows) on a lock file beside
    ``target``, so it ends when the holder ends, even if it is killed. Nested blocks in one process share
    the first hold (a run that holds its ``--out`` saves checkpoints into it through :func:`build_then_move`).
    """
    key = Path(os.path.abspath(target))
    if key in _HELD:
        yield
        return
    _writable_parent(key, flag)       # (a file where a folder should be is said as the other checks say it)
    created = [p for p in [key.parent, *key.parent.parents] if not p.exists()]   # removed again, if left empty
    key.parent.mkdir(parents=True, exist_ok=True)
    path = lock_file(key)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            try:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            except OSError:      # Windows: the holder's locked bytes cannot be read
                holder = "?"
            os.close(fd)
            raise InputError(f"{flag} {target}: another minillm run (process {holder}) is writing there now (it holds "
                             f"{path}); wait for it to finish, or choose another {flag}.")
        try:     # the holder before us may have removed the file between our open and our lock: lock the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        _HELD.add(key)
        yield
    finally:
        _HELD.discard(key)
        try:
            os.unlink(path)      # before unlocking, so that no one locks a file that is about to go
        except OSError:
            pass
        os.close(fd)             # closing releases the lock
        for folder in created:   # deepest first; a folder the run wrote into stays
            try:
                folder.rmdir()
            except OSError:
                break


def holds_out(function):
    """Decorator: the function's ``out`` argument (a folder it writes) is held (:func:`hold_output`) while it runs;
    an error names the argument, ``out`` (the command line holds its ``--out`` first, and says that)."""
    signature = inspect.signature(function)

    @wraps(function)
    def held(*args, **kwargs):
        with hold_output(Path(signature.bind(*args, **kwargs).arguments["out"]), flag="out"):
            return function(*args, **kwargs)
    return held


def _try_lock(fd: int) -> bool:
    """Lock the open file ``fd`` for this process without waiting; False if another process holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False


@contextmanager
def build_then_move(target: Path, carry_over: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; when the block ends without an error,
    move it to ``target`` (replacing a ``target`` folder that was there).

    ``carry_over``: the block writes only some of the folder's files (a checkpoint saved into a
    run's folder, which also holds its loss plot or generation_config.json): every entry of the
    old ``target`` that the block did not write is copied into the new folder before the move.

    If the block raises, ``target`` is left as it was and the temporary folder is removed.
    The temporary folder sits in ``target``'s own parent so that the final move is a rename on
    one file system, never a copy. ``target`` is held (:func:`hold_output`) for the whole block.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with hold_output(target):
        partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            yield partial
            if carry_over and target.is_dir():
                for entry in target.iterdir():
                    if not (partial / entry.name).exists():
                        copy = shutil.copytree if entry.is_dir() else shutil.copy2
                        copy(entry, partial / entry.name)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        _replace(target, partial)


@contextmanager
def build_entries_then_move(folder: Path, names: Sequence[str]) -> Iterator[Path]:
    """Yield an empty temporary folder inside ``folder``; when the block ends without an error,
    move each of ``names`` from it into ``folder``, replacing its namesake there. ``folder``'s
    other entries stay untouched (a family of models written into a folder that holds more).

    If the block raises, or leaves one of ``names`` unwritten, ``folder`` is left as it was.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder))
    try:
        yield partial
        missing = [name for name in names if not (partial / name).exists()]
        if missing:
            raise RuntimeError(f"the run wrote no {', '.join(missing)}; nothing in {folder} was replaced.")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    for name in names:
        _replace(folder / name, partial / name)
    shutil.rmtree(partial, ignore_errors=True)


def _replace(target: Path, new: Path) -> None:
    """Rename ``new`` to ``target``; an old ``target`` is first moved aside, then deleted."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
