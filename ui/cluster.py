"""The app's analyses on a Dask cluster (issue 17), when ``UNMIXER_SCHEDULER`` is set.

With ``UNMIXER_SCHEDULER=tcp://host:8786`` the app sends each analysis to the Dask
cluster of that scheduler instead of running it in its own process: :func:`extract_loops`
has the signature of :func:`unmixer.loops.pipeline.extract_loops` and :mod:`ui.engine`
calls it in its place (its one hook), so everything around the engine stays as it is: the
jobs de-duplicated by cache key, the disk cache (on the app's machine: it is looked up before
anything is sent and written when the loops come back), the "queued" state, the progress of
each stage, the rough loops and the one-line errors. Without the variable nothing of this
module runs and Dask is not imported.

How the worker talks back while it runs: Dask's structured events. The task logs each stage
and its fraction with ``Worker.log_event`` under the topic :data:`TOPIC`, and the app's client
subscribes to that topic (``Client.subscribe_topic``); the handler hands each event to the
job it belongs to. That is the mechanism Dask itself uses to forward workers' prints and
warnings to the client, maintained and not marked experimental (``distributed.Queue`` and
``Variable`` are; Pub/Sub has been removed from distributed). Events are small (msgpack) and
the scheduler keeps a bounded log of them, so the rough loops (a few MB of clips) do not go
through it: the worker keeps them in its own memory (``scatter`` to itself), publishes them
as a named dataset and logs the name; the app fetches them from the worker and the task
unpublishes them when it ends.

The same key on the cluster is the same task: two app servers (or two users of one) asking
for the same analysis get one computation (:func:`task_key`).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import threading

import numpy as np

from unmixer.errors import UnmixerError

log = logging.getLogger("unmixer.app")

SCHEDULER_ENV = "UNMIXER_SCHEDULER"
"""The environment variable with the scheduler's address (``tcp://host:8786``)."""

TOPIC = "unmixer-analysis"
"""Dask event topic of the analyses' progress (``{"key", "stage", "fraction"}``) and rough
loops (``{"key", "rough": dataset name}``)."""

ANALYSIS_SLOTS = 16
"""Analyses the app sends to the cluster at once (its threads only wait for them; the
cluster's scheduler queues what its workers cannot start yet)."""

CONNECT_TIMEOUT_S = 10.0
QUEUED_AFTER_S = 1.0
"""An analysis no worker has started after this long is shown as waiting for the others."""

_lock = threading.Lock()
_client = None
_client_address = ""
_listeners: dict[str, list["_Listener"]] = {}


def address() -> str:
    """The scheduler's address from ``UNMIXER_SCHEDULER`` ('' when unset)."""
    return os.environ.get(SCHEDULER_ENV, "").strip()


def enabled() -> bool:
    """Whether the analyses go to a Dask cluster."""
    return bool(address())


def analysis_slots() -> int | None:
    """:data:`ANALYSIS_SLOTS` when the analyses go to a cluster, else None."""
    return ANALYSIS_SLOTS if enabled() else None


