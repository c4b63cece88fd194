"""Mixing stretched loops: bar-aligned repeats, gains in dB, a peak ceiling.

Clips already stretched to one tempo (:mod:`unmixer.mashup.stretch`) are repeated from the
same start (bar 0) and summed, each with its own gain; the deck's browser preview is a light
mono WAV. Next: :mod:`unmixer.mashup.export`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unmixer.core.audio import SAMPLE_RATE, resample, to_stereo, wav_bytes
from unmixer.errors import UnmixerError

PREVIEW_SAMPLE_RATE = 22050
"""Sample rate (Hz) of the mono previews sent to the browser's live deck."""

PEAK_CEILING_DBFS = -1.0
"""A mix whose peak would pass this level (dB re full scale) is scaled down to it."""


def db_to_gain(gain_db: float | np.ndarray) -> np.ndarray:
    """Amplitude factor of a gain in dB: ``10 ** (gain_db / 20)`` (float32)."""
    return np.power(10.0, np.asarray(gain_db, dtype=np.float32) / 20.0).astype(np.float32)

def render_mix(clips: Sequence[np.ndarray], gains_db: Sequence[float], n_samples: int, *,
               ceiling_dbfs: float | None = PEAK_CEILING_DBFS) -> np.ndarray:
    """Sum loops bar-aligned: each clip repeats from sample 0, times its gain, cut to length.

    Parameters
    ----------
    clips : sequence of np.ndarray, each shape=(channels or none, samples_k)
        Loops already stretched to the target tempo (lengths are whole bars of the same
        grid, e.g. from :func:`stretch_to_bpm`); mono clips are duplicated to stereo.
    gains_db : sequence of float, dB
        One gain per clip (0 dB leaves it as is).
    n_samples : int, samples
        Length of the mix, e.g. ``n_bars * bar_samples(bpm, meter)``.
    ceiling_dbfs : float or None, dB re full scale
        If the summed peak would exceed this level the whole mix is scaled down to it
        (one gain for the whole mix, so the balance stays); ``None`` leaves the sum as is.

    Returns
    -------
    np.ndarray, float32, shape=(2, n_samples). Silence when ``clips`` is empty.

    Raises
    ------
    UnmixerError
        If ``clips`` and ``gains_db`` differ in length, a clip is empty, or
        ``n_samples <= 0``.
    """
    n_samples = _checked(clips, gains_db, n_samples)
    mix = np.zeros((2, n_samples), dtype=np.float32)
    for clip, gain in zip(clips, db_to_gain(np.asarray(gains_db, dtype=np.float32))):
        mix += _laid_out(clip, gain, n_samples)
    mix *= _ceiling_scale(mix, ceiling_dbfs)
    return mix

def render_stems(clips: Sequence[np.ndarray], gains_db: Sequence[float], n_samples: int, *,
                 ceiling_dbfs: float | None = PEAK_CEILING_DBFS) -> list[np.ndarray]:
    """Each loop of :func:`render_mix` on its own track: the same start (sample 0 = bar 1),
    length, gain and peak scaling, so the stems sum to the mix (for a DAW).

    Parameters
    ----------
    clips, gains_db, n_samples, ceiling_dbfs : as :func:`render_mix`

    Returns
    -------
    list of np.ndarray, float32, each shape=(2, n_samples), in the order of ``clips``; their
    sum is ``render_mix(clips, gains_db, n_samples, ceiling_dbfs=ceiling_dbfs)``.

    Raises
    ------
    UnmixerError
        As :func:`render_mix`.
    """
    n_samples = _checked(clips, gains_db, n_samples)
    scale = _ceiling_scale(render_mix(clips, gains_db, n_samples, ceiling_dbfs=None),
                           ceiling_dbfs)
    return [scale * _laid_out(clip, gain, n_samples)
            for clip, gain in zip(clips, db_to_gain(np.asarray(gains_db, dtype=np.float32)))]

def _checked(clips: Sequence[np.ndarray], gains_db: Sequence[float], n_samples: int) -> int:
    if len(clips) != len(gains_db):
        raise UnmixerError(f"{len(clips)} loops but {len(gains_db)} gains.")
    if int(n_samples) <= 0:
        raise UnmixerError("A mix lasts at least one sample.")
    return int(n_samples)

def _laid_out(clip: np.ndarray, gain: float, n_samples: int) -> np.ndarray:
    """``gain`` times the clip repeated from sample 0, cut to ``n_samples``: (2, n_samples)."""
    clip = to_stereo(clip)
    if clip.shape[-1] == 0:
        raise UnmixerError("Cannot mix an empty loop.")
    repeats = -(-n_samples // clip.shape[-1])
    return gain * np.tile(clip, (1, repeats))[:, :n_samples]

def _ceiling_scale(mix: np.ndarray, ceiling_dbfs: float | None) -> np.float32:
    """The factor that brings the mix's peak down to the ceiling (1 when it is below)."""
    peak = float(np.max(np.abs(mix))) if mix.size else 0.0
    if ceiling_dbfs is not None:
        ceiling = float(db_to_gain(ceiling_dbfs))
        if peak > ceiling:
            return np.float32(ceiling / peak)
    return np.float32(1.0)

def preview_wav(clip: np.ndarray, sr: int = SAMPLE_RATE,
                preview_sr: int = PREVIEW_SAMPLE_RATE) -> bytes:
    """A light mono 16-bit WAV of a clip, for the browser's Web Audio deck.

    Parameters
    ----------
    clip : np.ndarray, shape=(channels, samples) or (samples,), float
    sr : int, Hz of ``clip``
    preview_sr : int, Hz of the preview

    Returns
    -------
    bytes: a WAV file, 1 channel, PCM 16-bit, ``preview_sr`` Hz (about 44 kB per second).
    """
    clip = np.asarray(clip, dtype=np.float32)
    mono = clip.mean(axis=0) if clip.ndim == 2 else clip
    return wav_bytes(resample(mono, sr, preview_sr), preview_sr)
