"""An on-disk cache of decomposition results, keyed by the audio's content and the parameters.

One entry is one directory ``<root>/<key>/`` written by the result's own ``save(directory)``
(e.g. :meth:`unmixer.loops.pipeline.Extraction.save`) and read back by its ``load(directory)``.
The key is ``sha256(audio bytes)`` combined with the parameters (and a code version), so the
same song with the same settings is found again after a rerun, by a second user, or after a
restart of the server. The total size is capped: when it goes over, the least recently used
entries are deleted first (each hit refreshes its entry's modification time).

Several processes may share one cache (two app replicas behind one address, Dask workers):

- an entry is written into a temporary directory ``.tmp-<host>-<pid>-*`` and renamed into
  place, so no reader ever sees half an entry, and a writer killed on the way (SIGKILL, out
  of memory) leaves only its temporary directory, which is never read and is deleted once
  its process is gone;
- reading, renaming into place, eviction and deletion hold one cross-process lock, the
  file ``<root>/.lock`` (:class:`filelock.FileLock`: ``flock``, released by the kernel
  when its holder dies), so an entry cannot be deleted or replaced while another process
  reads it, and the size cap is applied to what every writer has stored.

Where it lives: ``$UNMIXER_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/unmixer``, else
``~/.cache/unmixer``. Size cap: ``$UNMIXER_CACHE_MAX_MB`` (default 1024 MB).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from unmixer.errors import UnmixerError

DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
"""Default size cap of the cache (bytes): 1 GiB."""

T = TypeVar("T")

_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_LOCK_FILE = ".lock"
LOCK_TIMEOUT_S = 60.0
"""Longest wait for the cache's lock (s); past it a read is a miss and a write is skipped."""
ORPHAN_AGE_S = 3600.0
"""A temporary directory of another host (whose process cannot be checked) is deleted after
this long (s)."""

log = logging.getLogger(__name__)


def _writer_tag() -> str:
    """``<host>-<pid>-``: who writes a temporary directory (see :func:`_orphaned`)."""
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-"


def _orphaned(path: Path, now: float) -> bool:
    """Whether a temporary or trash directory's writer is gone: a dead process of this host,
    or (another host's) older than :data:`ORPHAN_AGE_S`."""
    tag = path.name.split("-", 1)[-1]  # "<host>-<pid>-<random>"
    host, _, rest = tag.partition("-")
    pid = rest.partition("-")[0]
    if host == _writer_tag().partition("-")[0] and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    try:
        return now - path.stat().st_mtime > ORPHAN_AGE_S
    except OSError:
        return False


