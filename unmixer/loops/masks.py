"""From a (purified) Tucker model to loops: templates, bar choice, masks, clips (labels: unmixer.loops.labels).

With the purified core G′ (r_sound, r_rhythm, K), the sound templates W (n_freq, r_sound),
the rhythm templates H (n_steps, r_rhythm) and the loop activations D′ (n_segments, K),
loop k's spectrogram in segment s is modelled as ``D′[s, k] · P_k`` with the loop template
``P_k = W G′[:, :, k] Hᵀ`` (n_freq, n_steps): Smith, Kawasaki & Goto, ISMIR 2019, §3.1.
With tail templates Q_k (:func:`unmixer.loops.ntd.refine_loop_tails`) the model is
``D′[s, k] · P_k + D′[s − 1, k] · Q_k``: what a loop rings on into the next segment.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from unmixer.core.spectrum import HOP_LENGTH, MASK_EPS, istft, spectrum_frames, wiener_mask
from unmixer.errors import UnmixerError
from unmixer.loops.cube import CubeGrid, cube_to_frames, frame_steps, previous_segment
from unmixer.loops.labels import LABELS, label_loop  # noqa: F401  (re-exported from unmixer.loops.labels)


def loop_templates(core: np.ndarray, sound: np.ndarray, rhythm: np.ndarray) -> np.ndarray:
    """P_k = W G′[:, :, k] Hᵀ for every loop.

    Parameters
    ----------
    core : np.ndarray, shape=(r_sound, r_rhythm, K)
    sound : np.ndarray, shape=(n_freq, r_sound), W
    rhythm : np.ndarray, shape=(n_steps, r_rhythm), H

    Returns
    -------
    np.ndarray, float32, shape=(K, n_freq, n_steps), nonnegative magnitudes

    Source: Smith, Kawasaki & Goto, ISMIR 2019, §3.1.
    """
    gh = np.tensordot(core, rhythm, axes=([1], [1]))  # (r_sound, K, n_steps)
    p = np.tensordot(sound, gh, axes=([1], [0]))  # (n_freq, K, n_steps)
    return np.ascontiguousarray(np.moveaxis(p, 1, 0), dtype=np.float32)


def _powered(templates: np.ndarray, activations: np.ndarray, power: float):
    """(P_k / max P)^p as (K, F·T) and (D′ / max D′)^p as (n_segments, K), float32."""
    K = templates.shape[0]
    pk = (templates.reshape(K, -1) / max(float(templates.max()), 1e-30)) ** power
    dk = (activations / max(float(activations.max()), 1e-30)) ** power
    return pk.astype(np.float32), dk.astype(np.float32)


def cube_mask_denominator(pk: np.ndarray, dk: np.ndarray) -> np.ndarray:
    """Σ_l (D′[s,l] P_l)^p over the cube, shape=(F·T, n_segments): one matrix product."""
    return pk.T @ dk.T


class _LoopCells:
    """Every loop's model on the cube, raised to the mask power, and their sum over loops.

    Without tails (D′[s,k] P_k)^p = D′[s,k]^p P_k^p, so the sum is one matrix product; with
    tails (D′[s,k] P_k + D′[s−1,k] Q_k)^p is formed loop by loop. Scaled by the largest
    template and activation (the masks do not depend on the scale). Without tails ``p`` and
    ``d`` hold P^p and D′^p; with tails P, Q and D′ themselves (``cells`` powers them).
    With a ``foreground`` R (F·T, S) in the cube's units (:func:`foreground_model`), R^p,
    scaled like the loops, is one more source, index K (``n_sources`` = K + 1).
    """

    def __init__(self, templates: np.ndarray, activations: np.ndarray, power: float,
                 tails: np.ndarray | None = None, foreground: np.ndarray | None = None):
        K = templates.shape[0]
        self.power = float(power)
        self.n_loops = K
        self.n_sources = K + (foreground is not None)
        self.fg = None
        d_top = max(float(activations.max()), 1e-30)
        if tails is None:
            self.p, self.d = _powered(templates, activations, power)
            self.q = None
            self.denom = cube_mask_denominator(self.p, self.d)  # (F·T, S)
            scale = 1.0 / (max(float(templates.max()), 1e-30) * d_top)
        else:
            top = max(float(templates.max()), float(tails.max()), 1e-30)
            self.p = (templates.reshape(K, -1) / top).astype(np.float32)
            self.q = (tails.reshape(K, -1) / top).astype(np.float32)
            self.d = (activations / d_top).astype(np.float32)
            self.d_prev = previous_segment(self.d)
            self.denom = self.cells(0)
            for k in range(1, K):
                self.denom += self.cells(k)
            scale = 1.0 / (top * d_top)
        if foreground is not None:
            self.fg = np.multiply(foreground, np.float32(scale), dtype=np.float32)
            np.power(self.fg, np.float32(self.power), out=self.fg)
            self.denom += self.fg

    def shares(self, ratio: np.ndarray) -> np.ndarray:
        """Σ over cells of each source's powered model times ``ratio`` (F·T, S): shape
        (S, n_sources), the foreground (if any) last."""
        if self.q is None:
            out = self.d * (self.p @ ratio).T  # one product
        else:
            out = np.stack([np.einsum("cs,cs->s", self.cells(k), ratio) for k in range(self.n_loops)],
                           axis=1)
        if self.fg is None:
            return out
        return np.concatenate([out, np.einsum("cs,cs->s", self.fg, ratio)[:, None]], axis=1)

    def cells(self, k: int | np.ndarray, segments: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Source k's powered model in ``segments`` (k = K: the foreground), float32,
        shape=(F·T, n_segments_given), a new array; for an array of sources,
        shape=(len(k), F·T, n_segments_given)."""
        if self.fg is not None and np.any(np.asarray(k) == self.n_loops):
            if np.ndim(k) == 0:
                return np.array(self.fg[:, segments], dtype=np.float32)
            return np.stack([self.cells(int(j), segments) for j in np.asarray(k)])
        c = self.p[k][..., None] * _segment_rows(self.d, segments, k)
        if self.q is not None:
            c += self.q[k][..., None] * _segment_rows(self.d_prev, segments, k)
            if self.power == 2.0:
                np.multiply(c, c, out=c)
            else:
                np.power(c, self.power, out=c)
        return c


