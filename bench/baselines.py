"""Reference methods that Unmixer's loop extraction is measured against (bench/quality.py).

Each takes the song (and, where the method uses them, the number of loops and the bar
boundaries) and returns a :class:`Separation`: full-length tracks, plus a loop map and a
clip per loop where the method makes them.

* :func:`ideal_ratio_mask`: the oracle ceiling, masks from the true stems;
* :func:`loopextractor`: the public reimplementation of Smith & Goto (ICASSP 2018),
  ``jblsmith/loopextractor``, in its own configuration (zero-padded cube, TensorLy's
  multiplicative-update NTD, argmax-activation bar choice, mask against the mixture);
* :func:`nmf_kmeans`: scikit-learn NMF, components clustered into K groups with k-means;
* :func:`repet`: REPET (Rafii & Pardo, IEEE TASLP 2013), repeating background against the
  rest (2 sources).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unmixer.core.audio import SAMPLE_RATE
from unmixer.core.spectrum import HOP_LENGTH, N_FFT, istft, stft, wiener_mask
from unmixer.errors import UnmixerError


@dataclass
class Separation:
    """The output of a separation method.

    Attributes
    ----------
    tracks : np.ndarray, shape=(K, channels, samples), float32, full-length source estimates
    loop_map : np.ndarray, shape=(K, n_bars), float32 in [0, 1], or None
        Each row scaled to a maximum of 1 (bars of the ``downbeats_s`` the method was given).
    clips : list of K np.ndarray, shape=(channels, clip samples), or None
        One loop per source, cut at ``clip_spans``.
    clip_spans : np.ndarray, shape=(K, 2), int, samples [start, end) of each clip, or None
    """

    tracks: np.ndarray
    loop_map: np.ndarray | None = None
    clips: list | None = None
    clip_spans: np.ndarray | None = None


def _check_audio(mix: np.ndarray) -> np.ndarray:
    mix = np.asarray(mix, dtype=np.float32)
    if mix.ndim != 2:
        raise UnmixerError("Audio must have shape (channels, samples).")
    return mix


def _scale_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(x.max(axis=1, keepdims=True), 1e-30)


# ----------------------------------------------------------------------------- oracle

def ideal_ratio_mask(mix: np.ndarray, stems: np.ndarray, *, power: float = 2.0) -> Separation:
    """The ideal ratio mask: each source's share of the mixture, from the true sources.

    M_k(c, f, t) = |S_k(c, f, t)|^p / Σ_l |S_l(c, f, t)|^p, per channel, applied to the
    mixture's STFT. With p = 2 this is the oracle Wiener filter of the (true) magnitudes;
    it is the ceiling of every method that masks one STFT of the mixture.

    Parameters
    ----------
    mix : np.ndarray, shape=(channels, samples), float32
    stems : np.ndarray, shape=(K, channels, samples), the true sources (summing to ``mix``)
    power : float, exponent p

    Returns
    -------
    Separation with tracks only

    Raises
    ------
    UnmixerError
        If the shapes do not agree.

    Source: Vincent, Gribonval & Plumbley, "Oracle estimators for the benchmarking of source
    separation algorithms", Signal Processing 2007; Liutkus & Badeau, ICASSP 2015.
    """
    mix = _check_audio(mix)
    stems = np.asarray(stems, dtype=np.float32)
    if stems.ndim != 3 or stems.shape[1:] != mix.shape:
        raise UnmixerError(f"stems {stems.shape} do not match the mixture {mix.shape}")
    mix_spec = stft(mix)
    scale = np.float32(max(float(np.abs(mix_spec).max()), 1e-30))  # the models' level
    p = np.float32(power)
    denom = np.zeros(mix_spec.shape, dtype=np.float32)
    for s in stems:  # two passes, one stem at a time: memory stays at a few STFTs
        denom += (np.abs(stft(s)) / scale) ** p
    tracks = np.empty(stems.shape, dtype=np.float32)
    for k, s in enumerate(stems):
        mask = wiener_mask((np.abs(stft(s)) / scale) ** p, denom, len(stems))
        tracks[k] = istft(mix_spec * mask, mix.shape[-1])
    return Separation(tracks)


# ----------------------------------------------------------------------------- loopextractor

def recommended_ranks(shape: tuple[int, ...]) -> np.ndarray:
    """loopextractor's default ranks: floor((n - 1)^0.6) for each dimension n of the cube, at least 1.

    Source: jblsmith/loopextractor, ``get_recommended_template_sizes``.
    """
    sizes = np.asarray(shape) - 1
    return np.maximum(np.floor(sizes**0.6).astype(int), 1)


def zero_padded_cube(mono: np.ndarray, bar_starts: np.ndarray) -> list[np.ndarray]:
    """The STFT of every bar on its own (librosa's defaults: 2048-point Hann, hop 512, centred).

    Parameters
    ----------
    mono : np.ndarray, shape=(samples,)
    bar_starts : np.ndarray, shape=(n_bars + 1,), int, samples

    Returns
    -------
    list of n_bars complex arrays, shape=(1025, frames of that bar); stacked with zero
    padding to the longest bar they form loopextractor's spectral cube.

    Source: jblsmith/loopextractor, ``make_spectral_cube``.
    """
    return [stft(mono[a:b]) for a, b in zip(bar_starts[:-1], bar_starts[1:])]


def loopextractor(mix: np.ndarray, n_loops: int, downbeats_s: np.ndarray, *,
                  ranks: tuple[int, int, int] | None = None, n_iter: int = 500,
                  tol: float = 1e-4, seed: int = 0, sr: int = SAMPLE_RATE) -> Separation:
    """The public loopextractor configuration, extended to full-length tracks.

    As in ``jblsmith/loopextractor``: the mono signal is cut at the downbeats, every bar gets
    its own STFT and the magnitudes are stacked, zero-padded to the longest bar, into a
    (frequency, time-in-bar, bar) cube; TensorLy's ``non_negative_tucker`` (multiplicative
    updates, SVD start, up to 500 iterations, tol 1e-4) factorises it with ranks
    floor((n - 1)^0.6) for sound and rhythm; loop k's spectrum is P_k = W G[:, :, k] Hᵀ; its
    clip is taken from the bar with the largest activation D[:, k], masked against the
    mixture with librosa's ``softmask(P_k, |X_bar|, power=1)`` = P_k / (P_k + |X_bar|).

    The original writes one clip per loop. To score full-length tracks, every bar b is
    masked the same way with the loop's model in that bar, D[b, k] P_k, and the bars are
    joined (samples before the first and after the last downbeat stay silent, as the
    original never models them). The loop map is D scaled to 0-1 per loop.

    Parameters
    ----------
    mix : np.ndarray, shape=(channels, samples), float32 at ``sr``
    n_loops : int, K, the loop rank
    downbeats_s : np.ndarray, shape=(n_bars + 1,), s
    ranks : (sound, rhythm, loop), optional; default (recommended, recommended, K)
    n_iter, tol : TensorLy's ``n_iter_max`` and ``tol``
    seed : int, TensorLy's ``random_state``

    Returns
    -------
    Separation with tracks (K, channels, samples), loop_map (K, n_bars), clips, clip_spans

    Raises
    ------
    UnmixerError
        If fewer than 2 bars are given or a rank does not fit the cube.

    Source: Smith & Goto, ICASSP 2018; jblsmith/loopextractor (``run_algorithm``,
    ``make_spectral_cube``, ``choose_bar_to_reconstruct``, ``get_loop_signal``).
    """
    import librosa
    import tensorly as tl
    from tensorly.decomposition import non_negative_tucker

    mix = _check_audio(mix)
    starts = (np.asarray(downbeats_s, dtype=np.float64) * sr).astype(np.int64)
    starts = np.clip(starts, 0, mix.shape[-1])
    if len(starts) < 3:
        raise UnmixerError("loopextractor needs at least 2 bars.")
    mono = mix.mean(axis=0)
    bars = zero_padded_cube(mono, starts)
    n_freq, n_steps = bars[0].shape[0], max(b.shape[1] for b in bars)
    cube = np.zeros((n_freq, n_steps, len(bars)))
    for i, b in enumerate(bars):
        cube[:, : b.shape[1], i] = np.abs(b)
    if ranks is None:
        rec = recommended_ranks(cube.shape)
        ranks = (int(rec[0]), int(rec[1]), int(n_loops))
    if not all(1 <= r <= s - 1 for r, s in zip(ranks, cube.shape)):
        raise UnmixerError(f"Ranks {tuple(ranks)} do not fit a cube of shape {cube.shape}.")
    with tl.backend_context("numpy"):
        core, factors = non_negative_tucker(cube, list(ranks), n_iter_max=n_iter, tol=tol,
                                            random_state=seed)
    core, (W, H, D) = np.asarray(core), [np.asarray(f) for f in factors]
    K = ranks[2]
    templates = np.einsum("fa,abk,tb->kft", W, core, H)  # P_k (K, F, n_steps)
    tracks = np.zeros((K,) + mix.shape, dtype=np.float32)
    chans = [zero_padded_cube(ch, starts) for ch in mix]  # per-channel bar STFTs
    chosen = np.argmax(D, axis=0)
    clips, spans = [], np.zeros((K, 2), dtype=np.int64)
    for k in range(K):
        for i, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
            n = bars[i].shape[1]
            mask = librosa.util.softmask(D[i, k] * templates[k, :, :n], np.abs(bars[i]), power=1)
            for c, ch in enumerate(chans):
                tracks[k, c, a:b] = istft(ch[i] * mask, int(b - a))
        i = int(chosen[k])
        n = bars[i].shape[1]
        mask = librosa.util.softmask(templates[k, :, :n], np.abs(bars[i]), power=1)
        a, b = starts[i], starts[i + 1]
        clips.append(np.stack([istft(ch[i] * mask, int(b - a)) for ch in chans]))
        spans[k] = (a, b)
    return Separation(tracks, _scale_rows(D.T), clips, spans)


# ----------------------------------------------------------------------------- NMF + k-means

def bar_sums(activations: np.ndarray, downbeats_s: np.ndarray, sr: int = SAMPLE_RATE,
             hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Sum of each activation row over the STFT frames of every bar.

    Parameters
    ----------
    activations : np.ndarray, shape=(R, n_frames)
    downbeats_s : np.ndarray, shape=(n_bars + 1,), s

    Returns
    -------
    np.ndarray, shape=(R, n_bars)
    """
    frames = np.round(np.asarray(downbeats_s) * sr / hop_length).astype(np.int64)
    frames = np.clip(frames, 0, activations.shape[1])
    csum = np.concatenate([np.zeros((activations.shape[0], 1)), np.cumsum(activations, axis=1)], axis=1)
    return csum[:, frames[1:]] - csum[:, frames[:-1]]


