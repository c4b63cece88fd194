"""A music library, not one song: the loops of every song of a folder, on Dask distributed.

``python -m unmixer batch FOLDER --out DIR`` (:mod:`unmixer.commands.batch`) runs
:func:`run_batch`: it walks FOLDER for audio files, runs one Dask task per song
(:func:`process_song`: decode, :func:`unmixer.loops.pipeline.extract_loops`, write the
``extract`` contract with :func:`unmixer.commands.extract.write_outputs`) and records every
song in ``DIR/manifest.csv`` (:data:`COLUMNS`).

Where the work runs: a :class:`distributed.LocalCluster` of N worker processes started here
(:func:`local_cluster`), or the workers of an existing cluster (``--scheduler
tcp://host:8786``); the code path is the same. The workers read the songs from FOLDER and
write each song's folder straight into DIR, so with several machines both must be on a
shared file system at the same path (checked before any song is sent: :func:`check_paths`).
A 4-minute song's output weighs ~200 MB (its full-length tracks); writing it where it is made
keeps it off the network between the workers and this process, which only gets a small dict
back per song.

One task per worker thread: each worker runs madmom on its own thread
(``UNMIXER_THREADS=1``, :func:`serial_madmom`), since N single-threaded workers already use
N cores (:func:`serial_madmom` makes it the rule for every worker, also one that joins
later). Dask's nanny sets ``OMP_NUM_THREADS=1``
(BLAS) in each worker.

Faults: a task whose worker dies (killed, out of memory) is run once more on another worker;
a song that kills its worker twice becomes an error (Dask's ``KilledWorker``,
``distributed.scheduler.allowed-failures = 1``, set by :func:`local_cluster`; for a cluster
of your own, by ``scripts/dask.yaml``, which ``scripts/scheduler.sh`` uses).
Any other exception is retried once (``retries=1``). Bad input
(:class:`~unmixer.errors.UnmixerError`) is not retried: the same bytes fail the same way.

Resuming: a song is done when the manifest holds a row with its content (sha256) and the
same :class:`Settings`, and its folder is there; a rerun skips it, and also skips the songs
listed as errors with the same content and settings (``retry_errors=True`` tries them again).
The manifest is rewritten atomically (a temporary file renamed over it) at most every
:data:`MANIFEST_EVERY_S` seconds and at the end, and each song's folder is written under a
temporary name and renamed into place, so an interrupted batch (Ctrl-C, a killed process,
a power cut) leaves complete folders and a readable manifest, and the same command resumes.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import hashlib
import io
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from unmixer.errors import UnmixerError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif",
                    ".aiff")
"""File name endings taken as songs (case-insensitive); the rest of FOLDER is ignored."""

MANIFEST = "manifest.csv"
STAGE_COLUMNS = ("decoding_s", "downbeats_s", "cube_s", "decomposition_s", "loops_s",
                 "writing_s", "total_s")
COLUMNS = ("song", "sha256", "status", "error", "out", "loops", "bpm", "meter", "key", "bars",
           "duration_s", *STAGE_COLUMNS, "worker", "worker_peak_mb", "settings", "finished",
           "size_bytes", "mtime_ns")
"""The manifest's columns: ``song`` (absolute path), ``sha256`` (of the file's bytes),
``status`` (done / error / skipped), ``error`` (one line: why it failed, or for a skipped
song, which song has the same audio), ``out`` (its folder in DIR), ``loops`` (K), ``bpm``,
``meter`` (beats per bar), ``key`` (the musical key: empty until the engine estimates one),
``bars``, ``duration_s``, the stage times (s), the ``worker`` that ran it and that worker
process's peak resident memory so far (MB), the ``settings`` it was run with, when it
``finished`` (UTC), and the file's ``size_bytes`` and ``mtime_ns`` (a rerun re-reads a file
to hash it only when these changed)."""

DONE, ERROR, SKIPPED = "done", "error", "skipped"
MANIFEST_EVERY_S = 2.0
"""The manifest is rewritten at most this often while songs finish (and at the end); for a
large manifest, at most every 20 times the time its last write took (5% of the time)."""

TASK_PREFIX = "unmixer-batch-"
_TMP = ".tmp-"
_OLD = ".old-"
_RESERVED = {MANIFEST.lower(), ".lock"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a song's loops depend on besides its bytes (part of the resume key).

    Examples
    --------
    >>> Settings(n_loops="auto", loop_bars=1).key()
    'loops=auto loop_bars=1 seed=0 max_minutes=15'
    """

    n_loops: int | str = 5
    loop_bars: int | str = "auto"
    seed: int = 0
    max_minutes: float = 15.0

    def key(self) -> str:
        """The settings as written in the manifest's ``settings`` column."""
        return (f"loops={self.n_loops} loop_bars={self.loop_bars} seed={self.seed} "
                f"max_minutes={self.max_minutes:g}")


