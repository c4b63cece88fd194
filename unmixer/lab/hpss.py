"""HPSS + NMF: harmonic/percussive split, NMF of each part, and drums/bass/melody stems.

Median-filtering HPSS (Fitzgerald, "Harmonic/percussive separation using median filtering",
DAFx 2010; librosa's ``decompose.hpss``) splits the magnitude spectrogram into a harmonic part
(smooth in time) and a percussive part (smooth in frequency). Each part is then factorised
with :func:`unmixer.lab.nmf.beta_nmf`, and every component of both parts competes in one set of
Wiener masks on the mixture STFT, so the components (and any grouping of them) sum to the
input. This replaces the seed's hard split (harmonic/percussive NMF models, then a fixed
200 Hz brick-wall for bass) with soft masks throughout: a harmonic component is "bass" when
most of its template's energy lies below the cut-off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unmixer.core.spectrum import N_FFT
from unmixer.errors import UnmixerError
from unmixer.lab.nmf import NMFResult, beta_nmf

STEM_NAMES = ("drums", "bass", "melody")


@dataclass
class HPSSNMFResult:
    """Result of :func:`hpss_nmf`.

    Attributes
    ----------
    harmonic, percussive : NMFResult
        The factorisations of the harmonic and percussive magnitude spectrograms
        (shape (n_freq, n_frames) each).
    W : np.ndarray, float32, shape=(n_freq, K_h + K_p)
        All templates, harmonic first.
    H : np.ndarray, float32, shape=(K_h + K_p, n_frames)
        All activations.
    is_percussive : np.ndarray, bool, shape=(K_h + K_p,)
    bass_fraction : np.ndarray, float, shape=(K_h + K_p,)
        Share of each template's energy below ``bass_cutoff_hz``.
    """

    harmonic: NMFResult
    percussive: NMFResult
    W: np.ndarray
    H: np.ndarray
    is_percussive: np.ndarray
    bass_fraction: np.ndarray

    def stem_groups(self, bass_share: float = 0.5) -> dict[str, list[int]]:
        """Component indices of the drums, bass and melody stems.

        Drums: every percussive component. Bass: harmonic components with at least
        ``bass_share`` of their template energy below the cut-off. Melody: the other harmonic
        components. A stem with no component is left out.
        """
        idx = np.arange(self.W.shape[1])
        harmonic = ~self.is_percussive
        groups = {
            "drums": idx[self.is_percussive].tolist(),
            "bass": idx[harmonic & (self.bass_fraction >= bass_share)].tolist(),
            "melody": idx[harmonic & (self.bass_fraction < bass_share)].tolist(),
        }
        return {k: v for k, v in groups.items() if v}


def hpss_nmf(magnitude: np.ndarray, n_harmonic: int = 4, n_percussive: int = 4, *,
             beta: float = 1.0, n_iter: int = 100, kernel_size: int = 31, margin: float = 1.0,
             sr: int = 44100, n_fft: int = N_FFT, bass_cutoff_hz: float = 200.0,
             random_state: int = 0) -> HPSSNMFResult:
    """HPSS by median filtering, then NMF of the harmonic and the percussive part.

    Parameters
    ----------
    magnitude : np.ndarray, shape=(n_freq, n_frames), nonnegative
        Magnitude spectrogram of the mixture (e.g. the channel mean of |STFT|).
    n_harmonic, n_percussive : int ≥ 1
        Components of each part.
    beta : float in [0, 2]
        β-divergence of both NMFs.
    n_iter : int
        Iterations of each NMF.
    kernel_size : int
        Median filter length in frames (harmonic) and bins (percussive).
    margin : float ≥ 1
        HPSS margin (librosa); 1 is the plain soft split.
    sr, n_fft : int
        Sample rate (Hz) and FFT size of the spectrogram, for the bass cut-off.
    bass_cutoff_hz : float, Hz
        A harmonic component whose template has most of its energy below this is "bass".

    Returns
    -------
    HPSSNMFResult

    Raises
    ------
    UnmixerError
        On a bad spectrogram or parameters (see :func:`unmixer.lab.nmf.beta_nmf`).

    Source: Fitzgerald, DAFx 2010 (HPSS); Févotte & Idier 2011 (NMF).
    """
    import librosa

    S = np.asarray(magnitude, dtype=np.float32)
    if S.ndim != 2:
        raise UnmixerError(f"magnitude must be (n_freq, n_frames), got shape {S.shape}")
    for name, k in (("n_harmonic", n_harmonic), ("n_percussive", n_percussive)):
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise UnmixerError(f"{name} must be a positive integer, got {k!r}")
    S_h, S_p = librosa.decompose.hpss(S, kernel_size=kernel_size, margin=margin, power=2.0)
    res_h = beta_nmf(S_h, n_harmonic, beta=beta, n_iter=n_iter, random_state=random_state)
    res_p = beta_nmf(S_p, n_percussive, beta=beta, n_iter=n_iter, random_state=random_state)
    W = np.concatenate([res_h.W, res_p.W], axis=1)
    H = np.concatenate([res_h.H, res_p.H], axis=0)
    freqs = np.arange(S.shape[0]) * sr / n_fft
    energy = W.astype(np.float64) ** 2
    bass_fraction = energy[freqs < bass_cutoff_hz].sum(0) / np.maximum(energy.sum(0), 1e-30)
    is_perc = np.r_[np.zeros(n_harmonic, bool), np.ones(n_percussive, bool)]
    return HPSSNMFResult(res_h, res_p, W, H, is_perc, bass_fraction)


__all__ = ["HPSSNMFResult", "hpss_nmf", "STEM_NAMES"]