def client():
    """The app's :class:`distributed.Client` to the scheduler at :func:`address` (one per
    process, made on first use, again if the address changes or the client closed).

    Every worker gets Unmixer's set-up (:func:`unmixer.batch.worker_plugin`), and the client
    subscribes to :data:`TOPIC`.

    Raises
    ------
    UnmixerError
        If the scheduler does not answer within :data:`CONNECT_TIMEOUT_S`, or its workers
        cannot run Unmixer.
    """
    global _client, _client_address
    from distributed import Client

    from unmixer.batch import worker_plugin

    where = address()
    with _lock:
        if _client is not None and _client_address == where and _client.status == "running":
            return _client
        if _client is not None:
            with contextlib.suppress(Exception):
                _client.close()
            _client = None
        try:
            new = Client(where, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as err:
            raise UnmixerError(f"The Dask scheduler at {where} ({SCHEDULER_ENV}) does not "
                               f"answer ({' '.join(str(err).split())[:160]}); start it (README, "
                               f"'Many machines') or unset {SCHEDULER_ENV}.") from None
        try:
            new.register_plugin(worker_plugin())
        except Exception as err:
            new.close()
            raise UnmixerError(f"The Dask workers at {where} cannot run Unmixer "
                               f"({type(err).__name__}); start them from the Unmixer folder "
                               "(README, 'Many machines').") from None
        new.subscribe_topic(TOPIC, _on_event)
        _client, _client_address = new, where
        return new


def close() -> None:
    """Close the app's client, if it has one (at exit, and in tests)."""
    global _client
    with _lock:
        if _client is not None:
            with contextlib.suppress(Exception):
                _client.close()
        _client = None


atexit.register(close)


def task_key(audio: np.ndarray, n_loops, loop_bars: int, seed: int, tracks: bool,
             options: dict) -> str:
    """The Dask key of one analysis: a hash of the decoded audio and every parameter, so the
    same analysis asked twice (by this app or another one on the cluster) is one task."""
    digest = hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).data)
    params = {"n_loops": n_loops, "loop_bars": loop_bars, "seed": seed, "tracks": tracks,
              **options}
    digest.update(json.dumps(params, sort_keys=True, default=str).encode())
    return f"unmixer-analysis-{digest.hexdigest()[:32]}"


class _Listener:
    """One waiting analysis: forwards its events to the job's progress and preview."""

    def __init__(self, progress, preview):
        self.progress, self.preview = progress, preview
        self.started = False
        self.open = True
        self.lock = threading.Lock()

    def stage(self, stage: str, fraction: float) -> None:
        with self.lock:
            self.started = True
            if self.open and self.progress:
                self.progress(stage, fraction)

    def queued(self) -> None:
        with self.lock:
            if self.open and not self.started and self.progress:
                self.progress("queued", 0.0)

    def rough(self, name: str) -> None:
        """Fetch the rough loops the worker published (from the worker, not the scheduler)."""
        if self.preview is None:
            return
        try:
            rough = _client.get_dataset(name).result(timeout=60)
        except Exception:  # unpublished already: the final loops are there
            return
        with self.lock:
            if self.open:
                self.preview(rough)

    def close(self) -> None:
        with self.lock:
            self.open = False


def _on_event(event) -> None:
    """Runs on the client's event loop: hand the event to its analysis, without blocking."""
    _time, msg = event
    if not isinstance(msg, dict):
        return
    for listener in list(_listeners.get(msg.get("key"), ())):
        if "rough" in msg:
            threading.Thread(target=listener.rough, args=(msg["rough"],), daemon=True,
                             name="unmixer-rough").start()
        elif "stage" in msg:
            listener.stage(str(msg["stage"]), float(msg.get("fraction", 0.0)))


WORKER_BACK_S = 60.0
"""How long an analysis whose worker died waits for a worker (its nanny's new one) before it
is tried again, s."""


def _a_worker_within(c, timeout_s: float) -> bool:
    try:
        c.wait_for_workers(1, timeout=timeout_s)
        return True
    except Exception:  # TimeoutError, or the scheduler is gone too
        return False


