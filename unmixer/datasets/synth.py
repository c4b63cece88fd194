"""Synthetic loop-based songs with ground truth, for tests and benchmarks.

A song is K loops, each one instrument playing a pattern of 1, 2 or 4 bars, switched on and
off in blocks of bars following a layout (K x n_bars, 0/1). Every stem (one loop over the
whole song), the layout and the true downbeats are returned, so separation (SDR, SI-SDR) and
loop maps (layout accuracy, F1) can be scored. Layout families follow the literature:
"composed" (an arranged form), "factorial" (every combination of the loops appears: Smith &
Goto, ICASSP 2018, §4), "sparse" and "dense" (Ramires et al., ISMIR 2020).

Besides the generator's own synthesised instruments, General MIDI instruments of the FluidR3
soundfont (:data:`GM_INSTRUMENTS`, Debian ``fluidsynth`` + ``fluid-soundfont-gm``) play the
same kinds of patterns, rendered by the ``fluidsynth`` command line from a MIDI file (mido),
so that not every timbre comes from this module.

Everything is seeded: the same arguments give the same song, bit for bit.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy import signal

from unmixer.core.audio import SAMPLE_RATE
from unmixer.errors import UnmixerError

INSTRUMENTS = ("drums", "bass", "pad", "pluck", "lead", "vocal")
"""Instrument families of the generator (their coarse loop labels: drums, bass, chords,
lead, lead, vocal-like)."""

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
"""The General MIDI soundfont of the ``gm_*`` instruments."""

GM_INSTRUMENTS = {
    "gm_drums": (None, "drums"),
    "gm_bass": (33, "bass"),  # electric bass (finger)
    "gm_synthbass": (38, "bass"),  # synth bass 1
    "gm_piano": (0, "pad"),  # acoustic grand piano, chords
    "gm_organ": (16, "pad"),  # drawbar organ, chords
    "gm_strings": (48, "pad"),  # string ensemble, chords
    "gm_epiano": (4, "pluck"),  # electric piano 1
    "gm_guitar": (25, "pluck"),  # acoustic guitar (steel)
    "gm_marimba": (12, "pluck"),
    "gm_brass": (61, "lead"),  # brass section
    "gm_flute": (73, "lead"),
    "gm_choir": (52, "vocal"),  # choir aahs
}
"""General MIDI instruments: name -> (program, pattern kind). The pattern kinds are those of
:data:`INSTRUMENTS`; "gm_drums" plays the drum pattern on one of :data:`GM_KITS` (MIDI channel 10)."""

GM_KITS = (0, 8, 16, 24, 25)
"""Drum kits of FluidR3_GM (programs on channel 10): standard, room, power, electronic, TR-808."""

_GM_DRUM_KEYS = {"kick": 36, "snare": 38, "hat": 42, "open": 46}

LABEL_OF = {"drums": "drums", "bass": "bass", "pad": "chords", "pluck": "lead", "lead": "lead",
            "vocal": "vocal-like"}
LABEL_OF.update({name: LABEL_OF[kind] for name, (_, kind) in GM_INSTRUMENTS.items()})


@dataclass
class SynthSong:
    """A generated song and its ground truth.

    Attributes
    ----------
    mix : np.ndarray, shape=(2, samples), float32, the song (peak 0.9)
    stems : np.ndarray, shape=(K, 2, samples), float32; they sum to ``mix``
    layout : np.ndarray, shape=(K, n_bars), 0/1: loop k plays in bar b
    downbeats_s : np.ndarray, shape=(n_bars + 1,), s, bar boundaries
    bpm : float
    meter : int, beats per bar
    loop_bars : list of int, bars of each loop's pattern
    instruments : list of str, from :data:`INSTRUMENTS`
    sr : int, Hz
    key : str or None, the planted key ("A minor"), None when each loop has its own
    """

    mix: np.ndarray
    stems: np.ndarray
    layout: np.ndarray
    downbeats_s: np.ndarray
    bpm: float
    meter: int
    loop_bars: list
    instruments: list
    sr: int = SAMPLE_RATE
    key: str | None = None


# ----------------------------------------------------------------------------- sounds

def _midi_hz(note: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(note, dtype=np.float64) - 69) / 12)


def _env(n: int, sr: int, attack: float, decay: float) -> np.ndarray:
    t = np.arange(n) / sr
    return (np.minimum(t / max(attack, 1e-4), 1.0) * np.exp(-t / decay)).astype(np.float32)


def _saw(freq: float, n: int, sr: int, rng: np.random.Generator, n_harm: int = 30,
         vibrato: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Band-limited sawtooth by additive synthesis; vibrato = (rate Hz, depth semitones)."""
    t = np.arange(n) / sr
    rate, depth = vibrato
    inst = freq * 2.0 ** (depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.28)) / 12)
    phase = 2 * np.pi * np.cumsum(inst) / sr
    k = np.arange(1, n_harm + 1)
    k = k[k * freq < 0.45 * sr]
    return (np.sin(np.outer(phase, k)) @ (1.0 / k)).astype(np.float32)


