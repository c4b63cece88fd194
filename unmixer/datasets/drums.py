"""Generated drum loops with exact onsets: the Drum Splitter's training, test and demo data.

Sounds come from two places:

* the General MIDI percussion kits of the FluidR3 soundfont, rendered once per kit with the
  ``fluidsynth`` command line (Debian ``fluidsynth`` + ``fluid-soundfont-gm``) and cached
  in Unmixer's cache directory;
* procedurally synthesised kits (pitch-swept sines, filtered noise, 808-style metallic
  hats), a new kit for every random seed, so the CNN does not learn one kit.

A pattern (tempo, 16th-note grid, grooves and random densities, humanised timing, open hi-hats
choked by the next closed one) is rendered with per-class sample re-pitching (the
"time-stretching" augmentation of the seed), gain, EQ, reverb and background music; training
crops random windows of it (the seed's "random slicing").

The GM kit :data:`HELDOUT_GM_KIT` and every procedural kit with a seed of at least
:data:`HELDOUT_SEED_BASE` are never used in training: tests and benchmarks use them as the
unseen kit.

Source of the method: Koretzky & Rajashekharappa, ISMIR 2021 LBD, §2.1 (synthetic patterns,
random slicing, time-stretching).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import signal

from unmixer.core.audio import SAMPLE_RATE
from unmixer.drums import CLASSES
from unmixer.errors import UnmixerError

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
"""The General MIDI soundfont rendered for the real drum kits."""

GM_KIT_PROGRAMS = {"standard": 0, "room": 8, "power": 16, "electronic": 24, "tr808": 25,
                   "jazz": 32, "brush": 40, "orchestra": 48}
"""Drum kits (program numbers on MIDI channel 10, bank 128) of FluidR3_GM."""

HELDOUT_GM_KIT = "tr808"
"""The GM kit never used in training (the "unseen kit" of tests and benchmarks): none of its
kick, snare and hi-hat samples occurs in another FluidR3 kit."""

TRAIN_GM_KITS = tuple(k for k in GM_KIT_PROGRAMS if k not in (HELDOUT_GM_KIT, "orchestra"))
"""GM kits used in training. The orchestra kit is left out: it maps timpani onto the tom and
hi-hat keys."""

HELDOUT_SEED_BASE = 1_000_000
"""Procedural kits with seeds at or above this are never used in training."""

GM_CLASS_NOTES = {
    "kick": (35, 36),
    "snare": (38, 40, 37, 39),          # snares, side stick, hand clap
    "hihat_open": (46,),
    "hihat_closed": (42, 44),           # closed and pedal hi-hat
    "toms": (41, 43, 45, 47, 48, 50, 56),  # six toms and the cowbell
}
"""General MIDI percussion keys whose sounds make up each class."""

_GM_VELOCITIES = (110, 60)
_NOTE_SPACING_S = 3.0
_MAX_ONESHOT_S = 2.0


@dataclass
class Kit:
    """A drum kit: for each class, a list of mono one-shots (float32, 44.1 kHz, peak 1)."""

    name: str
    sounds: dict[str, list[np.ndarray]] = field(default_factory=dict)


@dataclass
class DrumExample:
    """One rendered pattern.

    Attributes
    ----------
    mix : np.ndarray, shape=(samples,), float32: the drums plus the background
    stems : np.ndarray, shape=(5, samples), float32: each class alone, after the effects
    background : np.ndarray, shape=(samples,), float32: music under the drums (or zeros)
    onsets : dict class -> np.ndarray of onset times (s), sorted
    velocities : dict class -> np.ndarray in (0, 1], one per onset
    """

    mix: np.ndarray
    stems: np.ndarray
    background: np.ndarray
    onsets: dict[str, np.ndarray]
    velocities: dict[str, np.ndarray]


def cache_dir() -> Path:
    """Where rendered one-shots are cached: ``drum_kits/`` in Unmixer's cache directory
    (:func:`unmixer.cache.default_cache_dir`), created; if the cache trims it, kits are
    rendered again."""
    from unmixer.cache import default_cache_dir

    path = default_cache_dir() / "drum_kits"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- GM kits


def _write_kit_midi(path: Path, program: int, notes: list[int]) -> None:
    import mido

    ticks_per_beat = 480
    spacing = int(_NOTE_SPACING_S * 2 * ticks_per_beat)  # 120 BPM: one beat = 0.5 s
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=500_000, time=0))
    track.append(mido.Message("program_change", channel=9, program=program, time=0))
    first = True
    for note in notes:
        for vel in _GM_VELOCITIES:
            track.append(mido.Message("note_on", channel=9, note=note, velocity=vel,
                                      time=0 if first else spacing - 240))
            track.append(mido.Message("note_off", channel=9, note=note, velocity=0, time=240))
            first = False
    track.append(mido.MetaMessage("end_of_track", time=spacing))
    mid = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    mid.tracks.append(track)
    mid.save(str(path))


def _trim_oneshot(x: np.ndarray) -> np.ndarray | None:
    """Cut a rendered hit from its onset to where it decays below -60 dB; peak 1."""
    peak = float(np.max(np.abs(x), initial=0.0))
    if peak < 1e-5:
        return None
    loud = np.flatnonzero(np.abs(x) > peak * 10 ** (-50 / 20))
    start = max(int(loud[0]) - 16, 0)
    env = np.maximum.accumulate(np.abs(x[::-1]))[::-1]  # running max from the end
    tail = np.flatnonzero(env > peak * 1e-3)
    end = min(int(tail[-1]) + 1, start + int(_MAX_ONESHOT_S * SAMPLE_RATE))
    y = x[start:end].astype(np.float32) / peak
    fade = min(256, len(y))
    y[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
    return y


def render_gm_kit(kit: str) -> Kit:
    """Render the one-shots of a General MIDI drum kit with fluidsynth (cached).

    Parameters
    ----------
    kit : str, a key of :data:`GM_KIT_PROGRAMS`

    Returns
    -------
    Kit whose sounds hold, per class, each key of :data:`GM_CLASS_NOTES` at two
    velocities (110 and 60), trimmed and peak-normalised.

    Raises
    ------
    UnmixerError
        If the kit is unknown, or fluidsynth or the soundfont is missing.
    """
    if kit not in GM_KIT_PROGRAMS:
        raise UnmixerError(f"Unknown GM drum kit {kit!r}; choose one of {sorted(GM_KIT_PROGRAMS)}.")
    cached = cache_dir() / f"gm_{kit}.npz"
    notes = [n for cls in CLASSES for n in GM_CLASS_NOTES[cls]]
    if not cached.exists():
        if shutil.which("fluidsynth") is None or not SOUNDFONT.exists():
            raise UnmixerError("Rendering GM drum kits needs the Debian packages fluidsynth "
                               "and fluid-soundfont-gm (see packages.txt).")
        import soundfile as sf

        with tempfile.TemporaryDirectory() as tmp:
            mid, wav = Path(tmp) / "kit.mid", Path(tmp) / "kit.wav"
            _write_kit_midi(mid, GM_KIT_PROGRAMS[kit], notes)
            subprocess.run(["fluidsynth", "-ni", "-R", "0", "-C", "0", "-g", "0.5",
                            "-r", str(SAMPLE_RATE), "-F", str(wav), str(SOUNDFONT), str(mid)],
                           check=True, capture_output=True, timeout=120)
            audio, _ = sf.read(wav, dtype="float32", always_2d=True)
        mono = audio.mean(axis=1)
        hop = int(_NOTE_SPACING_S * SAMPLE_RATE)
        arrays = {}
        for i, note in enumerate(notes):
            for j, vel in enumerate(_GM_VELOCITIES):
                seg = mono[(2 * i + j) * hop:(2 * i + j + 1) * hop]
                hit = _trim_oneshot(seg)
                if hit is not None:
                    arrays[f"{note}_{vel}"] = hit
        np.savez_compressed(cached, **arrays)
    data = np.load(cached)
    sounds = {cls: [data[k] for k in data.files if int(k.split("_")[0]) in GM_CLASS_NOTES[cls]]
              for cls in CLASSES}
    return Kit(f"gm-{kit}", sounds)


# --------------------------------------------------------------------------- synthetic kits


def _env(n: int, decay_s: float, attack_s: float = 0.001) -> np.ndarray:
    t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
    return (np.minimum(t / attack_s, 1.0) * np.exp(-t / decay_s)).astype(np.float32)


def _bandpass(x: np.ndarray, lo: float, hi: float, order: int = 2) -> np.ndarray:
    nyq = SAMPLE_RATE / 2
    sos = signal.butter(order, [max(lo, 20) / nyq, min(hi, nyq * 0.95) / nyq], btype="band",
                        output="sos")
    return signal.sosfilt(sos, x).astype(np.float32)


def _sweep(n: int, f_start: float, f_end: float, sweep_s: float) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    freq = f_end + (f_start - f_end) * np.exp(-t / sweep_s)
    return np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE).astype(np.float32)


def _metallic(n: int, rng: np.random.Generator) -> np.ndarray:
    """808-style cymbal: six detuned square waves, or white noise."""
    if rng.random() < 0.5:
        return rng.standard_normal(n).astype(np.float32)
    base = rng.uniform(150, 800)
    ratios = np.array([2.0, 3.0, 4.16, 5.43, 6.79, 8.21]) * rng.uniform(0.9, 1.1, 6)
    t = np.arange(n) / SAMPLE_RATE
    return np.sign(np.sin(2 * np.pi * base * ratios[:, None] * t)).sum(0).astype(np.float32)


def _norm(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return x / max(float(np.max(np.abs(x))), 1e-9)


def _synth_hit(cls: str, rng: np.random.Generator) -> np.ndarray:
    u = rng.uniform
    if cls == "kick":
        n = int(u(0.25, 0.7) * SAMPLE_RATE)
        body = _sweep(n, u(120, 300), u(38, 65), u(0.01, 0.05)) * _env(n, u(0.08, 0.35))
        click = _bandpass(rng.standard_normal(n), 1500, 8000) * _env(n, 0.004) * u(0, 0.6)
        return _norm(body + click)
    if cls == "snare":
        n = int(u(0.2, 0.5) * SAMPLE_RATE)
        if rng.random() < 0.25:  # clap: three noise bursts and a tail
            noise = _bandpass(rng.standard_normal(n), u(700, 1200), u(3000, 7000))
            env = _env(n, u(0.05, 0.15))
            for k in range(3):
                d = int(k * u(0.008, 0.013) * SAMPLE_RATE)
                env[d:] += _env(n - d, 0.006)
            return _norm(noise * env)
        f0 = u(120, 300)
        tone = (_sweep(n, f0 * 1.3, f0, 0.01) + 0.5 * _sweep(n, f0 * 2.2, f0 * 1.7, 0.01))
        tone *= _env(n, u(0.03, 0.08))
        noise = _bandpass(rng.standard_normal(n), u(500, 3000), u(5000, 14000))
        return _norm(tone * u(0.3, 1.0) + noise * _env(n, u(0.06, 0.22)) * u(0.6, 1.2))
    if cls in ("hihat_open", "hihat_closed"):
        decay = u(0.015, 0.06) if cls == "hihat_closed" else u(0.2, 0.6)
        n = int(min(decay * 6 + 0.02, 1.8) * SAMPLE_RATE)
        hp = u(2500, 9000)
        return _norm(_bandpass(_metallic(n, rng), hp, 19000, 3) * _env(n, decay))
    # toms and cowbells
    n = int(u(0.3, 0.8) * SAMPLE_RATE)
    if rng.random() < 0.2:  # cowbell: two square tones through a band-pass
        t = np.arange(n) / SAMPLE_RATE
        f = u(520, 600)
        sq = np.sign(np.sin(2 * np.pi * f * t)) + np.sign(np.sin(2 * np.pi * f * 1.48 * t))
        return _norm(_bandpass(sq, 400, 4000) * _env(n, u(0.05, 0.15)))
    f0 = u(70, 320)
    body = _sweep(n, f0 * u(1.2, 1.8), f0, u(0.02, 0.08)) * _env(n, u(0.12, 0.45))
    return _norm(body + 0.2 * _bandpass(rng.standard_normal(n), 500, 5000) * _env(n, 0.01))


def synth_kit(seed: int, variants: int = 3) -> Kit:
    """A procedurally synthesised kit; every seed gives different drums.

    Parameters
    ----------
    seed : int
        Seeds >= :data:`HELDOUT_SEED_BASE` are reserved for unseen-kit evaluation.
    variants : int
        Sounds per class.

    Returns
    -------
    Kit with ``variants`` mono one-shots (float32, 44.1 kHz, peak 1) per class.
    """
    rng = np.random.default_rng(seed)
    return Kit(f"synth-{seed}", {cls: [_synth_hit(cls, rng) for _ in range(variants)]
                                 for cls in CLASSES})


# --------------------------------------------------------------------------- patterns


def random_pattern(rng: np.random.Generator, duration_s: float
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A random drum pattern on a 16th-note grid.

    Half the patterns are grooves (kick on the downbeats, snare on the backbeat, hi-hats on
    8ths or 16ths, open hi-hats off-beat, tom fills), half random densities per class; timing
    is humanised (sd 4 ms) and swung at times; some classes are left out.

    Returns
    -------
    onsets : dict class -> sorted onset times (s) in [0, duration_s - 0.05)
    velocities : dict class -> velocities in (0, 1]
    """
    bpm = rng.uniform(70, 180)
    step = 60.0 / bpm / 4
    n_steps = int(duration_s / step) + 1
    pos = np.arange(n_steps) % 16
    groove = rng.random() < 0.5
    if groove:
        sixteenths = rng.random() < 0.4
        p = {
            "kick": np.where(pos == 0, 0.95, np.where(pos == 8, 0.75, rng.uniform(0.03, 0.2))),
            "snare": np.where((pos == 4) | (pos == 12), 0.92, rng.uniform(0.0, 0.12)),
            "hihat_closed": np.where(pos % 2 == 0, 0.9, 0.8 if sixteenths else 0.05),
            "hihat_open": np.where(pos % 4 == 2, rng.uniform(0.0, 0.4), 0.01),
            "toms": np.where((np.arange(n_steps) % 64) >= 56, rng.uniform(0, 0.6), 0.01),
        }
    else:
        p = {cls: np.full(n_steps, rng.uniform(0.02, 0.35)) for cls in CLASSES}
    swing = step * rng.uniform(0, 0.3) if rng.random() < 0.3 else 0.0
    grid = np.arange(n_steps) * step + np.where(pos % 2 == 1, swing, 0.0)
    hits = {cls: rng.random(n_steps) < p[cls] * (rng.random() > 0.12) for cls in CLASSES}
    hits["hihat_closed"] &= ~hits["hihat_open"]  # one hi-hat at a time
    onsets, velocities = {}, {}
    for cls in CLASSES:
        t = grid[hits[cls]] + rng.normal(0, 0.004, int(hits[cls].sum())) + 0.02
        keep = (t >= 0) & (t < duration_s - 0.05)
        t = np.sort(t[keep])
        vel = rng.uniform(0.45, 1.0, t.size)
        ghost = rng.random(t.size) < 0.12
        vel[ghost] = rng.uniform(0.15, 0.4, int(ghost.sum()))
        onsets[cls], velocities[cls] = t, vel.astype(np.float32)
    return onsets, velocities


