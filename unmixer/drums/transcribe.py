"""Drum transcription: the CNN's onset profiles (ONNX Runtime), peak picking, MIDI and JSON.

The CNN (:mod:`training.drums.model`, trained by ``python -m training.drums.train``) is run
with onnxruntime from ``weights/drum_cnn.onnx``; the per-class peak-picking thresholds that
were tuned on validation data travel in the ONNX file's metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.ndimage import maximum_filter1d

from unmixer.core.audio import SAMPLE_RATE
from unmixer.drums import CLASSES, GM_NOTES
from unmixer.drums.features import FRAME_RATE, N_MELS, log_mel, log_mel_from_magnitude
from unmixer.errors import UnmixerError

WEIGHTS = Path(__file__).with_name("weights") / "drum_cnn.onnx"
"""The committed CNN weights (ONNX)."""

DEFAULT_THRESHOLDS = (0.5,) * len(CLASSES)

MIN_GAP_S = 0.03
"""Two onsets of one class closer than this (s) are merged (the louder one is kept)."""


@dataclass
class Transcription:
    """Onsets of the five drum classes.

    Attributes
    ----------
    onsets : dict class -> np.ndarray, float64, onset times (s), sorted
    velocities : dict class -> np.ndarray, float32, in (0, 1], one per onset
    profiles : np.ndarray, float32, shape=(5, n_frames): the CNN's onset probabilities, frame t
        centred on t / FRAME_RATE s
    """

    onsets: dict[str, np.ndarray]
    velocities: dict[str, np.ndarray]
    profiles: np.ndarray

    def n_onsets(self) -> int:
        """Total number of onsets over the classes."""
        return int(sum(v.size for v in self.onsets.values()))

    def to_json(self) -> dict:
        """``{class: {"times_s": [...], "velocities": [...]}}`` (JSON-ready)."""
        return {cls: {"times_s": [round(float(t), 4) for t in self.onsets[cls]],
                      "velocities": [round(float(v), 3) for v in self.velocities[cls]]}
                for cls in CLASSES}


@lru_cache(maxsize=4)
def load_model(path: str = str(WEIGHTS)):
    """The ONNX Runtime session of the CNN and its thresholds.

    Returns
    -------
    (onnxruntime.InferenceSession, np.ndarray shape=(5,) thresholds)

    Raises
    ------
    UnmixerError
        If the weights file is missing or not a drum CNN of this version.
    """
    import onnxruntime as ort

    if not Path(path).exists():
        raise UnmixerError(f"Drum CNN weights not found at {path}; run python -m training.drums.train.")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    if int(meta.get("n_mels", N_MELS)) != N_MELS or meta.get("classes", ",".join(CLASSES)) != ",".join(CLASSES):
        raise UnmixerError(f"{path} was trained for other features or classes; retrain it.")
    thresholds = np.asarray(json.loads(meta.get("thresholds", json.dumps(DEFAULT_THRESHOLDS))),
                            dtype=np.float32)
    return sess, thresholds


def onset_profiles(mel: np.ndarray, model_path: str = str(WEIGHTS)) -> np.ndarray:
    """Run the CNN on a log-mel spectrogram.

    Parameters
    ----------
    mel : np.ndarray, shape=(N_MELS, n_frames), from :func:`unmixer.drums.features.log_mel`

    Returns
    -------
    np.ndarray, float32, shape=(5, n_frames), onset probabilities in (0, 1).
    """
    sess, _ = load_model(model_path)
    x = np.ascontiguousarray(mel, dtype=np.float32)[None, None]
    return sess.run(None, {sess.get_inputs()[0].name: x})[0][0]


def pick_peaks(profiles: np.ndarray, thresholds, min_gap_s: float = MIN_GAP_S
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Onsets from onset profiles: local maxima above a per-class threshold.

    A frame is an onset when its value is the largest within +-``min_gap_s`` and at least
    the class threshold; its time is refined by fitting a parabola through it and its two
    neighbours.

    Parameters
    ----------
    profiles : np.ndarray, shape=(5, n_frames), in [0, 1]
    thresholds : sequence of 5 floats, or one float
    min_gap_s : float, s

    Returns
    -------
    onsets : dict class -> times (s), float64
    strengths : dict class -> profile value at each onset, float32

    Source: the peak picking of Böck, Krebs & Schedl, "Evaluating the online capabilities of
    onset detection methods", ISMIR 2012 (local maximum + threshold + minimum distance).
    """
    p = np.asarray(profiles, dtype=np.float32)
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float32), (p.shape[0],))
    w = max(int(round(min_gap_s * FRAME_RATE)), 1)
    is_peak = (p >= maximum_filter1d(p, 2 * w + 1, axis=1, mode="constant")) & (p >= thr[:, None])
    padded = np.pad(p, ((0, 0), (1, 1)), mode="edge")
    onsets, strengths = {}, {}
    for c, cls in enumerate(CLASSES):
        f = np.flatnonzero(is_peak[c])
        if f.size:  # plateaus: keep the first frame of each run closer than w
            f = f[np.concatenate([[True], np.diff(f) > w])]
        left, mid, right = padded[c, f], padded[c, f + 1], padded[c, f + 2]
        denom = left - 2 * mid + right
        shift = np.where(denom < -1e-6, 0.5 * (left - right) / np.where(denom < -1e-6, denom, 1), 0)
        onsets[cls] = (f + np.clip(shift, -0.5, 0.5)) / FRAME_RATE
        strengths[cls] = mid.astype(np.float32)
    return onsets, strengths


