"""Where a student's code runs while it is graded: a bubblewrap sandbox, or a process of its own.

``minillm grade`` runs each unit of each student in one of two modes (``--sandbox``):

* ``bwrap`` (Linux with bubblewrap, the sandbox Flatpak uses): the run sees the system's
  ``/usr`` and the Python installation read-only, the kit's ``minillm/``, ``data/`` and the
  autograder read-only, the student's files as a read-only copy at ``/submissions/<folder name>``, a private
  empty ``/tmp``, and one folder for the grader's results, where each unit's run can write only its own
  folder (:func:`confine_writes`: an earlier unit's records are read-only to a later unit's code). Not there at all: the rest
  of the kit's repository (``solutions/``, ``exercises/``, ``.git``), the other students' folders,
  the instructor's home, the network. It gets new PID, IPC, UTS and network namespaces: nothing
  it starts outlives it, and it dies with the grader (``--die-with-parent``).
* ``process``: a fresh Python process per unit, in its own process group, killed with whatever
  it started (Linux: also what escaped the group, this process being their "subreaper"), on a
  copy of the student's files. It runs with the instructor's rights: it could read or change
  any file they can. Use it only where bubblewrap cannot start (macOS, a container without user
  namespaces) and run the whole grading inside a container then.

``auto`` picks ``bwrap`` when it starts here, else says once why not and uses ``process``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from minillm.errors import InputError

MODES = ("auto", "bwrap", "process")
SUBMISSIONS_MOUNT = "/submissions" # the copy of the student's files appears in /submissions/<its name>
RESULTS_MOUNT = "/grader-results"  # the one writable folder the sandbox shares with the grader
SANDBOX_UID = 1000                 # the user id inside the sandbox: not root, so that a unit's run can map it
                                   # into a user namespace of its own (confine_writes) without CAP_SETFCAP
MAX_SUBMISSION_BYTES = 200 * 2**20 # a student folder larger than this is not copied (200 MiB)
# /etc entries a Python process needs (the dynamic linker's cache, users, time zone); nothing else of /etc.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group", "nsswitch.conf")


class SandboxError(InputError):
    """The sandbox asked for cannot run here, or a submission cannot be copied into it."""


@dataclass
class Run:
    """One finished (or stopped) run: its exit code, whether it was stopped at the timeout, its output."""
    returncode: int | None
    timed_out: bool
    output: str


# --------------------------------------------------------------------------------------------
# Which mode
# --------------------------------------------------------------------------------------------

_PROBED: dict[str, str | None] = {}


def bwrap_problem() -> str | None:
    """None when a bubblewrap sandbox starts on this machine, else why not (one sentence)."""
    if "bwrap" not in _PROBED:
        _PROBED["bwrap"] = _probe_bwrap()
    return _PROBED["bwrap"]


def _probe_bwrap() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"bubblewrap is Linux-only (this is {sys.platform})"
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    with tempfile.TemporaryDirectory(prefix="minillm-probe-") as tmp:
        cmd = bwrap_command([sys.executable, "-c", "print('ok')"], kit_paths=[], submission=Path(tmp),
                            results=Path(tmp), cwd="/")
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"bubblewrap did not start ({err})"
    if done.returncode != 0 or done.stdout.strip() != "ok":
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return f"bubblewrap cannot start a sandbox here ({why}; user namespaces may be disabled)"
    return None


def choose_mode(mode: str = "auto") -> tuple[str, str | None]:
    """(``"bwrap"`` or ``"process"``, a sentence for the instructor or None) for ``--sandbox mode``.

    Raises SandboxError when ``mode`` is ``"bwrap"`` and bubblewrap cannot start here."""
    if mode not in MODES:
        raise SandboxError(f"sandbox={mode!r}: choose among {', '.join(MODES)}.")
    if mode == "process":
        return "process", ("grading without a sandbox (--sandbox process): each unit runs in a process of its "
                           "own with your rights, so a submission could read or change your files")
    problem = bwrap_problem()
    if problem is None:
        return "bwrap", None
    if mode == "bwrap":
        raise SandboxError(f"--sandbox bwrap: {problem}.")
    return "process", (f"no sandbox: {problem}. Each unit runs in a process of its own with your rights "
                       "(README, 'What the grader guarantees'); grade inside a container, or install bubblewrap")


# --------------------------------------------------------------------------------------------
# The sandbox's view of the machine
# --------------------------------------------------------------------------------------------

def _python_paths(hidden: list[Path]) -> list[Path]:
    """The Python installation and its import path. Import-path folders at, above or inside a
    ``hidden`` one are left out (the kit's repository root is on sys.path when installed with
    ``pip install -e .``, and pytest adds its test folders); the installation itself is kept even
    inside one (a virtual environment in the clone)."""
    prefixes = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(),
                Path(sys.executable).resolve().parent.parent}
    kept = set(prefixes)
    for entry in sys.path:
        if not entry or not os.path.isabs(entry):
            continue
        path = Path(entry).resolve()
        if not path.is_dir() or any(path.is_relative_to(p) for p in prefixes):
            continue
        if any(h.is_relative_to(path) or path.is_relative_to(h) for h in hidden):
            continue
        kept.add(path)
    return sorted(p for p in kept if p.is_dir())


def bwrap_command(cmd: list[str], kit_paths: list[Path], submission: Path, results: Path, cwd: str,
                  hidden: list[Path] = (), env: dict[str, str] | None = None) -> list[str]:
    """``cmd`` wrapped in a bubblewrap sandbox (see the module doc for what it sees).

    ``kit_paths``: folders or files of the kit mounted read-only at their own paths (the package,
    data/, the autograder). ``submission``: the copy of the student's files, mounted read-only at
    /submissions/<its name>. ``results``: mounted writable at /grader-results. ``hidden``: folders none of
    whose parents may be mounted whole (the repository root, the submissions folder). ``env``:
    the whole environment of the run. File descriptors the caller passes stay open."""
    args = ["bwrap", "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
            "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64"):   # merged-/usr systems: links into /usr
        path = Path("/") / top
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    hidden = [Path(h).resolve() for h in hidden] + [Path(submission).resolve()]
    for path in _python_paths(hidden):
        args += ["--ro-bind", str(path), str(path)]
    for path in kit_paths:
        args += ["--ro-bind", str(path), str(path)]
    args += ["--ro-bind", str(submission), f"{SUBMISSIONS_MOUNT}/{Path(submission).name}",
             "--bind", str(results), RESULTS_MOUNT,
             "--chdir", cwd, "--clearenv"]
    for key, value in (env or {}).items():
        args += ["--setenv", key, value]
    return args + ["--", *cmd]


# Linux's unshare(2) and mount(2) flags (linux/sched.h, linux/mount.h).
_CLONE_NEWUSER, _CLONE_NEWNS = 0x10000000, 0x00020000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT, _MS_BIND, _MS_REC = 1, 2, 4, 8, 32, 4096, 16384


def confine_writes(own: Path, root: Path) -> None:
    """Linux: for the rest of this process and whatever it starts, of the files under ``root`` only those
    under ``own`` (a folder inside it) can be written; the rest of ``root`` is read-only.

    The process enters a user and mount namespace of its own, binds ``own`` onto itself, remounts
    ``root`` read-only, then enters a second pair of namespaces: mounts seen from a less privileged
    namespace are locked, so nothing it runs can make ``root`` writable again or unmount ``own``
    to reach what is under it. A forked child of a single thread only (unshare's rule); needs user
    namespaces, as bubblewrap does, and a user id other than 0 (mapping 0 needs CAP_SETFCAP: the sandbox
    runs as SANDBOX_UID). Raises OSError when the kernel refuses."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def enter() -> None:
        uid, gid = os.geteuid(), os.getegid()
        if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), f"unshare: {os.strerror(ctypes.get_errno())}")
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w", encoding="ascii") as f:
                f.write(text)

    def mount(source: str | None, target: Path, flags: int) -> None:
        if libc.mount(source.encode() if source else None, str(target).encode(), None, flags, None) != 0:
            raise OSError(ctypes.get_errno(), f"mount {target}: {os.strerror(ctypes.get_errno())}")

    enter()
    mount(str(own), own, _MS_BIND | _MS_REC)
    kept = os.statvfs(root).f_flag & (_MS_NOSUID | _MS_NODEV | _MS_NOEXEC)   # a remount must keep these
    mount(None, root, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | kept)
    enter()


