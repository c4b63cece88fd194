"""Mashups: loops from any song, time-stretched to one tempo, cut on the bar grid and mixed.

Every loop clip from :func:`unmixer.pipeline.extract_loops` is exactly ``loop_bars`` bars of
its own song, cut at downbeats. To play loops from several songs together, each clip is
time-stretched (pitch kept) with Rubber Band (Cannam, "Rubber Band Library", via
``pyrubberband``) so that it lasts exactly ``loop_bars`` bars at the target tempo, then clips
are repeated from the same start (bar 0) and summed, each with its own gain. A bar lasts
``meter * 60 / bpm`` seconds, rounded to whole samples once, so loops of 1 and 2 bars stay
locked to the same grid for any number of repeats.

Also here: the small audio exports the app and the CLI share (a light preview WAV for the
browser's Web Audio player, Ogg Vorbis for page players, loop file names and ZIP archives).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import soundfile as sf

from unmixer.audio import SAMPLE_RATE, resample, to_stereo, wav_bytes
from unmixer.errors import UnmixerError

MIN_BPM = 40.0
"""Slowest target tempo accepted (beats per minute)."""

MAX_BPM = 240.0
"""Fastest target tempo accepted (beats per minute)."""

MAX_STRETCH = 4.0
"""Largest time-stretch factor (either way) accepted; beyond it Rubber Band sounds poor."""

PREVIEW_SAMPLE_RATE = 22050
"""Sample rate (Hz) of the mono previews sent to the browser's live deck."""

PEAK_CEILING_DBFS = -1.0
"""A mix whose peak would pass this level (dB re full scale) is scaled down to it."""


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
                 context: float = 0.25) -> np.ndarray:
    """Time-stretch a loopable clip to exactly ``n_samples``, pitch unchanged, seam kept.

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

    Returns
    -------
    np.ndarray, float32, shape=(channels, n_samples) (or (n_samples,) for 1-D input)

    Raises
    ------
    UnmixerError
        If the clip is empty or non-finite, or the stretch factor exceeds ``MAX_STRETCH``.

    Notes
    -----
    Rubber Band's R2 engine (phase vocoder with transient detection, Cannam 2012), run
    offline by ``pyrubberband`` with ``--tempo n_in / n_samples``.
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
    if n_in == n_samples:
        return clip.copy()
    pad = int(round(np.clip(context, 0.0, 1.0) * n_in))
    padded = np.concatenate([frames[:, n_in - pad:], frames, frames[:, :pad]], axis=1) \
        if pad else frames
    stretched = pyrubberband.time_stretch(np.ascontiguousarray(padded.T), sr, rate)
    stretched = np.asarray(stretched, dtype=np.float32).reshape(len(stretched), -1).T
    start = int(round(pad / rate))
    out = stretched[:, start:start + n_samples]
    if out.shape[-1] < n_samples:  # Rubber Band came out a few samples short
        out = np.pad(out, ((0, 0), (0, n_samples - out.shape[-1])))
    return out[0] if mono else np.ascontiguousarray(out)


def stretch_to_bpm(clip: np.ndarray, loop_bars: int, meter: int, bpm: float,
                   sr: int = SAMPLE_RATE) -> np.ndarray:
    """Time-stretch a clip of ``loop_bars`` bars so it lasts ``loop_bars`` bars at ``bpm``.

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

    Returns
    -------
    np.ndarray, float32, shape=(channels, loop_samples(loop_bars, bpm, meter, sr))

    Raises
    ------
    UnmixerError
        As :func:`loop_samples` and :func:`stretch_loop`.
    """
    return stretch_loop(clip, loop_samples(loop_bars, bpm, meter, sr), sr)


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
    if len(clips) != len(gains_db):
        raise UnmixerError(f"{len(clips)} loops but {len(gains_db)} gains.")
    n_samples = int(n_samples)
    if n_samples <= 0:
        raise UnmixerError("A mix lasts at least one sample.")
    mix = np.zeros((2, n_samples), dtype=np.float32)
    for clip, gain in zip(clips, db_to_gain(np.asarray(gains_db, dtype=np.float32))):
        clip = to_stereo(clip)
        if clip.shape[-1] == 0:
            raise UnmixerError("Cannot mix an empty loop.")
        repeats = -(-n_samples // clip.shape[-1])
        mix += gain * np.tile(clip, (1, repeats))[:, :n_samples]
    peak = float(np.max(np.abs(mix))) if mix.size else 0.0
    if ceiling_dbfs is not None:
        ceiling = float(db_to_gain(ceiling_dbfs))
        if peak > ceiling:
            mix *= ceiling / peak
    return mix


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


def ogg_bytes(audio: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    """Ogg Vorbis bytes of ``audio`` (shape (channels, samples) or (samples,)).

    About ten times smaller than 16-bit WAV: for the page's audio players, while downloads
    stay WAV.
    """
    buf = io.BytesIO()
    frames = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    sf.write(buf, frames.T if frames.ndim == 2 else frames, sr, format="OGG", subtype="VORBIS")
    return buf.getvalue()


def slug(text: str, max_len: int = 40) -> str:
    """A file-name-safe version of ``text``: ASCII letters, digits, '-' and '_' only."""
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", str(text).strip())
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")
    return stem[:max_len].strip("-_") or "song"


def loop_filename(song: str, index: int, label: str, bpm: float) -> str:
    """The download name of a loop: ``song_loopNN_label_BPMbpm.wav`` (no label part for the
    neutral label "loop", :data:`unmixer.labels.FALLBACK`).

    Parameters
    ----------
    song : str
        The song's title or file name (its extension is dropped).
    index : int
        The loop's 1-based number.
    label : str
        The loop's label (e.g. "drums").
    bpm : float
        The tempo the file plays at (rounded to a whole BPM in the name).

    Examples
    --------
    >>> loop_filename("Vibe Ace.ogg", 3, "vocal-like", 119.6)
    'Vibe-Ace_loop03_vocal-like_120bpm.wav'
    >>> loop_filename("Vibe Ace.ogg", 3, "loop", 120)
    'Vibe-Ace_loop03_120bpm.wav'
    """
    from unmixer.labels import FALLBACK

    named = "" if label == FALLBACK else f"_{slug(label, 20)}"
    return f"{slug(song)}_loop{int(index):02d}{named}_{int(round(bpm))}bpm.wav"


def zip_bytes(files: Mapping[str, bytes]) -> bytes:
    """A ZIP archive (stored, not compressed: WAV hardly compresses) of ``{name: bytes}``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()