def loop_model_cells(templates: np.ndarray, activations: np.ndarray,
                     tails: np.ndarray | None = None) -> np.ndarray:
    """Σ_k D′[s,k] P_k (+ D′[s−1,k] Q_k): the loops' model of the whole cube, in its units.

    Parameters
    ----------
    templates : np.ndarray, shape=(K, n_freq, n_steps), P
    activations : np.ndarray, shape=(n_segments, K), D′
    tails : np.ndarray, shape=(K, n_freq, n_steps), Q, optional

    Returns
    -------
    np.ndarray, float32, shape=(n_freq · n_steps, n_segments), nonnegative: two matrix
    products.

    Source: Smith, Kawasaki & Goto, ISMIR 2019, §3.1 (P_k = W G′_k Hᵀ); tails:
    :func:`unmixer.loops.ntd.refine_loop_tails`.
    """
    K = templates.shape[0]
    act = activations.astype(np.float32)
    model = templates.reshape(K, -1).T.astype(np.float32) @ act.T
    if tails is not None:
        model += tails.reshape(K, -1).T.astype(np.float32) @ previous_segment(act).T
    return model


def foreground_model(templates: np.ndarray, activations: np.ndarray, cube: np.ndarray,
                     tails: np.ndarray | None = None) -> np.ndarray:
    """The foreground: what no loop explains, R = max(X − Σ_k D′[s,k] P_k (+ D′[s−1,k] Q_k), 0).

    The loops' model is the repeating part of the song (each loop one fixed template per
    segment); where the song holds more than that model in a cell (a melody that changes
    every bar, a vocal, a fill), the excess is the foreground. Given to the Wiener masks as
    one more source (:func:`separate_tracks` with ``foreground``), it takes the cells the
    loops leave unexplained, so the loop tracks stop absorbing them: the repeating/non-
    repeating split of REPET, whose repeating model is min(V, repeating-segment model)
    and whose foreground is the rest, made inside the loop model.

    Parameters
    ----------
    templates : np.ndarray, shape=(K, n_freq, n_steps), P (in the cube's units: the
        least-squares templates of :func:`unmixer.loops.ntd.refine_loop_tails`)
    activations : np.ndarray, shape=(n_segments, K), D′
    cube : np.ndarray, shape=(n_freq, n_steps, n_segments), X, magnitudes
    tails : np.ndarray, shape=(K, n_freq, n_steps), Q, optional

    Returns
    -------
    np.ndarray, float32, shape=(n_freq · n_steps, n_segments), nonnegative magnitudes

    Raises
    ------
    UnmixerError
        If the cube and the model disagree in shape.

    Source: Rafii & Pardo, "REpeating Pattern Extraction Technique (REPET)", IEEE TASLP 21(1),
    2013, §II-C (repeating spectrogram W = min(S, V), eq. 5, the rest is the foreground);
    the sparse "what the low-rank part misses" of robust PCA (Huang et al., "Singing-voice
    separation from monaural recordings using robust principal component analysis",
    ICASSP 2012, eq. 1), here the rectified residual of the loop model.
    """
    F, T, S = cube.shape
    if templates.shape[1:] != (F, T) or activations.shape[0] != S:
        raise UnmixerError(f"cube {cube.shape} does not match templates {templates.shape} "
                           f"and activations {activations.shape}")
    model = loop_model_cells(templates, activations, tails)
    np.subtract(cube.reshape(F * T, S), model, out=model)
    np.maximum(model, 0.0, out=model)
    return model


