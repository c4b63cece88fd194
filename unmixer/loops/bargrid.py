"""Finding the bar grid and the loop length from the music's own repetition.

madmom's downbeat tracker finds beats reliably on loop music, but its grid can be wrong in
ways that ruin a bar-synchronous loop model: bar lines on the off-beats (half a beat late),
on the wrong beat of the bar, the tempo doubled or halved (every "bar" half a bar, or two),
3/4 taken for 4/4, the first bars missed. And the loop length (1, 2 or 4 bars) is the
song's, not a setting's. Each of these cuts segments that straddle two states of the
layout or that do not repeat, and the loop model then collapses.

:func:`search_grid` treats all of them as one question: where do the segments lie? Every
hypothesis (tempo octave ×½ / ×1 / ×2 of the tracker's beat, meter 3 or 4, loop length 1, 2
or 4 bars, and a start on any half-beat: beat phase, half-beat offset and bar offset at
once) cuts the song into segments of N half-beats of the tracker's beats, starting at
half-beat o. All of them cut the **same** half-beat-synchronous spectrogram (:func:`half_beat_rows`),
so they explain the same spectrogram cells, and each is scored by how well a rank-K model
of its segment matrix (the loop model of Smith & Goto, ICASSP 2018, §2: every segment a
mix of K loop templates) predicts held-out cells of held-out segments: the relative
bi-cross-validation error of a rank-K SVD (Owen & Perry, Annals of Applied Statistics 2009).
A segmentation that straddles layout changes or does not repeat predicts badly; a right one
predicts well with few templates, and held-out cells keep the longer and the shorter
segmentations honest (more cells per template vs. more examples per template).

The bi-cross-validation is computed in closed form from two Gram matrices of the
half-beat rows (one for the fitting cells, one for the held-out cells): every hypothesis's
segment Gram matrix is a sum along a diagonal of the half-beat Gram matrix, so scoring all
~200 hypotheses costs a few eigendecompositions of segment-sized matrices each.

Between hypotheses that predict equally well (within :data:`TIE`), which can only differ in
how the same segments are named, the tracker's tempo is kept unless another octave is far
more plausible (:func:`tempo_cost`), and 2-bar loops are preferred to 1-bar and 4-bar ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unmixer.core.audio import SAMPLE_RATE
from unmixer.core.spectrum import HOP_LENGTH
from unmixer.loops import AUTO, LOOP_BARS
from unmixer.loops.beats import BeatGrid, grid_from_beats
from unmixer.loops.cube import make_grid, spectral_cube
from unmixer.loops.ntd import _blas_threads

N_BANDS = 96
"""Frequency bands of the small cubes (log-spaced pooling of the STFT bins), as used by
:mod:`unmixer.loops.loopcount`."""

SEARCH_BANDS = 48
"""Frequency bands of the half-beat rows the grid search scores."""

STEPS_PER_HALF_BEAT = 3
"""Time steps per half-beat of the half-beat rows."""

MAX_HALF_BEATS = 1024
"""The grid search looks at most at this many half-beats (the middle of a long song: about
4 minutes at 120 BPM); the grid it finds is extended over the whole song."""

METERS = (3, 4)
BEAT_FACTORS = (0.5, 1.0, 2.0)
"""Tempo octaves tried: the song's beat as a multiple of the tracker's beat period."""

TIE = 0.1
"""Hypotheses whose held-out error is within this fraction of the best are tied."""

REFERENCE_BPM = 115.0
"""Centre of the tempo plausibility (:func:`tempo_cost`)."""

OCTAVE_SWITCH = 0.5
"""Octaves (log2) by which another tempo octave must be more plausible than the tracker's."""

TEMPO_RANGE_BPM = (50.0, 220.0)
"""Tempi another octave may be read at (madmom's DBN tracks 55 to 215 BPM); the tracker's own
tempo is always readable. Without it, a forced loop length on a short song could be read as
half of it at twice the tempo (an 8-bar song at 162 BPM became 2-bar loops at 324 BPM)."""

LENGTH_PREFERENCE = (2, 1, 4)
"""Loop lengths in order of preference between tied hypotheses."""

MIN_SEGMENTS = 4
"""Fewest segments a hypothesis needs to be scored (besides K + 2)."""

SEGMENT_S = (1.0, 20.0)
"""Shortest and longest segment scored (s): half a bar of fast 4/4 to 4 bars at 50 BPM."""


