"""Downloads: loop file names, the ZIP of a song's loops (at its tempo and the deck's), and
the mix for a DAW (one track per loop, all from bar 1, with a README of the tempo and key).

Encoding itself (WAV, Ogg Vorbis, ZIP) is :mod:`unmixer.core.audio`'s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unmixer.core.audio import SAMPLE_RATE, wav_bytes, zip_bytes
from unmixer.mashup.stretch import loop_samples, stretch_clips


def slug(text: str, max_len: int = 40) -> str:
    """A file-name-safe version of ``text``: ASCII letters, digits, '-' and '_' only."""
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", str(text).strip())
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")
    return stem[:max_len].strip("-_") or "song"

def loop_filename(song: str, index: int, label: str, bpm: float, key: str | None = None) -> str:
    """The download name of a loop: ``song_loopNN_label_BPMbpm_KEY.wav`` (no label part for the
    neutral label "loop", :data:`unmixer.loops.labels.FALLBACK`; no key part without a key).

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
    key : str, optional
        The key the file plays in ("A minor"; written short, as sample packs do: "Am",
        "F#"). Leave it out for loops without a pitch (drums).

    Raises
    ------
    UnmixerError
        If ``key`` names no key.

    Examples
    --------
    >>> loop_filename("Vibe Ace.ogg", 3, "vocal-like", 119.6, "E minor")
    'Vibe-Ace_loop03_vocal-like_120bpm_Em.wav'
    >>> loop_filename("Vibe Ace.ogg", 3, "loop", 120)
    'Vibe-Ace_loop03_120bpm.wav'
    """
    from unmixer.loops.key import Key
    from unmixer.loops.labels import FALLBACK

    named = "" if label == FALLBACK else f"_{slug(label, 20)}"
    keyed = "" if key is None else f"_{Key.parse(key).short}"
    return f"{slug(song)}_loop{int(index):02d}{named}_{int(round(bpm))}bpm{keyed}.wav"


def loop_key(extraction, loop) -> str | None:
    """The key a loop's file is named with: its song's key if the loop is pitched and the
    key known (:mod:`unmixer.mashup.key`), else None."""
    from unmixer.mashup.key import transposes

    key = getattr(extraction, "key", None)
    return key if key and transposes(loop.label, getattr(loop, "pitched", True)) else None

def loops_archive(title: str, extraction, bpm: float | None = None) -> bytes:
    """A ZIP of every loop of a song as 16-bit WAV, plus its loop map.

    Parameters
    ----------
    title : str
        The song's title, used in the file names (:func:`loop_filename`).
    extraction : unmixer.loops.pipeline.Extraction
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
        name = loop_filename(title, loop.index, loop.label, extraction.bpm, loop_key(extraction, loop))
        files[f"{folder}/{name}"] = wav_bytes(loop.clip)
    if bpm:
        n = loop_samples(extraction.loop_bars, bpm, extraction.meter)
        stretched = stretch_clips([loop.clip for loop in loops], [n] * len(loops))
        for loop, clip in zip(loops, stretched):
            name = loop_filename(title, loop.index, loop.label, bpm, loop_key(extraction, loop))
            files[f"at-{int(round(bpm))}bpm/{name}"] = wav_bytes(clip)
    files["loop_map.json"] = json.dumps(extraction.summary(), indent=1).encode()
    return zip_bytes(files)


@dataclass
class Stem:
    """One loop of a mix, for :func:`daw_archive`.

    Attributes
    ----------
    song : str, the song's title
    index : int, the loop's 1-based number in its song
    label : str, the loop's label
    audio : np.ndarray, shape=(2, n_samples), float32: the loop laid out over the whole mix
        from bar 1 (:func:`unmixer.mashup.mix.render_stems`)
    gain_db : float, dB, its gain in the mix
    semitones : int, how far it was transposed (0: not)
    key : str or None, the key it plays in (None for loops without a pitch)
    """

    song: str
    index: int
    label: str
    audio: np.ndarray
    gain_db: float = 0.0
    semitones: int = 0
    key: str | None = None


def daw_archive(stems: Sequence[Stem], bpm: float, meter: int, n_bars: int,
                key: str | None = None, sr: int = SAMPLE_RATE) -> bytes:
    """A ZIP of a mix's loops for a DAW: one 24-bit WAV per loop, each starting at bar 1 and
    as long as the mix, plus ``README.txt`` (tempo, meter, key, length, what each file is).

    Parameters
    ----------
    stems : sequence of Stem, every ``audio`` of the same shape (2, n_samples)
    bpm : float, the deck's tempo (beats per minute)
    meter : int, beats per bar
    n_bars : int, bars in the mix
    key : str, optional, the deck's key when it matches keys (None: each song in its own)
    sr : int, Hz

    Returns
    -------
    bytes: a ZIP holding ``NN_<song>_loopMM_<label>_<BPM>bpm[_<key>].wav`` (NN: the order in
    the mix) and ``README.txt``.

    Raises
    ------
    UnmixerError
        If there is no stem, or the stems differ in length.
    """
    from unmixer.errors import UnmixerError
    from unmixer.loops.key import Key

    if not stems:
        raise UnmixerError("The mix is empty: put loops in it first.")
    lengths = {np.asarray(s.audio).shape for s in stems}
    if len(lengths) != 1:
        raise UnmixerError(f"The stems differ in shape: {sorted(lengths)}.")
    n_samples = next(iter(lengths))[-1]
    files, lines = {}, []
    for number, stem in enumerate(stems, start=1):
        name = f"{number:02d}_" + loop_filename(stem.song, stem.index, stem.label, bpm, stem.key)
        files[name] = wav_bytes(stem.audio, sr, subtype="PCM_24")
        moved = f", transposed {stem.semitones:+d} semitones" if stem.semitones else ""
        lines.append(f"  {name}\n      {stem.song}, loop {stem.index} ({stem.label}), "
                     f"gain {stem.gain_db:+.0f} dB{moved}")
    key_line = (f"Key: {Key.parse(key).label} (pitched loops transposed to it or to its "
                "relative key)" if key else "Key: not matched (each song in its own key)")
    readme = "\n".join([
        "Unmixer mashup, exported for a DAW",
        "",
        f"Tempo: {bpm:.2f} BPM, {meter}/4",
        key_line,
        f"Length: {n_bars} bars = {n_samples / sr:.3f} s = {n_samples} samples at {sr} Hz",
        "",
        f"Every file starts at bar 1 and lasts the whole mix: set your project to {bpm:.2f} BPM,",
        "drop them all at the start of the arrangement, and together they play the mix",
        "(each loop at its gain in the mix; their sum is the mix Unmixer plays).",
        "",
        "Files:",
        *lines,
        "",
    ])
    files["README.txt"] = readme.encode()
    return zip_bytes(files)
