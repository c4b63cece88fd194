"""Coarse labels of loop clips (drums, bass, chords, lead, vocal-like), or "loop" when unsure.

A clip is described by a handful of explainable audio features (:data:`FEATURES`: where its
energy lies in frequency, how percussive it is, how many pitch classes sound at once, how
steady its pitch is, how often notes start, how noise-like and how level-varying it is), and
a multinomial logistic regression on the standardised features gives each class a
probability. The regression's numbers (:data:`FEATURE_MEAN`, :data:`FEATURE_STD`,
:data:`WEIGHTS`, :data:`BIAS`) were fitted by ``bench/labels_eval.py fit`` on loops SEPARATED
by :func:`unmixer.loops.pipeline.extract_loops` from generated songs (so with the other
instruments' leakage), not on clean stems; ``bench/labels_eval.py eval`` scores it on
held-out songs (bench/RESULTS_labels.md). Below :data:`MIN_CONFIDENCE` the label is the
neutral "loop": a wrong label misleads more than none.
"""

from __future__ import annotations

import numpy as np

from unmixer.errors import UnmixerError

CLASSES = ("drums", "bass", "chords", "lead", "vocal-like")
"""The classes of the classifier."""

FALLBACK = "loop"
"""The label of a clip no class is confident about."""

LABELS = CLASSES + (FALLBACK,)
"""Every label a loop can get."""

FEATURES = ("log2 median Hz", "low share", "high share", "percussive share", "polyphony",
            "pitch wobble", "onset rate", "flatness", "level spread")
"""Names of the entries of :func:`loop_features`."""

N_FFT, HOP = 2048, 1024
LOW_HZ, HIGH_HZ = 250.0, 4000.0
CHROMA_FFT, CHROMA_HZ = 8192, (100.0, 4000.0)

# Fitted by `bench/labels_eval.py fit` (see the module docstring); one row of WEIGHTS per class.
FEATURE_MEAN = np.array([10.4466, 0.1419, 0.1017, 0.1918, 1.9842, 2.5603, 3.6978, -4.3091, 10.0512], dtype=np.float32)
FEATURE_STD = np.array([1.1694, 0.1918, 0.1721, 0.2695, 1.1534, 2.1005, 1.4059, 1.6330, 5.3071], dtype=np.float32)
WEIGHTS = np.array([
    [0.306, 0.569, 0.110, 0.878, 1.059, 0.994, 0.274, 0.264, 0.592],  # drums
    [-0.567, 1.456, 0.552, 0.351, -0.179, -0.703, -0.057, 0.833, -0.076],  # bass
    [0.550, -0.003, -0.670, -0.596, 0.457, 0.751, -0.244, -0.059, -1.161],  # chords
    [0.423, -0.760, 0.377, -0.133, -0.980, -2.015, 0.156, -0.503, 0.516],  # lead
    [-0.713, -1.261, -0.368, -0.501, -0.356, 0.973, -0.129, -0.535, 0.128],  # vocal-like
], dtype=np.float32)
BIAS = np.array([-0.797, 0.990, 0.404, -0.439, -0.158], dtype=np.float32)
MIN_CONFIDENCE = 0.6
"""Below this class probability the label is :data:`FALLBACK`: chosen from the trade-off between
loops left unlabelled and wrong labels (bench/RESULTS_labels.md) and from the real songs."""


