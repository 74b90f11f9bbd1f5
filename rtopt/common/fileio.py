"""File input and output shared by every command.

Writes are atomic (readers see the old file or the complete new one, never half of one).
Reads of user-supplied files go through :func:`read_input` / :func:`load_toml` /
:func:`load_json`: only regular files (never a FIFO, device or socket, which could block or
never end), at most :data:`MAX_INPUT_BYTES`, nesting at most :data:`MAX_NESTING` levels, and
every problem is an :class:`InputFileError` naming the file, one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from rtopt.common.errors import FolderLocked, InstanceError, RtoptError

__all__ = ["write_atomic", "make_output_folder", "FolderLock", "LOCK_NAME", "inside", "read_input", "read_text",
           "load_toml", "load_json", "parse_toml", "parse_json", "toml_message",
           "check_nesting", "check_input", "InputFileError", "locked_output", "MAX_INPUT_BYTES", "MAX_NESTING", "short"]

MAX_INPUT_BYTES = 2 * 1024 * 1024
"""Largest input file rtopt reads (bytes): the shipped instances are ~2-6 kB and a plan of a
year of daily fractions ~20 kB, so 2 MiB leaves ample room while a hostile file (``/dev/zero``,
a 10 MB instance) fails at once instead of after gigabytes or tens of seconds."""

MAX_NESTING = 64
"""Deepest nesting of tables/arrays (TOML) or objects/arrays (JSON) accepted: rtopt's formats
nest at most ~5 levels; deeper files would exhaust Python's recursion limit in the parsers."""


class InputFileError(InstanceError):
    """A file cannot be read as input (missing, not a regular file, too large, not text, too
    deeply nested, or a syntax error); ``lines()`` gives ``FILE: message``."""