def copy_submission(folder: Path, dest: Path) -> list[str]:
    """Copy the regular files under ``folder`` into ``dest``; return notes on what was left out.

    Links and special files are not copied (a link could point at another student's folder or at
    the reference), nor anything once the copy would pass MAX_SUBMISSION_BYTES (SandboxError)."""
    notes, total = [], 0
    for root, dirs, files in os.walk(folder, followlinks=False):
        here = Path(root)
        rel = here.relative_to(folder)
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for d in list(dirs):
            if (here / d).is_symlink():
                dirs.remove(d)
                notes.append(f"{rel / d}: a link to a folder, not copied")
        for name in sorted(files):
            path = here / name
            if path.is_symlink() or not path.is_file():
                notes.append(f"{rel / name}: a link or special file, not graded")
                continue
            total += path.stat().st_size
            if total > MAX_SUBMISSION_BYTES:
                raise SandboxError(f"{folder}: more than {MAX_SUBMISSION_BYTES // 2**20} MiB of files; "
                                   "a submission holds the unit modules and notebooks")
            (dest / rel).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / rel / name)
    return notes


# --------------------------------------------------------------------------------------------
# Running, stopping, cleaning up
# --------------------------------------------------------------------------------------------

def run(cmd: list[str], cwd: Path, env: dict[str, str] | None, timeout: float, log_path: Path,
        pass_fds: tuple[int, ...] = ()) -> Run:
    """Run ``cmd`` (already wrapped in bwrap, or not) until it ends or ``timeout`` seconds pass,
    then stop it and everything it started. Output goes to ``log_path`` (a file: a process left
    running would hold a pipe open); the last 100 kB of it are returned."""
    become_subreaper()
    with _SPAWN:
        children_before = _children()
    timed_out = False
    with log_path.open("wb") as log:
        with _SPAWN:   # no other thread's clean-up may see this run before it is listed as running
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, pass_fds=pass_fds)
            _RUNNING.add(proc.pid)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill(proc)
        proc.wait()
        with _SPAWN:
            _RUNNING.discard(proc.pid)
        kill_new_children(children_before)
    return Run(returncode=None if timed_out else proc.returncode, timed_out=timed_out, output=tail(log_path))


