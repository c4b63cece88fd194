"""Downloads: loop file names and the ZIP of a song's loops (at its tempo and the deck's).

Encoding itself (WAV, Ogg Vorbis, ZIP) is :mod:`unmixer.core.audio`'s.
"""

from __future__ import annotations

import json
import re

from unmixer.core.audio import wav_bytes, zip_bytes
from unmixer.mashup.stretch import loop_samples, stretch_clips


def slug(text: str, max_len: int = 40) -> str:
    """A file-name-safe version of ``text``: ASCII letters, digits, '-' and '_' only."""
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", str(text).strip())
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")
    return stem[:max_len].strip("-_") or "song"

def loop_filename(song: str, index: int, label: str, bpm: float) -> str:
    """The download name of a loop: ``song_loopNN_label_BPMbpm.wav`` (no label part for the
    neutral label "loop", :data:`unmixer.loops.labels.FALLBACK`).

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
    from unmixer.loops.labels import FALLBACK

    named = "" if label == FALLBACK else f"_{slug(label, 20)}"
    return f"{slug(song)}_loop{int(index):02d}{named}_{int(round(bpm))}bpm.wav"

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
