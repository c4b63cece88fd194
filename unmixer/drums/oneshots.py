"""One-shot extraction and sample replacement (the seed's two extensions).

* :func:`extract_oneshots`: for each class, the cleanest single hit of its separated layer:
  the one with the highest share of the window's energy in that layer (the least
  interference from the other layers' masks), weighted by its loudness.
* :func:`replace_samples`: rebuild the pattern from the transcription with other one-shots,
  each chosen as the nearest neighbour of the extracted hit in a library, on standardised MFCC
  statistics (mean and standard deviation of 20 MFCCs).

Source: Koretzky & Rajashekharappa, ISMIR 2021 LBD, §3.1 (similarity search on the
lowest-interference instance) and §3.2 (sample replacement from the MIDI transcription).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unmixer.core.audio import SAMPLE_RATE, resample
from unmixer.drums import CLASSES
from unmixer.drums.transcribe import Transcription
from unmixer.errors import UnmixerError

MAX_ONESHOT_S = 1.0
"""Longest extracted one-shot (s)."""

PRE_ROLL_S = 0.005
"""Extracted one-shots start this long (s) before the onset."""

N_MFCC = 20

_CLASS_PATTERNS = [  # file-name keywords -> class, first match wins
    ("hihat_open", r"open|ohh|oh\b"),
    ("hihat_closed", r"hat|hh|chh|closed"),
    ("kick", r"kick|bd|bass.?drum|kik"),
    ("snare", r"snare|sd|clap|rim|stick"),
    ("toms", r"tom|cowbell|bell|conga|bongo|perc"),
]


@dataclass
class OneShotLibrary:
    """One-shots to choose replacements from.

    Attributes
    ----------
    names : list of str
    sounds : list of np.ndarray, mono float32 at 44.1 kHz
    classes : list of str or None: the class of each sound when known (from the file name,
        or for built-in kits), else None
    features : np.ndarray, float32, shape=(n_sounds, 2 * N_MFCC): :func:`mfcc_stats`
    """

    names: list[str]
    sounds: list[np.ndarray]
    classes: list[str | None]
    features: np.ndarray

    def __len__(self) -> int:
        return len(self.names)


def mfcc_stats(x: np.ndarray) -> np.ndarray:
    """Mean and standard deviation over time of 20 MFCCs of a one-shot's first 0.5 s.

    Parameters
    ----------
    x : np.ndarray, shape=(samples,) or (channels, samples), 44.1 kHz

    Returns
    -------
    np.ndarray, float32, shape=(40,)
    """
    import librosa

    x = np.asarray(x, dtype=np.float32)
    mono = x.mean(axis=0) if x.ndim == 2 else x
    mono = mono[: int(0.5 * SAMPLE_RATE)]
    if mono.size < 2048:
        mono = np.pad(mono, (0, 2048 - mono.size))
    mfcc = librosa.feature.mfcc(y=mono, sr=SAMPLE_RATE, n_mfcc=N_MFCC, n_fft=2048, hop_length=256)
    return np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)]).astype(np.float32)


def class_from_name(name: str) -> str | None:
    """Guess a one-shot's class from its file name ("Kick 01.wav" -> "kick"), or None."""
    low = Path(name).stem.lower()
    for cls, pattern in _CLASS_PATTERNS:
        if re.search(pattern, low):
            return cls
    return None


def make_library(names: list[str], sounds: list[np.ndarray],
                 classes: list[str | None] | None = None) -> OneShotLibrary:
    """A library from mono sounds (float32, 44.1 kHz); classes guessed from the names if not
    given."""
    if not sounds:
        raise UnmixerError("The one-shot library is empty.")
    if classes is None:
        classes = [class_from_name(n) for n in names]
    feats = np.stack([mfcc_stats(s) for s in sounds])
    return OneShotLibrary(list(names), [np.asarray(s, dtype=np.float32) for s in sounds],
                          list(classes), feats)


