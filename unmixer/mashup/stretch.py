"""Time-stretching (and transposing) loops to a tempo, on the bar grid (Rubber Band via pyrubberband).

Every loop clip from :func:`unmixer.extract_loops` is exactly ``loop_bars`` bars of its own
song, cut at downbeats. To play loops from several songs together, each clip is
time-stretched (pitch kept) with Rubber Band (Cannam, "Rubber Band Library", via
``pyrubberband``) so that it lasts exactly ``loop_bars`` bars at the target tempo. A bar
lasts ``meter * 60 / bpm`` seconds, rounded to whole samples once, so loops of 1 and 2 bars
stay locked to the same grid for any number of repeats. When the deck matches keys
(:mod:`unmixer.mashup.key`), the same Rubber Band call also shifts the pitch, optionally
keeping the formants. Next: :mod:`unmixer.mashup.mix`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from unmixer.core.audio import SAMPLE_RATE
from unmixer.errors import UnmixerError

MIN_BPM = 40.0
"""Slowest target tempo accepted (beats per minute)."""

MAX_BPM = 240.0
"""Fastest target tempo accepted (beats per minute)."""

MAX_STRETCH = 4.0
"""Largest time-stretch factor (either way) accepted; beyond it Rubber Band sounds poor."""

MAX_SEMITONES = 12.0
"""Largest pitch shift (semitones, either way) accepted."""


def bar_samples(bpm: float, meter: int, sr: int = SAMPLE_RATE) -> int:
    """Length of one bar on the grid, in whole samples.

    Parameters
    ----------
    bpm : float
        Tempo, beats per minute (``MIN_BPM`` to ``MAX_BPM``).
    meter : int
        Beats per bar (3 or 4, any value >= 1 is accepted).
    sr : int, Hz

    Returns
    -------
    int, samples: ``round(meter * 60 * sr / bpm)``.

    Raises
    ------
    UnmixerError
        If ``bpm`` is outside ``[MIN_BPM, MAX_BPM]`` or ``meter < 1``.
    """
    if not (MIN_BPM <= float(bpm) <= MAX_BPM):
        raise UnmixerError(f"Tempo {bpm:g} BPM is out of range; choose {MIN_BPM:.0f} to "
                           f"{MAX_BPM:.0f} BPM.")
    if int(meter) < 1:
        raise UnmixerError(f"A bar needs at least one beat (got meter={meter}).")
    return int(round(int(meter) * 60.0 * sr / float(bpm)))

def loop_samples(loop_bars: int, bpm: float, meter: int, sr: int = SAMPLE_RATE) -> int:
    """Length of a loop of ``loop_bars`` bars on the grid: ``loop_bars * bar_samples``.

    Parameters
    ----------
    loop_bars : int, bars (>= 1)
    bpm : float, beats per minute
    meter : int, beats per bar
    sr : int, Hz

    Returns
    -------
    int, samples

    Raises
    ------
    UnmixerError
        As :func:`bar_samples`, or if ``loop_bars < 1``.
    """
    if int(loop_bars) < 1:
        raise UnmixerError(f"A loop lasts at least one bar (got {loop_bars}).")
    return int(loop_bars) * bar_samples(bpm, meter, sr)

def can_stretch(n_in: int, n_samples: int) -> bool:
    """Whether :func:`stretch_loop` accepts stretching ``n_in`` samples to ``n_samples``
    (both > 0, factor within ``MAX_STRETCH`` either way)."""
    if n_in <= 0 or n_samples <= 0:
        return False
    return 1 / MAX_STRETCH <= n_in / n_samples <= MAX_STRETCH

def stretch_loop(clip: np.ndarray, n_samples: int, sr: int = SAMPLE_RATE, *,
                 context: float = 0.25, semitones: float = 0.0,
                 formant: bool = False) -> np.ndarray:
    """Time-stretch a loopable clip to exactly ``n_samples``, seam kept; pitch unchanged or
    shifted by ``semitones``, in the same Rubber Band pass.

    The clip is padded circularly (its own end before it, its own start after it, a
    ``context`` fraction of its length each side) so that the phase vocoder sees the music
    that surrounds each edge when the clip repeats; the stretched middle is then cut out.
    The result therefore loops without a click or a smeared first transient.

    Parameters
    ----------
    clip : np.ndarray, shape=(channels, samples) or (samples,), float
        One loop, exactly a whole number of bars, cut at downbeats.
    n_samples : int, samples
        Length wanted (e.g. :func:`loop_samples` at the target tempo).
    sr : int, Hz
        Sample rate of ``clip`` (Rubber Band's window sizes depend on it).
    context : float
        Fraction of the clip added on each side before stretching (0 to 1).
    semitones : float
        Pitch shift (semitones, up if positive, at most ``MAX_SEMITONES`` either way).
    formant : bool
        Keep the spectral envelope (formants) while shifting the pitch: Rubber Band's
        ``--formant`` (for voices, so that they do not sound smaller or larger).

    Returns
    -------
    np.ndarray, float32, shape=(channels, n_samples) (or (n_samples,) for 1-D input)

    Raises
    ------
    UnmixerError
        If the clip is empty or non-finite, the stretch factor exceeds ``MAX_STRETCH``, or
        the pitch shift ``MAX_SEMITONES``.

    Notes
    -----
    Rubber Band's R2 engine (phase vocoder with transient detection, Cannam 2012), run
    offline by ``pyrubberband`` with ``--tempo n_in / n_samples`` and, when shifting,
    ``--pitch semitones`` in the same call (one pass, not two).
    """
    import pyrubberband

    clip = np.asarray(clip, dtype=np.float32)
    mono = clip.ndim == 1
    frames = clip[None, :] if mono else clip
    n_in = frames.shape[-1]
    if n_in == 0 or int(n_samples) <= 0:
        raise UnmixerError("Cannot stretch an empty loop.")
    if not np.all(np.isfinite(frames)):
        raise UnmixerError("Cannot stretch a loop holding non-finite samples.")
    n_samples = int(n_samples)
    rate = n_in / n_samples
    if not can_stretch(n_in, n_samples):
        raise UnmixerError(f"The tempo change is too large (x{rate:.2f}); stay within "
                           f"x{1 / MAX_STRETCH:.2f} to x{MAX_STRETCH:.2f} of the song's tempo.")
    semitones = float(semitones)
    if not abs(semitones) <= MAX_SEMITONES:
        raise UnmixerError(f"Transpose by at most {MAX_SEMITONES:g} semitones, not {semitones:+g}.")
    if n_in == n_samples and semitones == 0:
        return clip.copy()
    pad = int(round(np.clip(context, 0.0, 1.0) * n_in))
    padded = np.concatenate([frames[:, n_in - pad:], frames, frames[:, :pad]], axis=1) \
        if pad else frames
    padded = np.ascontiguousarray(padded.T)
    if semitones:
        options = {"--tempo": rate} if n_in != n_samples else {}
        if formant:
            options["--formant"] = ""
        stretched = pyrubberband.pitch_shift(padded, sr, semitones, rbargs=options)
    else:
        stretched = pyrubberband.time_stretch(padded, sr, rate)
    stretched = np.asarray(stretched, dtype=np.float32).reshape(len(stretched), -1).T
    start = int(round(pad / rate))
    out = stretched[:, start:start + n_samples]
    if out.shape[-1] < n_samples:  # Rubber Band came out a few samples short
        out = np.pad(out, ((0, 0), (0, n_samples - out.shape[-1])))
    return out[0] if mono else np.ascontiguousarray(out)

def stretch_to_bpm(clip: np.ndarray, loop_bars: int, meter: int, bpm: float,
                   sr: int = SAMPLE_RATE, *, semitones: float = 0.0,
                   formant: bool = False) -> np.ndarray:
    """Time-stretch a clip of ``loop_bars`` bars so it lasts ``loop_bars`` bars at ``bpm``
    (and shift its pitch by ``semitones``).

    Parameters
    ----------
    clip : np.ndarray, shape=(channels, samples), float
        ``loop_bars`` bars of a song, cut at downbeats (any original tempo).
    loop_bars : int, bars
    meter : int
        Beats per bar of the clip's song.
    bpm : float
        Target tempo, beats per minute.
    sr : int, Hz
    semitones, formant : the pitch shift, as :func:`stretch_loop`

    Returns
    -------
    np.ndarray, float32, shape=(channels, loop_samples(loop_bars, bpm, meter, sr))

    Raises
    ------
    UnmixerError
        As :func:`loop_samples` and :func:`stretch_loop`.
    """
    return stretch_loop(clip, loop_samples(loop_bars, bpm, meter, sr), sr,
                        semitones=semitones, formant=formant)

def stretch_clips(clips: Sequence[np.ndarray], n_samples: Sequence[int], sr: int = SAMPLE_RATE,
                  workers: int | None = None, semitones: Sequence[float] | None = None,
                  formants: Sequence[bool] | None = None) -> list[np.ndarray]:
    """:func:`stretch_loop` on many clips at once, in threads (Rubber Band runs as a separate
    process, so the threads really overlap).

    Parameters
    ----------
    clips : sequence of np.ndarray, each shape=(channels, samples_k) or (samples_k,)
    n_samples : sequence of int, samples: the length wanted for each clip
    sr : int, Hz
    workers : int, optional; default: the number of CPUs
    semitones : sequence of float, optional, each clip's pitch shift (default: none)
    formants : sequence of bool, optional, whether each shift keeps the formants

    Returns
    -------
    list of np.ndarray, float32, each shape=(channels, n_samples[k]), in the input order.

    Raises
    ------
    UnmixerError
        As :func:`stretch_loop`, or if the sequences differ in length.
    """
    semitones = [0.0] * len(clips) if semitones is None else list(semitones)
    formants = [False] * len(clips) if formants is None else list(formants)
    if not len(clips) == len(n_samples) == len(semitones) == len(formants):
        raise UnmixerError(f"{len(clips)} loops but {len(n_samples)} lengths, "
                           f"{len(semitones)} shifts and {len(formants)} formant flags.")
    jobs = list(zip(clips, n_samples, semitones, formants))

    def one(job) -> np.ndarray:
        clip, n, shift, formant = job
        return stretch_loop(clip, n, sr, semitones=shift, formant=formant)

    if len(jobs) <= 1:
        return [one(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        return list(pool.map(one, jobs))