@dataclasses.dataclass(frozen=True)
class SongTask:
    """One song to analyse: what a Dask task receives (:func:`process_song`).

    ``path``: the song (absolute); ``out``: its folder, ``DIR/<name>`` (absolute);
    ``sha256``: the file's hash when planned.
    """

    path: str
    out: str
    sha256: str
    settings: Settings


@dataclasses.dataclass
class BatchReport:
    """What a batch did. Counts are songs: ``found`` under FOLDER; ``done``, ``errors`` and
    ``skipped`` (duplicates) in this run; ``already_done`` and ``already_failed`` by earlier
    runs (no work); ``submitted`` as tasks; ``not_run`` left undone (interrupted, or the
    cluster went away); ``worker_losses``: songs whose worker died while running them.
    ``failures``: ``(song path, one-line error)`` of this run; ``seconds``: wall time of the
    tasks (s)."""

    found: int = 0
    done: int = 0
    errors: int = 0
    skipped: int = 0
    already_done: int = 0
    already_failed: int = 0
    not_run: int = 0
    submitted: int = 0
    worker_losses: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    manifest: Path | None = None


class Reporter:
    """What :func:`run_batch` tells as it goes (the CLI draws it; the default is silent).

    ``hashing(done, total)`` while the songs are read to hash them; ``planned(report,
    todo)`` once, before any work; ``finished(path, row)`` after each song (``row`` as in the
    manifest); ``retrying(path, why)`` when a song's worker died under it (Dask runs it
    again, once with the embedded cluster); ``close()`` at the end.
    """

    def hashing(self, done: int, total: int) -> None: ...
    def planned(self, report: BatchReport, todo: int) -> None: ...
    def finished(self, path: str, row: dict) -> None: ...
    def retrying(self, path: str, why: str) -> None: ...
    def close(self) -> None: ...


# ------------------------------------------------------------------------ finding songs
def find_songs(folder: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[Path]:
    """Every audio file under ``folder`` (recursively, :data:`AUDIO_EXTENSIONS`), sorted.

    Hidden files and folders (a leading dot) are skipped, and so is ``exclude`` (the output
    folder, when it lies inside ``folder``). Symbolic links to files are followed, links to
    folders are not (no cycles).

    Returns
    -------
    list of absolute paths
    """
    root = Path(folder).resolve()
    skip = Path(exclude).resolve() if exclude is not None else None
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and (skip is None or here / d != skip))
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(AUDIO_EXTENSIONS):
                path = here / name
                if path.is_file():
                    found.append(path)
    return sorted(found)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def output_name(path: str | os.PathLike, taken: set[str]) -> str:
    """A folder name in DIR for a song: its file name without the extension, or with
    `` (2)``, `` (3)``… when another song already has it (compared without case, since
    some file systems ignore it). The name is added to ``taken`` (lower-case names).

    Examples
    --------
    >>> taken = set()
    >>> output_name("a/Groove.mp3", taken), output_name("b/groove.wav", taken)
    ('Groove', 'groove (2)')
    """
    stem = Path(path).stem.strip() or "song"
    if stem.startswith("."):
        stem = "_" + stem[1:]
    name, n = stem, 1
    while name.lower() in taken or name.lower() in _RESERVED:
        n += 1
        name = f"{stem} ({n})"
    taken.add(name.lower())
    return name


# ---------------------------------------------------------------------------- manifest
def read_manifest(path: str | os.PathLike) -> dict[str, dict]:
    """The manifest's rows by song path ({} when there is none yet).

    Raises
    ------
    UnmixerError
        If the file is not a manifest written by this module (no ``song`` and ``sha256``
        columns).
    """
    path = Path(path)
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"song", "sha256", "status"} <= set(reader.fieldnames):
            raise UnmixerError(f"{path} is not an Unmixer batch manifest; give another --out "
                               "folder.")
        return {row["song"]: {c: row.get(c) or "" for c in COLUMNS} for row in reader}


