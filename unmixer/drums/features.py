"""The CNN's input: a level-normalised log-mel spectrogram of the mono mix.

It is computed from the same STFT (2048 samples, hop 512 at 44.1 kHz, see
:mod:`unmixer.core.spectrum`) that the separation masks, so a song is transformed once.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from unmixer.core.audio import SAMPLE_RATE
from unmixer.core.spectrum import HOP_LENGTH, N_FFT

N_MELS = 80
"""Mel bands of the CNN input."""

FMIN_HZ = 30.0
FMAX_HZ = 17000.0

TARGET_RMS = 0.1
"""The mix is scaled to this RMS (-20 dBFS) before the mel spectrogram, so the CNN does not
depend on the input level."""

FRAME_RATE = SAMPLE_RATE / HOP_LENGTH
"""CNN output frames per second (86.13 Hz, 11.6 ms per frame)."""


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """Slaney-normalised mel filterbank, shape=(N_MELS, 1 + N_FFT // 2), float32."""
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN_HZ,
                               fmax=FMAX_HZ).astype(np.float32)


def log_mel_from_magnitude(mag: np.ndarray, rms: float) -> np.ndarray:
    """Log-compressed mel spectrogram from an STFT magnitude.

    Parameters
    ----------
    mag : np.ndarray, shape=(1 + N_FFT // 2, n_frames), |STFT| of the mono mix
    rms : float
        RMS of the mono mix in the time domain; the mel spectrogram is scaled by
        ``TARGET_RMS / rms`` (level normalisation).

    Returns
    -------
    np.ndarray, float32, shape=(N_MELS, n_frames): log(1 + 10 * mel).
    """
    gain = np.float32(TARGET_RMS / max(float(rms), 1e-8))
    mel = mel_filterbank() @ (np.asarray(mag, dtype=np.float32) * gain)
    return np.log1p(10.0 * mel).astype(np.float32)


def log_mel(mono: np.ndarray) -> np.ndarray:
    """Log-mel spectrogram of a mono signal (the CNN input).

    Parameters
    ----------
    mono : np.ndarray, shape=(samples,), float, 44.1 kHz

    Returns
    -------
    np.ndarray, float32, shape=(N_MELS, 1 + samples // HOP_LENGTH); frame t is centred on
    sample t * HOP_LENGTH.
    """
    from unmixer.core.spectrum import stft

    mono = np.asarray(mono, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64)))) if mono.size else 0.0
    return log_mel_from_magnitude(np.abs(stft(mono)), rms)


def times_to_frames(times_s: np.ndarray) -> np.ndarray:
    """Nearest CNN frame index of each time (s), int."""
    return np.rint(np.asarray(times_s, dtype=np.float64) * FRAME_RATE).astype(int)


def frames_to_times(frames: np.ndarray) -> np.ndarray:
    """Centre time (s) of each frame index."""
    return np.asarray(frames, dtype=np.float64) / FRAME_RATE
