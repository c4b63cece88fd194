"""STFT, inverse STFT and Wiener-mask resynthesis, shared by every decomposition.

The STFT is librosa's (Hann window, centred frames). Masks are "soft masks" or generalised
Wiener filters (Liutkus & Badeau, "Generalized Wiener filtering with fractional power
spectrograms", ICASSP 2015): M_k = V_k^p / sum_l V_l^p, so the masks of all sources sum to 1
in every cell and the resynthesised sources sum to the mixture.
"""

from __future__ import annotations

import numpy as np

N_FFT = 2048
"""STFT frame length (samples at 44.1 kHz, 46 ms)."""

HOP_LENGTH = 512
"""STFT hop length (samples at 44.1 kHz, 11.6 ms)."""


def stft(audio: np.ndarray, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Complex STFT of each channel.

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples) or (samples,)
    n_fft, hop_length : int, samples

    Returns
    -------
    np.ndarray, complex64, shape=(channels, 1 + n_fft // 2, n_frames) (or without the
    channel axis for 1-D input); frame t is centred on sample t * hop_length.
    """
    import librosa

    return librosa.stft(np.asarray(audio, dtype=np.float32), n_fft=n_fft,
                        hop_length=hop_length, window="hann", center=True).astype(np.complex64, copy=False)


def istft(spec: np.ndarray, length: int, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Inverse of :func:`stft`.

    Parameters
    ----------
    spec : np.ndarray, complex, shape=(..., n_freq, n_frames)
    length : int, samples of the output

    Returns
    -------
    np.ndarray, float32, shape=(..., length)
    """
    import librosa

    n_fft = 2 * (spec.shape[-2] - 1)
    return librosa.istft(spec, hop_length=hop_length, n_fft=n_fft, window="hann",
                         center=True, length=length).astype(np.float32)


def frame_times(n_frames: int, sr: int, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Centre time (s) of each STFT frame, shape=(n_frames,)."""
    return np.arange(n_frames, dtype=np.float64) * hop_length / sr


def wiener_masks(models: np.ndarray, power: float = 2.0, eps: float = 1e-12) -> np.ndarray:
    """Soft masks from nonnegative source models: M_k = V_k^p / sum_l V_l^p.

    Cells where every model is 0 get 1/K for each source, so the masks always sum to 1.

    Parameters
    ----------
    models : np.ndarray, shape=(K, ...), nonnegative magnitude models of K sources
    power : float
        Exponent p (2: Wiener filter on magnitudes; 1: ratio of magnitudes).
    eps : float
        Regulariser added to the denominator, relative to the largest model value.

    Returns
    -------
    np.ndarray, float32, shape=models.shape, in [0, 1], summing to 1 over axis 0.

    Source: Liutkus & Badeau, ICASSP 2015, eq. (7)-(9).
    """
    models = np.asarray(models, dtype=np.float32)
    if models.ndim < 2:
        raise ValueError("models must have a leading source axis")
    scale = float(models.max(initial=0.0))
    if scale <= 0:
        return np.full(models.shape, 1.0 / models.shape[0], dtype=np.float32)
    powered = (models / scale) ** power
    floor = np.float32(eps)
    denom = powered.sum(axis=0) + floor
    return ((powered + floor / models.shape[0]) / denom).astype(np.float32)


def resynthesise(mix_spec: np.ndarray, masks: np.ndarray, length: int,
                 hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Apply masks to the mixture's STFT (so each source keeps the mixture's phase) and invert.

    Parameters
    ----------
    mix_spec : np.ndarray, complex, shape=(channels, n_freq, n_frames)
    masks : np.ndarray, shape=(K, n_freq, n_frames), the same mask for every channel
    length : int, samples of each output signal

    Returns
    -------
    np.ndarray, float32, shape=(K, channels, length); sums over K to the mixture when the
    masks sum to 1.
    """
    out = np.empty((masks.shape[0], mix_spec.shape[0], length), dtype=np.float32)
    for k in range(masks.shape[0]):  # one source at a time keeps memory at one STFT
        out[k] = istft(mix_spec * masks[k][None], length, hop_length)
    return out