def short(text: Any, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters for echoing user input in messages."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit - 20]}...({len(text)} characters)"


def _a(what: str) -> str:
    return ("an " if what[:1].lower() in "aeiou" else "a ") + what


def check_input(path: str | os.PathLike, *, limit: int = MAX_INPUT_BYTES,
                what: str = "file") -> None:
    """The checks of :func:`read_input` without reading: for files a library reads itself
    (DICOM).  Raises :class:`InputFileError`."""
    source = short(path, 200)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputFileError(source, [("", "file not found")]) from None
    except (OSError, ValueError) as exc:  # e.g. a name too long, a NUL byte
        why = getattr(exc, "strerror", None) or str(exc)
        raise InputFileError(source, [("", f"cannot open: {why}")]) from None
    if stat.S_ISDIR(st.st_mode):
        raise InputFileError(source, [("", f"is a directory, not {_a(what)}")])
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(source, [("", f"not a regular file (a FIFO, device or socket), "
                                           f"not {_a(what)}")])
    if st.st_size > limit:
        raise InputFileError(source, [("", f"too large for {_a(what)} ({st.st_size:,} bytes; "
                                           f"at most {limit:,})")])


def read_input(path: str | os.PathLike, *, limit: int = MAX_INPUT_BYTES,
               what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Parameters
    ----------
    path : path-like
        The file.
    limit : int
        Size cap in bytes.
    what : str
        What the file should be, for messages (``"instance file"``).

    Raises
    ------
    InputFileError
        Missing, a directory, not a regular file (FIFO, device, socket: reading could block
        or never end), larger than ``limit``, or unreadable.
    """
    source = short(path, 200)
    check_input(path, limit=limit, what=what)
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise InputFileError(source, [("", f"cannot read: {exc.strerror or exc}")]) from None
    if len(data) > limit:  # grew since the stat
        raise InputFileError(source, [("", f"too large for {_a(what)} (more than {limit:,} "
                                           f"bytes)")])
    return data


def read_text(path: str | os.PathLike, *, limit: int = MAX_INPUT_BYTES,
              what: str = "file", kind: str = "UTF-8") -> str:
    """:func:`read_input` decoded as UTF-8 (a byte-order mark is dropped); binary files and
    other encodings are an :class:`InputFileError`."""
    raw = read_input(path, limit=limit, what=what)
    source = short(path, 200)
    if b"\x00" in raw:
        raise InputFileError(source, [("", f"binary file, not {kind} text")])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(source, [("", f"binary or non-UTF-8 file (invalid byte at offset "
                                           f"{exc.start}); {kind} must be UTF-8 text")]
                             ) from None


def check_nesting(data: Any, source: str, limit: int = MAX_NESTING) -> None:
    """Raise :class:`InputFileError` if ``data`` nests dicts/lists deeper than ``limit``
    (iterative: never recurses itself)."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            raise InputFileError(source, [("", f"nested more than {limit} levels deep")])
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def _too_deep(text: str, source: str, limit: int) -> None:
    """Cheap pre-check before a recursive parser: more opening brackets in a row than
    ``limit`` (strings ignored only roughly; the parse's own depth check is exact)."""
    if text.count("[") + text.count("{") <= 4 * limit:
        return
    depth = best = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    if best > 4 * limit:  # generous: brackets inside strings may count
        raise InputFileError(source, [("", f"nested more than {limit} levels deep")])


_TOML_ERROR = re.compile(r"^(?P<msg>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)\s*$",
                         re.S)


def toml_message(message: str) -> str:
    """A ``tomllib`` error message as one line: ``TOML syntax error at line L, column C: ...``."""
    m = _TOML_ERROR.match(message)
    if m:
        detail = m["msg"].strip()
        detail = detail[:1].lower() + detail[1:]
        return f"TOML syntax error at line {m['line']}, column {m['col']}: {detail}"
    detail = message.strip()
    if detail.endswith("(at end of document)"):
        detail = detail[: -len("(at end of document)")].strip()
        detail = detail[:1].lower() + detail[1:]
        return f"TOML syntax error at end of file: {detail}"
    return f"TOML syntax error: {detail}"


def parse_toml(text: str, source: str, limit: int = MAX_NESTING) -> dict[str, Any]:
    """``tomllib.loads`` with one-line errors and a nesting cap (:class:`InputFileError`)."""
    _too_deep(text, source, limit)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputFileError(source, [("", toml_message(str(exc)))]) from None
    except RecursionError:
        raise InputFileError(source, [("", f"nested more than {limit} levels deep")]) from None
    check_nesting(data, source, limit)
    return data


def parse_json(text: str, source: str, limit: int = MAX_NESTING) -> Any:
    """``json.loads`` with one-line errors and a nesting cap (:class:`InputFileError`)."""
    _too_deep(text, source, limit)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputFileError(source, [("", f"invalid JSON: {e.msg} (line {e.lineno}, column "
                                           f"{e.colno})")]) from None
    except RecursionError:
        raise InputFileError(source, [("", f"nested more than {limit} levels deep")]) from None
    check_nesting(data, source, limit)
    return data


def load_toml(path: str | os.PathLike, *, what: str = "TOML file",
              limit: int = MAX_INPUT_BYTES) -> dict[str, Any]:
    """A TOML file read safely (:func:`read_text`) and parsed (:func:`parse_toml`)."""
    return parse_toml(read_text(path, limit=limit, what=what, kind="TOML"), short(path, 200))


def load_json(path: str | os.PathLike, *, what: str = "JSON file",
              limit: int = MAX_INPUT_BYTES) -> Any:
    """A JSON file read safely (:func:`read_text`) and parsed (:func:`parse_json`)."""
    return parse_json(read_text(path, limit=limit, what=what, kind="JSON"), short(path, 200))


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


def make_output_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a :class:`~pathlib.Path`, created with its parents if needed; an
    :class:`RtoptError` naming it when it is a file or cannot be created."""
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise RtoptError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RtoptError(f"{out}: cannot create folder ({e.strerror or e})") from None
    return out


@contextlib.contextmanager
def locked_output(folder: str | os.PathLike, what: str):
    """Create ``folder`` if needed and hold its :class:`FolderLock` for the block; if the
    block fails and this call created the folder, remove it again when nothing but the lock
    file (and empty sub-folders) is in it, so a run refused at once leaves no trace."""
    folder = Path(folder)
    created = [d for d in (folder, *folder.parents) if not d.exists()]
    make_output_folder(folder)
    ok = False
    try:
        with FolderLock(folder, what):
            yield folder
            ok = True
    finally:
        if not ok and created:
            _remove_if_empty(folder)
            for d in created[1:]:            # parents this call made, deepest first
                with contextlib.suppress(OSError):
                    d.rmdir()


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        for d in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
            d.rmdir()                       # fails (and stops) on anything non-empty
        lock = folder / LOCK_NAME
        if lock.exists() and all(p == lock for p in folder.iterdir()):
            lock.unlink()
        folder.rmdir()


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
