"""Choosing the number of loops K from the song ("auto" in the app and the CLI).

The loop model explains the segment-unfolded cube X_(3) (n_segments, n_freq·n_steps) as
D P: every segment is a nonnegative mix of K loop templates (Smith & Goto, ICASSP 2018, §2,
the NMF form of the loop model). K is chosen by bi-cross-validation of that NMF (Owen &
Perry, Annals of Applied Statistics 2009; with NMF: Kanagal & Sindhwani, NIPS workshop
2010): the segments are split into folds, and for every K the templates P are learned from
the other folds' segments, the held-out segments' activations from half of the cells, and
the held-out segments' other half of the cells is predicted. Too few loops cannot predict
the held-out segments; more loops than the music holds only fit the training segments'
noise, so the held-out error stops falling. K is the smallest count whose held-out error
has come within ``tolerance`` (8%) of the whole drop from one loop to the best count.

Measured on generated songs with ground truth and the two real songs in
``bench/RESULTS_loopcount.md`` (``bench/loopcount.py``).
"""

from __future__ import annotations

import numpy as np

from unmixer.core.audio import SAMPLE_RATE
from unmixer.core.spectrum import HOP_LENGTH
from unmixer.errors import UnmixerError
from unmixer.loops import AUTO  # noqa: F401  (re-exported: the value that asks for this module)
from unmixer.loops.bargrid import _band_pool
from unmixer.loops.cube import make_grid, segment_boundaries_s, spectral_cube
from unmixer.loops.ntd import _blas_threads

K_MIN, K_MAX = 2, 10
"""The range of loop counts :func:`estimate_loop_count` chooses from."""

STEPS_PER_BEAT = 4
"""Time steps per beat of the small cube the count is estimated on."""

TOLERANCE = 0.08
"""Share of the held-out error's drop (one loop -> best count) left to the chosen count."""