def explained_share(cube: np.ndarray, foreground: np.ndarray) -> float:
    """The share of the cube's energy that the loop model explains: 1 − ΣR² / ΣX².

    Parameters
    ----------
    cube : np.ndarray, shape=(n_freq, n_steps, n_segments), X
    foreground : np.ndarray, shape=(n_freq · n_steps, n_segments), R from
        :func:`foreground_model`

    Returns
    -------
    float in [0, 1]: 1 when the loops reconstruct every cell, near 0 when the song barely
    repeats (nothing of it is explained by loops).

    Examples
    --------
    >>> x = np.ones((2, 2, 3), dtype=np.float32)
    >>> explained_share(x, np.zeros((4, 3), dtype=np.float32))
    1.0
    >>> round(explained_share(x, np.full((4, 3), 0.5, dtype=np.float32)), 2)
    0.75
    """
    total = float(np.einsum("fts,fts->", cube, cube, dtype=np.float64))
    if total <= 0:
        return 0.0
    rest = float(np.einsum("cs,cs->", foreground, foreground, dtype=np.float64))
    return float(min(max(1.0 - rest / total, 0.0), 1.0))
def _segment_rows(d: np.ndarray, segments, k) -> np.ndarray:
    """d[segments, k] shaped to broadcast against P[k][..., None]: (1, n) or (L, 1, n)."""
    rows = d[segments][:, k]
    return rows[None, :] if np.ndim(k) == 0 else rows.T[:, None, :]


