"""STFT, inverse STFT and Wiener-mask resynthesis, shared by every decomposition.

The STFT is librosa's (Hann window, centred frames). Masks are "soft masks" or generalised
Wiener filters (Liutkus & Badeau, "Generalized Wiener filtering with fractional power
spectrograms", ICASSP 2015): M_k = V_k^p / sum_l V_l^p, so the masks of all sources sum to 1
in every cell and the resynthesised sources sum to the mixture.
"""

from __future__ import annotations

import numpy as np

from unmixer.errors import UnmixerError

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


def stft_magnitude(audio: np.ndarray, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH,
                   n_threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The complex STFT of each channel (as :func:`stft`) and the channels' mean magnitude,
    one channel per thread (librosa's STFT and NumPy release the GIL), so a stereo song's
    takes about half the time of :func:`stft` on a free second core.

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples)
    n_fft, hop_length : int, samples
    n_threads : int, channels computed at once (1: one after the other)

    Returns
    -------
    spec : np.ndarray, complex64, shape=(channels, 1 + n_fft // 2, n_frames), equal to
        :func:`stft`'s
    magnitude : np.ndarray, float32, shape=(1 + n_fft // 2, n_frames), equal to
        ``np.abs(spec).mean(axis=0)``

    Raises
    ------
    UnmixerError
        If ``audio`` is not 2-D (channels, samples).
    """
    from concurrent.futures import ThreadPoolExecutor

    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 2:
        raise UnmixerError(f"stft_magnitude needs audio of shape (channels, samples), not {x.shape}.")
    n_frames = 1 + x.shape[-1] // hop_length
    spec = np.empty((x.shape[0], 1 + n_fft // 2, n_frames), dtype=np.complex64)
    mags = np.empty(spec.shape, dtype=np.float32)

    def one(c: int) -> None:
        spec[c] = stft(x[c], n_fft, hop_length)
        np.abs(spec[c], out=mags[c])

    with ThreadPoolExecutor(max(1, min(int(n_threads), x.shape[0]))) as pool:
        list(pool.map(one, range(x.shape[0])))
    return spec, mags.mean(axis=0)


def stft_frames(audio: np.ndarray, start: int, stop: int, n_fft: int = N_FFT,
                hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Frames ``[start, stop)`` of :func:`stft`, computed from the samples they cover only.

    Frame t of the centred STFT covers samples t·hop − n_fft/2 … t·hop + n_fft/2 (zeros
    outside the song, librosa's constant padding); those samples, framed without centring,
    give the same frames, bit for bit (tested).

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples) or (samples,)
    start, stop : int, frames, 0 <= start < stop <= 1 + samples // hop_length
    n_fft, hop_length : int, samples

    Returns
    -------
    np.ndarray, complex64, shape=(channels, 1 + n_fft // 2, stop - start) (without the
    channel axis for 1-D input)

    Raises
    ------
    UnmixerError
        If the frame range is empty or outside the song.
    """
    import librosa

    x = np.asarray(audio, dtype=np.float32)
    n_frames = 1 + x.shape[-1] // hop_length
    if not 0 <= start < stop <= n_frames:
        raise UnmixerError(f"frames [{start}, {stop}) are not within the song's {n_frames} frames")
    lo = start * hop_length - n_fft // 2
    hi = (stop - 1) * hop_length + n_fft - n_fft // 2
    if lo >= 0 and hi <= x.shape[-1]:
        seg = x[..., lo:hi]
    else:
        seg = np.zeros(x.shape[:-1] + (hi - lo,), dtype=np.float32)
        a, b = max(lo, 0), min(hi, x.shape[-1])
        seg[..., a - lo:b - lo] = x[..., a:b]
    return librosa.stft(seg, n_fft=n_fft, hop_length=hop_length, window="hann",
                        center=False).astype(np.complex64, copy=False)


class LazySTFT:
    """The complex STFT of a song whose frames are computed when asked for, never kept whole.

    Stands in for the array :func:`stft` returns where only stretches of frames are read
    (:func:`unmixer.loops.masks.separate_tracks` masks one chunk at a time): a 4-minute
    stereo song's STFT is 347 MB as an array; here each chunk's frames are recomputed from
    the samples (one more STFT of the song in all), bit-equal to the array's.

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples), kept by reference
    n_fft, hop_length : int, samples

    Attributes
    ----------
    shape : (channels, 1 + n_fft // 2, n_frames), as the array's
    """

    def __init__(self, audio: np.ndarray, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH):
        self.audio, self.n_fft, self.hop_length = audio, int(n_fft), int(hop_length)
        self.shape = (audio.shape[0], 1 + self.n_fft // 2, 1 + audio.shape[-1] // self.hop_length)

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop): complex64, shape=(channels, n_freq, stop - start)."""
        return stft_frames(self.audio, start, stop, self.n_fft, self.hop_length)

    def magnitude(self, block: int = 4096) -> np.ndarray:
        """The channels' mean magnitude |X|, float32, shape=(n_freq, n_frames), computed
        ``block`` frames at a time (equal to ``np.abs(stft(audio)).mean(axis=0)``)."""
        n = self.shape[-1]
        out = np.empty(self.shape[1:], dtype=np.float32)
        for a in range(0, n, block):  # blocks of thousands of frames, not a loop over frames
            b = min(n, a + block)
            out[:, a:b] = np.abs(self.frames(a, b)).mean(axis=0)
        return out


def spectrum_frames(spec, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) of an STFT given as an array (channels, n_freq, n_frames) or a
    :class:`LazySTFT`: complex, shape=(channels, n_freq, stop - start)."""
    if isinstance(spec, LazySTFT):
        return spec.frames(start, stop)
    return spec[..., start:stop]


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


MASK_EPS = 1e-9
"""Regulariser of every Wiener mask, relative to the largest powered model (which is 1)."""


def wiener_mask(powered: np.ndarray, powered_sum: np.ndarray, n_sources: int,
                eps: float = MASK_EPS, out: np.ndarray | None = None) -> np.ndarray:
    """One source's soft mask from its powered model and the sum over all sources.

    M_k = (V_k^p + ε / K) / (Σ_l V_l^p + ε): the K masks sum to 1 in every cell, and a cell
    where every model is 0 gets 1/K for each source. This is the one mask formula of Unmixer
    (NMF Lab, loop engine, baselines); the models are scaled so that the largest powered
    value is about 1, which makes ε a relative floor.

    Parameters
    ----------
    powered : np.ndarray, any shape, V_k^p (nonnegative, float32)
    powered_sum : np.ndarray, broadcastable to ``powered``, Σ_l V_l^p
    n_sources : int, K
    eps : float, ε
    out : np.ndarray, optional, where to write the mask (may be ``powered`` itself)

    Returns
    -------
    np.ndarray, float32, shape of ``powered``, in [0, 1]

    Source: Liutkus & Badeau, "Generalized Wiener filtering with fractional power
    spectrograms", ICASSP 2015, eq. (7)-(9).
    """
    floor = np.float32(eps)
    out = np.add(powered, floor / max(int(n_sources), 1), out=out, dtype=np.float32)
    out /= powered_sum + floor
    return out


def wiener_masks(models: np.ndarray, power: float = 2.0, eps: float = MASK_EPS) -> np.ndarray:
    """Soft masks from nonnegative source models: M_k = V_k^p / sum_l V_l^p (:func:`wiener_mask`).

    Cells where every model is 0 get 1/K for each source, so the masks always sum to 1.

    Parameters
    ----------
    models : np.ndarray, shape=(K, ...), nonnegative magnitude models of K sources
    power : float
        Exponent p (2: Wiener filter on magnitudes; 1: ratio of magnitudes).
    eps : float
        Regulariser, relative to the largest powered model.

    Returns
    -------
    np.ndarray, float32, shape=models.shape, in [0, 1], summing to 1 over axis 0.

    Raises
    ------
    UnmixerError
        If ``models`` has no source axis.

    Source: Liutkus & Badeau, ICASSP 2015, eq. (7)-(9).

    Examples
    --------
    >>> masks = wiener_masks(np.array([[3.0, 0.0], [1.0, 0.0]]))  # two sources, two cells
    >>> [[round(float(m), 2) for m in row] for row in masks]
    [[0.9, 0.5], [0.1, 0.5]]
    """
    models = np.asarray(models, dtype=np.float32)
    if models.ndim < 2:
        raise UnmixerError("Wiener masks need models of shape (K, ...), with a source axis.")
    scale = float(models.max(initial=0.0))
    if scale <= 0:
        return np.full(models.shape, 1.0 / models.shape[0], dtype=np.float32)
    powered = (models / scale) ** np.float32(power)
    return wiener_mask(powered, powered.sum(axis=0), models.shape[0], eps, out=powered)


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