def default_cache_dir() -> Path:
    """The cache directory: ``$UNMIXER_CACHE_DIR``, ``$XDG_CACHE_HOME/unmixer`` or
    ``~/.cache/unmixer`` (the first that is set)."""
    if os.environ.get("UNMIXER_CACHE_DIR"):
        return Path(os.environ["UNMIXER_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "unmixer"


def default_max_bytes() -> int:
    """The size cap: ``$UNMIXER_CACHE_MAX_MB`` megabytes, else :data:`DEFAULT_MAX_BYTES`.

    Raises
    ------
    UnmixerError
        If ``$UNMIXER_CACHE_MAX_MB`` is not a non-negative number.
    """
    raw = os.environ.get("UNMIXER_CACHE_MAX_MB")
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        megabytes = float(raw)
    except ValueError:
        megabytes = -1.0
    if megabytes < 0:
        raise UnmixerError(f"UNMIXER_CACHE_MAX_MB must be a number of megabytes, not {raw!r}.")
    return int(megabytes * 1024 * 1024)


def cache_key(audio_bytes: bytes, params: Mapping[str, Any]) -> str:
    """The key of one result: sha256 of the audio file's bytes and of the parameters.

    Parameters
    ----------
    audio_bytes : bytes
        The file exactly as uploaded (not the decoded samples, so no decoding is needed to
        look it up).
    params : mapping of str to JSON-serialisable values
        Everything else the result depends on (number of loops, loop length, seed, code
        version...). Key order does not matter.

    Returns
    -------
    str: 64 hex digits for the audio, '-', 16 hex digits for the parameters.
    """
    audio_hash = hashlib.sha256(audio_bytes).hexdigest()
    blob = json.dumps(dict(params), sort_keys=True, separators=(",", ":"), default=str)
    return f"{audio_hash}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def code_version(*sources: Any) -> str:
    """A short hash of source files (paths, or modules whose ``__file__`` is used), to put in
    the cache parameters so a change to the engine's code makes old entries miss instead of
    returning stale results."""
    digest = hashlib.sha256()
    for source in sources:
        path = getattr(source, "__file__", source)
        if path and os.path.exists(path):
            digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:12]


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


class ResultCache:
    """A size-capped, least-recently-used cache of result directories, safe to share between
    processes (see the module's docstring).

    Parameters
    ----------
    directory : path, optional
        Where entries live; default :func:`default_cache_dir`.
    max_bytes : int, optional
        Size cap in bytes; default :func:`default_max_bytes`. 0 keeps nothing.

    Examples
    --------
    The app stores each analysis as ``cache.put(key, extraction.save)`` and reads it back
    with ``cache.get(key, Extraction.load)``; any saver/loader pair works:

    >>> import tempfile
    >>> cache = ResultCache(tempfile.mkdtemp(), max_bytes=10_000_000)
    >>> key = cache_key(b"the song file's bytes", {"n_loops": 5, "loop_bars": 2})
    >>> def load(directory):
    ...     return (directory / "loops.txt").read_text()
    >>> cache.get(key, load) is None
    True
    >>> entry = cache.put(key, lambda directory: (directory / "loops.txt").write_text("5 loops"))
    >>> cache.get(key, load)
    '5 loops'
    """

    def __init__(self, directory: str | os.PathLike | None = None,
                 max_bytes: int | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.max_bytes = int(max_bytes) if max_bytes is not None else default_max_bytes()
        self._filelock: FileLock | None = None

    def path(self, key: str) -> Path:
        """The directory of entry ``key`` (it may not exist)."""
        if not key or "/" in key or "\\" in key or key.startswith("."):
            raise UnmixerError(f"Bad cache key {key!r}.")
        return self.directory / key

    @contextlib.contextmanager
    def locked(self, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the cache's cross-process lock (reentrant in one thread).

        Raises
        ------
        filelock.Timeout
            If another process holds it for longer than ``timeout_s``.
        OSError
            If the cache directory cannot be created.
        """
        if self._filelock is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._filelock = FileLock(self.directory / _LOCK_FILE)
        with self._filelock.acquire(timeout=timeout_s):
            yield

    def get(self, key: str, loader: Callable[[Path], T]) -> T | None:
        """The entry ``key`` read by ``loader(directory)``, or None when absent or unreadable.

        A hit marks the entry as just used. An entry ``loader`` cannot read (written by an
        older version, damaged) is deleted and reported as a miss. A cache whose lock cannot
        be had (:data:`LOCK_TIMEOUT_S`) misses.
        """
        path = self.path(key)
        if not path.is_dir():
            return None
        try:
            with self.locked():
                if not path.is_dir():
                    return None
                try:
                    value = loader(path)
                except Exception:
                    shutil.rmtree(path, ignore_errors=True)
                    return None
                now = time.time()
                with contextlib.suppress(OSError):
                    os.utime(path, (now, now))
                return value
        except (Timeout, OSError) as err:
            log.warning("result cache %s: read of %s skipped (%s)", self.directory, key, err)
            return None

    def put(self, key: str, saver: Callable[[Path], Any]) -> Path | None:
        """Store an entry: ``saver(directory)`` writes it (outside the lock, into a temporary
        directory), then it is renamed into place and the cache is trimmed.

        Returns the entry's directory, or None when the cap is 0, the disk refused or the
        lock could not be had (a cache that cannot write must never break the caller).
        """
        if self.max_bytes <= 0:
            return None
        final = self.path(key)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX + _writer_tag(), dir=self.directory))
        except OSError:
            return None
        try:
            saver(tmp)
            with self.locked():
                if final.exists():  # replaced: the old one is moved away in one rename
                    trash = Path(tempfile.mkdtemp(prefix=_TRASH_PREFIX + _writer_tag(),
                                                  dir=self.directory))
                    os.replace(final, trash / "entry")
                    shutil.rmtree(trash, ignore_errors=True)
                os.replace(tmp, final)
                self._evict_locked()
                return final if final.exists() else None
        except (OSError, Timeout) as err:
            log.warning("result cache %s: write of %s skipped (%s)", self.directory, key, err)
            shutil.rmtree(tmp, ignore_errors=True)
            return None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def entries(self) -> list[tuple[Path, float, int]]:
        """Every entry as ``(directory, last used (s since epoch), size in bytes)``, oldest
        first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            if path.name.startswith("."):
                continue
            try:
                if path.is_dir():
                    found.append((path, path.stat().st_mtime, _dir_size(path)))
            except OSError:
                continue
        return sorted(found, key=lambda entry: entry[1])

    def size_bytes(self) -> int:
        """Total size of all entries (bytes)."""
        return sum(size for _path, _used, size in self.entries())

    def evict(self) -> list[Path]:
        """Delete least recently used entries until the total is within ``max_bytes``;
        also deletes the temporary directories of writers that are gone (see
        :func:`_orphaned`). Returns the deleted entries (none if the lock is busy)."""
        try:
            with self.locked():
                return self._evict_locked()
        except (Timeout, OSError):
            return []

    def _evict_locked(self) -> list[Path]:
        removed = []
        entries = self.entries()
        total = sum(size for _path, _used, size in entries)
        for path, _used, size in entries:
            if total <= self.max_bytes:
                break
            shutil.rmtree(path, ignore_errors=True)
            total -= size
            removed.append(path)
        now = time.time()
        for pattern in (_TMP_PREFIX + "*", _TRASH_PREFIX + "*"):
            for path in self.directory.glob(pattern):
                if _orphaned(path, now):
                    shutil.rmtree(path, ignore_errors=True)
        return removed

    def clear(self) -> None:
        """Delete every entry."""
        with self.locked():
            for path, _used, _size in self.entries():
                shutil.rmtree(path, ignore_errors=True)


def _imported_modules(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    """The ``unmixer`` modules a module imports (absolute and relative imports)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # submodules by name
    return {m for m in found if m == "unmixer" or m.startswith("unmixer.")}


def package_sources(package: str = "unmixer.loops", root: str | os.PathLike | None = None) -> list[Path]:
    """The source files of a package and of every ``unmixer`` module it imports, transitively.

    The package's own ``.py`` files (recursively) and the files of the ``unmixer`` modules
    they import, found by reading their import statements (nothing is imported).

    Parameters
    ----------
    package : str, a package or module under ``unmixer`` (default: the loop engine)
    root : path, optional, the ``unmixer`` folder to read (default: this one)

    Returns
    -------
    list of Path, sorted

    Raises
    ------
    UnmixerError
        If ``package`` is not a module of Unmixer.
    """
    root = Path(root) if root is not None else Path(__file__).resolve().parent  # unmixer/

    def path_of(module: str) -> Path | None:
        rel = Path(*module.split(".")[1:])
        for candidate in (root / rel / "__init__.py", (root / rel).with_suffix(".py")):
            if candidate.is_file():
                return candidate
        return None

    start = path_of(package) if package.split(".")[0] == "unmixer" else None
    if start is None:
        raise UnmixerError(f"{package!r} is not a module of Unmixer.")
    todo = [package]
    if start.name == "__init__.py":  # a package: every module in it
        todo += [".".join(("unmixer",) + p.relative_to(root).with_suffix("").parts)
                 for p in start.parent.rglob("*.py")]
    seen: dict[str, Path] = {}
    while todo:
        module = todo.pop().removesuffix(".__init__")
        path = path_of(module)
        if module in seen or path is None:
            continue
        seen[module] = path
        todo.extend(_imported_modules(ast.parse(path.read_text()), module, path.name == "__init__.py"))
    return sorted(set(seen.values()))


def package_code_version(package: str = "unmixer.loops", root: str | os.PathLike | None = None) -> str:
    """A short hash of :func:`package_sources` (12 hex digits), for cache keys.

    The cache key of the loop engine then changes when the engine or something it uses (the
    STFT, the NMF of the core purification, audio decoding) changes, and not when a page, the
    CLI, the mashup deck or the song generator does.

    Raises
    ------
    UnmixerError
        If ``package`` is not a module of Unmixer.
    """
    root = Path(root) if root is not None else Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in package_sources(package, root):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]