def mask_shares(templates: np.ndarray, activations: np.ndarray, cube: np.ndarray,
                power: float = 2.0, tails: np.ndarray | None = None,
                foreground: np.ndarray | None = None) -> np.ndarray:
    """Fraction of each segment's energy that each loop's Wiener mask keeps.

    share[s, k] = Σ_{f,j} M_k(f, j, s) X(f, j, s)² / Σ_{f,j} X(f, j, s)², with
    M_k = (D′[s,k] P_k)^p / Σ_l (D′[s,l] P_l)^p (with tails, D′[s,k] P_k + D′[s−1,k] Q_k
    in place of D′[s,k] P_k).

    Parameters
    ----------
    templates : np.ndarray, shape=(K, n_freq, n_steps), P
    activations : np.ndarray, shape=(n_segments, K), D′
    cube : np.ndarray, shape=(n_freq, n_steps, n_segments), X
    tails : np.ndarray, shape=(K, n_freq, n_steps), Q, optional
    foreground : np.ndarray, shape=(n_freq · n_steps, n_segments), R, optional
        (:func:`foreground_model`): one more source, its share in the last column

    Returns
    -------
    np.ndarray, float32, shape=(n_segments, K) (K + 1 with ``foreground``), in [0, 1],
    each row summing to 1
    """
    cells = _LoopCells(templates, activations, power, tails, foreground)
    ratio = cube.reshape(-1, cube.shape[-1]).astype(np.float32)  # (F·T, S), a copy
    np.square(ratio, out=ratio)  # X², then X² / Σ: in place (each cube-sized array is 80 MB
    total = np.maximum(ratio.sum(axis=0), 1e-30)  # for a 4-minute song)
    denom = np.add(cells.denom, np.float32(MASK_EPS), out=cells.denom)  # in place: the shares
    np.divide(ratio, denom, out=ratio)  # below never read the denominator (one cube-sized
    del denom  # array fewer at the engine's highest step, 82 MiB for the 4-minute song)
    share = cells.shares(ratio)  # (S, K)
    return (share / total[:, None]).astype(np.float32)


def choose_segments(templates: np.ndarray, activations: np.ndarray, cube: np.ndarray,
                    power: float = 2.0, tails: np.ndarray | None = None,
                    shares: np.ndarray | None = None) -> np.ndarray:
    """The segment that best shows each loop: argmax over s of activation × mask share.

    Parameters
    ----------
    templates : np.ndarray, shape=(K, n_freq, n_steps)
    activations : np.ndarray, shape=(n_segments, K)
    cube : np.ndarray, shape=(n_freq, n_steps, n_segments)
    tails : np.ndarray, shape=(K, n_freq, n_steps), optional (see :func:`mask_shares`)
    shares : np.ndarray, shape=(n_segments, K), optional: :func:`mask_shares` already computed

    Returns
    -------
    np.ndarray, shape=(K,), int, segment indices

    Source: Smith, Kawasaki & Goto, ISMIR 2019, §3.1 ("D·M": activation loudness times
    soft-mask share, so the chosen bar is loud for the loop and has little crosstalk).
    """
    if shares is None:
        shares = mask_shares(templates, activations, cube, power, tails)
    act = activations / np.maximum(activations.max(axis=0, keepdims=True), 1e-30)
    return np.argmax(act * shares, axis=0)


def frame_models(templates: np.ndarray, activations: np.ndarray, grid: CubeGrid,
                 n_frames: int, tails: np.ndarray | None = None):
    """A function k -> loop k's magnitude model on every STFT frame, shape=(n_freq, n_frames).

    Frame t in segment s at fractional step u gets D′[s, k] · P_k(:, u) (P_k interpolated
    linearly between steps), plus D′[s − 1, k] · Q_k(:, u) with ``tails`` Q (K, n_freq,
    n_steps); see :meth:`CubeGrid.frame_cells` for frames outside the bars.
    """
    seg, j0, j1, w = frame_steps(grid, n_frames)
    act = activations.astype(np.float32)
    prev = previous_segment(act)

    def model(k: int) -> np.ndarray:
        p = templates[k]
        out = (p[:, j0] * (1 - w) + p[:, j1] * w) * act[seg, k][None, :]
        if tails is not None:
            q = tails[k]
            out += (q[:, j0] * (1 - w) + q[:, j1] * w) * prev[seg, k][None, :]
        return out

    return model


def _frame_masks(cells: _LoopCells, grid: CubeGrid, steps: tuple, frames: slice,
                 loops: np.ndarray) -> np.ndarray:
    """The Wiener masks of ``loops``, formed on the cube and mapped onto STFT ``frames``,
    float32, shape=(len(loops), n_freq, n_frames_in_slice); only the segments those frames
    touch are formed, and the denominator is sliced once for all the loops."""
    seg, j0, j1, w = (a[frames] for a in steps)
    used, seg = np.unique(seg, return_inverse=True)
    T = grid.n_steps
    mask = cells.cells(np.asarray(loops), used)  # (L, F·T, n_used)
    wiener_mask(mask, cells.denom[:, used], cells.n_sources, out=mask)
    return cube_to_frames(mask.reshape(len(loops), -1, T, len(used)), grid, steps=(seg, j0, j1, w))