def _band_pool(magnitude: np.ndarray, n_bands: int = N_BANDS) -> np.ndarray:
    """Sum STFT bins into ``n_bands`` log-spaced bands, shape=(n_bands, n_frames)."""
    F = magnitude.shape[0]
    edges = np.unique(np.round(np.geomspace(1, F, n_bands + 1)).astype(int))
    edges[0] = 0
    return np.add.reduceat(np.asarray(magnitude, dtype=np.float32), edges[:-1], axis=0)


def shifted_grid(grid: BeatGrid, shift_beats: int, duration_s: float) -> BeatGrid:
    """The grid with every bar line moved ``shift_beats`` beats later (same beats and meter).

    Raises
    ------
    UnmixerError
        If the shifted grid has fewer than 4 bars (from :func:`unmixer.loops.beats.grid_from_beats`).
    """
    beats = np.asarray(grid.beats_s, dtype=np.float64)
    first = int(np.argmin(np.abs(beats - grid.downbeats_s[0])))
    numbers = (np.arange(len(beats)) - first - shift_beats) % grid.meter + 1
    return grid_from_beats(beats, numbers, duration_s)


# ----------------------------------------------------------------------------- half-beat rows

def half_beat_times(beats_s: np.ndarray, duration_s: float) -> np.ndarray:
    """The tracker's beats and the midpoints between them, continued at the median period
    to the start and the end of the song.

    Parameters
    ----------
    beats_s : np.ndarray, shape=(n_beats,), s, increasing, at least 2
    duration_s : float, s

    Returns
    -------
    np.ndarray, shape=(n_half + 1,), s, increasing, within [0, duration_s]: half-beat h spans
    ``times[h]`` to ``times[h + 1]``.
    """
    b = np.asarray(beats_s, dtype=np.float64)
    half = float(np.median(np.diff(b))) / 2
    inner = np.sort(np.concatenate([b, 0.5 * (b[:-1] + b[1:])]))
    before = inner[0] - half * np.arange(int(inner[0] / half + 1e-9), 0, -1)
    after = inner[-1] + half * np.arange(1, int((duration_s - inner[-1]) / half + 1e-9) + 1)
    return np.concatenate([before, inner, after])


STEADY_HALF_BEATS = 17
"""Half-beats in the local straight-line fit that steadies the half-beat times the search
scores on (:func:`steady_times`): 9 beats."""


def steady_times(times_s: np.ndarray, window: int = STEADY_HALF_BEATS) -> np.ndarray:
    """Half-beat times with the tracker's jitter smoothed out, for scoring only.

    Each time is replaced by a least-squares straight line (time against half-beat number)
    through the ``window`` half-beats around it (a first-order Savitzky-Golay filter), so a
    steady tempo becomes an exactly regular grid and slow tempo changes are kept. madmom's
    beats lie within about 10 ms (one STFT frame) of the true ones, but that jitter raised the
    held-out error of every segmentation about 20-fold on a generated song (0.041 against
    0.002 for the same segments) and let wrong bar lines win. The search scores segmentations
    on these times and cuts the chosen one on the tracker's own times (whose beats follow the
    music's onsets: bar lines cut on the steadied times separated worse, bench/grid.py).

    Parameters
    ----------
    times_s : np.ndarray, shape=(n,), s, increasing (from :func:`half_beat_times`)
    window : int, odd, half-beats per fit

    Returns
    -------
    np.ndarray, shape=(n,), s, increasing; the input itself when it is shorter than
    ``window`` or the fit would not increase.

    Source: Savitzky & Golay, Anal. Chem. 36(8), 1964 (order 1).
    """
    from scipy.signal import savgol_filter

    t = np.asarray(times_s, dtype=np.float64)
    if len(t) < window:
        return t
    smooth = savgol_filter(t, window, 1, mode="interp")
    return smooth if np.all(np.diff(smooth) > 0) else t


