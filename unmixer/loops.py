"""From a (purified) Tucker model to loops: templates, bar choice, masks, clips, labels.

With the purified core G′ (r_sound, r_rhythm, K), the sound templates W (n_freq, r_sound),
the rhythm templates H (n_steps, r_rhythm) and the loop activations D′ (n_segments, K),
loop k's spectrogram in segment s is modelled as ``D′[s, k] · P_k`` with the loop template
``P_k = W G′[:, :, k] Hᵀ`` (n_freq, n_steps): Smith, Kawasaki & Goto, ISMIR 2019, §3.1.
"""

from __future__ import annotations

import numpy as np

from unmixer.cube import CubeGrid, cube_to_frames, frame_steps
from unmixer.spectrum import HOP_LENGTH, istft

LABELS = ("drums", "bass", "chords", "lead", "vocal-like")
"""The coarse loop labels."""


def loop_templates(core: np.ndarray, sound: np.ndarray, rhythm: np.ndarray) -> np.ndarray:
    """P_k = W G′[:, :, k] Hᵀ for every loop.

    Parameters
    ----------
    core : np.ndarray, shape=(r_sound, r_rhythm, K)
    sound : np.ndarray, shape=(n_freq, r_sound), W
    rhythm : np.ndarray, shape=(n_steps, r_rhythm), H

    Returns
    -------
    np.ndarray, float32, shape=(K, n_freq, n_steps), nonnegative magnitudes

    Source: Smith, Kawasaki & Goto, ISMIR 2019, §3.1.
    """
    gh = np.tensordot(core, rhythm, axes=([1], [1]))  # (r_sound, K, n_steps)
    p = np.tensordot(sound, gh, axes=([1], [0]))  # (n_freq, K, n_steps)
    return np.ascontiguousarray(np.moveaxis(p, 1, 0), dtype=np.float32)


def _powered(templates: np.ndarray, activations: np.ndarray, power: float):
    """(P_k / max P)^p as (K, F·T) and (D′ / max D′)^p as (n_segments, K), float32."""
    K = templates.shape[0]
    pk = (templates.reshape(K, -1) / max(float(templates.max()), 1e-30)) ** power
    dk = (activations / max(float(activations.max()), 1e-30)) ** power
    return pk.astype(np.float32), dk.astype(np.float32)


def cube_mask_denominator(pk: np.ndarray, dk: np.ndarray) -> np.ndarray:
    """Σ_l (D′[s,l] P_l)^p over the cube, shape=(F·T, n_segments): one matrix product."""
    return pk.T @ dk.T


def mask_shares(templates: np.ndarray, activations: np.ndarray, cube: np.ndarray,
                power: float = 2.0) -> np.ndarray:
    """Fraction of each segment's energy that each loop's Wiener mask keeps.

    share[s, k] = Σ_{f,j} M_k(f, j, s) X(f, j, s)² / Σ_{f,j} X(f, j, s)², with
    M_k = (D′[s,k] P_k)^p / Σ_l (D′[s,l] P_l)^p.

    Parameters
    ----------
    templates : np.ndarray, shape=(K, n_freq, n_steps), P
    activations : np.ndarray, shape=(n_segments, K), D′
    cube : np.ndarray, shape=(n_freq, n_steps, n_segments), X

    Returns
    -------
    np.ndarray, float32, shape=(n_segments, K), in [0, 1]
    """
    pk, dk = _powered(templates, activations, power)
    denom = cube_mask_denominator(pk, dk)  # (F·T, S)
    x2 = cube.reshape(-1, cube.shape[-1]).astype(np.float32) ** 2  # (F·T, S)
    eps = np.float32(1e-12 * float(denom.max(initial=0.0)) + 1e-30)
    share = dk * (pk @ (x2 / (denom + eps))).T  # (S, K)
    return (share / np.maximum(x2.sum(axis=0), 1e-30)[:, None]).astype(np.float32)


def choose_segments(templates: np.ndarray, activations: np.ndarray, cube: np.ndarray,
                    power: float = 2.0) -> np.ndarray:
    """The segment that best shows each loop: argmax over s of activation × mask share.

    Parameters
    ----------
    templates : np.ndarray, shape=(K, n_freq, n_steps)
    activations : np.ndarray, shape=(n_segments, K)
    cube : np.ndarray, shape=(n_freq, n_steps, n_segments)

    Returns
    -------
    np.ndarray, shape=(K,), int, segment indices

    Source: Smith, Kawasaki & Goto, ISMIR 2019, §3.1 ("D·M": activation loudness times
    soft-mask share, so the chosen bar is loud for the loop and has little crosstalk).
    """
    act = activations / np.maximum(activations.max(axis=0, keepdims=True), 1e-30)
    score = act * mask_shares(templates, activations, cube, power)
    return np.argmax(score, axis=0)