def segment_matrix(magnitude: np.ndarray, downbeats_s: np.ndarray, meter: int, loop_bars: int, *,
                   sr: int = SAMPLE_RATE, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """The small segment-unfolded cube X_(3) the loop count is estimated on.

    Parameters
    ----------
    magnitude : np.ndarray, shape=(n_freq, n_frames), magnitude STFT (hop ``hop_length``
        samples at ``sr`` Hz)
    downbeats_s : np.ndarray, shape=(n_bars + 1,), s
    meter : int, beats per bar
    loop_bars : int, bars per segment (1, 2 or 4)

    Returns
    -------
    np.ndarray, float32, shape=(n_segments, n_bands·n_steps), nonnegative, max 1: the
    cube of :func:`unmixer.loops.cube.spectral_cube` on log-spaced bands
    (:data:`unmixer.loops.bargrid.N_BANDS`) with :data:`STEPS_PER_BEAT` steps per beat.

    Raises
    ------
    UnmixerError
        If fewer than 2 segments fit (from :func:`unmixer.loops.cube.segment_boundaries_s`).

    Source: Smith & Goto, ICASSP 2018, §2 (the cube and its segment unfolding).
    """
    boundaries = segment_boundaries_s(downbeats_s, loop_bars)
    grid = make_grid(boundaries, sr, hop_length, n_steps=STEPS_PER_BEAT * meter * loop_bars)
    cube = spectral_cube(_band_pool(magnitude), grid)
    X = cube.reshape(-1, cube.shape[2]).T
    return X / max(float(X.max(initial=0.0)), 1e-30)


def _nmf(V: np.ndarray, k: int, n_iter: int, rng: np.random.Generator,
         templates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean multiplicative-update NMF V (S, N) ≈ A (S, k) P (k, N); P fixed if given."""
    S, N = V.shape
    scale = np.float32(np.sqrt(max(float(V.mean()), 1e-12) / k))
    A = rng.uniform(0.5, 1.5, (S, k)).astype(np.float32) * scale
    fixed = templates is not None
    P = templates if fixed else rng.uniform(0.5, 1.5, (k, N)).astype(np.float32) * scale
    eps = np.float32(1e-12)
    for _ in range(n_iter):
        if not fixed:
            P *= (A.T @ V) / ((A.T @ A) @ P + eps)
        A *= (V @ P.T) / (A @ (P @ P.T) + eps)
    return A, P


def heldout_errors(X: np.ndarray, k_max: int = K_MAX, *, n_folds: int = 4, n_iter: int = 100,
                   seed: int = 0) -> np.ndarray:
    """Bi-cross-validation error of a rank-k NMF of the segment matrix, k = 1 .. k_max.

    Parameters
    ----------
    X : np.ndarray, shape=(n_segments, n_cells), nonnegative (from :func:`segment_matrix`)
    k_max : int, largest count tried; lowered to n_segments − (largest fold) so the
        training segments always outnumber the loops
    n_folds : int, folds of segments (each held out once)
    n_iter : int, multiplicative updates of each NMF
    seed : int, seed of the folds, the cell split and the initialisations

    Returns
    -------
    np.ndarray, float64, shape=(k,), k ≤ ``k_max``: ‖X_IJ − A_I P_J‖² / ‖X_IJ‖² summed over
    the folds, where P is learned from the other folds' segments (all cells), A_I from
    the held-out segments I on a random half of the cells, and J is the other half.

    Raises
    ------
    UnmixerError
        If X has fewer than 3 segments or is not nonnegative.

    Source: Owen & Perry, "Bi-cross-validation of the SVD and the nonnegative matrix
    factorization", Annals of Applied Statistics 3(2), 2009, §5 (with NMF); multiplicative
    updates: Lee & Seung, NIPS 2000.
    """
    X = np.asarray(X, dtype=np.float32)
    S, N = X.shape
    if S < 3:
        raise UnmixerError("Too few segments to choose the number of loops: give it instead.")
    if float(X.min(initial=0.0)) < 0:
        raise UnmixerError("The segment matrix must be nonnegative.")
    rng = np.random.default_rng(seed)
    folds = np.array_split(rng.permutation(S), min(n_folds, S))
    cells = rng.permutation(N)
    fit_cells, test_cells = np.sort(cells[: N // 2]), np.sort(cells[N // 2:])
    k_max = max(1, min(int(k_max), S - max(len(f) for f in folds)))
    errors = np.zeros(k_max)
    total = 0.0
    with _blas_threads(1):  # small products: threads only slow them down on busy cores
        for held in folds:
            train = np.setdiff1d(np.arange(S), held)
            target = X[np.ix_(held, test_cells)]
            total += float((target.astype(np.float64) ** 2).sum())
            for k in range(1, k_max + 1):
                _, P = _nmf(X[train], k, n_iter, rng)
                A, _ = _nmf(X[np.ix_(held, fit_cells)], k, n_iter, rng,
                            templates=np.ascontiguousarray(P[:, fit_cells]))
                errors[k - 1] += float(((target - A @ P[:, test_cells]) ** 2).sum())
    return errors / max(total, 1e-30)


def choose_count(errors: np.ndarray, tolerance: float = TOLERANCE) -> int:
    """The smallest k whose held-out error is within ``tolerance`` of the drop to the best.

    Parameters
    ----------
    errors : np.ndarray, shape=(k_max,), held-out errors for k = 1 .. k_max
        (:func:`heldout_errors`)
    tolerance : float in [0, 1]: e_k − min e ≤ tolerance · (e_1 − min e)

    Returns
    -------
    int in 1 .. k_max
    """
    e = np.asarray(errors, dtype=np.float64)
    best = float(e.min())
    return int(np.flatnonzero(e - best <= tolerance * (e[0] - best))[0]) + 1


def estimate_loop_count(magnitude: np.ndarray, downbeats_s: np.ndarray, meter: int, loop_bars: int,
                        *, k_min: int = K_MIN, k_max: int = K_MAX, tolerance: float = TOLERANCE,
                        seed: int = 0, sr: int = SAMPLE_RATE,
                        hop_length: int = HOP_LENGTH) -> int:
    """The number of loops K of a song, from how well K loops predict held-out segments.

    Parameters
    ----------
    magnitude : np.ndarray, shape=(n_freq, n_frames), the song's magnitude STFT
        (e.g. ``np.abs(unmixer.core.spectrum.stft(audio)).mean(axis=0)``)
    downbeats_s : np.ndarray, shape=(n_bars + 1,), s, the bar lines
    meter : int, beats per bar
    loop_bars : int, bars per loop (1, 2 or 4)
    k_min, k_max : int, the range K is chosen from (the held-out curve goes to
        min(k_max, n_segments − n_segments / 4))
    tolerance : float, see :func:`choose_count`
    seed : int

    Returns
    -------
    int in [k_min, k_max]

    Raises
    ------
    UnmixerError
        If the song has fewer than 3 segments of ``loop_bars`` bars, or k_min > k_max.

    Source: bi-cross-validation of the loop model's NMF (Owen & Perry, Ann. Appl. Stat.
    2009) on the segment-unfolded cube (Smith & Goto, ICASSP 2018, §2). About 0.3-1 s on
    bench/loopcount.py's songs, a few seconds on a 4-minute song (bench/RESULTS_loopcount.md).
    """
    if not 1 <= int(k_min) <= int(k_max):
        raise UnmixerError(f"Bad loop count range {k_min}..{k_max}.")
    X = segment_matrix(magnitude, downbeats_s, meter, loop_bars, sr=sr, hop_length=hop_length)
    k = choose_count(heldout_errors(X, int(k_max), seed=seed), tolerance)
    return int(np.clip(k, k_min, k_max))