def separate_tracks(mix_spec: np.ndarray, templates: np.ndarray, activations: np.ndarray,
                    grid: CubeGrid, length: int, power: float = 2.0,
                    hop_length: int = HOP_LENGTH, mixture: np.ndarray | None = None,
                    n_threads: int = 2, chunk: int = 1 << 18,
                    tails: np.ndarray | None = None,
                    foreground: np.ndarray | None = None,
                    on_chunk: Callable[[int, int, np.ndarray], None] | None = None,
                    keep: bool = True) -> np.ndarray | None:
    """Full-length loop tracks: Wiener masks across all K loops on the mixture's STFT.

    The masks M_k = (D′[s,k] P_k)^p / Σ_l (D′[s,l] P_l)^p are formed on the cube (the
    denominator is one matrix product; with tails, D′[s,k] P_k + D′[s−1,k] Q_k in place of
    D′[s,k] P_k, formed loop by loop) and mapped to STFT frames as
    :func:`unmixer.loops.cube.cube_to_frames` does; linear interpolation keeps their sum at 1.
    Given the ``mixture`` waveform, the last track is the mixture minus the others (the
    inverse STFT is linear and the masks sum to 1, so this is the same track up to float32
    rounding, one inverse STFT fewer, and the tracks sum to the mixture exactly).

    The song is resynthesised in chunks of ``chunk`` samples, each from the STFT frames that
    reach it (exact: see :func:`separate_clips`), ``n_threads`` chunks at a time (NumPy and
    the FFT release the GIL); in each chunk every loop's mask is formed in one batch and all
    loops × channels go through one inverse STFT (one window normalisation, one batched
    inverse FFT), so memory stays at a few chunk-sized spectra.

    Parameters
    ----------
    mix_spec : np.ndarray, complex, shape=(channels, n_freq, n_frames), the mixture (or a
        :class:`unmixer.core.spectrum.LazySTFT`, whose frames are computed chunk by chunk)
    templates : np.ndarray, shape=(K, n_freq, n_steps), P
    activations : np.ndarray, shape=(n_segments, K), D′
    grid : CubeGrid
    length : int, samples of the song
    power : float, mask exponent (2: Wiener)
    mixture : np.ndarray, shape=(channels, length), optional, the mixture's samples
    n_threads : int, chunks processed at once
    chunk : int, samples per chunk (2^18: 6 s at 44.1 kHz)
    tails : np.ndarray, shape=(K, n_freq, n_steps), Q, optional: loop k's model in segment
        s becomes D′[s,k] P_k + D′[s−1,k] Q_k (:func:`unmixer.loops.ntd.refine_loop_tails`)
    foreground : np.ndarray, shape=(n_freq · n_steps, n_segments), R, optional: the
        foreground (:func:`foreground_model`) as one more source, whose track comes last
    on_chunk : callable(start, stop, block), optional: called in the song's order, from
        the calling thread, once samples [start, stop) of every track are final, with
        ``block``, float32, shape=(K, channels, stop - start), those samples of every track
        (e.g. to write the tracks to files while the rest is computed): a view of the
        returned array with ``keep``, a new array without
    keep : bool, keep the whole tracks array and return it; False: stream, the tracks exist
        only chunk by chunk (at most ``2·n_threads`` chunks at once: a 4-minute song's five
        stereo tracks are 434 MB as one array, 10 MB per chunk), handed to ``on_chunk``

    Returns
    -------
    np.ndarray, float32, shape=(K, channels, length) (K + 1 with ``foreground``, the
    foreground last), or None without ``keep``; the tracks sum to the mixture (the masks sum
    to 1 in every cell; each channel keeps its own phase).

    Raises
    ------
    UnmixerError
        If ``keep`` is False and there is no ``on_chunk``.

    Source: Smith, Kawasaki & Goto, ISMIR 2019, §3.1; masks as in
    :func:`unmixer.core.spectrum.wiener_masks`.
    """
    from concurrent.futures import ThreadPoolExecutor

    if not keep and on_chunk is None:
        raise UnmixerError("separate_tracks(keep=False) needs on_chunk: the tracks would be lost")
    cells = _LoopCells(templates, activations, power, tails, foreground)
    K = cells.n_sources
    C = mix_spec.shape[0]
    steps = frame_steps(grid, mix_spec.shape[-1])
    tracks = np.empty((K, C, length), dtype=np.float32) if keep else None
    residual = mixture is not None and K > 1
    computed = np.arange(K - 1 if residual else K)
    edges = np.append(np.arange(0, length, chunk), length).astype(int)
    spans = list(zip(edges[:-1].tolist(), edges[1:].tolist()))

    def one(a: int, b: int) -> np.ndarray:
        block = tracks[:, :, a:b] if keep else np.empty((K, C, b - a), dtype=np.float32)
        block[computed] = _resynthesise(mix_spec, cells, grid, steps, computed, a, b, length,
                                        hop_length)
        if residual:
            last = block[K - 1]
            last[:] = mixture[:, a:b]
            for k in computed:  # in place: no temporary sum of the other tracks
                last -= block[k]
        return block

    n_threads = max(1, int(n_threads))
    with ThreadPoolExecutor(n_threads) as pool:
        # a window of chunks in flight: without ``keep`` at most this many blocks exist at once
        window = [pool.submit(one, *span) for span in spans[:2 * n_threads]]
        for i, (a, b) in enumerate(spans):
            block = window.pop(0).result()
            if i + 2 * n_threads < len(spans):
                window.append(pool.submit(one, *spans[i + 2 * n_threads]))
            if on_chunk is not None:
                on_chunk(a, b, block)
            del block
    return tracks