def write_manifest(path: str | os.PathLike, rows: dict[str, dict]) -> None:
    """Write the rows (sorted by song path) as CSV, atomically: into a temporary file in the
    same folder, flushed to disk, then renamed over ``path``, so a reader (or a resumed
    batch) sees the old manifest or the new one, never half of one."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for song in sorted(rows):
        writer.writerow(rows[song])
    tmp = path.with_name(f"{_TMP}{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# ------------------------------------------------------------------------- worker side
def serial_madmom() -> None:
    """Run madmom on the calling thread (``UNMIXER_THREADS=1``): for a Dask worker, one of
    N single-threaded processes sharing the cores, which must not run madmom's networks and
    FFTs on threads of their own (:func:`unmixer.loops.beats.downbeat_activations`) on top.
    :mod:`unmixer.loops.beats` reads the environment variable at each call.
    """
    os.environ["UNMIXER_THREADS"] = "1"


def worker_plugin():
    """A :class:`distributed.WorkerPlugin` named "unmixer" that sets up every worker of a
    cluster, present and future (one that joins, or that its nanny restarts), for Unmixer:
    :func:`serial_madmom`. Registered by :func:`connect` and by the app (``ui/cluster.py``);
    registering it again replaces it. Defined here so that ``import unmixer.batch`` does not
    import Dask."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class UnmixerWorker(WorkerPlugin):
        """Set up each worker of the cluster (and each one that joins or restarts) for
        Unmixer: :func:`serial_madmom`."""

        name = "unmixer"

        def setup(self, worker) -> None:
            serial_madmom()

    return UnmixerWorker()


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far (MB): Linux's ``VmHWM``, which starts
    afresh with the program (``ru_maxrss`` keeps the peak of the process it was forked from,
    here the nanny's), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def replace_dir(tmp: Path, final: Path) -> None:
    """Put folder ``tmp`` at ``final``, replacing what was there: two renames, so ``final``
    is at every moment either the old folder or the new one."""
    if final.exists():
        old = final.with_name(f"{_OLD}{final.name}-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def process_song(task: SongTask) -> dict:
    """One song of a batch, on a worker: decode, extract its loops, write its folder.

    Runs :func:`unmixer.commands.extract.extract_song` and
    :func:`unmixer.commands.extract.write_outputs` (the ``extract`` contract) into a
    temporary folder beside ``task.out``, renamed into place when complete.

    Returns
    -------
    dict: a manifest row without ``song``, ``out`` and ``settings`` (:data:`COLUMNS`);
    ``status`` "done", or "error" with the one-line ``error`` for bad input (UnmixerError)
    or a folder that cannot be written.

    Raises
    ------
    Exception
        Anything else (a bug, MemoryError): Dask runs the task once more, then the batch
        lists the song as an internal error.
    """
    serial_madmom()
    from unmixer.commands.extract import extract_song, write_outputs

    t0 = time.perf_counter()
    path, final = Path(task.path), Path(task.out)
    row = {"worker": _worker_name()}
    try:
        data = path.read_bytes()
    except OSError as err:
        return {**row, "status": ERROR, "sha256": task.sha256,
                "error": f"Cannot open {path}: {err.strerror or err}."}
    row["sha256"] = hashlib.sha256(data).hexdigest()
    s = task.settings
    try:
        extraction = extract_song(data, s.n_loops, loop_bars=s.loop_bars, seed=s.seed,
                                  max_minutes=s.max_minutes, name=path.name)
    except UnmixerError as err:
        return {**row, "status": ERROR, "error": str(err),
                "worker_peak_mb": f"{_peak_rss_mb():.0f}"}
    del data
    tmp = final.with_name(f"{_TMP}{final.name}-{uuid.uuid4().hex[:8]}")
    try:
        write_outputs(extraction, tmp, title=f"{path.name}: loop map")
        replace_dir(tmp, final)
    except OSError as err:
        return {**row, "status": ERROR, "worker_peak_mb": f"{_peak_rss_mb():.0f}",
                "error": f"Cannot write {final}: {err.strerror or err}."}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    times = {f"{stage}_s": f"{seconds:.2f}" for stage, seconds in extraction.timings_s.items()
             if f"{stage}_s" in STAGE_COLUMNS}
    return {**row, **times, "status": DONE, "error": "", "loops": str(len(extraction.loops)),
            "bpm": f"{extraction.bpm:.2f}", "meter": str(extraction.meter), "key": "",
            "bars": str(extraction.n_bars), "duration_s": f"{extraction.duration_s:.2f}",
            "total_s": f"{time.perf_counter() - t0:.2f}",
            "worker_peak_mb": f"{_peak_rss_mb():.0f}"}


# ------------------------------------------------------------------------- the cluster
def default_workers() -> int:
    """Worker processes of the embedded cluster: one per core, at most one per 3 GiB of
    memory (a 4-minute song peaks near 1.5 GB in one worker), at least 1."""
    import psutil

    cores = os.cpu_count() or 1
    return max(1, min(cores, int(psutil.virtual_memory().total // (3 << 30))))


CLUSTER_CONFIG = {
    "distributed.scheduler.allowed-failures": 1,
    "distributed.scheduler.worker-saturation": 1.0,
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}
"""Dask settings of the embedded cluster, as ``scripts/dask.yaml`` sets them for a cluster of
one's own: a song whose worker dies is run once more, then it is an error; a worker holds
only the song it runs (so one that dies takes no other with it); and glibc's allocator is left
as it is in the workers (Dask's ``MALLOC_TRIM_THRESHOLD_`` made the engine 25% slower,
BENCHMARKS.md "Batch on Dask")."""


def local_cluster(n_workers: int, memory_limit: str | float = "auto"):
    """An embedded :class:`distributed.LocalCluster` set up for Unmixer.

    ``n_workers`` worker processes of one thread each, each with ``memory_limit`` (bytes, a
    string like "4GB", or "auto": the machine's memory / ``n_workers``; the nanny restarts a
    worker above 95% of it), madmom serial in each (:func:`serial_madmom`, through the
    workers' environment), one task per thread (``worker-saturation`` 1, so a worker that
    dies takes only its own song with it), one retry for a song whose worker died
    (``allowed-failures`` 1) and glibc's own allocator settings (:data:`CLUSTER_CONFIG`). No
    dashboard.

    Raises
    ------
    UnmixerError
        If ``n_workers`` < 1.
    """
    import dask
    from distributed import LocalCluster

    if int(n_workers) < 1:
        raise UnmixerError(f"--workers must be at least 1, not {n_workers}.")
    limit = {} if memory_limit in (None, "auto") else {"memory_limit": memory_limit}
    with dask.config.set(CLUSTER_CONFIG):
        return LocalCluster(n_workers=int(n_workers), threads_per_worker=1, processes=True,
                            dashboard_address=None, env={"UNMIXER_THREADS": "1"}, **limit)


@contextlib.contextmanager
def connect(workers: int | None = None, scheduler: str | None = None,
            memory_limit: str | float = "auto", timeout_s: float = 10.0) -> Iterator:
    """A :class:`distributed.Client` to the cluster that runs the songs: the scheduler at
    ``scheduler`` (``tcp://host:8786``), else a :func:`local_cluster` of ``workers``
    processes (default :func:`default_workers`), closed on exit. Every worker gets the
    Unmixer set-up (:func:`serial_madmom`, as a worker plugin, also for workers that join
    later).

    Raises
    ------
    UnmixerError
        If both are given, the scheduler does not answer within ``timeout_s``, it has no
        worker within 30 s, its workers cannot import Unmixer, or ``workers`` < 1.
    """
    from distributed import Client

    if scheduler and workers:
        raise UnmixerError("Give --workers (a cluster started here) or --scheduler (an existing "
                           "one), not both.")
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{timeout_s}s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as err:
            raise UnmixerError(f"Cannot reach the Dask scheduler at {scheduler}: "
                               f"{' '.join(str(err).split())}") from None
        try:
            client.wait_for_workers(1, timeout=max(timeout_s, 30.0))
        except (OSError, TimeoutError):
            client.close()
            raise UnmixerError(f"The Dask cluster at {scheduler} has no workers; start some "
                               "(README, 'Many machines').") from None
    else:
        cluster = local_cluster(workers or default_workers(), memory_limit)
        client = Client(cluster, set_as_default=False)
    try:
        try:
            client.register_plugin(worker_plugin())
        except Exception as err:
            raise UnmixerError(
                f"The Dask workers cannot run Unmixer ({type(err).__name__}: "
                f"{' '.join(str(err).split())[:200]}); start them from the Unmixer folder with "
                "its set-up (README, 'Many machines').") from None
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _check_paths(song: str, out: str, probe: str) -> str:
    """On a worker: '' when it sees the song and can write into DIR, else why not."""
    if not os.path.isfile(song):
        return f"cannot see {song}"
    if not os.path.isfile(probe):
        return f"cannot see {os.path.dirname(probe)}"
    try:
        with open(os.path.join(out, f"{_TMP}probe-{uuid.uuid4().hex[:8]}"), "w") as f:
            f.write("ok")
        os.unlink(f.name)
    except OSError as err:
        return f"cannot write into {out} ({err.strerror or err})"
    return ""


def _probe(task: SongTask) -> str:
    """A task that only unpacks a :class:`SongTask`: the scheduler and a worker can run
    Unmixer's tasks."""
    return task.settings.key()


def check_cluster(client, task: SongTask, timeout_s: float = 120.0) -> None:
    """Run one tiny task the way the songs will run: the scheduler must be able to read
    Unmixer's tasks (it unpickles them, so it needs the same code and set-up) and a worker
    to run them.

    Raises
    ------
    UnmixerError
        With Dask's reason in one line.
    """
    future = client.submit(_probe, task, pure=False)
    try:
        future.result(timeout=timeout_s)
    except Exception as err:
        raise UnmixerError(f"The Dask cluster cannot run Unmixer's tasks ({_one_line(err)[:200]}); "
                           "start its scheduler and workers from the Unmixer folder with its "
                           "set-up (README, 'Many machines').") from None
    finally:
        future.release()


def check_paths(client, song: Path, out: Path) -> None:
    """Check that every worker sees ``song`` (one file of FOLDER) and can write into
    ``out``, as it must on a shared file system at the same path.

    Raises
    ------
    UnmixerError
        Naming the first worker that cannot.
    """
    probe = out / f"{_TMP}probe-{uuid.uuid4().hex[:8]}"
    probe.write_text("unmixer")
    try:
        answers = client.run(_check_paths, str(song), str(out), str(probe))
    finally:
        probe.unlink()
    for worker, problem in sorted(answers.items()):
        if problem:
            raise UnmixerError(f"Dask worker {worker} {problem}: the song folder and --out must "
                               "be on a file system shared by every machine, at the same path.")


# ---------------------------------------------------------------------------- the batch
RESULT_COLUMNS = ("status", "error", "loops", "bpm", "meter", "key", "bars", "duration_s",
                  *STAGE_COLUMNS, "worker", "worker_peak_mb", "finished")
"""The columns a song's (new) result fills; cleared before it is written."""


@dataclasses.dataclass
class _Plan:
    rows: dict[str, dict]
    todo: list[SongTask]
    changed: bool


def _plan(songs: list[Path], out: Path, rows: dict[str, dict], settings: Settings,
          retry_errors: bool, report: BatchReport, reporter: Reporter) -> _Plan:
    """Hash the songs (reusing the manifest's hash when size and mtime match), find what is
    already done or listed, name the new songs' folders and mark duplicates as skipped."""
    key = settings.key()
    taken = {r["out"].lower() for r in rows.values() if r.get("out")}
    taken |= {p.name.lower() for p in out.iterdir() if p.is_dir()}  # never a stranger's folder
    # sha256 -> the song that has (or will have) the loops of that audio
    first_of = {row["sha256"]: path for path, row in sorted(rows.items())
                if row["settings"] == key and row["status"] == DONE and (out / row["out"]).is_dir()}
    todo, changed = [], False
    for i, path in enumerate(songs):
        reporter.hashing(i, len(songs))
        song = str(path)
        stat = path.stat()
        old = rows.get(song) or {c: "" for c in COLUMNS}
        row = dict(old, song=song)
        unchanged = (old["size_bytes"], old["mtime_ns"]) == (str(stat.st_size),
                                                             str(stat.st_mtime_ns))
        try:
            sha = old["sha256"] if old["sha256"] and unchanged else file_sha256(path)
        except OSError as err:
            sha = ""
            row.update({c: "" for c in RESULT_COLUMNS})
            row.update(status=ERROR, error=f"Cannot open {path}: {err.strerror or err}.",
                       settings=key, finished=_now())
            report.errors += 1
            report.failures.append((song, row["error"]))
        same = old["sha256"] == sha and old["settings"] == key
        if sha and same and old["status"] == DONE and (out / old["out"]).is_dir():
            report.already_done += 1
            first_of.setdefault(sha, song)
        elif sha and same and old["status"] == ERROR and not retry_errors:
            report.already_failed += 1
            first_of.setdefault(sha, song)
        elif sha:
            row.update(sha256=sha, settings=key, size_bytes=str(stat.st_size),
                       mtime_ns=str(stat.st_mtime_ns))
            first = first_of.setdefault(sha, song)
            if first != song:  # the same audio under another path: its loops are made once
                why = f"same audio as {first}"
                if not (same and old["status"] == SKIPPED and old["error"] == why):
                    row.update({c: "" for c in RESULT_COLUMNS})
                    row.update(status=SKIPPED, error=why, finished=_now())
                row["out"] = rows[first]["out"]
                report.skipped += 1
            else:
                if not row["out"]:
                    row["out"] = output_name(path, taken)
                todo.append(SongTask(song, str(out / row["out"]), sha, settings))
        changed |= row != old
        rows[song] = row
    return _Plan(rows, todo, changed)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One batch at a time per DIR (an advisory lock on ``DIR/.lock``)."""
    import fcntl

    with open(out / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UnmixerError(f"Another batch is writing into {out}; wait for it or give "
                               "another --out folder.") from None
        yield


def _clean_temporaries(out: Path) -> None:
    """Remove what interrupted writers left in DIR (temporary and replaced folders)."""
    for path in out.iterdir():
        if path.name.startswith((_TMP, _OLD)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:300]


def run_batch(folder: str | os.PathLike, out: str | os.PathLike, settings: Settings = Settings(),
              *, workers: int | None = None, scheduler: str | None = None,
              memory_limit: str | float = "auto", retry_errors: bool = False,
              reporter: Reporter | None = None,
              task: Callable[[SongTask], dict] = process_song) -> BatchReport:
    """Extract the loops of every song under ``folder`` into ``out``, on Dask.

    Parameters
    ----------
    folder : the music library (walked recursively, :func:`find_songs`)
    out : DIR: one folder per song (the ``extract`` contract) and ``manifest.csv``
    settings : loop count, loop length, seed, longest song
    workers : worker processes of an embedded LocalCluster (default :func:`default_workers`)
    scheduler : address of an existing cluster's scheduler instead (``tcp://host:8786``)
    memory_limit : per worker of the embedded cluster ("4GB", bytes, or "auto")
    retry_errors : also run again the songs listed as errors with the same content and
        settings (a rerun skips them by default)
    reporter : :class:`Reporter`, told about each song as it finishes
    task : the function run per song (:func:`process_song`; tests put a stand-in here)

    Returns
    -------
    BatchReport. Nothing is started (no cluster) when every song is already done or listed.

    Raises
    ------
    UnmixerError
        For bad arguments: no such folder, no audio in it, an unwritable or foreign ``out``,
        another batch writing into ``out``, an unreachable scheduler, workers that cannot
        see the folders. Songs that fail never raise: they are listed in the manifest.
    KeyboardInterrupt
        After writing the manifest of what finished (the same call resumes).
    """
    reporter = reporter or Reporter()
    root = Path(folder).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    if not root.is_dir():
        raise UnmixerError(f"No such folder: {folder}")
    if out.exists() and not out.is_dir():
        raise UnmixerError(f"--out {out} is a file, not a folder.")
    songs = find_songs(root, exclude=out)
    if not songs:
        raise UnmixerError(f"No audio files ({', '.join(e[1:] for e in AUDIO_EXTENSIONS)}) "
                           f"in {root}.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UnmixerError(f"Cannot create {out}: {err.strerror or err}.") from None
    report = BatchReport(found=len(songs), manifest=out / MANIFEST)
    with _locked(out):
        rows = read_manifest(out / MANIFEST)
        plan = _plan(songs, out, rows, settings, retry_errors, report, reporter)
        reporter.planned(report, len(plan.todo))
        try:
            if plan.todo:
                _run(plan, out, report, reporter, task, workers=workers, scheduler=scheduler,
                     memory_limit=memory_limit)
            elif plan.changed:
                write_manifest(out / MANIFEST, plan.rows)
        finally:
            reporter.close()
            _clean_temporaries(out)
    return report


def _run(plan: _Plan, out: Path, report: BatchReport, reporter: Reporter, task, *,
         workers, scheduler, memory_limit) -> None:
    """Submit one task per song, collect the results as they come, keep the manifest."""
    from distributed import as_completed
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    rows = plan.rows
    written = {"at": 0.0, "took": 0.0}

    def save(force: bool = False) -> None:
        now = time.monotonic()
        if force or now - written["at"] >= max(MANIFEST_EVERY_S, 20 * written["took"]):
            write_manifest(out / MANIFEST, rows)
            written.update(at=time.monotonic(), took=time.monotonic() - now)

    save(force=True)  # the skipped duplicates and the plan's errors, before the first song
    report.not_run = report.submitted = len(plan.todo)
    with connect(workers, scheduler, memory_limit) as client:
        check_cluster(client, plan.todo[0])
        check_paths(client, Path(plan.todo[0].path), out)
        by_key = {}
        salt = hashlib.sha256(f"{out}|{plan.todo[0].settings.key()}".encode()).hexdigest()[:8]
        for t in plan.todo:
            by_key[f"{TASK_PREFIX}{t.sha256[:16]}-{salt}"] = t
        lock, lost = threading.Lock(), set()

        def on_event(event) -> None:  # the scheduler's "all" topic: a worker went away
            _time, msg = event
            if not isinstance(msg, dict) or msg.get("action") != "remove-worker" \
                    or msg.get("expected"):
                return
            for key in msg.get("processing-tasks") or ():
                t = by_key.get(key)
                with lock:
                    if t is None or key in lost:
                        continue  # not ours, or its second loss (the error line follows)
                    lost.add(key)
                    report.worker_losses += 1
                reporter.retrying(t.path, f"its Dask worker {msg.get('worker', '')} stopped "
                                          "(killed, or out of memory) while analysing it")

        client.subscribe_topic("all", on_event)
        t0 = time.perf_counter()
        # Songs go to the scheduler as threads free up (at most one per worker thread): a
        # worker then holds only the song it runs, so one that dies takes no other song's try
        # with it (the scheduler's own queue does this only for large batches), and 100 000
        # songs are not 100 000 tasks at once.
        waiting = collections.deque(by_key.items())
        running = as_completed(loop=client.loop)
        in_flight = 0

        def submit_more() -> None:
            nonlocal in_flight
            slots = max(1, sum(client.nthreads().values()))
            while waiting and in_flight < slots:
                key, t = waiting.popleft()
                running.add(client.submit(task, t, key=key, retries=1, pure=False))
                in_flight += 1

        try:
            submit_more()
            for future in running:
                in_flight -= 1
                t = by_key[future.key]
                try:
                    result = future.result()
                except KilledWorker:
                    result = {"status": ERROR, "error": "it stopped its Dask worker twice (out "
                              "of memory, or a crash in the engine); not tried again"}
                except (FutureCancelledError, OSError, TimeoutError):
                    waiting.clear()
                    continue  # the cluster went away: not run, a rerun does it
                except Exception as err:  # a bug, after one retry
                    result = {"status": ERROR, "error": f"internal error: {_one_line(err)}"}
                future.release()
                row = rows[t.path]
                row.update({c: "" for c in RESULT_COLUMNS})
                row.update(result, finished=_now())
                report.not_run -= 1
                if row["status"] == DONE:
                    report.done += 1
                else:
                    report.errors += 1
                    report.failures.append((t.path, row["error"]))
                reporter.finished(t.path, row)
                save()
                submit_more()
        finally:
            report.seconds = time.perf_counter() - t0
            with contextlib.suppress(Exception):
                client.unsubscribe_topic("all")
            save(force=True)