def loops_archive(title: str, extraction, bpm: float | None = None) -> bytes:
    """A ZIP of every loop of a song as 16-bit WAV, plus its loop map.

    Parameters
    ----------
    title : str
        The song's title, used in the file names (:func:`loop_filename`).
    extraction : unmixer.pipeline.Extraction
        Uses ``loops`` (``index``, ``label``, ``clip`` (2, samples) at 44.1 kHz),
        ``bpm``, ``meter``, ``loop_bars`` and ``summary()``.
    bpm : float, optional
        Also include every loop stretched to this tempo (beats per minute).

    Returns
    -------
    bytes: a ZIP holding ``at-song-tempo_<BPM>bpm/<loop files>``, with ``bpm`` also
    ``at-<BPM>bpm/<loop files>``, and ``loop_map.json`` (``extraction.summary()``).

    Raises
    ------
    UnmixerError
        If ``bpm`` is out of range or too far from the song's tempo (see
        :func:`stretch_loop`).
    """
    loops = extraction.loops
    files = {}
    folder = f"at-song-tempo_{int(round(extraction.bpm))}bpm"
    for loop in loops:
        name = loop_filename(title, loop.index, loop.label, extraction.bpm)
        files[f"{folder}/{name}"] = wav_bytes(loop.clip)
    if bpm:
        n = loop_samples(extraction.loop_bars, bpm, extraction.meter)
        stretched = stretch_clips([loop.clip for loop in loops], [n] * len(loops))
        for loop, clip in zip(loops, stretched):
            name = loop_filename(title, loop.index, loop.label, bpm)
            files[f"at-{int(round(bpm))}bpm/{name}"] = wav_bytes(clip)
    files["loop_map.json"] = json.dumps(extraction.summary(), indent=1).encode()
    return zip_bytes(files)


def stretch_clips(clips: Sequence[np.ndarray], n_samples: Sequence[int], sr: int = SAMPLE_RATE,
                  workers: int | None = None) -> list[np.ndarray]:
    """:func:`stretch_loop` on many clips at once, in threads (Rubber Band runs as a separate
    process, so the threads really overlap).

    Parameters
    ----------
    clips : sequence of np.ndarray, each shape=(channels, samples_k) or (samples_k,)
    n_samples : sequence of int, samples: the length wanted for each clip
    sr : int, Hz
    workers : int, optional; default: the number of CPUs

    Returns
    -------
    list of np.ndarray, float32, each shape=(channels, n_samples[k]), in the input order.

    Raises
    ------
    UnmixerError
        As :func:`stretch_loop`, or if the two sequences differ in length.
    """
    if len(clips) != len(n_samples):
        raise UnmixerError(f"{len(clips)} loops but {len(n_samples)} lengths.")
    if len(clips) <= 1:
        return [stretch_loop(c, n, sr) for c, n in zip(clips, n_samples)]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        return list(pool.map(lambda pair: stretch_loop(pair[0], pair[1], sr),
                             zip(clips, n_samples)))