def loop_features(clip: np.ndarray, sr: int) -> np.ndarray:
    """The explainable features of a loop clip, in the order of :data:`FEATURES`.

    On the mono clip's A-weighted magnitude STFT (2048-point frames, hop 1024; A-weighting so
    that the sub-bass every separated loop of a real mix carries does not dominate):

    * log2 median Hz: log2 of the frequency below which half the spectral magnitude lies;
    * low share, high share: fraction of the energy below 250 Hz, and above 4 kHz;
    * percussive share: fraction of the energy in the percussive part of median-filtering
      HPSS (kernels 17 frames x 9 bins);
    * polyphony: mean number of pitch classes whose chroma reaches half the frame's maximum,
      over frames within 13 dB of the loudest (chroma from an 8192-point STFT, 100 Hz-4 kHz);
    * pitch wobble: log2(1 + median absolute frame-to-frame change of the YIN pitch in
      cents), over frames within 10 dB of the loudest, steps of a note change (>= 300 cents)
      left out (vibrato and glides: high; steady notes: low; no pitch: 8.2);
    * onset rate: onsets per second (librosa's spectral-flux onset detector);
    * flatness: mean log10 spectral flatness (geometric / arithmetic mean of the power
      spectrum) of the loud frames (noise: near 0; tones: strongly negative);
    * level spread: standard deviation of the frames' level (dB) over the frames within
      60 dB of the loudest (sustained: low; hits and gaps: high).

    Parameters
    ----------
    clip : np.ndarray, shape=(channels, samples) or (samples,), float
    sr : int, Hz

    Returns
    -------
    np.ndarray, shape=(9,), float32

    Raises
    ------
    UnmixerError
        If the clip is shorter than one frame (2048 samples).

    Source: HPSS after Fitzgerald, DAFx 2010; YIN after de Cheveigné & Kawahara, JASA 2002;
    spectral flatness after Johnston, IEEE JSAC 1988; onsets after Böck & Widmer, DAFx 2013.
    """
    import librosa

    y = np.asarray(clip, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)
    if y.shape[-1] < N_FFT:
        raise UnmixerError(f"a loop clip needs at least {N_FFT} samples, not {y.shape[-1]}")
    spec = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))  # (F, N)
    freqs = librosa.fft_frequencies(sr=sr, n_fft=N_FFT)
    weight = (10 ** (librosa.A_weighting(np.maximum(freqs, 1.0)) / 20)).astype(np.float32)[:, None]
    spec = spec * weight  # A-weighted magnitudes: shares as heard, not dominated by sub-bass
    power = spec**2
    frame_power = power.sum(axis=0)
    total = float(frame_power.sum()) + 1e-20
    magnitude = spec.sum(axis=1)
    cdf = np.cumsum(magnitude) / max(float(magnitude.sum()), 1e-20)
    median_hz = float(freqs[min(np.searchsorted(cdf, 0.5), len(freqs) - 1)])
    low = float(power[freqs < LOW_HZ].sum()) / total
    high = float(power[freqs >= HIGH_HZ].sum()) / total
    harmonic, percussive = librosa.decompose.hpss(spec, kernel_size=(9, 17), margin=1.0)
    percussive_share = float((percussive**2).sum()) / total

    peak = max(float(frame_power.max()), 1e-20)
    loud = frame_power > 0.05 * peak
    fine = np.abs(librosa.stft(y, n_fft=CHROMA_FFT, hop_length=HOP))  # 5.4 Hz bins at 44.1 kHz
    fine_hz = librosa.fft_frequencies(sr=sr, n_fft=CHROMA_FFT)
    fine[(fine_hz < CHROMA_HZ[0]) | (fine_hz > CHROMA_HZ[1])] = 0
    chroma = librosa.feature.chroma_stft(S=fine**2, sr=sr, n_fft=CHROMA_FFT, tuning=0.0)
    chroma = chroma[:, loud[: chroma.shape[1]]]
    active = chroma >= 0.5 * np.maximum(chroma.max(axis=0, keepdims=True), 1e-20)
    polyphony = float(active.sum(axis=0).mean()) if chroma.shape[1] else 0.0

    f0 = librosa.yin(y, fmin=60, fmax=1000, sr=sr, frame_length=N_FFT, hop_length=HOP)
    voiced = frame_power[: len(f0)] > 0.1 * peak
    steps = np.abs(np.diff(1200 * np.log2(f0[: len(voiced)][voiced] / 440.0)))
    steps = steps[steps < 300]
    wobble = float(np.log2(1 + np.median(steps))) if len(steps) > 4 else float(np.log2(301))

    onset_env = librosa.onset.onset_strength(S=librosa.power_to_db(power), sr=sr)
    onsets = librosa.onset.onset_detect(onset_envelope=onset_env, sr=sr, hop_length=HOP)
    onset_rate = len(onsets) / (len(y) / sr)

    flat = librosa.feature.spectral_flatness(S=spec, power=2.0)[0]
    flatness = float(np.log10(np.maximum(flat[loud], 1e-10)).mean()) if loud.any() else 0.0
    level_db = 10 * np.log10(np.maximum(frame_power, 1e-20) / peak)
    spread = float(level_db[level_db > -60].std())

    return np.array([np.log2(max(median_hz, 20.0)), low, high, percussive_share, polyphony,
                     wobble, onset_rate, flatness, spread], dtype=np.float32)


def class_probabilities(features: np.ndarray) -> np.ndarray:
    """Softmax of the fitted multinomial logistic regression on standardised features.

    Parameters
    ----------
    features : np.ndarray, shape=(..., 9), from :func:`loop_features`

    Returns
    -------
    np.ndarray, shape=(..., 5), float32, probabilities of :data:`CLASSES` (sum 1)

    Source: multinomial logistic regression, Bishop, *Pattern Recognition and Machine
    Learning*, 2006, §4.3.4, eq. (4.104).
    """
    z = ((np.asarray(features, dtype=np.float32) - FEATURE_MEAN) / FEATURE_STD) @ WEIGHTS.T + BIAS
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def label_probabilities(clip: np.ndarray, sr: int) -> dict[str, float]:
    """Probability of each class for a loop clip (see :func:`loop_features`).

    Parameters
    ----------
    clip : np.ndarray, shape=(channels, samples) or (samples,)
    sr : int, Hz

    Returns
    -------
    dict, class name (:data:`CLASSES`) -> probability; all 0.2 for a silent clip or one
    shorter than a frame (2048 samples)
    """
    y = np.asarray(clip, dtype=np.float32)
    if not np.any(y) or y.shape[-1] < N_FFT:
        return {c: 1.0 / len(CLASSES) for c in CLASSES}
    p = class_probabilities(loop_features(y, sr))
    return {c: float(v) for c, v in zip(CLASSES, p)}


def choose_label(probabilities: dict[str, float], min_confidence: float = MIN_CONFIDENCE) -> str:
    """The most probable class, or :data:`FALLBACK` when its probability is below ``min_confidence``."""
    best = max(probabilities, key=probabilities.get)
    return best if probabilities[best] >= min_confidence else FALLBACK


def label_loop(clip: np.ndarray, sr: int, min_confidence: float = MIN_CONFIDENCE) -> str:
    """A coarse label for a loop clip: one of :data:`LABELS`.

    Parameters
    ----------
    clip : np.ndarray, shape=(channels, samples) or (samples,)
    sr : int, Hz
    min_confidence : float in [0, 1], below it the label is "loop"

    Returns
    -------
    str, "drums", "bass", "chords", "lead", "vocal-like", or "loop" (unsure, silent, or
    shorter than 2048 samples)

    Source: see :func:`loop_features` and :func:`class_probabilities`.
    """
    return choose_label(label_probabilities(clip, sr), min_confidence)