def _kick(sr, rng):
    n = int(0.35 * sr)
    t = np.arange(n) / sr
    f = 45 + rng.uniform(80, 140) * np.exp(-t / 0.03)
    return (np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / rng.uniform(0.08, 0.2))).astype(np.float32)


def _snare(sr, rng):
    n = int(0.25 * sr)
    t = np.arange(n) / sr
    noise = rng.standard_normal(n)
    b, a = signal.butter(2, [rng.uniform(800, 1500) / (sr / 2), 8000 / (sr / 2)], "band")
    body = 0.6 * np.sin(2 * np.pi * rng.uniform(160, 220) * t) * np.exp(-t / 0.04)
    return ((signal.lfilter(b, a, noise) * np.exp(-t / rng.uniform(0.05, 0.1))) + body).astype(np.float32)


def _hat(sr, rng, open_=False):
    n = int((0.3 if open_ else 0.06) * sr)
    t = np.arange(n) / sr
    b, a = signal.butter(2, rng.uniform(6000, 9000) / (sr / 2), "high")
    decay = rng.uniform(0.1, 0.2) if open_ else rng.uniform(0.01, 0.025)
    return (0.5 * signal.lfilter(b, a, rng.standard_normal(n)) * np.exp(-t / decay)).astype(np.float32)


def _formant(x: np.ndarray, sr: int, vowel: str) -> np.ndarray:
    formants = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010),
                "o": (570, 840, 2410), "u": (300, 870, 2240)}[vowel]
    out = np.zeros_like(x)
    for f, gain in zip(formants, (1.0, 0.5, 0.3)):
        b, a = signal.iirpeak(f, Q=f / 80.0, fs=sr)
        out += gain * signal.lfilter(b, a, x).astype(np.float32)
    return out


# ----------------------------------------------------------------------------- patterns
# A pattern is a list of events (onset in beats from the loop start, duration in beats, sound).

def _drum_pattern(rng, meter, bars, sr, kit=None):
    """Drum events; ``kit`` maps kick/snare/hat/open to sounds (default: a new synthesised kit)."""
    if kit is None:
        kit = {"kick": _kick(sr, rng), "snare": _snare(sr, rng), "hat": _hat(sr, rng),
               "open": _hat(sr, rng, True)}
    events = []
    eighths = meter * 2
    for bar in range(bars):
        base = bar * meter
        for e in range(eighths):
            pos = base + e / 2
            if e == 0 or (meter == 4 and e == 4 and rng.random() < 0.6) or rng.random() < 0.12:
                events.append((pos, 0.5, kit["kick"], 1.0))
            if (meter == 4 and e in (2, 6)) or (meter == 3 and e in (2, 4) and rng.random() < 0.7):
                events.append((pos, 0.5, kit["snare"], 0.7))
            if rng.random() < 0.85:
                events.append((pos, 0.5, kit["open"] if rng.random() < 0.1 else kit["hat"], 0.35))
    return events


