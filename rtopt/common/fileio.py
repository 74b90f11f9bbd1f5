"""Atomic file writes: readers see the old file or the complete new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from rtopt.common.errors import FolderLocked

__all__ = ["write_atomic", "FolderLock", "LOCK_NAME", "inside"]


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write text (UTF-8, ``\\n`` line ends) or bytes to ``path`` via a temporary file and a rename.

    On failure the temporary file is removed and an ``OSError`` naming ``path`` is raised.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        # mkstemp creates mode 0600; give the file the mode a plain open() would have.
        os.chmod(tmp, _new_file_mode(path))
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def _new_file_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


# ---------------------------------------------------------------------------------- folder lock
LOCK_NAME = ".rtopt.lock"
"""Name of the lock file :class:`FolderLock` keeps in a folder (rtopt's own file)."""


class FolderLock:
    """An exclusive lock on a folder, held by one rtopt process at a time.

    ``fcntl.flock`` on ``FOLDER/.rtopt.lock``, which holds the owner's pid and command.  The
    kernel drops the lock when the owner's process ends, however it ends (even SIGKILL), so a
    lock file left behind by a killed run never blocks the next one.  Where ``fcntl`` does not
    exist (Windows) the lock is a no-op.

    Use as a context manager::

        with FolderLock(outdir, "rtopt compare"):
            ...

    Raises
    ------
    rtopt.common.errors.FolderLocked
        Another process holds the lock (the message names the folder and that pid).
    """

    def __init__(self, folder: str | os.PathLike, what: str = "rtopt"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        try:
            import fcntl  # POSIX only: without it the lock is a no-op
        except ImportError:  # pragma: no cover - not POSIX
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.read(fd, 200).decode("utf-8", "replace").split()
            except OSError:
                holder = []
            os.close(fd)
            pid = holder[0] if holder else "unknown"
            who = " ".join(holder[1:]) or "rtopt"
            raise FolderLocked(f"{self.folder}: in use by another {who} run (pid {pid}); "
                               f"wait for it to finish or choose another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.what}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl  # POSIX only (acquire returns early without it)

        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def inside(folder: str | os.PathLike, relative: str) -> Path | None:
    """``folder / relative`` resolved, or None if it lies outside ``folder``.

    For paths read from files in the folder (e.g. ``plan_file`` in ``results.csv``): an
    absolute path, ``..`` or a symbolic link leading out of the folder is refused.
    """
    if not relative or os.path.isabs(relative) or "\0" in relative:
        return None
    base = Path(folder).resolve()
    try:
        p = (base / relative).resolve()
    except (OSError, RuntimeError):  # e.g. a symbolic link loop
        return None
    return p if p == base or base in p.parents else None
