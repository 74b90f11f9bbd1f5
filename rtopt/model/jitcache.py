"""Where rtopt keeps its compiled simulator kernels: per user and rtopt version, not per folder.

numba's own on-disk cache (``cache=True``) files a function's machine code under a folder
derived from the absolute path of its source file (beside it in ``__pycache__``, or under
``NUMBA_CACHE_DIR`` in a sub-folder named by a hash of that path).  A second installation of
the same rtopt (another virtual environment, ``pip install --target``, a second checkout)
therefore compiled everything again, ~2 minutes on a loaded 2-core machine, and files beside a
package in ``site-packages`` outlive ``pip uninstall``.

:func:`install` registers a cache locator for the functions of rtopt's own source files.  It
files them under ``<cache root>/<rtopt version>/<folder in the package>/`` with the hash of the
source file's content in the file names (numba's index also checks that hash before loading),
so any installation of the same version with the same source finds the kernels another one
compiled, and two checkouts with different sources keep apart entries instead of overwriting
each other's.  The cache root is the user's ``NUMBA_CACHE_DIR`` when they set one, else
``RTOPT_CACHE_DIR``, else the platform's per-user cache folder (``~/.cache/rtopt`` on Linux).
Functions outside rtopt keep numba's default locations.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

__all__ = ["cache_root", "kernel_cache_dir", "install"]

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
"""The ``rtopt`` package folder of this installation."""
_USER_NUMBA_CACHE_DIR = os.environ.get("NUMBA_CACHE_DIR") or None
"""``NUMBA_CACHE_DIR`` as the user set it (read when this module is first imported, before any
rtopt module sets a default)."""


def cache_root() -> Path:
    """The per-user folder under which rtopt keeps compiled kernels.

    Returns
    -------
    Path
        ``NUMBA_CACHE_DIR`` if the user set it, else ``RTOPT_CACHE_DIR``, else the platform's
        per-user cache folder: ``$XDG_CACHE_HOME/rtopt`` or ``~/.cache/rtopt`` on Linux,
        ``~/Library/Caches/rtopt`` on macOS, ``%LOCALAPPDATA%\\rtopt\\Cache`` on Windows.
    """
    if _USER_NUMBA_CACHE_DIR:
        return Path(_USER_NUMBA_CACHE_DIR)
    if os.environ.get("RTOPT_CACHE_DIR"):
        return Path(os.environ["RTOPT_CACHE_DIR"])
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local") / "rtopt" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "rtopt"
    return Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache") / "rtopt"


def kernel_cache_dir() -> Path:
    """The folder of this rtopt version's compiled kernels (``<cache_root()>/<version>``)."""
    from rtopt import __version__

    return cache_root() / __version__


def _source_hash(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


_INSTALLED = False


def install() -> None:
    """Register rtopt's cache locator with numba (idempotent; call before the ``@njit(cache=True)``
    decorators of a module run: numba chooses a function's cache location when it is decorated)."""
    global _INSTALLED
    if _INSTALLED:
        return
    from numba.core import caching

    class RtoptCacheLocator(caching._CacheLocator):
        """numba cache locator for functions defined in rtopt's own source files."""

        def __init__(self, py_func, py_file):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._hash = _source_hash(py_file)
            rel = Path(py_file).resolve().parent.relative_to(_PACKAGE_DIR)
            self._cache_path = str(kernel_cache_dir().joinpath("rtopt", *rel.parts))

        def get_cache_path(self):
            return self._cache_path

        def get_source_stamp(self):
            # the content, not the file's time or path: a reinstall elsewhere is the same source
            return self._hash

        def get_disambiguator(self):
            return f"{self._lineno}-{self._hash[:12]}"

        @classmethod
        def from_function(cls, py_func, py_file):
            try:
                inside = Path(py_file).resolve().is_relative_to(_PACKAGE_DIR)
            except OSError:
                return None
            if not inside or not os.path.isfile(py_file):
                return None
            self = cls(py_func, py_file)
            try:
                self.ensure_cache_path()
            except OSError:  # not writable: numba's default locators decide
                return None
            return self

    caching.CacheImpl._locator_classes.insert(0, RtoptCacheLocator)
    _INSTALLED = True