def transcribe(audio: np.ndarray, *, thresholds=None, model_path: str = str(WEIGHTS),
               mag: np.ndarray | None = None) -> Transcription:
    """Transcribe the drums of a mix into onsets of the five classes.

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples) or (samples,), float, 44.1 kHz
    thresholds : sequence of 5 floats, optional
        Peak-picking thresholds; by default the ones tuned at training time.
    mag : np.ndarray, shape=(1 + N_FFT // 2, n_frames), optional
        |STFT| of the mono mix if the caller has it (saves one STFT).

    Returns
    -------
    Transcription; velocities are the CNN's peak values (a confidence, refined into a
    loudness by :func:`unmixer.drums.separate.split_drums`).

    Raises
    ------
    UnmixerError
        If the audio is empty or the weights are missing.

    Source: Koretzky & Rajashekharappa, ISMIR 2021 LBD, §2.1.
    """
    audio = np.asarray(audio, dtype=np.float32)
    mono = audio.mean(axis=0) if audio.ndim == 2 else audio
    if mono.size < 2048:
        raise UnmixerError("The audio is too short to transcribe (under 50 ms).")
    if mag is None:
        mel = log_mel(mono)
    else:
        mel = log_mel_from_magnitude(mag, float(np.sqrt(np.mean(np.square(mono, dtype=np.float64)))))
    sess_thr = load_model(model_path)[1]
    profiles = onset_profiles(mel, model_path)
    onsets, strengths = pick_peaks(profiles, sess_thr if thresholds is None else thresholds)
    return Transcription(onsets, strengths, profiles)


def onset_scores(reference: dict[str, np.ndarray], estimate: dict[str, np.ndarray],
                 window_s: float = 0.05) -> dict[str, tuple[float, float, float]]:
    """Onset precision, recall and F-measure per class (mir_eval, +-``window_s``).

    Parameters
    ----------
    reference, estimate : dict class -> onset times (s)

    Returns
    -------
    dict class -> (F, precision, recall); a class with no reference and no estimated onsets
    scores (1, 1, 1), one with onsets on one side only (0, 0, 0).

    Source: mir_eval.onset.f_measure (Raffel et al., ISMIR 2014).
    """
    import mir_eval

    out = {}
    for cls in CLASSES:
        ref = np.sort(np.asarray(reference.get(cls, []), dtype=np.float64))
        est = np.sort(np.asarray(estimate.get(cls, []), dtype=np.float64))
        if ref.size == 0 and est.size == 0:
            out[cls] = (1.0, 1.0, 1.0)
        elif ref.size == 0 or est.size == 0:
            out[cls] = (0.0, 0.0, 0.0)
        else:
            out[cls] = tuple(float(v) for v in mir_eval.onset.f_measure(ref, est, window=window_s))
    return out


def to_midi(transcription: Transcription, path=None, bpm: float = 120.0):
    """The transcription as a General MIDI drum track (channel 10).

    Parameters
    ----------
    transcription : Transcription
    path : str or Path, optional
        Where to save the ``.mid`` file.
    bpm : float
        Tempo written in the file (only affects the tick grid; times are kept exactly).

    Returns
    -------
    mido.MidiFile with one note (key :data:`unmixer.drums.GM_NOTES`, 50 ms long, velocity
    1-127 from the transcription's velocity) per onset.
    """
    import mido

    tpb = 480
    ticks_per_s = tpb * bpm / 60.0
    events = []
    for cls in CLASSES:
        for t, v in zip(transcription.onsets[cls], transcription.velocities[cls]):
            vel = int(np.clip(round(1 + 126 * float(v)), 1, 127))
            start = int(round(max(float(t), 0.0) * ticks_per_s))
            events.append((start, 1, GM_NOTES[cls], vel))
            events.append((start + int(0.05 * ticks_per_s), 0, GM_NOTES[cls], 0))
    events.sort()
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name="Drums", time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    now = 0
    for tick, on, note, vel in events:
        kind = "note_on" if on else "note_off"
        track.append(mido.Message(kind, channel=9, note=note, velocity=vel, time=tick - now))
        now = tick
    mid = mido.MidiFile(ticks_per_beat=tpb)
    mid.tracks.append(track)
    if path is not None:
        mid.save(str(path))
    return mid


def midi_bytes(transcription: Transcription, bpm: float = 120.0) -> bytes:
    """The bytes of :func:`to_midi`'s file."""
    import io

    buf = io.BytesIO()
    to_midi(transcription, bpm=bpm).save(file=buf)
    return buf.getvalue()


__all__ = ["Transcription", "transcribe", "pick_peaks", "onset_profiles", "onset_scores",
           "to_midi", "midi_bytes", "load_model", "WEIGHTS", "SAMPLE_RATE"]