# --------------------------------------------------------------------------- rendering


def _repitch(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (linear interpolation): pitch and length change."""
    if abs(factor - 1.0) < 1e-3:
        return x
    n_out = max(int(len(x) / factor), 2)
    return np.interp(np.arange(n_out) * factor, np.arange(len(x)), x).astype(np.float32)


def _random_eq(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """A random low and high shelf (linear, so it can be applied stem by stem)."""
    nyq = SAMPLE_RATE / 2
    lo = signal.butter(2, rng.uniform(80, 400) / nyq, output="sos")
    hi = signal.butter(2, rng.uniform(2000, 9000) / nyq, btype="high", output="sos")
    return (x + rng.uniform(-0.5, 1.0) * signal.sosfilt(lo, x, axis=-1)
            + rng.uniform(-0.6, 0.8) * signal.sosfilt(hi, x, axis=-1)).astype(np.float32)


def _reverb_ir(rng: np.random.Generator) -> np.ndarray:
    rt60 = rng.uniform(0.2, 1.2)
    n = int(rt60 * SAMPLE_RATE)
    ir = rng.standard_normal(n).astype(np.float32) * _env(n, rt60 / 6.9, 0.002)
    ir = signal.sosfilt(signal.butter(1, rng.uniform(3000, 10000) / (SAMPLE_RATE / 2),
                                      output="sos"), ir)
    ir *= rng.uniform(0.05, 0.4) / np.sqrt(np.sum(ir**2))
    ir[0] += 1.0  # the dry signal
    return ir.astype(np.float32)


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """Music under the drums: a chord progression with a bass line (harmonic tones)."""
    t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
    out = np.zeros(n, dtype=np.float32)
    chord_len = int(rng.uniform(0.8, 2.5) * SAMPLE_RATE)
    for start in range(0, n, chord_len):
        seg = slice(start, min(start + chord_len, n))
        root = rng.integers(36, 60)
        notes = [root - 12, root, root + rng.choice([3, 4]), root + 7]
        env = _env(seg.stop - seg.start, rng.uniform(0.3, 3.0), 0.02)
        for note in notes:
            f = 440.0 * 2 ** ((note - 69) / 12)
            for h in range(1, 6):
                if f * h < 12000:
                    out[seg] += (np.sin(2 * np.pi * f * h * t[seg] + rng.uniform(0, 6.3))
                                 * env / h ** rng.uniform(1, 2))
    return out


def render_pattern(onsets: dict[str, np.ndarray], velocities: dict[str, np.ndarray], kit: Kit,
                   duration_s: float, rng: np.random.Generator, *, augment: bool = True,
                   background: bool | None = None, stems: bool = True) -> DrumExample:
    """Render a pattern with a kit, with the training augmentations.

    Parameters
    ----------
    onsets, velocities : dict class -> np.ndarray (s, and (0, 1])
    kit : Kit
    duration_s : float, s
    rng : np.random.Generator
    augment : bool
        Random re-pitching (x0.8-1.25 per class), per-class EQ (half the time), per-class
        level (-8..+2 dB), EQ of the mix, reverb.
    background : bool, optional
        Add music under the drums (-28..-8 dB re the drums); by default with probability 0.5
        when ``augment``.
    stems : bool
        Apply the effects stem by stem so that ``stems`` are exact (slower); otherwise
        only the mix is exact and ``stems`` is zeros.

    Returns
    -------
    DrumExample with onsets choked open hi-hats kept as annotated.
    """
    n = int(duration_s * SAMPLE_RATE)
    out = np.zeros((len(CLASSES), n), dtype=np.float32)
    closed = onsets.get("hihat_closed", np.zeros(0))
    for c, cls in enumerate(CLASSES):
        pool = kit.sounds.get(cls) or []
        times = onsets.get(cls, np.zeros(0))
        if not pool or times.size == 0:
            continue
        choice = rng.choice(len(pool), size=min(len(pool), 2), replace=False)
        factor = rng.uniform(0.8, 1.25) if augment else 1.0
        sounds = [_repitch(pool[i], factor) for i in choice]
        if augment and rng.random() < 0.5:  # a timbre of its own for this class
            sounds = [_random_eq(rng, x) for x in sounds]
        level = 10 ** (rng.uniform(-8, 2) / 20) if augment else 1.0
        picks = rng.integers(0, len(sounds), times.size)
        for t, v, k in zip(times, velocities[cls], picks):
            hit = sounds[k]
            start = int(round(t * SAMPLE_RATE))
            length = min(hit.size, n - start)
            if cls == "hihat_open":  # choked by the next closed hi-hat
                later = closed[closed > t + 0.01]
                if later.size:
                    length = min(length, int((later[0] - t) * SAMPLE_RATE))
            if length <= 0:
                continue
            seg = hit[:length] * np.float32(level * v)
            fade = min(128, length)
            seg[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
            out[c, start:start + length] += seg
    back = np.zeros(n, dtype=np.float32)
    if background is None:
        background = augment and rng.random() < 0.5
    if augment:
        if stems:
            if rng.random() < 0.6:
                out = _random_eq(rng, out)
            if rng.random() < 0.5:
                out = signal.fftconvolve(out, _reverb_ir(rng)[None], axes=-1)[:, :n]
        else:
            mix = out.sum(axis=0)
            if rng.random() < 0.6:
                mix = _random_eq(rng, mix)
            if rng.random() < 0.5:
                mix = signal.fftconvolve(mix, _reverb_ir(rng))[:n]
            out = np.zeros_like(out)
            out[0] = mix  # the mix, held in the first row until the stems are dropped
    drums = out.sum(axis=0)
    if background:
        music = _background(rng, n)
        rms_d = np.sqrt(np.mean(drums**2)) + 1e-9
        rms_m = np.sqrt(np.mean(music**2)) + 1e-9
        back = (music * rms_d / rms_m * 10 ** (rng.uniform(-28, -8) / 20)).astype(np.float32)
    mix = drums + back
    scale = np.float32(rng.uniform(0.3, 0.9) / max(float(np.max(np.abs(mix))), 1e-9))
    if not stems:
        out = np.zeros_like(out)
    return DrumExample((mix * scale).astype(np.float32), (out * scale).astype(np.float32),
                       (back * scale).astype(np.float32), dict(onsets), dict(velocities))


def generate_example(kit: Kit, seed: int, duration_s: float = 8.0, *, augment: bool = True,
                     background: bool | None = None, stems: bool = True) -> DrumExample:
    """A random pattern (:func:`random_pattern`) rendered with ``kit`` (:func:`render_pattern`).

    The same ``seed`` gives the same example.
    """
    rng = np.random.default_rng(seed)
    onsets, velocities = random_pattern(rng, duration_s)
    return render_pattern(onsets, velocities, kit, duration_s, rng, augment=augment,
                          background=background, stems=stems)


def demo_loop(seed: int = 5, duration_s: float = 8.0) -> tuple[np.ndarray, DrumExample]:
    """A generated drum loop for the app's demo button and the tests.

    A groove or random pattern played by an unseen synthetic kit (seed
    ``HELDOUT_SEED_BASE + seed``), without augmentation or background.

    Returns
    -------
    audio : np.ndarray, float32, shape=(2, samples), 44.1 kHz
    example : DrumExample with the ground truth (onsets, stems)
    """
    ex = generate_example(synth_kit(HELDOUT_SEED_BASE + seed), HELDOUT_SEED_BASE + seed,
                          duration_s, augment=False, background=False)
    return np.stack([ex.mix, ex.mix]), ex