def _resynthesise(mix_spec, cells: _LoopCells, grid, steps, loops: np.ndarray, start: int,
                  stop: int, length: int, hop_length: int) -> np.ndarray:
    """Samples [start, stop) of the masked inverse STFTs of ``loops``, from the frames that
    reach them.

    Frames whose window overlaps the range (and the frames overlapping those, so that the
    overlap-add normalisation is the full one) are masked and inverted, every loop and
    channel in one inverse STFT; each excerpt equals the same samples of the whole-song
    inverse STFT. Shape (len(loops), channels, stop - start).
    """
    n_channels, n_freq, n_frames = mix_spec.shape
    n_fft = 2 * (n_freq - 1)
    reach = n_fft // hop_length + 1  # frames whose window overlaps a sample, either side
    f0 = max(0, start // hop_length - reach)
    f1 = min(n_frames, -(-stop // hop_length) + reach + 1)
    masks = _frame_masks(cells, grid, steps, slice(f0, f1), loops)  # (L, F, n)
    spectra = spectrum_frames(mix_spec, f0, f1)[None] * masks[:, None]  # (L, C, F, n)
    # frame f0 is centred on sample f0·hop: the inverse STFT of frames f0..f1 starts there
    span = (length if f1 == n_frames else (f1 - 1) * hop_length) - f0 * hop_length
    part = istft(spectra.reshape(-1, n_freq, f1 - f0), span, hop_length)  # (L·C, span)
    part = part.reshape(len(loops), n_channels, span)
    return part[:, :, start - f0 * hop_length:stop - f0 * hop_length]


def separate_clips(mix_spec: np.ndarray, templates: np.ndarray, activations: np.ndarray,
                   grid: CubeGrid, sample_ranges: np.ndarray, length: int, power: float = 2.0,
                   hop_length: int = HOP_LENGTH, tails: np.ndarray | None = None,
                   foreground: np.ndarray | None = None) -> list[np.ndarray]:
    """Samples ``[start_k, stop_k)`` of each loop's track, without the full-length tracks.

    The same Wiener masks as :func:`separate_tracks`, formed only on the STFT frames that
    reach the range (plus the frames overlapping its edges), so each excerpt equals the
    slice of the full-length track (up to float32 rounding) at a small fraction of the cost.

    Parameters
    ----------
    mix_spec : np.ndarray, complex, shape=(channels, n_freq, n_frames)
    templates : np.ndarray, shape=(K, n_freq, n_steps), P
    activations : np.ndarray, shape=(n_segments, K), D′
    grid : CubeGrid
    sample_ranges : np.ndarray, int, shape=(K, 2), samples, 0 <= start < stop <= length
    length : int, samples of the song
    power : float, mask exponent
    tails : np.ndarray, shape=(K, n_freq, n_steps), Q, optional (see :func:`separate_tracks`)
    foreground : np.ndarray, shape=(n_freq · n_steps, n_segments), R, optional: a source
        in the masks (see :func:`separate_tracks`); no clip of its own

    Returns
    -------
    list of K np.ndarray, float32, shape=(channels, stop_k - start_k)

    Raises
    ------
    UnmixerError
        If a range lies outside the song.

    Source: as :func:`separate_tracks` (Smith, Kawasaki & Goto, ISMIR 2019, §3.1).
    """
    sample_ranges = np.asarray(sample_ranges, dtype=np.int64)
    if np.any(sample_ranges[:, 0] < 0) or np.any(sample_ranges[:, 1] > length) or \
            np.any(sample_ranges[:, 1] <= sample_ranges[:, 0]):
        raise UnmixerError("sample ranges must satisfy 0 <= start < stop <= length")
    cells = _LoopCells(templates, activations, power, tails, foreground)
    steps = frame_steps(grid, mix_spec.shape[-1])
    clips = [np.ascontiguousarray(_resynthesise(mix_spec, cells, grid, steps, np.array([k]),
                                                int(start), int(stop), length, hop_length)[0])
             for k, (start, stop) in enumerate(sample_ranges)]
    return clips


def cut_loop(track: np.ndarray, start: int, end: int, fade: int = 441) -> np.ndarray:
    """Cut samples [start, end) of a track into a seamless loop.

    The first ``fade`` samples are cross-faded with the samples that follow ``end`` in the
    track (or the last ``fade`` samples with those before ``start``, at the end of the
    song), so that the clip joins itself without a click when repeated.

    Parameters
    ----------
    track : np.ndarray, shape=(channels, samples)
    start, end : int, samples (downbeats)
    fade : int, samples (441 = 10 ms at 44.1 kHz)

    Returns
    -------
    np.ndarray, float32, shape=(channels, end - start)
    """
    clip = track[:, start:end].astype(np.float32, copy=True)
    n = track.shape[-1]
    fade = int(min(fade, (end - start) // 4))
    if fade < 2:
        return clip
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    if end + fade <= n:  # wrap: the clip starts as the music after its end, fading into its own start
        clip[:, :fade] = clip[:, :fade] * ramp + track[:, end:end + fade] * (1 - ramp)
    elif start - fade >= 0:  # or it ends as the music before its start
        clip[:, -fade:] = clip[:, -fade:] * (1 - ramp) + track[:, start - fade:start] * ramp
    else:
        clip[:, :fade] *= ramp
        clip[:, -fade:] *= ramp[::-1]
    return clip


def segment_map_to_bars(activations: np.ndarray, loop_bars: int, n_bars: int) -> np.ndarray:
    """Loop map per bar, scaled 0-1 per loop.

    Parameters
    ----------
    activations : np.ndarray, shape=(n_segments, K), D′
    loop_bars : int, bars per segment
    n_bars : int, bars in the song (bars after the last full segment take its value)

    Returns
    -------
    np.ndarray, float32, shape=(K, n_bars), each row divided by its maximum
    """
    per_bar = np.repeat(activations.T, loop_bars, axis=1)
    if per_bar.shape[1] < n_bars:
        pad = np.repeat(per_bar[:, -1:], n_bars - per_bar.shape[1], axis=1)
        per_bar = np.concatenate([per_bar, pad], axis=1)
    per_bar = per_bar[:, :n_bars]
    return (per_bar / np.maximum(per_bar.max(axis=1, keepdims=True), 1e-30)).astype(np.float32)