def half_beat_rows(magnitude: np.ndarray, times_s: np.ndarray, *, n_bands: int = SEARCH_BANDS,
                   steps: int = STEPS_PER_HALF_BEAT, sr: int = SAMPLE_RATE,
                   hop_length: int = HOP_LENGTH) -> np.ndarray:
    """The spectrogram resampled to ``steps`` steps per half-beat, one row per half-beat.

    Parameters
    ----------
    magnitude : np.ndarray, shape=(n_freq, n_frames), magnitude STFT (hop ``hop_length``)
    times_s : np.ndarray, shape=(n_half + 1,), s, from :func:`half_beat_times`

    Returns
    -------
    np.ndarray, float32, shape=(n_half, n_bands · steps), max 1: row h holds half-beat h
    (log-spaced bands × steps), so a segment of N half-beats from half-beat o is the
    concatenation of rows o .. o + N − 1.

    Source: the bar-synchronous cube of Smith & Goto (ICASSP 2018, §2) at half-beat
    resolution (:func:`unmixer.loops.cube.spectral_cube` with half-beats as segments).
    """
    grid = make_grid(times_s, sr, hop_length, n_steps=steps)
    cube = spectral_cube(_band_pool(magnitude, n_bands), grid)  # (bands, steps, n_half)
    rows = np.ascontiguousarray(np.moveaxis(cube, 2, 0).reshape(cube.shape[2], -1))
    return rows / max(float(rows.max(initial=0.0)), 1e-30)