_MINOR_SCALE = np.array([0, 2, 3, 5, 7, 8, 10])
_MAJOR_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])
_BASE_NOTE = {"pad": 48, "bass": 28, "pluck": 60, "lead": 64, "vocal": 55}
"""MIDI note of each kind's register: its notes lie from there up (a root offset 0-11 above)."""

_PROGRESSIONS = {"major": ((0, 3, 4, 0), (0, 5, 3, 4), (0, 4, 5, 3), (0, 3, 0, 4)),
                 "minor": ((0, 3, 4, 0), (0, 5, 2, 4), (0, 3, 5, 4), (0, 6, 5, 4))}
"""Chord progressions of a song with a planted key (scale degrees, 0 = the tonic chord; in
minor the chord on degree 4 is the major dominant, with the raised leading tone)."""

_DEGREE_WEIGHTS = np.array([4.0, 1.0, 2.5, 1.0, 3.0, 1.0, 0.7])
"""How often a melody or bass note of a song with a planted key lands on each scale degree:
the tonic triad (degrees 0, 2, 4) most, so the key is heard."""


def _keyed_pattern(rng, meter, bars, kind, key):
    """Events of a tonal loop in ``key`` (tonic pitch class, "major" or "minor")."""
    tonic, mode = key
    scale = _MAJOR_SCALE if mode == "major" else _MINOR_SCALE
    base = _BASE_NOTE[kind] + (tonic - _BASE_NOTE[kind]) % 12  # the tonic in this register
    events = []
    if kind == "pad":
        progression = _PROGRESSIONS[mode][rng.integers(0, len(_PROGRESSIONS[mode]))]
        for bar in range(bars):
            degree = progression[bar % len(progression)]
            chord = [int(scale[(degree + i) % 7]) + 12 * ((degree + i) // 7) for i in (0, 2, 4)]
            if mode == "minor" and degree == 4:
                chord[1] += 1  # the leading tone: V, not v
            events.append((bar * meter, meter, ("pad", base + np.array(chord)), 0.5))
        return events
    weights = _DEGREE_WEIGHTS / _DEGREE_WEIGHTS.sum()
    step = {"bass": 1.0, "pluck": 0.5, "lead": rng.choice([0.5, 1.0]), "vocal": 1.0}[kind]
    pos, total = 0.0, bars * meter
    while pos < total - 1e-9:
        if rng.random() < (0.8 if kind != "vocal" else 0.7):
            dur = min(step * (2 if kind in ("vocal", "lead") and rng.random() < 0.4 else 1),
                      total - pos)
            degree = 0 if not events else int(rng.choice(7, p=weights))  # start on the tonic
            note = base + int(scale[degree]) + (12 if rng.random() < 0.1 else 0)
            events.append((pos, dur, (kind, note), 0.6))
            pos += dur
        else:
            pos += step
    return events or [(0.0, step, (kind, base), 0.6)]


def _tonal_pattern(rng, meter, bars, sr, kind, key=None):
    if key is not None:
        return _keyed_pattern(rng, meter, bars, kind, key)
    root = rng.integers(0, 12)
    scale = _MINOR_SCALE if rng.random() < 0.5 else _MAJOR_SCALE
    events = []
    if kind == "pad":
        for bar in range(bars):
            degree = rng.integers(0, 7)
            chord = [scale[(degree + i) % 7] + 12 * ((degree + i) // 7) for i in (0, 2, 4)]
            notes = _BASE_NOTE["pad"] + root + np.array(chord)
            events.append((bar * meter, meter, ("pad", notes), 0.5))
        return events
    step = {"bass": 1.0, "pluck": 0.5, "lead": rng.choice([0.5, 1.0]), "vocal": 1.0}[kind]
    octave = _BASE_NOTE[kind]
    pos = 0.0
    total = bars * meter
    while pos < total - 1e-9:
        if rng.random() < (0.8 if kind != "vocal" else 0.7):
            dur = step * (2 if kind in ("vocal", "lead") and rng.random() < 0.4 else 1)
            dur = min(dur, total - pos)
            note = octave + root + scale[rng.integers(0, 7)] + (12 if rng.random() < 0.15 else 0)
            events.append((pos, dur, (kind, note), 0.6))
            pos += dur
        else:
            pos += step
    if not events:
        events.append((0.0, step, (kind, octave + root), 0.6))
    return events


def _render_note(spec, dur_s, sr, rng):
    kind, notes = spec
    if kind == "pad":
        n = int(dur_s * sr)
        x = sum(_saw(f * d, n, sr, rng, 12) for f in _midi_hz(notes) for d in (0.997, 1.003))
        b, a = signal.butter(2, 2500 / (sr / 2))
        return (signal.lfilter(b, a, x) * _env(n, sr, 0.08, 4.0) * 0.25).astype(np.float32)
    f = float(_midi_hz(notes))
    if kind == "bass":
        n = int(dur_s * sr * 0.95)
        x = _saw(f, n, sr, rng, 20)
        b, a = signal.butter(2, 400 / (sr / 2))
        return (signal.lfilter(b, a, x) * _env(n, sr, 0.005, 0.4)).astype(np.float32)
    if kind == "pluck":
        n = int(min(dur_s, 0.5) * sr)
        t = np.arange(n) / sr
        k = np.arange(1, 12)
        partials = np.sin(2 * np.pi * f * np.outer(t, k)) * np.exp(-np.outer(t, k) / 0.3) / k
        return (partials.sum(axis=1) * _env(n, sr, 0.002, 0.25)).astype(np.float32)
    if kind == "lead":
        n = int(dur_s * sr * 0.9)
        x = np.sign(np.sin(2 * np.pi * f * np.arange(n) / sr)) * 0.3 + 0.7 * _saw(f, n, sr, rng, 15)
        b, a = signal.butter(2, 4000 / (sr / 2))
        return (signal.lfilter(b, a, x) * _env(n, sr, 0.01, 1.0) * 0.5).astype(np.float32)
    # vocal-like: a sawtooth with vibrato through vowel formants
    n = int(dur_s * sr * 0.95)
    x = _saw(f, n, sr, rng, 40, vibrato=(5.5, 0.3))
    y = _formant(x, sr, "aeiou"[rng.integers(0, 5)])
    return (y * _env(n, sr, 0.04, 1.5) * 0.6).astype(np.float32)


def _render_loop(instrument, rng, meter, bars, bpm, sr, swing, key=None):
    """One pass of the loop's pattern, shape=(samples,), plus the ring-out beyond it."""
    beat = 60.0 / bpm
    length = int(round(bars * meter * beat * sr))
    program, kind = GM_INSTRUMENTS.get(instrument, (None, instrument))
    gm = instrument in GM_INSTRUMENTS
    if kind == "drums":
        if gm:
            program = int(GM_KITS[rng.integers(0, len(GM_KITS))])
        events = _drum_pattern(rng, meter, bars, sr, _GM_DRUM_KEYS if gm else None)
    else:
        events = _tonal_pattern(rng, meter, bars, sr, kind, key)
    out = np.zeros(length + 2 * sr, dtype=np.float32)
    if swing:  # off-beat eighths are delayed
        events = [(pos + swing * 0.5 if (pos * 2) % 2 == 1 else pos, dur, sound, gain)
                  for pos, dur, sound, gain in events]
    if gm:
        return _render_gm(events, program, kind == "drums", bpm, sr, len(out)), length
    for pos, dur, sound, gain in events:
        start = int(round(pos * beat * sr))
        wave = sound if isinstance(sound, np.ndarray) else _render_note(sound, dur * beat, sr, rng)
        wave = wave[: len(out) - start]
        out[start:start + len(wave)] += gain * wave
    return out, length


def _render_gm(events, program: int, drums: bool, bpm: float, sr: int, n_samples: int) -> np.ndarray:
    """Render pattern events with a General MIDI instrument through the ``fluidsynth`` CLI.

    Parameters
    ----------
    events : list of (onset in beats, duration in beats, sound, gain); sound is a MIDI key
        (drums) or a ``(kind, note or notes)`` pair from :func:`_tonal_pattern`
    program : int, GM program (on channel 10 for drums: the kit)
    drums : bool
    n_samples : int, length of the output

    Returns
    -------
    np.ndarray, shape=(n_samples,), float32, mono (mean of fluidsynth's two channels)

    Raises
    ------
    UnmixerError
        If fluidsynth or the soundfont is missing.
    """
    import mido
    import soundfile as sf

    if shutil.which("fluidsynth") is None or not SOUNDFONT.exists():
        raise UnmixerError("General MIDI instruments need the Debian packages fluidsynth and "
                           "fluid-soundfont-gm (see packages.txt).")
    tpb = 960
    channel = 9 if drums else 0
    notes = []  # (tick, is_on, key, velocity)
    for pos, dur, sound, gain in events:
        if drums:
            keys, velocity = [int(sound)], int(np.clip(round(gain * 127), 1, 127))
        else:
            keys, velocity = [int(k) for k in np.atleast_1d(sound[1])], int(np.clip(round(gain * 160), 1, 127))
        on, off = int(round(pos * tpb)), int(round((pos + dur) * tpb))
        notes += [(on, 1, k, velocity) for k in keys] + [(off, 0, k, 0) for k in keys]
    notes.sort(key=lambda n: (n[0], n[1]))  # note-offs before note-ons at the same tick
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=int(round(60e6 / bpm)), time=0))
    track.append(mido.Message("program_change", channel=channel, program=int(program), time=0))
    now = 0
    for tick, is_on, key, velocity in notes:
        kind = "note_on" if is_on else "note_off"
        track.append(mido.Message(kind, channel=channel, note=key, velocity=velocity, time=tick - now))
        now = tick
    end = int(round(n_samples / sr * bpm / 60 * tpb))
    track.append(mido.MetaMessage("end_of_track", time=max(end - now, 0)))
    mid = mido.MidiFile(ticks_per_beat=tpb)
    mid.tracks.append(track)
    with tempfile.TemporaryDirectory() as tmp:
        midi_path, wav_path = Path(tmp) / "loop.mid", Path(tmp) / "loop.wav"
        mid.save(str(midi_path))
        subprocess.run(["fluidsynth", "-ni", "-R", "0", "-C", "0", "-g", "0.5", "-r", str(sr),
                        "-O", "float", "-F", str(wav_path), str(SOUNDFONT), str(midi_path)],
                       check=True, capture_output=True, timeout=120)
        audio, _ = sf.read(wav_path, dtype="float32", always_2d=True)
    out = np.zeros(n_samples, dtype=np.float32)
    mono = audio.mean(axis=1)[:n_samples]
    out[: len(mono)] = mono
    return out


# ----------------------------------------------------------------------------- layouts

def make_layout(family: str, n_loops: int, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """A 0/1 layout (n_loops, n_blocks) of a layout family.

    "composed": loops enter one by one, then a varied arrangement (every loop plays, never
    all blocks identical); "factorial": every non-empty combination of the loops, in a
    random order (n_blocks is ignored: 2^K - 1 blocks); "sparse": each block has 1 to 3
    loops; "dense": each block has about 70% of the loops.

    Raises
    ------
    UnmixerError
        For an unknown family.
    """
    if family == "factorial":
        combos = [c for r in range(1, n_loops + 1) for c in combinations(range(n_loops), r)]
        order = rng.permutation(len(combos))
        lay = np.zeros((n_loops, len(combos)), dtype=np.int8)
        for col, i in enumerate(order):
            lay[list(combos[i]), col] = 1
        return lay
    lay = np.zeros((n_loops, n_blocks), dtype=np.int8)
    if family == "composed":
        for b in range(n_blocks):
            if b < n_loops:
                lay[: b + 1, b] = 1  # build-up
            else:
                lay[:, b] = rng.random(n_loops) < 0.65
                if not lay[:, b].any():
                    lay[rng.integers(0, n_loops), b] = 1
    elif family == "sparse":
        for b in range(n_blocks):
            lay[rng.choice(n_loops, size=rng.integers(1, 4), replace=False), b] = 1
    elif family == "dense":
        lay = (rng.random((n_loops, n_blocks)) < 0.7).astype(np.int8)
    else:
        raise UnmixerError(f"unknown layout family {family!r}")
    for k in range(n_loops):  # every loop plays somewhere
        if not lay[k].any():
            lay[k, rng.integers(0, n_blocks)] = 1
    return lay


def make_song(
    seed: int = 0,
    *,
    n_loops: int = 4,
    n_bars: int = 16,
    bpm: float = 120.0,
    meter: int = 4,
    loop_bars: int | list = 2,
    block_bars: int = 4,
    family: str = "composed",
    instruments: list | None = None,
    swing: float = 0.0,
    key: str | None = None,
    sr: int = SAMPLE_RATE,
) -> SynthSong:
    """Generate a loop-based song with its ground truth.

    Parameters
    ----------
    seed : int
    n_loops : int, K
    n_bars : int, bars in the song (for "factorial", 2^K - 1 blocks are used instead)
    bpm : float, beats per minute
    meter : int, beats per bar (3 or 4)
    loop_bars : int or list of int, pattern length of each loop (1, 2 or 4 bars)
    block_bars : int, the layout switches loops on and off in blocks of this many bars
        (a multiple of every loop's length)
    family : "composed", "factorial", "sparse" or "dense", see :func:`make_layout`
    instruments : list of str, one per loop from :data:`INSTRUMENTS` or :data:`GM_INSTRUMENTS`
        (default: drums, bass, pad, lead, pluck, vocal, ... cycled); General MIDI instruments
        are rendered with fluidsynth
    swing : float in [0, 1): delay of off-beat eighths, as a fraction of an eighth
    key : str, optional, a planted key ("A minor", "F# major", "8A": anything
        :meth:`unmixer.loops.key.Key.parse` reads). Every tonal loop then plays in it: the
        chords follow a progression that starts on the tonic chord (in minor with a major
        dominant), melodies and bass lines start on the tonic and favour the tonic triad.
        Default None: each loop picks its own root and scale, as always (the output of the
        other arguments does not change), so a song has no single key.
    sr : int, Hz

    Returns
    -------
    SynthSong

    Raises
    ------
    UnmixerError
        If a loop length does not divide ``block_bars``, an instrument is unknown, or
        ``key`` names no key.
    UnmixerError
        If a General MIDI instrument is asked for and fluidsynth or the soundfont is missing.
    """
    rng = np.random.default_rng(seed)
    planted = None
    if key is not None:
        from unmixer.loops.key import Key

        parsed = Key.parse(key)
        planted = (parsed.tonic, parsed.mode)
    if instruments is None:
        cycle = ["drums", "bass", "pad", "lead", "pluck", "vocal"]
        instruments = [cycle[k % len(cycle)] for k in range(n_loops)]
    unknown = [i for i in instruments if i not in INSTRUMENTS and i not in GM_INSTRUMENTS]
    if unknown:
        raise UnmixerError(f"unknown instruments {unknown}")
    bars_of = list(loop_bars) if isinstance(loop_bars, (list, tuple)) else [int(loop_bars)] * n_loops
    if any(block_bars % b for b in bars_of):
        raise UnmixerError("every loop length must divide block_bars")
    n_blocks = max(1, n_bars // block_bars)
    blocks = make_layout(family, n_loops, n_blocks, rng)
    layout = np.repeat(blocks, block_bars, axis=1)
    n_bars = layout.shape[1]
    bar_s = meter * 60.0 / bpm
    downbeats = np.arange(n_bars + 1) * bar_s
    total = int(round(n_bars * bar_s * sr))
    stems = np.zeros((n_loops, 2, total), dtype=np.float32)
    for k, (inst, bars) in enumerate(zip(instruments, bars_of)):
        loop, period = _render_loop(inst, rng, meter, bars, bpm, sr, swing, planted)
        mono = np.zeros(total + len(loop), dtype=np.float32)
        for b in range(0, n_bars, bars):
            if layout[k, b]:
                start = int(round(b * bar_s * sr))
                mono[start:start + len(loop)] += loop
        mono = mono[:total]
        active = np.repeat(layout[k], int(np.ceil(total / n_bars)))[:total] > 0
        rms = float(np.sqrt(np.mean(mono[active] ** 2))) if active.any() else 1.0
        mono *= 10 ** (rng.uniform(-3, 3) / 20) * 0.1 / max(rms, 1e-9)
        pan = rng.uniform(-0.6, 0.6) if LABEL_OF[inst] not in ("drums", "bass") else rng.uniform(-0.1, 0.1)
        angle = (pan + 1) * np.pi / 4
        stems[k, 0], stems[k, 1] = mono * np.cos(angle), mono * np.sin(angle)
    mix = stems.sum(axis=0)
    scale = 0.9 / max(float(np.abs(mix).max()), 1e-9)
    return SynthSong((mix * scale).astype(np.float32), (stems * scale).astype(np.float32),
                     layout.astype(np.int8), downbeats, float(bpm), int(meter), bars_of,
                     list(instruments), sr, None if key is None else parsed.name)


def make_song_with_melody(seed: int = 0, *, melody_db: float = 0.0, notes_per_beat: int = 1,
                          **song_args) -> SynthSong:
    """A loop song (:func:`make_song`) with a foreground melody on top that never repeats.

    The melody is a lead voice (square + sawtooth, low-passed) playing ``notes_per_beat``
    notes per beat from the first downbeat to the last, every pitch drawn afresh (uniform
    over two octaves, A3-A5, never the same note twice in a row), so that no bar repeats
    another: no loop can explain it. It is the song's last stem (``instruments[-1]`` is
    ``"foreground"``, its layout row all ones); the stems still sum to the mixture.

    Parameters
    ----------
    seed : int, seed of the song and of the melody
    melody_db : float, dB, the melody's level against the loops' mixture (RMS)
    notes_per_beat : int >= 1
    **song_args : passed to :func:`make_song`

    Returns
    -------
    SynthSong, with K + 1 stems (K loops, then the melody)

    Raises
    ------
    UnmixerError
        As :func:`make_song`, or if ``notes_per_beat`` < 1.
    """
    if notes_per_beat < 1:
        raise UnmixerError("notes_per_beat must be at least 1")
    song = make_song(seed, **song_args)
    rng = np.random.default_rng(seed + 7919)
    sr, n = song.sr, song.mix.shape[-1]
    step_s = 60.0 / song.bpm / notes_per_beat
    starts = np.arange(song.downbeats_s[0], song.downbeats_s[-1] - step_s / 2, step_s)
    pitches = [int(rng.integers(57, 82))]
    for _ in range(len(starts) - 1):  # a fresh pitch every note, never the previous one
        pitches.append(int((pitches[-1] - 57 + rng.integers(1, 25)) % 25 + 57))
    melody = np.zeros(n + int(2 * step_s * sr), dtype=np.float32)
    for t0, note in zip(starts, pitches):
        x = _render_note(("lead", note), step_s, sr, rng)
        a = int(round(t0 * sr))
        melody[a:a + len(x)] += x
    melody = melody[:n]
    loops_rms = float(np.sqrt(np.mean(song.mix ** 2)))
    melody *= 10 ** (melody_db / 20) * loops_rms / max(float(np.sqrt(np.mean(melody ** 2))), 1e-9)
    stem = np.stack([melody, melody]) / np.sqrt(2.0)
    stems = np.concatenate([song.stems, stem[None].astype(np.float32)])
    mix = stems.sum(axis=0)
    scale = 0.9 / max(float(np.abs(mix).max()), 1e-9)
    layout = np.vstack([song.layout, np.ones((1, song.layout.shape[1]), dtype=np.int8)])
    return SynthSong((mix * scale).astype(np.float32), (stems * scale).astype(np.float32), layout,
                     song.downbeats_s, song.bpm, song.meter, song.loop_bars + [1],
                     song.instruments + ["foreground"], sr, song.key)