def load_library(sources) -> OneShotLibrary:
    """Read one-shots from a folder, or from (name, bytes) pairs such as uploads.

    Parameters
    ----------
    sources : str or Path (a folder: every .wav/.flac/.ogg/.aif(f)/.mp3 in it, recursively),
        or a list of (name, bytes)

    Returns
    -------
    OneShotLibrary (mono mixdown, 44.1 kHz, at most 2 s per sound)

    Raises
    ------
    UnmixerError
        If the folder does not exist or holds no readable audio file.
    """
    import soundfile as sf

    if isinstance(sources, (str, Path)):
        folder = Path(sources)
        if not folder.is_dir():
            raise UnmixerError(f"One-shot folder {folder} does not exist.")
        files = sorted(p for p in folder.rglob("*")
                       if p.suffix.lower() in {".wav", ".flac", ".ogg", ".aif", ".aiff", ".mp3"})
        sources = [(str(p.relative_to(folder)), p.read_bytes()) for p in files]
    names, sounds = [], []
    for name, data in sources:
        try:
            audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
            continue  # an unreadable file in a sample folder is skipped, not fatal
        if audio.size == 0:
            continue
        mono = resample(audio.mean(axis=1), sr, SAMPLE_RATE)[: 2 * SAMPLE_RATE]
        if np.max(np.abs(mono)) <= 1e-6:
            continue
        names.append(name)
        sounds.append(mono)
    if not sounds:
        raise UnmixerError("No readable audio one-shot found (WAV, FLAC, OGG, AIFF or MP3).")
    return make_library(names, sounds)


def default_library(n_kits: int = 4) -> OneShotLibrary:
    """A built-in library: ``n_kits`` procedurally synthesised kits (generated, not stored),
    three sounds per class each, labelled with their classes."""
    from unmixer.datasets.drums import synth_kit

    names, sounds, classes = [], [], []
    for k in range(n_kits):
        kit = synth_kit(2_000_000 + k)
        for cls in CLASSES:
            for j, s in enumerate(kit.sounds[cls]):
                names.append(f"synth{k + 1}-{cls}-{j + 1}")
                sounds.append(s)
                classes.append(cls)
    return make_library(names, sounds, classes)


