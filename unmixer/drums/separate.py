"""Transcription-driven NMF: five drum layers from a mix.

The onsets found by the CNN instantiate the activation matrix H (each onset starts a decaying
envelope, two envelopes of different lengths per class), KL-divergence NMF with multiplicative
updates learns the spectral bases W that fit this mix with H fixed, then refines H lightly
(multiplicative updates keep H's zeros, so each class stays active only around its onsets), and
Wiener masks applied to the mixture's STFT give one layer per class; the masks sum to one, so
the layers sum to the input.

Source: Koretzky & Rajashekharappa, "Transcription-driven spectral basis learning for audio
source separation combining CNNs and NMF", ISMIR 2021 LBD, §2.2; KL multiplicative updates of
Lee & Seung (NIPS 2000) via :func:`unmixer.lab.nmf.beta_nmf`; soft masks of Liutkus & Badeau
(ICASSP 2015) via :func:`unmixer.lab.nmf.resynthesise_components`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unmixer.core import spectrum
from unmixer.drums import CLASSES
from unmixer.drums.features import FRAME_RATE
from unmixer.drums.transcribe import Transcription, transcribe
from unmixer.errors import UnmixerError
from unmixer.lab.nmf import beta_nmf, resynthesise_components

DECAYS_S = {
    "kick": (0.04, 0.20),
    "snare": (0.04, 0.18),
    "hihat_open": (0.06, 0.45),
    "hihat_closed": (0.02, 0.06),
    "toms": (0.06, 0.30),
}
"""Time constants (s) of the exponential envelopes that model one hit of each class in H:
one column per time constant, so a class has a short (attack) and a long (ring) template."""

PRE_FRAMES = 2
"""H rises this many frames before an onset's frame: a centred 2048-sample STFT frame sees a
hit up to 1024 samples (2 hops) before it starts."""

MIN_DURATION_S = 1.0
"""Shortest input accepted (s)."""


@dataclass
class DrumSplit:
    """Result of :func:`split_drums`.

    Attributes
    ----------
    layers : np.ndarray, float32, shape=(5, channels, samples): one layer per class
        (:data:`unmixer.drums.CLASSES`), summing to the input
    transcription : Transcription, with velocities refined from the learned activations
    W : np.ndarray, float32, shape=(1 + N_FFT // 2, n_components): learned spectral bases
    H : np.ndarray, float32, shape=(n_components, n_frames): activations
    groups : list of lists of int: the components (columns of W) of each class
    """

    layers: np.ndarray
    transcription: Transcription
    W: np.ndarray
    H: np.ndarray
    groups: list[list[int]]


def activations_from_onsets(onsets: dict[str, np.ndarray], strengths: dict[str, np.ndarray],
                            n_frames: int) -> tuple[np.ndarray, list[list[int]]]:
    """The initial activation matrix H: each onset starts a decaying envelope.

    Parameters
    ----------
    onsets : dict class -> onset times (s)
    strengths : dict class -> amplitude of each onset (> 0)
    n_frames : int, STFT frames

    Returns
    -------
    H : np.ndarray, float32, shape=(5 * 2, n_frames): for class c and time constant tau_j
        (:data:`DECAYS_S`), row 2c + j is sum_i s_i k_j(n - n_i) with
        k_j(m) = exp(-m / tau_j) for 0 <= m < 5 tau_j, a linear ramp over the PRE_FRAMES frames
        before, 0 elsewhere (the smoothed onset profile of the seed, §2.2).
    groups : list of 5 lists of row indices, one per class.
    """
    rows, groups = [], []
    for cls in CLASSES:
        impulses = np.zeros(n_frames, dtype=np.float32)
        frames = np.rint(np.asarray(onsets.get(cls, []), dtype=np.float64) * FRAME_RATE).astype(int)
        amp = np.asarray(strengths.get(cls, np.ones(frames.size)), dtype=np.float32)
        ok = (frames >= 0) & (frames < n_frames)
        np.add.at(impulses, frames[ok], np.maximum(amp[ok], 1e-3))
        start = len(rows)
        for tau in DECAYS_S[cls]:
            length = max(int(5 * tau * FRAME_RATE), 2)
            ramp = np.arange(1, PRE_FRAMES + 1, dtype=np.float32) / (PRE_FRAMES + 1)
            kernel = np.concatenate([ramp, np.exp(-np.arange(length) / (tau * FRAME_RATE))])
            rows.append(np.convolve(impulses, kernel.astype(np.float32))[PRE_FRAMES:PRE_FRAMES + n_frames])
        groups.append(list(range(start, len(rows))))
    return np.stack(rows).astype(np.float32), groups


def _velocities(H: np.ndarray, groups: list[list[int]], W: np.ndarray,
                onsets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Loudness of each onset from the learned activations: the class's model energy
    sum_j ||w_j|| h_j(n) at the onset's frame (+-2), mapped over 40 dB into (0, 1]."""
    norms = np.linalg.norm(W, axis=0)
    out = {}
    for cls, members in zip(CLASSES, groups):
        env = norms[members] @ H[members]
        frames = np.rint(np.asarray(onsets[cls]) * FRAME_RATE).astype(int)
        if frames.size == 0:
            out[cls] = np.zeros(0, dtype=np.float32)
            continue
        win = np.clip(frames[:, None] + np.arange(-2, 3)[None], 0, env.size - 1)
        amp = env[win].max(axis=1)
        db = 20 * np.log10(np.maximum(amp, 1e-12) / max(float(amp.max()), 1e-12))
        out[cls] = np.clip(1 + db / 40, 0.05, 1.0).astype(np.float32)
    return out


def split_drums(audio: np.ndarray, *, transcription: Transcription | None = None,
                n_iter: int = 25, n_refine: int = 10, power: float = 2.0) -> DrumSplit:
    """Separate a drum mix into kick, snare, open hi-hat, closed hi-hat and toms layers.

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples), float32, 44.1 kHz
    transcription : Transcription, optional
        Onsets to use (default: :func:`unmixer.drums.transcribe.transcribe` of ``audio``).
    n_iter : int
        KL multiplicative updates of W with H fixed.
    n_refine : int
        Then updates of both W and H (H keeps its zeros: a light refinement).
    power : float
        Exponent of the soft masks (2: Wiener).

    Returns
    -------
    DrumSplit; ``layers.sum(axis=0)`` equals ``audio`` up to the STFT round trip (~1e-6).

    Raises
    ------
    UnmixerError
        If the audio is shorter than :data:`MIN_DURATION_S`, silent or not finite.

    Source: Koretzky & Rajashekharappa, ISMIR 2021 LBD, §2.2.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.shape[-1] < MIN_DURATION_S * 44100:
        raise UnmixerError(f"The drum loop is too short ({audio.shape[-1] / 44100:.2f} s); "
                           f"the Drum Splitter needs at least {MIN_DURATION_S:.0f} s.")
    if not np.all(np.isfinite(audio)):
        raise UnmixerError("The audio holds non-finite samples.")
    spec = spectrum.stft(audio)
    mag = np.abs(spec.mean(axis=0))
    if float(mag.max()) <= 1e-8:
        raise UnmixerError("The audio is silent: there are no drums to split.")
    if transcription is None:
        transcription = transcribe(audio, mag=mag)
    H0, groups = activations_from_onsets(transcription.onsets, transcription.velocities,
                                         mag.shape[1])
    K = H0.shape[0]
    active = H0.sum(axis=1) > 0
    if not active.any():  # nothing transcribed: everything is one flat layer per class
        H0[:] = 1.0
    # tol=0 and one loss evaluation at the end: the per-iteration KL loss would cost as
    # much as the updates themselves.
    fit = beta_nmf(mag, K, beta=1.0, n_iter=n_iter, H=H0, update_H=False, tol=0.0,
                   loss_every=max(n_iter, 1))
    W, H = fit.W, fit.H
    if n_refine:
        fit = beta_nmf(mag, K, beta=1.0, n_iter=n_refine, W=W + 1e-9, H=H, tol=0.0,
                       loss_every=n_refine)
        W, H = fit.W, fit.H
    layers = resynthesise_components(audio, W, H, groups, power=power, spec=spec)
    velocities = _velocities(H, groups, W, transcription.onsets)
    refined = Transcription(transcription.onsets, velocities, transcription.profiles)
    return DrumSplit(layers, refined, W, H, groups)


def percussive_part(audio: np.ndarray, margin: float = 2.0) -> np.ndarray:
    """The percussive part of a full song by median-filtering HPSS, to feed the Drum Splitter.

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples), float32, 44.1 kHz
    margin : float
        HPSS separation margin (>= 1; larger keeps less of the non-percussive sound).

    Returns
    -------
    np.ndarray, float32, shape=audio.shape.

    Source: Fitzgerald, "Harmonic/percussive separation using median filtering", DAFx 2010,
    with the margin of Driedger, Müller & Disch, ISMIR 2014 (``librosa.decompose.hpss``).
    """
    import librosa

    audio = np.asarray(audio, dtype=np.float32)
    spec = spectrum.stft(audio)
    _, perc = librosa.decompose.hpss(spec, margin=margin)
    return spectrum.istft(perc, audio.shape[-1])


__all__ = ["DrumSplit", "split_drums", "activations_from_onsets", "percussive_part", "DECAYS_S"]