class HeldoutScorer:
    """Bi-cross-validation errors of rank-K segment models, for any segmentation of the rows.

    The cells of every half-beat row are split once into fitting and held-out columns
    (random halves, seeded); the Gram matrices of the rows over each half, R = Y_J Y_Jᵀ, and
    their cumulative sums along every diagonal are computed once (O(n² · cells)). The Gram
    matrix of the segments of N half-beats from half-beat o is then
    G[s, t] = Σ_{j<N} R[o + sN + j, o + tN + j], a difference of two cumulative sums.

    Parameters
    ----------
    rows : np.ndarray, shape=(n_half, n_cells), nonnegative (:func:`half_beat_rows`)
    seed : int, seed of the column split and of the folds
    """

    def __init__(self, rows: np.ndarray, seed: int = 0):
        rows = np.asarray(rows, dtype=np.float64)
        self.n = rows.shape[0]
        self.seed = int(seed)
        held = np.random.default_rng(seed).random(rows.shape[1]) < 0.5
        self._fit = self._diagonal_sums(rows[:, ~held])
        self._held = self._diagonal_sums(rows[:, held])
        self._fold_cache: dict[tuple[int, int], list] = {}

    def _diagonal_sums(self, Y: np.ndarray) -> np.ndarray:
        """C[d, i] = Σ_{i' < i} R[i', i' + d] for R = Y Yᵀ, shape=(n, n + 1) (0 where undefined)."""
        n = self.n
        padded = np.zeros((n, 2 * n))
        padded[:, :n] = Y @ Y.T
        # diag[d, i] = padded[i, i + d] (0 past the end): a strided view, no index arrays
        step = padded.strides[1]
        diag = np.lib.stride_tricks.as_strided(padded, shape=(n, n), strides=(step, step * (2 * n + 1)),
                                               writeable=False)
        out = np.zeros((n, n + 1))
        np.cumsum(diag, axis=1, out=out[:, 1:])
        return out

    def _grams(self, C: np.ndarray, N: int, offsets: np.ndarray, S: int) -> np.ndarray:
        """Segment Gram matrices of S segments of N half-beats from each offset,
        shape=(len(offsets), S, S), from the diagonal cumulative sums C."""
        s, t = np.triu_indices(S)
        a = offsets[:, None] + s[None, :] * N  # (O, pairs): first half-beat of segment s
        lag = ((t - s) * N)[None, :]
        G = np.zeros((len(offsets), S, S))
        G[:, s, t] = C[lag, a + N] - C[lag, a]
        return G + np.triu(G, 1).transpose(0, 2, 1)

    def errors(self, N: int, offsets: np.ndarray, k: int, n_folds: int = 4) -> np.ndarray:
        """Relative held-out error of rank-k models of the segments of N half-beats from each
        offset (half-beats), shape=(len(offsets),): from each, all the S = (n − o) // N
        segments that fit; offsets with the same S share one batched eigendecomposition per
        fold (the same figures as one offset at a time).

        ‖X_IJ − X̂_IJ‖² summed over the folds I of segments and the held-out cells J, over
        ‖X_J‖², with X̂_IJ = X_{I,J^c} (X_{I^c,J^c})⁺_k X_{I^c,J} (Owen & Perry 2009, eq. 3.2),
        computed from the segment Gram matrices only. inf when fewer than
        max(MIN_SEGMENTS, k + 2) segments fit.
        """
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
        out = np.full(len(offsets), np.inf)
        counts = (self.n - offsets) // N
        for S in np.unique(counts):
            if S >= max(MIN_SEGMENTS, k + 2):
                same = counts == S
                out[same] = self._errors(N, offsets[same], int(S), k, n_folds)
        return out

    def _errors(self, N: int, offsets: np.ndarray, S: int, k: int, n_folds: int) -> np.ndarray:
        """:meth:`errors` of offsets that all have S segments."""
        G, H = self._grams(self._fit, N, offsets, S), self._grams(self._held, N, offsets, S)
        err = np.zeros(len(offsets))
        for I, rest in self._folds(S, n_folds):
            lam, U = np.linalg.eigh(G[:, rest[:, None], rest])  # ascending, batched over offsets
            lam, U = lam[:, ::-1][:, :k], U[:, :, ::-1][:, :, :k]
            keep = lam > np.maximum(lam[:, :1], 1e-300) * 1e-9
            inv = np.where(keep, 1.0 / np.where(keep, lam, 1.0), 0.0)
            M = (G[:, I[:, None], rest] @ U) * inv[:, None, :] @ U.transpose(0, 2, 1)  # (O, |I|, |rest|)
            err += (np.trace(H[:, I[:, None], I], axis1=1, axis2=2)
                    - 2 * np.sum(M * H[:, I[:, None], rest], axis=(1, 2))
                    + np.sum((M @ H[:, rest[:, None], rest]) * M, axis=(1, 2)))
        total = np.maximum(np.trace(H, axis1=1, axis2=2), 1e-300)
        return np.maximum(err, 0.0) / total

    def error(self, N: int, o: int, k: int, n_folds: int = 4) -> float:
        """:meth:`errors` of one offset o (all the segments that fit from it)."""
        return float(self.errors(N, np.array([o]), k, n_folds)[0])

    def _folds(self, S: int, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(held-out, training) segment indices of each fold: a seeded random split into
        ``n_folds`` parts, the same for every hypothesis with S segments."""
        key = (S, n_folds)
        if key not in self._fold_cache:
            order = np.random.default_rng([self.seed, S]).permutation(S)
            self._fold_cache[key] = [(np.sort(I), np.sort(np.setdiff1d(order, I)))
                                     for I in np.array_split(order, min(n_folds, S))]
        return self._fold_cache[key]


# ----------------------------------------------------------------------------- hypotheses

@dataclass(frozen=True)
class GridChoice:
    """The grid the search chose, and why.

    Attributes
    ----------
    grid : BeatGrid, beats and bar lines of the chosen reading (the first bar line starts a
        segment; earlier whole segments are prepended, :func:`extend_back`)
    loop_bars : int, bars per segment (and per loop)
    half_beats : int, N, segment length in half-beats of the tracker's beats
    offset : int, o, the half-beat where a segment starts (in the searched window)
    beat_factor : float, the song's beat as a multiple of the tracker's beat (½, 1, 2)
    error : float, relative held-out error of the chosen segmentation
    tracker_error : float, the same for the tracker's own reading (inf if not scored)
    n_scored : int, hypotheses scored
    """

    grid: BeatGrid
    loop_bars: int
    half_beats: int
    offset: int
    beat_factor: float
    error: float
    tracker_error: float
    n_scored: int

    def describe(self, tracked: BeatGrid) -> str:
        """One line: how the chosen grid differs from the tracker's (or that it does not)."""
        if self.n_scored == 0:
            return "as tracked (too few bars to search)"
        changes = []
        if self.beat_factor != 1:
            changes.append(f"tempo {tracked.bpm:.0f} -> {self.grid.bpm:.0f} BPM")
        if self.grid.meter != tracked.meter:
            changes.append(f"{tracked.meter}/4 -> {self.grid.meter}/4")
        beat = 60.0 / tracked.bpm
        shift = _phase_shift_beats(tracked, self.grid, beat)
        if shift:
            changes.append("bar lines moved " + ("half a beat" if shift == 0.5 else f"{shift:g} beats"
                                                 if shift != 1 else "1 beat"))
        return "; ".join(changes) if changes else "as tracked"


def _phase_shift_beats(tracked: BeatGrid, chosen: BeatGrid, beat: float) -> float:
    """How far (in the tracker's beats, to half a beat) the chosen bar lines lie from the
    tracker's nearest ones (0 when they coincide)."""
    t = np.asarray(tracked.downbeats_s)
    c = np.asarray(chosen.downbeats_s)
    mid = c[len(c) // 2]
    nearest = t[np.argmin(np.abs(t - mid))]
    return round(2 * abs(mid - nearest) / beat) / 2


def tempo_cost(bpm: float, beat_factor: float) -> float:
    """Plausibility cost of a tempo reading: |log2(bpm / REFERENCE_BPM)|, plus
    :data:`OCTAVE_SWITCH` when it is not the tracker's own octave (beat_factor ≠ 1)."""
    return abs(np.log2(bpm / REFERENCE_BPM)) + (0.0 if beat_factor == 1 else OCTAVE_SWITCH)


def plausible(bpm: float, beat_factor: float, tracker_bpm: float | None = None) -> bool:
    """Whether a reading's tempo may be chosen: the tracker's own (``beat_factor`` 1), or
    another octave inside :data:`TEMPO_RANGE_BPM` that is nearer :data:`REFERENCE_BPM` than
    the tracker's tempo (``tracker_bpm``, BPM) in octaves. Segments that only a tempo further
    from it could read are left to the loop length: a forced 2-bar length on 1-bar loops at
    103 BPM must not read them as 2 bars at 206 BPM, which would make the deck play them at
    half speed."""
    if beat_factor == 1:
        return True
    if not TEMPO_RANGE_BPM[0] <= bpm <= TEMPO_RANGE_BPM[1]:
        return False
    return tracker_bpm is None or abs(np.log2(bpm / REFERENCE_BPM)) < abs(np.log2(tracker_bpm / REFERENCE_BPM))


def readings(half_beats: int, loop_bars: int | str = AUTO,
             tracker_bpm: float | None = None) -> list[tuple[int, int, float]]:
    """Every (meter, loop_bars, beat_factor) whose segment lasts ``half_beats`` half-beats of
    the tracker's beats: 2 · meter · loop_bars · beat_factor = half_beats; with
    ``tracker_bpm`` (BPM), only those whose tempo (tracker_bpm / beat_factor) is
    :func:`plausible`."""
    lengths = LOOP_BARS if loop_bars == AUTO else (int(loop_bars),)
    return [(m, L, f) for m in METERS for L in lengths for f in BEAT_FACTORS
            if abs(2 * m * L * f - half_beats) < 1e-9
            and (tracker_bpm is None or plausible(tracker_bpm / f, f, tracker_bpm))]


def segment_lengths(loop_bars: int | str = AUTO) -> list[int]:
    """The segment lengths (half-beats) some reading allows, increasing."""
    return sorted({int(round(2 * m * L * f)) for m in METERS for f in BEAT_FACTORS
                   for L in (LOOP_BARS if loop_bars == AUTO else (int(loop_bars),))})


def _reading_grid(times: np.ndarray, o: int, meter: int, loop_bars: int, factor: float,
                  duration_s: float) -> BeatGrid:
    """The BeatGrid of a reading: beats every 2·factor half-beats through half-beat o, bar
    lines every ``meter`` beats from o, whole segments prepended before o."""
    step = int(round(2 * factor))
    beats = times[o % step::step]
    first = (o - o % step) // step  # the beat at half-beat o
    numbers = (np.arange(len(beats)) - first) % meter + 1
    grid = grid_from_beats(beats, numbers, duration_s)
    downbeats = grid.downbeats_s[grid.downbeats_s >= times[o] - 1e-6]
    return BeatGrid(grid.beats_s, extend_back(downbeats, meter, loop_bars), meter, grid.bpm)


def search_grid(magnitude: np.ndarray, tracked: BeatGrid, n_loops: int,
                loop_bars: int | str = AUTO, *, fixed_bar_lines: bool = False,
                duration_s: float | None = None, seed: int = 0,
                sr: int = SAMPLE_RATE, hop_length: int = HOP_LENGTH) -> GridChoice:
    """The bar grid and loop length the song supports best (see the module docstring).

    Parameters
    ----------
    magnitude : np.ndarray, shape=(n_freq, n_frames), the song's magnitude STFT
    tracked : BeatGrid, the downbeat tracker's grid (its beats and tempo are the start)
    n_loops : int, K, the rank of the loop model
    loop_bars : 1, 2, 4 or "auto": the loop length, or let the song choose
    fixed_bar_lines : bool, the bar lines are known (e.g. given downbeats): only the loop
        length is chosen, segments starting on the first bar line
    duration_s : float, optional, the song's length (s); default: from the frames
    seed : int

    Returns
    -------
    GridChoice; its ``grid`` is a new BeatGrid (the tracker's bar lines when they win). When
    no reading leaves enough segments to score (a short song, a long forced loop length),
    the tracker's own reading, unscored (``n_scored`` 0, ``error`` NaN).

    Source: the loop model's segment matrix (Smith & Goto, ICASSP 2018, §2) scored by
    bi-cross-validation of a rank-K SVD (Owen & Perry, Ann. Appl. Stat. 2009, §3).
    """
    if duration_s is None:
        duration_s = magnitude.shape[1] * hop_length / sr
    times = half_beat_times(tracked.beats_s, duration_s)
    n = len(times) - 1
    start = max(0, (n - MAX_HALF_BEATS) // 2)
    start -= start % 4  # keeps beat parity and the tracker's bar phase readable
    window = times[start:start + MAX_HALF_BEATS + 1]
    steady = steady_times(times)[start:start + MAX_HALF_BEATS + 1]  # scored on; cut on `times`
    scorer = HeldoutScorer(half_beat_rows(magnitude, steady, sr=sr, hop_length=hop_length), seed)
    k = max(1, int(n_loops))
    # the tracker's own reading: its bar lines, one segment per loop_bars (2 when auto)
    tracker_L = 2 if loop_bars == AUTO else int(loop_bars)
    tracker_N = 2 * tracked.meter * tracker_L
    inside = tracked.downbeats_s[(tracked.downbeats_s >= window[0] - 1e-6) & (tracked.downbeats_s <= window[-1])]
    first_bar = int(np.argmin(np.abs(window - inside[0]))) if len(inside) else 0
    if fixed_bar_lines:  # only the loop length: segments of L known bars from the first bar line
        lengths = LOOP_BARS if loop_bars == AUTO else (int(loop_bars),)
        hypotheses = [(2 * tracked.meter * L, first_bar) for L in lengths]
    else:
        half_s = float(np.median(np.diff(window)))
        lengths = [N for N in segment_lengths(loop_bars) if SEGMENT_S[0] <= N * half_s <= SEGMENT_S[1]
                   and readings(N, loop_bars, tracked.bpm)]
        hypotheses = [(N, o) for N in lengths for o in range(min(N, scorer.n))]
    scored = []  # (error, N, o)
    with _blas_threads(1):  # many small eigendecompositions: threads only slow them down
        by_length: dict[int, list[int]] = {}
        for N, o in hypotheses:
            by_length.setdefault(N, []).append(o)
        for N, offsets in by_length.items():
            errs = scorer.errors(N, np.array(offsets), k)
            scored += [(float(e), N, o) for e, o in zip(errs, offsets) if np.isfinite(e)]
        tracker_error = scorer.error(tracker_N, first_bar % tracker_N, k)
    if not scored:  # too few segments to score anything: the tracker's reading, unscored
        return GridChoice(tracked, tracker_L, tracker_N, first_bar % tracker_N, 1.0,
                          float("nan"), tracker_error, 0)
    best = min(e for e, _, _ in scored)
    candidates = []
    for e, N, o in scored:
        if e > best * (1 + TIE) + 1e-12:
            continue
        for m, L, f in readings(N, loop_bars, tracked.bpm):
            if fixed_bar_lines and (m, f) != (tracked.meter, 1.0):
                continue
            bpm = tracked.bpm / f
            tracker_phase = (N == tracker_N and o % N == first_bar % N)
            key = (round(tempo_cost(bpm, f), 6), LENGTH_PREFERENCE.index(L) if L in LENGTH_PREFERENCE else 9,
                   not tracker_phase, e)
            candidates.append((key, e, N, o, m, L, f))
    _, e, N, o, m, L, f = min(candidates)
    grid = _reading_grid(times, start + o, m, L, f, duration_s)
    return GridChoice(grid, L, N, o, f, e, tracker_error, len(scored))


def extend_back(downbeats_s: np.ndarray, meter: int, loop_bars: int) -> np.ndarray:
    """Prepend whole segments of ``loop_bars`` bars (median bar length) while they start at or
    after 0 s (within a tenth of a beat; such a first bar line is moved to 0 s), so the music
    before the first loop start gets its own segments instead of repeating the first one's.

    Parameters
    ----------
    downbeats_s : np.ndarray, shape=(n_bars + 1,), s

    Returns
    -------
    np.ndarray, shape=(n_bars + 1 + m·loop_bars,), s, increasing, the first entry ≥ 0
    """
    db = np.asarray(downbeats_s, dtype=np.float64)
    bar = float(np.median(np.diff(db)))
    m = int(np.floor((db[0] + 0.1 * bar / meter) / (bar * loop_bars)))
    if m <= 0:
        return db
    before = db[0] - bar * np.arange(m * loop_bars, 0, -1)
    return np.concatenate([np.maximum(before, 0.0), db])  # a first bar line a hair before 0 s starts at 0
