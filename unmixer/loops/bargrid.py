"""Choosing where the bars (and the loops) start, from the music's own repetition.

madmom's downbeat tracker finds the beats and the meter reliably on loop music, but it can
put the bar line on the wrong beat of the bar (a phase error of 1 to meter − 1 beats), and
with loops longer than a bar the first downbeat need not be where a loop starts. Both
errors cut segments that straddle two states of the layout, and the loop model then needs
more than K loops to explain the cube.

:func:`choose_bar_phase` tries every beat phase of the bar line and every bar offset of the
segments, builds a small spectral cube for each, and keeps the grid on which K loops fit
the segments best: the relative error of a rank-K NMF of the segment-unfolded cube
(Smith & Goto, ICASSP 2018, §2, the NMF form of the loop model).
"""

from __future__ import annotations

import numpy as np

from unmixer.core.audio import SAMPLE_RATE
from unmixer.core.spectrum import HOP_LENGTH
from unmixer.errors import UnmixerError
from unmixer.loops.beats import BeatGrid, grid_from_beats
from unmixer.loops.cube import make_grid, segment_boundaries_s, spectral_cube
from unmixer.loops.ntd import _blas_threads

N_BANDS = 96
"""Frequency bands of the small cube (log-spaced pooling of the STFT bins)."""

STEPS_PER_BEAT = 8
"""Time steps per beat of the small cube."""


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


def loop_fit_error(magnitude: np.ndarray, downbeats_s: np.ndarray, meter: int, loop_bars: int,
                   n_loops: int, *, n_iter: int = 200, sr: int = SAMPLE_RATE,
                   hop_length: int = HOP_LENGTH) -> float:
    """How well K loops explain the segments cut at these downbeats.

    Parameters
    ----------
    magnitude : np.ndarray, shape=(n_bands, n_frames), a (band-pooled) magnitude spectrogram
    downbeats_s : np.ndarray, shape=(n_bars + 1,), s
    meter : int, beats per bar
    loop_bars : int, bars per segment
    n_loops : int, K

    Returns
    -------
    float, ‖X_(3) − W H‖ / ‖X_(3)‖ of a rank-K Euclidean NMF (``n_iter`` multiplicative
    updates from NNDSVDa) of the segment-unfolded cube X_(3) (n_segments, n_bands·n_steps),
    with ``STEPS_PER_BEAT`` steps per beat.
    """
    from unmixer.lab.nmf import beta_nmf

    boundaries = segment_boundaries_s(downbeats_s, loop_bars)
    grid = make_grid(boundaries, sr, hop_length, n_steps=STEPS_PER_BEAT * meter * loop_bars)
    cube = spectral_cube(magnitude, grid)
    X = cube.reshape(-1, cube.shape[2]).T  # (S, bands·steps)
    X = X / max(float(X.max()), 1e-30)
    k = int(min(n_loops, *X.shape))
    fit = beta_nmf(X, k, beta=2.0, n_iter=n_iter, init="nndsvda", tol=0.0, loss_every=n_iter)
    return float(np.linalg.norm(X - fit.W @ fit.H) / max(float(np.linalg.norm(X)), 1e-30))


def choose_bar_phase(grid: BeatGrid, magnitude: np.ndarray, n_loops: int, loop_bars: int, *,
                     duration_s: float | None = None, margin: float = 0.05, sr: int = SAMPLE_RATE,
                     hop_length: int = HOP_LENGTH) -> BeatGrid:
    """The tracker's grid with the bar line and loop start that K loops fit best.

    Every beat phase of the bar line (0 .. meter − 1 beats later) and every bar offset of
    the segments (dropping the first 0 .. loop_bars − 1 bars) is scored with
    :func:`loop_fit_error` on a band-pooled cube, all over the same number of segments; the
    best one wins, and the tracker's own grid is kept unless another fits better by the
    relative ``margin``, or when there are fewer than K + 2 segments to compare.

    Parameters
    ----------
    grid : BeatGrid, from :func:`unmixer.loops.beats.track_beats`
    magnitude : np.ndarray, shape=(n_freq, n_frames), the song's magnitude STFT
        (hop ``hop_length`` samples)
    n_loops : int, K
    loop_bars : int, bars per loop (1, 2 or 4)
    duration_s : float, optional, the song's length (s); default: from the frames
    margin : float, relative error decrease needed to move the tracker's bar line

    Returns
    -------
    BeatGrid; the same object when the tracker's grid is kept. A moved grid starts at the
    chosen loop start, extended back by whole segments while they fit in the song
    (:func:`extend_back`).

    Source: downbeat phase by repetition, in the spirit of bar-synchronous loop models
    (Smith & Goto, ICASSP 2018); candidates scored by NMF fit (Lee & Seung, NIPS 2000).
    """
    if duration_s is None:
        duration_s = magnitude.shape[1] * hop_length / sr
    candidates = []  # (grid, downbeats from the first loop start)
    for shift in range(grid.meter):
        try:
            g = grid if shift == 0 else shifted_grid(grid, shift, duration_s)
        except UnmixerError:
            continue
        candidates += [(g, g.downbeats_s[offset:]) for offset in range(loop_bars)]
    # the same number of segments for every candidate: fewer segments would fit better
    n_seg = min((len(db) - 1) // loop_bars for _, db in candidates)
    if n_seg < max(2, n_loops + 2):  # too few segments to tell the phases apart
        return grid
    bands = _band_pool(magnitude)
    with _blas_threads(1):  # small products: threads only slow them down on busy cores
        errors = [loop_fit_error(bands, db[: n_seg * loop_bars + 1], g.meter, loop_bars, n_loops,
                                 sr=sr, hop_length=hop_length) for g, db in candidates]
    best = int(np.argmin(errors))
    if errors[best] > (1.0 - margin) * errors[0]:
        return grid
    g, db = candidates[best]
    return BeatGrid(g.beats_s, extend_back(db, g.meter, loop_bars), g.meter, g.bpm)


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