def frame_models(templates: np.ndarray, activations: np.ndarray, grid: CubeGrid,
                 n_frames: int):
    """A function k -> loop k's magnitude model on every STFT frame, shape=(n_freq, n_frames).

    Frame t in segment s at fractional step u gets D′[s, k] · P_k(:, u) (P_k interpolated
    linearly between steps); see :meth:`CubeGrid.frame_cells` for frames outside the bars.
    """
    seg, j0, j1, w = frame_steps(grid, n_frames)
    act = activations.astype(np.float32)

    def model(k: int) -> np.ndarray:
        p = templates[k]
        return (p[:, j0] * (1 - w) + p[:, j1] * w) * act[seg, k][None, :]

    return model


def separate_tracks(mix_spec: np.ndarray, templates: np.ndarray, activations: np.ndarray,
                    grid: CubeGrid, length: int, power: float = 2.0,
                    hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Full-length loop tracks: Wiener masks across all K loops on the mixture's STFT.

    The masks M_k = (D′[s,k] P_k)^p / Σ_l (D′[s,l] P_l)^p are formed on the cube (the
    denominator is one matrix product) and mapped to STFT frames with
    :func:`unmixer.cube.cube_to_frames`; linear interpolation keeps their sum at 1.

    Parameters
    ----------
    mix_spec : np.ndarray, complex, shape=(channels, n_freq, n_frames), the mixture
    templates : np.ndarray, shape=(K, n_freq, n_steps), P
    activations : np.ndarray, shape=(n_segments, K), D′
    grid : CubeGrid
    length : int, samples of the song
    power : float, mask exponent (2: Wiener)

    Returns
    -------
    np.ndarray, float32, shape=(K, channels, length); the K tracks sum to the mixture
    (the masks sum to 1 in every cell; each channel keeps its own phase).

    Source: Smith, Kawasaki & Goto, ISMIR 2019, §3.1; masks as in
    :func:`unmixer.spectrum.wiener_masks`.
    """
    K, F, T = templates.shape
    n_frames = mix_spec.shape[-1]
    pk, dk = _powered(templates, activations, power)
    eps = np.float32(1e-9)
    denom = cube_mask_denominator(pk, dk) + eps  # (F·T, S)
    tracks = np.empty((K, mix_spec.shape[0], length), dtype=np.float32)
    for k in range(K):  # one loop at a time keeps memory at one mask
        mask = ((pk[k][:, None] * dk[None, :, k] + eps / K) / denom).reshape(F, T, -1)
        mask = cube_to_frames(mask, grid, n_frames)
        for c in range(mix_spec.shape[0]):  # a channel at a time halves the inverse STFT's memory
            tracks[k, c] = istft(mix_spec[c] * mask, length, hop_length)
    return tracks


def cut_loop(track: np.ndarray, start: int, end: int, fade: int = 441) -> np.ndarray:
    """Cut samples [start, end) of a track into a seamless loop.

    The first ``fade`` samples are cross-faded with the samples that follow ``end`` in the
    track (or the last ``fade`` samples with those before ``start``, at the end of the
    song), so that the clip joins itself without a click when repeated.

    Parameters
    ----------
    track : np.ndarray, shape=(channels, samples)
    start, end : int, samples (downbeats)
    fade : int, samples (441 = 10 ms at 44.1 kHz)

    Returns
    -------
    np.ndarray, float32, shape=(channels, end - start)
    """
    clip = track[:, start:end].astype(np.float32, copy=True)
    n = track.shape[-1]
    fade = int(min(fade, (end - start) // 4))
    if fade < 2:
        return clip
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    if end + fade <= n:  # wrap: the clip starts as the music after its end, fading into its own start
        clip[:, :fade] = clip[:, :fade] * ramp + track[:, end:end + fade] * (1 - ramp)
    elif start - fade >= 0:  # or it ends as the music before its start
        clip[:, -fade:] = clip[:, -fade:] * (1 - ramp) + track[:, start - fade:start] * ramp
    else:
        clip[:, :fade] *= ramp
        clip[:, -fade:] *= ramp[::-1]
    return clip


def segment_map_to_bars(activations: np.ndarray, loop_bars: int, n_bars: int) -> np.ndarray:
    """Loop map per bar, scaled 0-1 per loop.

    Parameters
    ----------
    activations : np.ndarray, shape=(n_segments, K), D′
    loop_bars : int, bars per segment
    n_bars : int, bars in the song (bars after the last full segment take its value)

    Returns
    -------
    np.ndarray, float32, shape=(K, n_bars), each row divided by its maximum
    """
    per_bar = np.repeat(activations.T, loop_bars, axis=1)
    if per_bar.shape[1] < n_bars:
        pad = np.repeat(per_bar[:, -1:], n_bars - per_bar.shape[1], axis=1)
        per_bar = np.concatenate([per_bar, pad], axis=1)
    per_bar = per_bar[:, :n_bars]
    return (per_bar / np.maximum(per_bar.max(axis=1, keepdims=True), 1e-30)).astype(np.float32)


def label_loop(clip: np.ndarray, sr: int) -> str:
    """A coarse label for a loop clip: drums, bass, chords, lead or vocal-like.

    Rules, in order, on the mono clip's magnitude spectrogram:
    1. percussive share of the energy (librosa's median-filtering HPSS) >= 0.15 and a
       median frequency (half the spectral magnitude lies below it) >= 2.5 kHz -> drums;
    2. median frequency < 300 Hz, or >= 75% of the energy below 300 Hz -> bass;
    3. mean number of active pitch classes in the harmonic part (chroma >= 0.5 of the
       frame maximum) >= 2.4 -> chords;
    4. continuous pitch movement (median absolute frame-to-frame change of the YIN pitch,
       in loud frames, between 3 and 60 cents: vibrato and glides) -> vocal-like;
    5. otherwise -> lead.
    Thresholds were set on the generator's instruments (unmixer.synth), where drums have a
    percussive share of 0.24-0.33 and a median frequency of 5.7-7.5 kHz, bass 130-170 Hz,
    pads 2.5-3.4 active pitch classes, leads and plucks 1.0-1.5.

    Parameters
    ----------
    clip : np.ndarray, shape=(channels, samples) or (samples,)
    sr : int, Hz

    Returns
    -------
    str, one of :data:`LABELS`

    Source: HPSS after Fitzgerald, DAFx 2010; YIN after de Cheveigné & Kawahara, JASA 2002.
    """
    import librosa

    y = np.asarray(clip, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)
    if not np.any(y):
        return "lead"
    spec = np.abs(librosa.stft(y, n_fft=2048, hop_length=1024))
    power = spec**2
    total = float(power.sum()) + 1e-20
    harmonic, percussive = librosa.decompose.hpss(spec, kernel_size=(9, 17), margin=1.0)
    freqs = librosa.fft_frequencies(sr=sr, n_fft=2048)
    magnitude = spec.sum(axis=1)
    median_hz = float(freqs[np.searchsorted(np.cumsum(magnitude) / magnitude.sum(), 0.5)])
    if float((percussive**2).sum()) / total >= 0.15 and median_hz >= 2500:
        return "drums"
    if median_hz < 300 or float(power[freqs < 300].sum()) / total >= 0.75:
        return "bass"
    chroma = librosa.feature.chroma_stft(S=harmonic**2, sr=sr)
    loud = power.sum(axis=0) > 0.05 * power.sum(axis=0).max()
    if loud.any():
        active = (chroma[:, loud] >= 0.5 * chroma[:, loud].max(axis=0, keepdims=True)).sum(axis=0)
        if float(active.mean()) >= 2.4:
            return "chords"
    f0 = librosa.yin(y, fmin=80, fmax=1000, sr=sr, frame_length=2048, hop_length=1024)
    frame_power = power.sum(axis=0)[: len(f0)]
    voiced = frame_power > 0.1 * frame_power.max()
    cents = 1200 * np.log2(f0[voiced] / 440.0)
    if len(cents) > 8:
        steps = np.abs(np.diff(cents))
        steps = steps[steps < 300]  # ignore note changes and octave errors
        if len(steps) > 4 and 3.0 < float(np.median(steps)) < 60.0:
            return "vocal-like"
    return "lead"