def _window_energy(cum: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    return cum[..., stop] - cum[..., start]


def extract_oneshots(layers: np.ndarray, transcription: Transcription,
                     max_len_s: float = MAX_ONESHOT_S) -> dict[str, np.ndarray]:
    """The cleanest single hit of each class.

    Each onset's window runs from ``PRE_ROLL_S`` before it to the next onset of the same
    class (at most ``max_len_s``). Its score is purity^2 * loudness, purity = the layer's
    energy in the window over all layers' energy there (1: no interference), loudness = the
    window's layer energy over the class's loudest hit.

    Parameters
    ----------
    layers : np.ndarray, shape=(5, channels, samples), from :func:`split_drums`
    transcription : Transcription

    Returns
    -------
    dict class -> np.ndarray, float32, shape=(channels, hit samples), with a 10 ms fade-out,
    for each class that has onsets.
    """
    layers = np.asarray(layers, dtype=np.float32)
    n = layers.shape[-1]
    power = np.square(layers, dtype=np.float64).sum(axis=1)  # (5, samples)
    cum = np.concatenate([np.zeros((power.shape[0], 1)), np.cumsum(power, axis=1)], axis=1)
    out = {}
    for c, cls in enumerate(CLASSES):
        times = np.sort(np.asarray(transcription.onsets[cls], dtype=np.float64))
        if times.size == 0:
            continue
        start = np.clip(np.rint((times - PRE_ROLL_S) * SAMPLE_RATE).astype(int), 0, n - 1)
        nxt = np.append(times[1:], np.inf)
        stop = np.minimum(np.minimum(nxt - PRE_ROLL_S, times + max_len_s) * SAMPLE_RATE, n)
        stop = np.maximum(stop.astype(int), start + 1)
        own = _window_energy(cum[c], start, stop)
        total = _window_energy(cum, start, stop).sum(axis=0)
        purity = own / np.maximum(total, 1e-20)
        # the first 50 ms decide the loudness, so long windows are not favoured
        head = _window_energy(cum[c], start, np.minimum(start + int(0.05 * SAMPLE_RATE), stop))
        score = purity**2 * head / max(float(head.max()), 1e-20)
        best = int(np.argmax(score))
        hit = layers[c, :, start[best]:stop[best]].copy()
        fade = min(int(0.01 * SAMPLE_RATE), hit.shape[-1])
        hit[:, -fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
        out[cls] = hit
    return out


def nearest_oneshots(oneshots: dict[str, np.ndarray], library: OneShotLibrary) -> dict[str, int]:
    """Index in ``library`` of the nearest neighbour of each extracted one-shot.

    Features are z-scored with the library's mean and standard deviation; sounds labelled
    with another class are skipped (unlabelled sounds compete for every class).

    Returns
    -------
    dict class -> library index (classes with no candidate are left out).
    """
    mu = library.features.mean(axis=0)
    sd = library.features.std(axis=0) + 1e-6
    lib = (library.features - mu) / sd
    out = {}
    for cls, hit in oneshots.items():
        q = (mfcc_stats(hit) - mu) / sd
        dist = np.linalg.norm(lib - q, axis=1)
        allowed = np.array([c is None or c == cls for c in library.classes])
        if not allowed.any():
            continue
        out[cls] = int(np.argmin(np.where(allowed, dist, np.inf)))
    return out


def render_transcription(transcription: Transcription, sounds: dict[str, np.ndarray],
                         n_samples: int) -> np.ndarray:
    """Play a transcription with one mono one-shot per class.

    Parameters
    ----------
    transcription : Transcription (velocities in (0, 1] scale each hit)
    sounds : dict class -> np.ndarray, mono float32, 44.1 kHz
    n_samples : int, output length

    Returns
    -------
    np.ndarray, float32, shape=(n_samples,)
    """
    out = np.zeros(n_samples, dtype=np.float32)
    for cls, sound in sounds.items():
        for t, v in zip(transcription.onsets[cls], transcription.velocities[cls]):
            s = int(round(max(float(t), 0.0) * SAMPLE_RATE))
            m = min(sound.size, n_samples - s)
            if m > 0:
                out[s:s + m] += np.float32(v) * sound[:m]
    return out


def replace_samples(transcription: Transcription, oneshots: dict[str, np.ndarray],
                    library: OneShotLibrary, n_samples: int, reference: np.ndarray | None = None
                    ) -> tuple[np.ndarray, dict[str, str]]:
    """Rebuild the pattern with the library's nearest one-shots.

    Parameters
    ----------
    transcription : Transcription
    oneshots : dict class -> extracted hit (channels, samples), from :func:`extract_oneshots`
    library : OneShotLibrary
    n_samples : int, output length (samples)
    reference : np.ndarray, optional
        The original mix; the result is scaled to its peak level.

    Returns
    -------
    audio : np.ndarray, float32, shape=(2, n_samples)
    chosen : dict class -> library name of the replacement

    Source: Koretzky & Rajashekharappa, ISMIR 2021 LBD, §3.2.
    """
    picks = nearest_oneshots(oneshots, library)
    sounds = {cls: library.sounds[i] / max(float(np.max(np.abs(library.sounds[i]))), 1e-9)
              for cls, i in picks.items()}
    mono = render_transcription(transcription, sounds, n_samples)
    target = 0.9 if reference is None else float(np.max(np.abs(reference)))
    mono *= np.float32(target / max(float(np.max(np.abs(mono))), 1e-9))
    return np.stack([mono, mono]), {cls: library.names[i] for cls, i in picks.items()}


__all__ = ["OneShotLibrary", "mfcc_stats", "class_from_name", "make_library", "load_library",
           "default_library", "extract_oneshots", "nearest_oneshots", "render_transcription",
           "replace_samples"]