def nmf_kmeans(mix: np.ndarray, n_loops: int, downbeats_s: np.ndarray, *,
               n_components: int | None = None, seed: int = 0, max_iter: int = 300,
               sr: int = SAMPLE_RATE) -> Separation:
    """NMF of the spectrogram, components grouped into K sources by k-means.

    scikit-learn's ``NMF`` (coordinate descent, Frobenius loss, NNDSVDa start) factorises
    the mono magnitude spectrogram V (1025, frames) ≈ W H with R = min(4K, 40) components.
    Each component is described by its loudness in every bar (H summed over the bar, scaled
    to a maximum of 1: components of one loop switch on and off together) and its spectral
    envelope (W on 40 mel bands, log, unit norm: components of one instrument sound alike),
    and scikit-learn's ``KMeans`` groups the R components into K clusters. Each cluster's
    model W_g H_g gives a Wiener mask on the stereo STFT.

    Parameters
    ----------
    mix : np.ndarray, shape=(channels, samples), float32
    n_loops : int, K
    downbeats_s : np.ndarray, shape=(n_bars + 1,), s
    n_components : int, R, optional
    seed : int

    Returns
    -------
    Separation with tracks (K, channels, samples) and loop_map (K, n_bars)

    Raises
    ------
    UnmixerError
        If K exceeds the number of components.

    Source: Lee & Seung, NIPS 2000 (NMF); Spiertz & Gnann, DAFx 2009 (clustering NMF
    components into sources); scikit-learn ``NMF`` and ``KMeans``.
    """
    import librosa
    from sklearn.cluster import KMeans
    from sklearn.decomposition import NMF

    from unmixer.lab.nmf import resynthesise_components

    mix = _check_audio(mix)
    R = int(n_components or min(4 * n_loops, 40))
    if n_loops > R:
        raise UnmixerError(f"{n_loops} loops need at least as many NMF components, not {R}.")
    spec = stft(mix)
    V = np.abs(spec).mean(axis=0)
    V /= max(float(V.max()), 1e-30)
    model = NMF(R, init="nndsvda", solver="cd", beta_loss="frobenius", max_iter=max_iter,
                random_state=seed)
    Ht = model.fit_transform(V.T)  # (frames, R)
    W, H = model.components_.T.astype(np.float32), Ht.T.astype(np.float32)  # (F, R), (R, frames)
    per_bar = bar_sums(H, downbeats_s, sr)
    pattern = _scale_rows(per_bar)
    mel = librosa.filters.mel(sr=sr, n_fft=N_FFT, n_mels=40) @ W  # (40, R)
    env = np.log1p(mel / max(float(mel.max()), 1e-30) * 1e3).T
    env /= np.maximum(np.linalg.norm(env, axis=1, keepdims=True), 1e-12)
    pat = pattern / np.maximum(np.linalg.norm(pattern, axis=1, keepdims=True), 1e-12)
    labels = KMeans(n_loops, n_init=10, random_state=seed).fit_predict(np.hstack([pat, env]))
    groups = [list(np.flatnonzero(labels == g)) for g in range(n_loops)]
    tracks = resynthesise_components(mix, W, H, groups, spec=spec)
    # every component is in a group, so "the rest" is silent; keep the K groups
    energy = np.stack([(W[:, g].sum(axis=0)[:, None] * per_bar[g]).sum(axis=0) for g in groups])
    return Separation(tracks[:n_loops], _scale_rows(energy))