def extract_loops(audio: np.ndarray, n_loops: int | str = 5, *, loop_bars: int = 2,
                  seed: int = 0, progress=None, preview=None, tracks: bool = True, **options):
    """:func:`unmixer.loops.pipeline.extract_loops` run on the Dask cluster.

    Same parameters and result (an :class:`unmixer.loops.pipeline.Extraction`); ``progress``
    and ``preview`` are called here as the worker reports (from Dask's threads), ``progress``
    with "queued" first when no worker takes the task within :data:`QUEUED_AFTER_S`. Blocks
    until the loops are back.

    Raises
    ------
    UnmixerError
        What the engine raises for bad input; and when the cluster cannot be reached, has no
        workers, lost the task, or the analysis stopped its worker twice. A worker lost once
        (with the song's samples, which live on one worker) costs one new try.
    """
    from distributed import KilledWorker
    from distributed.client import FutureCancelledError

    c = client()
    if not c.scheduler_info().get("workers"):
        raise UnmixerError(f"The Dask cluster at {address()} has no workers; start some "
                           "(README, 'Many machines').")
    key = task_key(audio, n_loops, loop_bars, seed, tracks, options)
    listener = _Listener(progress, preview)
    with _lock:
        _listeners.setdefault(key, []).append(listener)
    timer = threading.Timer(QUEUED_AFTER_S, listener.queued)
    data = future = None
    try:
        timer.start()
        for attempt in range(2):
            # the song's samples go to a worker once (scattered), not through the scheduler;
            # when that worker dies they are lost with it and Dask cancels the task: scattered
            # again and submitted once more (issue 18, worker faults)
            [data] = c.scatter([np.asarray(audio, dtype=np.float32)], hash=False)
            future = c.submit(analyse_on_worker, data, n_loops, loop_bars, seed, tracks, key,
                              preview is not None, options, pure=False,
                              key=key if attempt == 0 else f"{key}-again")
            try:
                return future.result()
            except KilledWorker:
                raise UnmixerError("The analysis stopped its Dask worker twice (out of memory, or "
                                   "a crash); try a shorter song or fewer loops.") from None
            except FutureCancelledError:
                for f in (future, data):
                    with contextlib.suppress(Exception):
                        f.release()
                future = data = None
                if attempt == 0 and _a_worker_within(c, WORKER_BACK_S):
                    continue
                if attempt == 0:
                    raise UnmixerError("The Dask cluster dropped this analysis (its scheduler "
                                       "restarted?); add the song again.") from None
                raise UnmixerError("The analysis lost its Dask worker twice (out of memory, or a "
                                   "crash); try a shorter song or fewer loops.") from None
    finally:
        timer.cancel()
        listener.close()
        with _lock:
            waiting = _listeners.get(key, [])
            if listener in waiting:
                waiting.remove(listener)
            if not waiting:
                _listeners.pop(key, None)
        for f in (future, data):
            if f is not None:
                with contextlib.suppress(Exception):
                    f.release()


def analyse_on_worker(audio: np.ndarray, n_loops, loop_bars: int, seed: int, tracks: bool,
                      key: str, rough: bool, options: dict):
    """The task on a worker: :func:`unmixer.loops.pipeline.extract_loops` with madmom serial
    (:func:`unmixer.batch.serial_madmom`), its progress and (if ``rough``) its rough loops
    reported under :data:`TOPIC` (see the module docstring)."""
    from distributed import get_client, get_worker

    from unmixer.batch import serial_madmom

    serial_madmom()
    from unmixer.loops.pipeline import extract_loops as engine

    worker = get_worker()
    last = {"stage": None, "fraction": -1.0}

    def progress(stage: str, fraction: float) -> None:
        if stage == last["stage"] and fraction < 1.0 and fraction - last["fraction"] < 0.02:
            return  # a few dozen events per song, not one per NTD iteration
        last.update(stage=stage, fraction=fraction)
        worker.log_event(TOPIC, {"key": key, "stage": stage, "fraction": float(fraction)})

    published = []

    def preview(rough) -> None:
        name = f"{key}-rough"
        workers_client = get_client()
        [kept] = workers_client.scatter([rough], workers=[worker.address], hash=False)
        workers_client.publish_dataset(kept, name=name, override=True)
        published.append(name)
        worker.log_event(TOPIC, {"key": key, "rough": name})

    try:
        return engine(audio, n_loops, loop_bars=loop_bars, seed=seed, progress=progress,
                      preview=preview if rough else None, tracks=tracks, **options)
    finally:
        for name in published:
            with contextlib.suppress(Exception):
                get_client().unpublish_dataset(name)