def tail(path: Path, limit: int = 100_000) -> str:
    """The last ``limit`` bytes of a run's output as text (a student's code may write gigabytes)."""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - limit))
        return f.read().decode("utf-8", errors="replace")


def _kill(proc: subprocess.Popen) -> None:
    """Stop the run and its process group (in a sandbox, the PID namespace goes with it)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            proc.kill()
    except (ProcessLookupError, PermissionError):
        proc.kill()


def become_subreaper() -> None:
    """Linux: processes a run leaves behind become this process's children when their parent
    ends (PR_SET_CHILD_SUBREAPER), not init's, so they can be found and stopped even after they
    left the run's process group (``setsid``, a double fork)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)   # 36: PR_SET_CHILD_SUBREAPER
        except (OSError, AttributeError):   # pragma: no cover - no libc prctl
            pass


def _children() -> set[int]:
    """The process ids whose parent is this process (Linux: from /proc; elsewhere: empty)."""
    me, found = str(os.getpid()), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()   # after "(name)": state, ppid, ...
        except (OSError, IndexError):
            continue
        if fields[1] == me:
            found.add(int(stat.parent.name))
    return found


_RUNNING: set[int] = set()   # the runs now going on, in every thread
_SPAWN = threading.Lock()    # held while a run starts and is listed, and while leftovers are listed


def spawn_helper(cmd: list[str], **popen: object) -> subprocess.Popen:
    """Start a long-lived process of the grader's own (not a run; verdict.Judge), listed with the
    runs so that no thread's clean-up takes it for a run's leftover; :func:`forget` it once ended."""
    with _SPAWN:
        proc = subprocess.Popen(cmd, **popen)
        _RUNNING.add(proc.pid)
    return proc


def forget(proc: subprocess.Popen) -> None:
    """``proc`` (from :func:`spawn_helper`) has ended: no longer listed."""
    with _SPAWN:
        _RUNNING.discard(proc.pid)


def kill_new_children(before: set[int]) -> None:
    """Kill and reap this process's children that were not there ``before`` and are not runs:
    what a run left behind, handed to this process as their subreaper; again for theirs."""
    for _ in range(100):
        with _SPAWN:
            new = _children() - before - _RUNNING
        if not new:
            return
        for pid in new:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError, PermissionError):
                pass