# ----------------------------------------------------------------------------- REPET

def beat_spectrum(power_spec: np.ndarray) -> np.ndarray:
    """Beat spectrum: the mean over frequencies of each row's autocorrelation.

    Parameters
    ----------
    power_spec : np.ndarray, shape=(n_freq, n_frames), |X|², nonnegative

    Returns
    -------
    np.ndarray, shape=(n_frames,), lag 0 .. n_frames - 1 (frames), normalised to b[0] = 1;
    each lag is divided by the number of overlapping frames (unbiased).

    Source: Foote & Uchihashi, ICME 2001; Rafii & Pardo, IEEE TASLP 2013, eq. (1)-(2).
    """
    n = power_spec.shape[1]
    n_fft = 1 << int(np.ceil(np.log2(2 * n)))
    spec = np.fft.rfft(power_spec.astype(np.float64), n=n_fft, axis=1)
    acf = np.fft.irfft(np.abs(spec) ** 2, n=n_fft, axis=1)[:, :n] / np.arange(n, 0, -1)
    b = acf.mean(axis=0)
    return b / max(float(b[0]), 1e-30)


def repeating_period(beat_spec: np.ndarray, min_lag: int, max_lag: int) -> int:
    """The repeating period (frames): the lag whose integer multiples hold the strongest peaks.

    For each candidate lag j in [min_lag, max_lag] (and at most a third of the song, so the
    pattern repeats at least three times), score(j) is the mean over the multiples
    i·j (up to the end of the beat spectrum, at most 3/4 of it so enough repetitions
    remain) of b's largest value within ±1 frame of i·j minus b's mean within ±j/4 frames
    (a peak above its neighbourhood); the best-scoring lag is returned.

    Source: Rafii & Pardo, IEEE TASLP 2013, §II-B (period from the beat spectrum).
    """
    b = np.asarray(beat_spec, dtype=np.float64)
    n = len(b)
    last = int(0.75 * n)
    peak = np.maximum(np.maximum(b, np.roll(b, 1)), np.roll(b, -1))  # max within ±1 frame
    csum = np.concatenate([[0.0], np.cumsum(b)])
    best, best_score = int(min_lag), -np.inf
    for j in range(int(min_lag), int(min(max_lag, n // 3)) + 1):  # one score per candidate lag
        mult = np.arange(j, last, j)
        half = max(j // 4, 2)
        lo, hi = np.maximum(mult - half, 0), np.minimum(mult + half + 1, n)
        score = float(np.mean(peak[mult] - (csum[hi] - csum[lo]) / (hi - lo)))
        if score > best_score:
            best, best_score = j, score
    return int(best)


def repet(mix: np.ndarray, *, period_s: float | None = None, min_period_s: float = 1.0,
          max_period_s: float = 16.0, sr: int = SAMPLE_RATE) -> tuple[Separation, float]:
    """REPET: the repeating background and the non-repeating foreground (2 sources).

    The period p comes from the beat spectrum of the power spectrogram (mean over channels)
    unless given. Per channel, the magnitude spectrogram V is cut into segments of p frames,
    their element-wise median is the repeating segment S, tiled over the song; the
    repeating model is min(S, V) and the soft mask M = min(S, V) / V keeps the background,
    1 − M the foreground.

    Parameters
    ----------
    mix : np.ndarray, shape=(channels, samples), float32
    period_s : float, optional, the repeating period (s); default: estimated
    min_period_s, max_period_s : float, the search range of the period (s)

    Returns
    -------
    (Separation with tracks (2, channels, samples): background, foreground), period (s)

    Raises
    ------
    UnmixerError
        If the song holds fewer than two periods.

    Source: Rafii & Pardo, "REpeating Pattern Extraction Technique (REPET): a simple method
    for music/voice separation", IEEE TASLP 21(1), 2013, §II.
    """
    mix = _check_audio(mix)
    spec = stft(mix)  # (C, F, N)
    mag = np.abs(spec)
    n = mag.shape[-1]
    fps = sr / HOP_LENGTH
    if period_s is None:
        b = beat_spectrum((mag**2).mean(axis=0))
        p = repeating_period(b, int(round(min_period_s * fps)), int(round(max_period_s * fps)))
    else:
        p = int(round(period_s * fps))
    if p < 1 or 2 * p > n:
        raise UnmixerError("The song must hold at least two repeating periods for REPET.")
    r = int(np.ceil(n / p))
    padded = np.full(mag.shape[:-1] + (r * p,), np.nan, dtype=np.float32)
    padded[..., :n] = mag
    segments = padded.reshape(mag.shape[:-1] + (r, p))
    model = np.nanmedian(segments, axis=-2)  # (C, F, p)
    tiled = np.tile(model, r)[..., :n]
    mask = np.minimum(tiled, mag) / np.maximum(mag, 1e-20)
    background = istft(spec * mask, mix.shape[-1])
    return Separation(np.stack([background, mix - background]).astype(np.float32)), p / fps
