"""The bar-synchronous spectral cube: frequency x time-in-segment x segment.

A segment is ``loop_bars`` bars, cut at the downbeats. Every segment is resampled to the
same number of time steps (linear interpolation between STFT frames), so that tempo drift
does not smear the rhythm templates as the zero-padding of Smith & Goto (ICASSP 2018, §2)
does. :class:`CubeGrid` holds the explicit mapping between cube cells and STFT frames, both
ways.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unmixer.core.audio import SAMPLE_RATE
from unmixer.core.spectrum import HOP_LENGTH
from unmixer.errors import UnmixerError


@dataclass
class CubeGrid:
    """Mapping between cube cells (step j, segment s) and STFT frames.

    Attributes
    ----------
    boundaries : np.ndarray, shape=(n_segments + 1,), float64, STFT frames
        Fractional frame position of each segment boundary (a downbeat): segment s spans
        frames ``boundaries[s]`` to ``boundaries[s + 1]``. Frame t is centred on sample
        ``t * hop_length``, so a time of x s lies at frame ``x * sr / hop_length``.
    n_steps : int
        Time steps per segment in the cube.
    """

    boundaries: np.ndarray
    n_steps: int

    @property
    def n_segments(self) -> int:
        return len(self.boundaries) - 1

    def cell_frames(self) -> np.ndarray:
        """Fractional STFT frame of every cube cell, shape=(n_segments, n_steps).

        Cell (s, j) samples frame ``b_s + j (b_{s+1} - b_s) / n_steps``.
        """
        b = self.boundaries
        j = np.arange(self.n_steps, dtype=np.float64) / self.n_steps
        return b[:-1, None] + np.diff(b)[:, None] * j[None, :]

    def frame_cells(self, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """The cube cell of every STFT frame 0 .. n_frames - 1.

        Frames before the first boundary belong to segment 0 and frames after the last to
        the last segment; there the step position continues periodically with that
        segment's length, so the intro and the tail get the neighbouring segment's rhythm.

        Returns
        -------
        segment : np.ndarray, shape=(n_frames,), int
        step : np.ndarray, shape=(n_frames,), float64 in [0, n_steps)
            Fractional step position inside the segment.
        """
        b = self.boundaries
        t = np.arange(n_frames, dtype=np.float64)
        seg = np.clip(np.searchsorted(b, t, side="right") - 1, 0, self.n_segments - 1)
        lengths = np.diff(b)
        step = (t - b[seg]) / lengths[seg] * self.n_steps
        step = np.mod(step, self.n_steps)
        return seg, step


def segment_boundaries_s(downbeats_s: np.ndarray, loop_bars: int) -> np.ndarray:
    """Segment boundaries (s): every ``loop_bars``-th bar line, complete segments only.

    Parameters
    ----------
    downbeats_s : np.ndarray, shape=(n_bars + 1,), s, bar boundaries
    loop_bars : int, 1 or 2 (4 is accepted too)

    Returns
    -------
    np.ndarray, shape=(n_bars // loop_bars + 1,), s

    Raises
    ------
    UnmixerError
        If ``loop_bars`` is not 1, 2 or 4, or fewer than 2 segments fit in the song.
    """
    if loop_bars not in (1, 2, 4):
        raise UnmixerError(f"Loop length must be 1, 2 or 4 bars, not {loop_bars}.")
    n_bars = len(downbeats_s) - 1
    n_seg = n_bars // loop_bars
    if n_seg < 2:
        raise UnmixerError(
            f"The song has {n_bars} bars: too few for {loop_bars}-bar loops (at least "
            f"{2 * loop_bars} are needed)."
        )
    return np.asarray(downbeats_s, dtype=np.float64)[: n_seg * loop_bars + 1 : loop_bars]


def make_grid(boundaries_s: np.ndarray, sr: int = SAMPLE_RATE, hop_length: int = HOP_LENGTH,
              n_steps: int | None = None) -> CubeGrid:
    """A :class:`CubeGrid` for segments with the given boundaries (s).

    ``n_steps`` defaults to the median segment length in frames, so the typical segment
    keeps its full time resolution.
    """
    frames = np.asarray(boundaries_s, dtype=np.float64) * sr / hop_length
    if n_steps is None:
        n_steps = int(round(float(np.median(np.diff(frames)))))
    return CubeGrid(frames, max(int(n_steps), 2))


def interpolate_frames(spec: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Sample a spectrogram at fractional frame positions (linear interpolation).

    Parameters
    ----------
    spec : np.ndarray, shape=(n_freq, n_frames)
    positions : np.ndarray, any shape P, fractional frames (clamped to the valid range)

    Returns
    -------
    np.ndarray, shape=(n_freq,) + P, dtype of ``spec``
    """
    n = spec.shape[-1]
    p = np.clip(np.asarray(positions, dtype=np.float64), 0, n - 1)
    i0 = np.minimum(np.floor(p).astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (p - i0).astype(spec.dtype)
    return spec[:, i0] * (1 - w) + spec[:, i1] * w


def spectral_cube(magnitude: np.ndarray, grid: CubeGrid) -> np.ndarray:
    """Cut a magnitude spectrogram into the bar-synchronous spectral cube.

    Parameters
    ----------
    magnitude : np.ndarray, shape=(n_freq, n_frames), nonnegative
    grid : CubeGrid

    Returns
    -------
    np.ndarray, float32, shape=(n_freq, n_steps, n_segments): cell [f, j, s] is the
    magnitude at frequency bin f, at the fractional frame ``grid.cell_frames()[s, j]``.

    Source: Smith & Goto, ICASSP 2018, §2 (with resampling in place of zero-padding).
    """
    positions = grid.cell_frames().T  # (n_steps, n_segments)
    return np.ascontiguousarray(interpolate_frames(np.asarray(magnitude, np.float32), positions))


def previous_segment(activations: np.ndarray) -> np.ndarray:
    """Each segment's row of the segment before it: D′[s − 1, k], zero for the first segment.

    Parameters
    ----------
    activations : np.ndarray, shape=(n_segments, K), D′

    Returns
    -------
    np.ndarray, shape=(n_segments, K), same dtype: the activations of the tail templates
    (:func:`unmixer.loops.ntd.refine_loop_tails`)
    """
    out = np.zeros_like(activations)
    out[1:] = activations[:-1]
    return out


def frame_steps(grid: CubeGrid, n_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Interpolation indices from cube steps to STFT frames.

    Returns
    -------
    segment : np.ndarray, shape=(n_frames,), int, the segment of each frame
    j0, j1 : np.ndarray, shape=(n_frames,), int, the steps either side of each frame
        (``j1`` wraps to 0 within the segment)
    weight : np.ndarray, shape=(n_frames,), float32, the weight of ``j1``
    """
    seg, step = grid.frame_cells(n_frames)
    j0 = np.floor(step).astype(np.int64) % grid.n_steps
    j1 = (j0 + 1) % grid.n_steps
    return seg, j0, j1, (step - np.floor(step)).astype(np.float32)


def cube_to_frames(values: np.ndarray, grid: CubeGrid, n_frames: int | None = None, *,
                   steps: tuple | None = None) -> np.ndarray:
    """Map cube-domain values back onto STFT frames (the inverse of :func:`spectral_cube`).

    Parameters
    ----------
    values : np.ndarray, shape=(..., n_steps, n_segments)
    grid : CubeGrid
    n_frames : int, the song's STFT frames (when ``steps`` is not given)
    steps : (segment, j0, j1, weight), optional: :func:`frame_steps` already computed, or a
        slice of it (some frames only), with ``segment`` indexing the last axis of ``values``

    Returns
    -------
    np.ndarray, shape=(..., n_frames) (or as many frames as ``steps`` holds): frame t takes
    the value of its segment at its fractional step, interpolated linearly between steps
    (wrapping within the segment).
    """
    seg, j0, j1, w = frame_steps(grid, n_frames) if steps is None else steps
    w = w.astype(values.dtype)
    return values[..., j0, seg] * (1 - w) + values[..., j1, seg] * w


def log_bands(n_freq: int, n_bands: int) -> np.ndarray:
    """An orthonormal pooling of STFT bins into log-spaced bands, shape=(n_bands', n_freq).

    Band edges at ``round(geomspace(1, n_freq, n_bands + 1))`` (repeated edges merged, so
    the lowest bins keep a band each and n_bands' ≤ n_bands; bin 0 joins the first band).
    Row b is 1/√n_b on the n_b bins of band b and 0 elsewhere: the rows are orthonormal, so
    pooling keeps the Euclidean norm of a spectrum that is flat within each band, and a
    Euclidean fit on pooled spectra weighs the bands as the full-resolution fit weighs their
    bins. ``pool.T @ pooled`` spreads pooled values back evenly over the bins.

    Parameters
    ----------
    n_freq : int, STFT bins (1 + n_fft / 2)
    n_bands : int, at most this many bands (at least 1)

    Returns
    -------
    np.ndarray, float32, shape=(n_bands', n_freq)

    Raises
    ------
    UnmixerError
        If ``n_bands`` or ``n_freq`` is below 1.

    Examples
    --------
    >>> pool = log_bands(1025, 128)
    >>> pool.shape, bool(np.allclose(pool @ pool.T, np.eye(len(pool))))
    ((92, 1025), True)
    """
    if n_bands < 1 or n_freq < 1:
        raise UnmixerError(f"Need at least one band and one bin, not {n_bands} bands of {n_freq} bins.")
    edges = np.unique(np.round(np.geomspace(1, n_freq, int(n_bands) + 1)).astype(np.int64))
    edges[0] = 0
    edges[-1] = n_freq
    band = np.repeat(np.arange(len(edges) - 1), np.diff(edges))  # (n_freq,)
    pool = np.zeros((len(edges) - 1, n_freq), dtype=np.float32)
    pool[band, np.arange(n_freq)] = 1.0 / np.sqrt(np.diff(edges)[band])
    return pool


def pool_cube(cube: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """The cube on a compressed frequency axis: ``pool`` (n_bands, n_freq) applied along axis 0.

    Parameters
    ----------
    cube : np.ndarray, shape=(n_freq, n_steps, n_segments)
    pool : np.ndarray, shape=(n_bands, n_freq), e.g. :func:`log_bands`

    Returns
    -------
    np.ndarray, float32, shape=(n_bands, n_steps, n_segments)
    """
    F, T, S = cube.shape
    return (pool @ cube.reshape(F, T * S)).reshape(len(pool), T, S).astype(np.float32, copy=False)
