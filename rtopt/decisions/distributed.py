"""Run independent chunks of work through Dask: locally without set-up, or on a cluster.

Sensitivity runs, robust solves and virtual-cohort trials split their work into chunks (blocks
of parameter samples or of candidate schedules) whose results do not depend on each other or on
where they ran, so the assembled result is identical for any number of workers.

Schedulers (:func:`map_chunks` ``scheduler``):

``None``            ``DASK_SCHEDULER_ADDRESS`` when set, otherwise ``"sync"``
``"sync"``          Dask's synchronous scheduler in this process, one chunk at a time (default)
``"threads"``       a local thread pool, one thread per CPU (the compiled simulator releases the GIL)
``"local:N"``       a ``dask.distributed.LocalCluster`` with N workers (threads, no processes)
``"tcp://H:P"``     an existing Dask scheduler; unreachable addresses fail within
                    :data:`CONNECT_TIMEOUT_S` with :class:`SchedulerUnavailable`
a ``Client``        a ``dask.distributed.Client`` the caller owns

Each finished chunk can be written to ``cache_dir`` (``chunk-00012.npz``) as it arrives; a
re-run with the same ``cache_dir`` and ``key`` loads the finished chunks instead of recomputing
them, so Ctrl-C loses only the chunks in flight.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from rtopt import __version__
from rtopt.common.console import err_console
from rtopt.common.errors import RtoptError

# dask and rich.progress are imported inside the functions that use them (dask takes ~1 s to
# import; serial runs never need it).

__all__ = ["map_chunks", "SchedulerUnavailable", "CONNECT_TIMEOUT_S", "resolve_scheduler",
           "settings_key"]

CONNECT_TIMEOUT_S = 3.0
"""Seconds to wait for a remote scheduler before giving up."""


class SchedulerUnavailable(RtoptError):
    """The Dask scheduler cannot be reached or started (the message says which and why)."""


MAX_LOCAL_WORKERS = 256
"""Most workers ``local:N`` starts (threads in this process)."""


def resolve_scheduler(scheduler: Any) -> Any:
    """The scheduler to use: the argument, else ``DASK_SCHEDULER_ADDRESS``, else ``"sync"``.

    Raises
    ------
    SchedulerUnavailable
        A string that is none of the forms of the module docstring (``local:0``, ``local:-1``
        and ``local:abc`` started no worker and waited for ever; an unknown word reached Dask).
    """
    if scheduler is None:
        scheduler = os.environ.get("DASK_SCHEDULER_ADDRESS") or "sync"
    if not isinstance(scheduler, str):
        return scheduler          # a Client the caller owns
    s = scheduler.strip()
    if s in ("sync", "threads", "local"):
        return s
    if s.startswith("local:"):
        n = s.partition(":")[2]
        if not (n.isdigit() and 1 <= int(n) <= MAX_LOCAL_WORKERS):
            raise SchedulerUnavailable(
                f"--scheduler {_shown(s)}: local:N needs a whole number of workers N from 1 to "
                f"{MAX_LOCAL_WORKERS}")
        return s
    if "://" in s and len(s) <= 300:
        return s
    raise SchedulerUnavailable(f"--scheduler {_shown(s)}: expected sync, threads, local:N or "
                               "an address such as tcp://HOST:PORT")


def _shown(text: str) -> str:
    return text if len(text) <= 80 else text[:60] + f"...({len(text)} characters)"


def _probe_dask(address: str) -> None:
    """Fail within :data:`CONNECT_TIMEOUT_S` unless a ``tcp://`` address answers like a Dask
    scheduler (it sends its handshake on connect; an HTTP server, say, sends nothing and
    Dask's client would wait on it for minutes)."""
    import socket
    from urllib.parse import urlsplit

    if not address.startswith("tcp://"):
        return
    try:
        u = urlsplit(address)
        host, port = u.hostname, u.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise SchedulerUnavailable(f"--scheduler {_shown(address)}: expected tcp://HOST:PORT")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as so:
            so.settimeout(CONNECT_TIMEOUT_S)
            head = so.recv(256)
    except socket.timeout:
        raise SchedulerUnavailable(
            f"{address} answers but is not a Dask scheduler (no Dask handshake within "
            f"{CONNECT_TIMEOUT_S:g} s)") from None
    except OSError as e:
        raise SchedulerUnavailable(f"cannot reach the Dask scheduler {address}: "
                                   f"{e.strerror or e}") from None
    if b"compression" not in head:
        raise SchedulerUnavailable(f"{address} answers but is not a Dask scheduler (its first "
                                   "bytes are not a Dask handshake)")


def settings_key(**settings: Any) -> str:
    """A short hash of the settings that determine a run's chunks (for resuming)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _client(scheduler: Any) -> Iterator[Any]:
    """A dask.distributed Client for ``local:N``, an address, or a given Client."""
    if hasattr(scheduler, "submit"):
        yield scheduler
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as e:  # pragma: no cover - dask[distributed] is a dependency
        raise SchedulerUnavailable(f"dask.distributed is not installed: {e}") from None
    if isinstance(scheduler, str) and scheduler.startswith("local"):
        n = int(scheduler.partition(":")[2] or os.cpu_count() or 1)   # checked by resolve_scheduler
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=False,
                          dashboard_address=None) as cluster, Client(cluster) as c:
            yield c
        return
    if isinstance(scheduler, str):
        _probe_dask(scheduler)
    try:
        c = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError, ValueError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SchedulerUnavailable(f"cannot reach the Dask scheduler {scheduler}: {why}") from None
    try:
        _check_workers(c, scheduler)
        yield c
    finally:
        c.close()


def _check_workers(client: Any, scheduler: Any) -> None:
    """Fail fast, in one line, when the cluster cannot run rtopt's chunks.

    A scheduler without workers would otherwise wait forever, and workers without rtopt (or
    with another version) fail each chunk with a deserialisation traceback.
    """
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError):
        raise SchedulerUnavailable(
            f"the Dask scheduler {scheduler} has no workers (start one with "
            f"'dask worker {scheduler}')") from None

    def probe() -> str:  # nested: pickled by value, runs even where rtopt is missing
        try:
            from rtopt import __version__ as theirs
        except ImportError:
            return "not installed"
        return str(theirs)

    try:
        versions = client.run(probe)
    except Exception as e:  # noqa: BLE001 - any failure here means the workers are unusable
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SchedulerUnavailable(f"the workers of {scheduler} cannot run tasks: {why}") from None
    bad = sorted({v for v in versions.values() if v != __version__})
    if bad:
        have = ("do not have rtopt" if bad == ["not installed"]
                else f"have rtopt {', '.join(bad)}, not {__version__}")
        raise SchedulerUnavailable(
            f"the workers of {scheduler} {have}: install this repository in the workers' "
            "environment (pip install .)")


KEY_FIELD = "__rtopt_key__"
"""Name of the array in each chunk file that holds the run's :func:`settings_key`."""


def _save(path: Path, result: dict[str, np.ndarray], key: str) -> None:
    """Write one chunk atomically, stamped with ``key``; on failure (a full disk) no partial
    file is left and the error names ``path``."""
    import io

    from rtopt.common.fileio import write_atomic

    buf = io.BytesIO()
    np.savez(buf, **result, **{KEY_FIELD: np.array(key)})
    write_atomic(path, buf.getvalue())


def _load(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """A finished chunk of the run ``key``, or None (missing, unreadable, or another run's)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if KEY_FIELD not in z.files or str(z[KEY_FIELD]) != key:
                return None
            return {k: z[k] for k in z.files if k != KEY_FIELD}
    except (OSError, ValueError, EOFError, KeyError):
        return None


def map_chunks(fn: Callable[[Any], dict[str, np.ndarray]], items: Sequence[Any], *,
               scheduler: Any = None, cache_dir: str | Path | None = None, key: str = "",
               progress: str | None = None) -> list[dict[str, np.ndarray]]:
    """``[fn(item) for item in items]`` through Dask, in order.

    Parameters
    ----------
    fn : callable
        Pure function of one item returning ``{name: ndarray}`` (picklable for clusters).
    items : sequence
        The chunks' inputs.
    scheduler : see the module docstring.
    cache_dir : path, optional
        Write each finished chunk there as it arrives, and reuse finished chunks of a run with
        the same ``key``.
    key : str
        Identity of the run (:func:`settings_key`); a different key clears ``cache_dir``'s chunks.
    progress : str, optional
        Label of a progress bar on stderr (rich); None for no bar.

    Raises
    ------
    SchedulerUnavailable
        The scheduler cannot be reached or started.
    """
    scheduler = resolve_scheduler(scheduler)
    with contextlib.ExitStack() as stack:
        # connect first: an unusable cluster must fail before anything is written
        client = (None if scheduler in ("sync", "threads")
                  else stack.enter_context(_client(scheduler)))
        return _run_chunks(fn, items, scheduler, client, cache_dir, key, progress)


def _run_chunks(fn: Callable[[Any], dict[str, np.ndarray]], items: Sequence[Any], scheduler: Any,
                client: Any, cache_dir: str | Path | None, key: str,
                progress: str | None) -> list[dict[str, np.ndarray]]:
    results: list[dict[str, np.ndarray] | None] = [None] * len(items)
    cache = Path(cache_dir) if cache_dir is not None else None
    created: list[Path] = []          # directories this run made (removed if nothing finishes)
    if cache is not None:
        created = [d for d in (cache, *cache.parents) if not d.exists()]
        cache.mkdir(parents=True, exist_ok=True)
        from rtopt.common.fileio import write_atomic

        stamp = cache / "key.txt"
        from rtopt.common.fileio import InputFileError, read_input

        try:
            same = read_input(stamp, limit=4096).decode("utf-8", "replace").strip() == key
        except InputFileError:
            same = False
        if not same:
            for old in (*cache.glob("chunk-*.npz"), *cache.glob("*.tmp")):
                old.unlink()
            write_atomic(stamp, key + "\n")
        for i in range(len(items)):
            # each chunk carries its run's key: a chunk of another configuration is never mixed in
            results[i] = _load(cache / f"chunk-{i:05d}.npz", key)
    todo = [i for i, r in enumerate(results) if r is None]

    def done(i: int, r: dict[str, np.ndarray]) -> None:
        results[i] = r
        if cache is not None:
            _save(cache / f"chunk-{i:05d}.npz", r, key)

    with _progress(progress, len(items), len(items) - len(todo)) as advance:
        if client is None:
            import dask

            if scheduler == "sync":
                for i in todo:
                    done(i, dask.delayed(fn)(items[i]).compute(scheduler="synchronous"))
                    advance()
            else:
                # a local thread pool (as Dask's threaded scheduler), chunks taken as they
                # finish so the progress bar moves (dask.compute returns them all at the end)
                from concurrent.futures import ThreadPoolExecutor, as_completed

                with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
                    futs = {pool.submit(fn, items[i]): i for i in todo}
                    for f in as_completed(futs):
                        done(futs[f], f.result())
                        advance()
        else:
            from dask.distributed import as_completed

            futures = {client.submit(fn, items[i], pure=False): i for i in todo}
            try:
                for fut in as_completed(futures):
                    try:
                        r = fut.result()
                    except RuntimeError as e:
                        if "deserializ" not in str(e):
                            raise
                        # the scheduler unpickles the task graph too, so it needs rtopt as well
                        raise SchedulerUnavailable(
                            f"the Dask cluster at {scheduler} cannot load rtopt's tasks: install "
                            "this repository (pip install .) where the scheduler and the workers "
                            "run") from None
                    done(futures[fut], r)
                    advance()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                if created and len(todo) == len(items) and all(r is None for r in results):
                    shutil.rmtree(created[-1], ignore_errors=True)
                raise
    return results  # type: ignore[return-value]


@contextlib.contextmanager
def _progress(label: str | None, total: int, completed: int) -> Iterator[Callable[[], None]]:
    if label is None or total <= 1 or not err_console.is_terminal:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=err_console,
                  transient=True) as bar:
        task = bar.add_task(label, total=total, completed=completed)
        yield lambda: bar.advance(task)
