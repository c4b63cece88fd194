"""Independent component analysis of stereo recordings (FastICA).

ICA applies to **instantaneous** mixtures x(t) = A s(t): every source reaches each channel
with a plain gain (amplitude panning, no delay or reverb), with at most as many sources as
channels (two for stereo). Then the unmixing matrix B ≈ A⁻¹ recovers the sources up to order
and scale. FastICA (Hyvärinen, "Fast and robust fixed-point algorithms for independent
component analysis", IEEE TNN 10(3), 1999) is scikit-learn's.

Two variants:

* ``"time"``: ICA on the waveform samples (as in the seed's ``perform_ica_separation``).
* ``"tf"``: ICA on the STFT coefficients (real and imaginary parts as samples). The STFT is
  linear, so an instantaneous mixture stays the same mixture in every time-frequency cell,
  while music is far sparser (more non-Gaussian) there than in the waveform, which is what
  ICA feeds on (Zibulevsky & Pearlmutter, "Blind source separation by sparse decomposition in
  a signal dictionary", Neural Computation 13(4), 2001). The unmixing matrix learned there is
  applied to the waveform. (The seed's ``tf_ica_separation`` instead runs ICA on one
  magnitude spectrogram and pastes the mixture phase on the result; that is not a separation
  model, so it is not reproduced.)

Each source is returned as its **stereo image** a_k s_k(t), so the images sum to the input
and the scale ambiguity disappears.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unmixer.errors import UnmixerError

VARIANTS = ("time", "tf")


@dataclass
class ICAResult:
    """Result of :func:`fastica_stereo`.

    Attributes
    ----------
    images : np.ndarray, float32, shape=(K, channels, samples)
        Stereo image of each source; they sum to the (mean-removed) input.
    sources : np.ndarray, float32, shape=(K, samples)
        The independent components, unit variance.
    mixing : np.ndarray, float64, shape=(channels, K)
        Estimated mixing matrix A (channel gains of each source).
    unmixing : np.ndarray, float64, shape=(K, channels)
        Estimated unmixing matrix B (sources = B (x - mean)).
    """

    images: np.ndarray
    sources: np.ndarray
    mixing: np.ndarray
    unmixing: np.ndarray


def fastica_stereo(audio: np.ndarray, n_components: int = 2, *, variant: str = "tf",
                   max_iter: int = 400, max_samples: int = 400_000,
                   random_state: int = 0) -> ICAResult:
    """Separate an instantaneous multichannel mixture into independent sources.

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples), channels ≥ 2
        The mixture (e.g. stereo at 44.1 kHz).
    n_components : int, 1 ≤ K ≤ channels
        Number of sources.
    variant : {"time", "tf"}
        Learn the unmixing matrix from the waveform samples or from the STFT coefficients.
    max_iter : int
        FastICA iterations.
    max_samples : int
        At most this many (evenly strided) samples or STFT coefficients are used to learn the
        unmixing matrix; it is applied to the whole signal.
    random_state : int
        Seed of FastICA's initial rotation.

    Returns
    -------
    ICAResult

    Raises
    ------
    UnmixerError
        If the input is not multichannel (or its channels are identical, i.e. dual mono), holds
        non-finite values, K exceeds the channel count, or the variant is unknown.

    Source: Hyvärinen 1999 (FastICA, logcosh contrast), via ``sklearn.decomposition.FastICA``;
    TF variant after Zibulevsky & Pearlmutter 2001.
    """
    from sklearn.decomposition import FastICA

    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 2:
        raise UnmixerError(f"ICA needs a multichannel signal (channels, samples); got shape {x.shape}")
    n_ch = x.shape[0]
    if not isinstance(n_components, (int, np.integer)) or not 1 <= n_components <= n_ch:
        raise UnmixerError(f"ICA separates at most as many sources as channels ({n_ch}); "
                           f"got n_components={n_components}")
    if variant not in VARIANTS:
        raise UnmixerError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if not np.all(np.isfinite(x)):
        raise UnmixerError("the audio holds non-finite samples")
    mean = x.mean(axis=1, keepdims=True)
    xc = x - mean
    cov = np.cov(xc[:, :: max(1, xc.shape[1] // 100_000)].astype(np.float64))
    if np.linalg.matrix_rank(cov, tol=1e-6 * max(np.trace(cov), 1e-30)) < n_components:
        raise UnmixerError("the channels are (nearly) identical: dual mono holds one mixture, "
                           "so ICA cannot separate it")
    if variant == "time":
        step = max(1, xc.shape[1] // max_samples)
        train = xc[:, ::step]
    else:
        from unmixer.core.spectrum import stft

        spec = stft(xc)  # (C, F, N) complex
        coeffs = spec.reshape(n_ch, -1)
        coeffs = np.concatenate([coeffs.real, coeffs.imag], axis=1)
        # the loudest coefficients carry the sparse structure; keep the top ones
        energy = np.sum(coeffs**2, axis=0)
        keep = min(max_samples, energy.size)
        idx = np.argpartition(energy, energy.size - keep)[energy.size - keep:]
        train = coeffs[:, idx]
    ica = FastICA(n_components=n_components, algorithm="parallel", whiten="unit-variance",
                  fun="logcosh", max_iter=max_iter, tol=1e-5, random_state=random_state)
    ica.fit(train.T.astype(np.float64))
    unmixing = ica.components_  # (K, C): s = B (x - mean_train)
    sources = (unmixing @ xc.astype(np.float64)).astype(np.float32)
    mixing = np.linalg.pinv(unmixing)  # (C, K)
    images = (mixing.T[:, :, None] * sources[:, None, :]).astype(np.float32)
    order = np.argsort(-np.sum(images.astype(np.float64) ** 2, axis=(1, 2)))  # loudest first
    return ICAResult(images=images[order], sources=sources[order], mixing=mixing[:, order],
                     unmixing=unmixing[order])


__all__ = ["ICAResult", "fastica_stereo", "VARIANTS"]
