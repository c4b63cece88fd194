"""Audio mosaicing: the target's rhythm and melody played with the source's sounds.

Driedger, Prätzlich & Müller, "Let it Bee – Towards NMF-inspired audio mosaicing", ISMIR 2015.
The magnitude frames of the source clip are the fixed templates W (one per source frame);
KL-NMF learns activations H of the target's spectrogram V ≈ W H, and before each
multiplicative update H is reshaped by three restrictions (their eq. (2)-(5)):

* repetition restriction: an activation that is not the maximum of its row within ±r frames is
  damped by (1 - (ℓ+1)/L), so no source frame is reused in a burst;
* polyphony restriction: in each target frame only the p largest activations survive undamped;
* continuity enhancement: a diagonal filter C_km = Σ_{i=-c..c} P_{k+i, m+i} favours playing
  consecutive source frames in order, which is what keeps the source's timbre audible;

followed by the KL update H ← C ⊙ Wᵀ(V / (W C)) / Wᵀ1. The mosaic is the source's *complex*
STFT times H (the source's own phases, as in the paper), refined by a few fast Griffin-Lim
iterations (Perraudin, Balazs & Søndergaard, WASPAA 2013) so that the overlap-add is
consistent. All steps are whole-matrix operations (a running maximum filter, a partition for
the p largest, 2c+1 shifted adds for the diagonal filter).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d

from unmixer.core.audio import SAMPLE_RATE
from unmixer.errors import UnmixerError
from unmixer.lab.nmf import EPS, beta_divergence

N_FFT = 4096
"""Mosaicing STFT frame (93 ms at 44.1 kHz, the paper's 2048 samples at 22.05 kHz)."""

HOP_LENGTH = 2048
"""Mosaicing hop (46 ms: half overlap, as in the paper)."""


@dataclass
class MosaicResult:
    """Result of :func:`mosaic`.

    Attributes
    ----------
    audio : np.ndarray, float32, shape=(channels, target_samples)
        The mosaic, as long as the target, 44.1 kHz.
    H : np.ndarray, float32, shape=(n_source_frames_used, n_target_frames)
        Learned activations (which source frame plays at which target frame).
    source_frames : np.ndarray, int, shape=(n_source_frames_used,)
        Index in the source STFT of each template (silent source frames are dropped).
    loss : np.ndarray, float64, shape=(n_iter + 1,)
        KL divergence D_1(V | W H) at the start and after each iteration.
    times_s : np.ndarray, float64, shape=(n_iter + 1,)
        Cumulative seconds of the activation learning.
    """

    audio: np.ndarray
    H: np.ndarray
    source_frames: np.ndarray
    loss: np.ndarray
    times_s: np.ndarray


def diagonal_filter(P: np.ndarray, c: int) -> np.ndarray:
    """Continuity enhancement C_km = Σ_{i=-c..c} P_{k+i, m+i} (zero outside the matrix).

    Parameters
    ----------
    P : np.ndarray, shape=(K, N)
    c : int ≥ 0, half-length of the diagonal kernel (length 2c + 1)

    Returns
    -------
    np.ndarray, shape=(K, N), same dtype.

    Source: Driedger et al., ISMIR 2015, eq. (4). Equal to a 2-D correlation with the identity
    kernel ``np.eye(2c + 1)`` (``scipy.ndimage.correlate(P, np.eye(2c+1), mode="constant")``),
    done as 2c + 1 shifted whole-matrix adds, which costs (2c+1)·K·N instead of (2c+1)²·K·N.
    """
    C = P.copy()
    K, N = P.shape
    for i in range(1, c + 1):  # one shifted add per diagonal offset, both directions
        if i >= K or i >= N:
            break
        C[:-i, :-i] += P[i:, i:]
        C[i:, i:] += P[:-i, :-i]
    return C


def mosaic_activations(W: np.ndarray, V: np.ndarray, *, n_iter: int = 20, r: int = 3,
                       p: int = 10, c: int = 3, random_state: int = 0
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Learn Let-it-Bee activations H for V ≈ W H with the templates W fixed.

    Parameters
    ----------
    W : np.ndarray, shape=(n_freq, K), nonnegative
        Source magnitude frames (templates), e.g. columns scaled to unit L1 norm.
    V : np.ndarray, shape=(n_freq, N), nonnegative
        Target magnitude spectrogram.
    n_iter : int ≥ 1
        L, the number of iterations; the damping factor of the restrictions is 1 - (ℓ+1)/L.
    r : int ≥ 0
        Repetition restriction half-width, in frames.
    p : int ≥ 1
        Polyphony: activations kept undamped per target frame.
    c : int ≥ 0
        Continuity: half-length of the diagonal kernel.
    random_state : int
        Seed of the random initial H.

    Returns
    -------
    H : np.ndarray, float32, shape=(K, N)
    loss : np.ndarray, float64, shape=(n_iter + 1,), KL divergence D_1(V | W H)
    times_s : np.ndarray, float64, shape=(n_iter + 1,), cumulative seconds

    Raises
    ------
    UnmixerError
        If the shapes disagree, an input is negative, or a parameter is out of range.

    Source: Driedger, Prätzlich & Müller, ISMIR 2015, eq. (2)-(5).
    """
    t0 = time.perf_counter()
    W = np.asarray(W, dtype=np.float32)
    V = np.asarray(V, dtype=np.float32)
    if W.ndim != 2 or V.ndim != 2 or W.shape[0] != V.shape[0]:
        raise UnmixerError(f"W {W.shape} and V {V.shape} must be (n_freq, K) and (n_freq, N)")
    if W.min() < 0 or V.min() < 0 or not (np.isfinite(W).all() and np.isfinite(V).all()):
        raise UnmixerError("W and V must be finite and nonnegative")
    if n_iter < 1 or r < 0 or p < 1 or c < 0:
        raise UnmixerError(f"need n_iter >= 1, r >= 0, p >= 1, c >= 0; got {n_iter}, {r}, {p}, {c}")
    K, N = W.shape[1], V.shape[1]
    scale = np.float32(max(float(V.max()), 1e-30))
    V = V / scale  # internal scale max(V) = 1, so EPS is relative
    rng = np.random.default_rng(random_state)
    H = rng.uniform(0.0, 1.0, (K, N)).astype(np.float32)
    H *= np.float32(V.mean() / max(float((W @ H).mean()), 1e-30))
    w_sum = np.maximum(W.sum(axis=0), EPS)[:, None]  # Wᵀ 1
    loss = [beta_divergence(V, W @ H, 1.0)]
    times = [time.perf_counter() - t0]
    p = min(p, K)
    for ell in range(n_iter):
        damp = np.float32(max(1.0 - (ell + 1) / n_iter, 0.0))
        # (2) repetition restriction: keep row-wise local maxima within ±r frames
        if r > 0:
            R = np.where(H == maximum_filter1d(H, size=2 * r + 1, axis=1, mode="constant"),
                         H, H * damp)
        else:
            R = H
        # (3) polyphony restriction: keep the p largest per column
        if p < K:
            kth = np.partition(R, K - p, axis=0)[K - p]  # p-th largest of each column
            P = np.where(R >= kth[None, :], R, R * damp)
        else:
            P = R
        # (4) continuity enhancement along diagonals
        C = diagonal_filter(P, c) if c > 0 else P
        # (5) KL multiplicative update from C
        WC = np.maximum(W @ C, EPS)
        H = C * (W.T @ (V / WC)) / w_sum
        loss.append(beta_divergence(V, W @ H, 1.0))
        times.append(time.perf_counter() - t0)
    return H * scale, np.asarray(loss) * float(scale), np.asarray(times)


def _griffin_lim(spec: np.ndarray, magnitude: np.ndarray, length: int, n_iter: int,
                 n_fft: int, hop_length: int, momentum: float = 0.99) -> np.ndarray:
    """Fast Griffin-Lim from an initial complex STFT; returns audio (channels, length).

    Source: Griffin & Lim, IEEE TASSP 1984; momentum of Perraudin, Balazs & Søndergaard,
    "A fast Griffin-Lim algorithm", WASPAA 2013, Algorithm 2.
    """
    import librosa

    def analyse(x: np.ndarray) -> np.ndarray:
        return librosa.stft(x, n_fft=n_fft, hop_length=hop_length, window="hann", center=True)

    def synthesise(X: np.ndarray) -> np.ndarray:
        return librosa.istft(X, n_fft=n_fft, hop_length=hop_length, window="hann",
                             center=True, length=length)

    angles = spec / np.maximum(np.abs(spec), 1e-12)
    prev = np.zeros_like(spec)
    for _ in range(n_iter):
        rebuilt = analyse(synthesise(magnitude * angles))
        accel = rebuilt - (momentum / (1 + momentum)) * prev
        prev = rebuilt
        angles = accel / np.maximum(np.abs(accel), 1e-12)
    return synthesise(magnitude * angles).astype(np.float32)


def mosaic(source: np.ndarray, target: np.ndarray, *, n_iter: int = 20, r: int = 3,
           p: int = 10, c: int = 3, griffin_lim_iter: int = 10, n_fft: int = N_FFT,
           hop_length: int = HOP_LENGTH, silence_db: float = -60.0,
           random_state: int = 0) -> MosaicResult:
    """Let-it-Bee audio mosaic: ``target`` re-played with the sounds of ``source``.

    Parameters
    ----------
    source : np.ndarray, shape=(channels, samples) or (samples,), 44.1 kHz
        Clip A, whose spectral frames become the templates (the timbre of the result).
    target : np.ndarray, shape=(channels, samples) or (samples,), 44.1 kHz
        Clip B, whose spectrogram is approximated (the rhythm and melody of the result).
    n_iter, r, p, c, random_state
        See :func:`mosaic_activations` (paper: L = 20, r = 3, p = 10, c = 3).
    griffin_lim_iter : int ≥ 0
        Phase refinement iterations after the source-phase resynthesis (0: none).
    n_fft, hop_length : int, samples
        Mosaicing STFT (default 4096 / 2048 at 44.1 kHz).
    silence_db : float, dB
        Source frames quieter than this (relative to the loudest) are not used as templates.

    Returns
    -------
    MosaicResult
        ``audio`` has the target's length and the larger of the two channel counts (a mono
        source is repeated on every channel).

    Raises
    ------
    UnmixerError
        If a clip is empty, silent or non-finite, or shorter than one STFT frame.

    Source: Driedger, Prätzlich & Müller, ISMIR 2015, §3-4.
    """
    import librosa

    src = np.atleast_2d(np.asarray(source, dtype=np.float32))
    tgt = np.atleast_2d(np.asarray(target, dtype=np.float32))
    for name, x in (("source", src), ("target", tgt)):
        if x.ndim != 2 or x.shape[-1] < n_fft:
            raise UnmixerError(f"the {name} clip is too short for mosaicing "
                               f"(needs at least {n_fft / SAMPLE_RATE:.2f} s)")
        if not np.all(np.isfinite(x)):
            raise UnmixerError(f"the {name} clip holds non-finite samples")
        if float(np.abs(x).max()) <= 0:
            raise UnmixerError(f"the {name} clip is silent")
    n_ch = max(src.shape[0], tgt.shape[0])
    if src.shape[0] < n_ch:
        src = np.repeat(src[:1], n_ch, axis=0)

    def spectrum_of(x: np.ndarray) -> np.ndarray:
        return librosa.stft(x, n_fft=n_fft, hop_length=hop_length, window="hann",
                            center=True).astype(np.complex64)

    Xs = spectrum_of(src)  # (C, F, K_all)
    V = np.abs(spectrum_of(tgt)).mean(axis=0)  # (F, N) channel-mean magnitude
    mag_s = np.abs(Xs).mean(axis=0)  # (F, K_all)
    norms = mag_s.sum(axis=0)
    keep = np.flatnonzero(norms > norms.max() * 10 ** (silence_db / 20))
    W = mag_s[:, keep] / norms[keep]  # unit-L1 templates
    H, loss, times = mosaic_activations(W, V, n_iter=n_iter, r=r, p=p, c=c,
                                        random_state=random_state)
    Hn = (H / norms[keep][:, None]).astype(np.complex64)  # applies to the raw complex frames
    Y = np.stack([Xs[ch][:, keep] @ Hn for ch in range(n_ch)])  # (C, F, N) source phases
    length = tgt.shape[-1]
    if griffin_lim_iter > 0:
        out = _griffin_lim(Y, np.abs(Y), length, griffin_lim_iter, n_fft, hop_length)
    else:
        out = librosa.istft(Y, n_fft=n_fft, hop_length=hop_length, window="hann",
                            center=True, length=length).astype(np.float32)
    peak = float(np.abs(out).max())
    if peak > 0.99:  # keep the mosaic playable without clipping
        out *= np.float32(0.99 / peak)
    return MosaicResult(audio=out, H=H.astype(np.float32), source_frames=keep, loss=loss,
                        times_s=times)


__all__ = ["MosaicResult", "mosaic", "mosaic_activations", "diagonal_filter", "N_FFT",
           "HOP_LENGTH"]
