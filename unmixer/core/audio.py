"""Audio in and out.

Everything inside Unmixer is float32 at :data:`SAMPLE_RATE` (44.1 kHz) with shape
``(channels, samples)`` and two channels. Reading tries libsndfile (soundfile) first and
falls back to ffmpeg for what libsndfile cannot decode (M4A/AAC, some MP3s); resampling is
done by soxr through librosa.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf

from unmixer.errors import UnmixerError

SAMPLE_RATE = 44100
"""The sample rate (Hz) of every signal inside Unmixer."""

MIN_DURATION_S = 8.0
"""Shortest song accepted (s); the beat tracker also asks for at least 4 bars."""

MAX_DURATION_S = 15 * 60.0
"""Longest song accepted by default (s)."""

SILENCE_DBFS = -60.0
"""A file whose RMS level (dB re full scale) is below this is treated as silent."""

AudioSource = Union[str, os.PathLike, bytes, BinaryIO]


def _describe(source: AudioSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    return "the file"


def _read_bytes(source: AudioSource) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, (str, os.PathLike)):
        return Path(source).read_bytes()
    data = source.read()
    return data if isinstance(data, bytes) else bytes(data)


def _decode_soundfile(data: bytes, max_s: float) -> tuple[np.ndarray, int, float]:
    """(audio (channels, samples), sample rate Hz, duration s the header gives) of what
    libsndfile reads, decoding at most ``max_s`` seconds (nothing when the header already
    says it is longer). libsndfile counts the frames from the data present, not from what
    a header claims."""
    with sf.SoundFile(io.BytesIO(data)) as f:
        sr = f.samplerate
        duration = f.frames / sr if sr > 0 else 0.0
        if duration > max_s:
            return np.zeros((f.channels, 0), np.float32), sr, duration
        frames = f.frames if not np.isfinite(max_s) else min(f.frames, int(max_s * sr) + 1)
        audio = f.read(frames=frames, dtype="float32", always_2d=True)  # (samples, channels)
    return audio.T, sr, duration


def _probe_ffmpeg(path: str) -> tuple[int, int, float | None]:
    """(sample rate Hz, channels, duration s or None when unknown) of the first audio
    stream, from its container's header, via ffprobe."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=sample_rate,channels,duration:format=duration", "-of", "json", path],
        capture_output=True, text=True, timeout=60,
    )
    try:
        info = json.loads(out.stdout or "{}")
        stream = info["streams"][0]
        sr, channels = int(stream["sample_rate"]), int(stream["channels"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise ValueError("no audio stream") from None
    if out.returncode != 0 or sr <= 0 or channels <= 0:
        raise ValueError("no audio stream")
    durations = []
    for raw in (stream.get("duration"), info.get("format", {}).get("duration")):
        try:
            durations.append(float(raw))
        except (TypeError, ValueError):
            pass
    finite = [d for d in durations if np.isfinite(d) and d >= 0]
    return sr, channels, max(finite) if finite else None


def _decode_ffmpeg(data: bytes, max_s: float) -> tuple[np.ndarray, int, float | None]:
    """(audio (channels, samples), sample rate Hz, duration s the container gives or None),
    decoding at most ``max_s`` seconds (nothing when the container already says it is
    longer)."""
    if shutil.which("ffmpeg") is None:
        raise ValueError("ffmpeg is not installed")
    with tempfile.NamedTemporaryFile(suffix=".bin") as tmp:
        tmp.write(data)
        tmp.flush()
        sr, channels, duration = _probe_ffmpeg(tmp.name)
        if duration is not None and duration > max_s:
            return np.zeros((channels, 0), np.float32), sr, duration
        limit = ["-t", f"{max_s:.3f}"] if np.isfinite(max_s) else []
        out = subprocess.run(
            ["ffmpeg", "-v", "error", "-nostdin", "-i", tmp.name, "-map", "0:a:0", *limit,
             "-f", "f32le", "-acodec", "pcm_f32le", "-"],
            capture_output=True, timeout=600,
        )
    if out.returncode != 0 or not out.stdout:
        raise ValueError(out.stderr.decode(errors="replace").strip() or "ffmpeg failed")
    samples = np.frombuffer(out.stdout, dtype="<f4")
    samples = samples[: len(samples) // channels * channels]
    return samples.reshape(-1, channels).T.copy(), sr, duration


def to_stereo(audio: np.ndarray) -> np.ndarray:
    """Mono is duplicated, stereo kept, more channels downmixed (their mean, on both sides).

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples)

    Returns
    -------
    np.ndarray, shape=(2, samples), float32
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    if audio.shape[0] == 2:
        return audio
    mono = audio.mean(axis=0, dtype=np.float32)
    return np.stack([mono, mono])


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Resample along the last axis with soxr (high quality), via librosa.

    Parameters
    ----------
    audio : np.ndarray, shape=(..., samples)
    orig_sr, target_sr : int, Hz

    Returns
    -------
    np.ndarray, shape=(..., samples * target_sr / orig_sr), float32
    """
    if orig_sr == target_sr:
        return np.asarray(audio, dtype=np.float32)
    import librosa

    return librosa.resample(np.asarray(audio, dtype=np.float32), orig_sr=orig_sr,
                            target_sr=target_sr, res_type="soxr_hq").astype(np.float32)


def load_audio(
    source: AudioSource,
    *,
    name: str | None = None,
    min_duration_s: float = MIN_DURATION_S,
    max_duration_s: float = MAX_DURATION_S,
) -> np.ndarray:
    """Decode an audio file into float32 stereo at 44.1 kHz.

    WAV, FLAC, OGG, AIFF and (libsndfile >= 1.1) MP3 are read by soundfile; anything it
    cannot read (M4A/AAC, odd MP3s, video containers) is decoded by ffmpeg. Any sample rate
    and channel count is accepted (see :func:`to_stereo`).

    Parameters
    ----------
    source : path, bytes or binary file object
    name : str, optional
        The file name to use in error messages (e.g. the uploaded file's name).
    min_duration_s, max_duration_s : float, s
        Accepted duration range.

    Returns
    -------
    audio : np.ndarray, shape=(2, samples), float32, 44.1 kHz

    Raises
    ------
    UnmixerError
        If the file is missing, empty, not audio or corrupt, silent, shorter than
        ``min_duration_s`` or longer than ``max_duration_s``. A file whose header (or
        container) says it is longer is refused before it is decoded, and no more than
        ``max_duration_s`` (plus 5%) of any file is decoded.

    Examples
    --------
    >>> from unmixer.data import DEMO_SONG
    >>> audio = load_audio(DEMO_SONG)
    >>> audio.shape[0], audio.dtype, round(audio.shape[1] / SAMPLE_RATE)
    (2, dtype('float32'), 61)
    >>> load_audio(b"not audio at all", name="notes.txt")
    Traceback (most recent call last):
    ...
    unmixer.errors.UnmixerError: notes.txt is not a readable audio file (corrupt, or not WAV, FLAC, OGG, MP3, M4A/AAC or AIFF).
    """
    label = _describe(source, name)
    try:
        data = _read_bytes(source)
    except OSError as err:
        raise UnmixerError(f"Cannot open {label}: {err.strerror or err}.") from None
    if len(data) == 0:
        raise UnmixerError(f"{label} is empty (0 bytes).")
    # The duration is read from the header (libsndfile) or the container (ffprobe) first,
    # and no more than the limit is ever decoded: a 6-hour file is refused before it
    # takes memory, whatever its header claims.
    decode_s = _decode_limit_s(max_duration_s)
    try:
        audio, sr, header_s = _decode_soundfile(data, decode_s)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):  # not for libsndfile
        try:
            audio, sr, header_s = _decode_ffmpeg(data, decode_s)
        except (ValueError, OSError, subprocess.SubprocessError):
            raise UnmixerError(
                f"{label} is not a readable audio file (corrupt, or not WAV, FLAC, OGG, MP3, "
                "M4A/AAC or AIFF)."
            ) from None
    if header_s is not None and header_s > decode_s:
        raise UnmixerError(_too_long(label, header_s, max_duration_s))
    if audio.size == 0 or audio.shape[-1] == 0:
        raise UnmixerError(f"{label} holds no audio samples.")
    duration = audio.shape[-1] / sr
    if duration < min_duration_s:
        raise UnmixerError(
            f"{label} is too short ({duration:.1f} s); Unmixer needs at least "
            f"{min_duration_s:.0f} s and 4 bars of music."
        )
    if duration > max_duration_s:
        raise UnmixerError(_too_long(label, duration, max_duration_s))
    if not np.all(np.isfinite(audio)):
        raise UnmixerError(f"{label} is corrupt: it holds non-finite samples.")
    audio = to_stereo(audio)
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if rms <= 10 ** (SILENCE_DBFS / 20):
        raise UnmixerError(f"{label} is silent (level below {SILENCE_DBFS:.0f} dBFS).")
    return resample(audio, sr, SAMPLE_RATE)


def _decode_limit_s(max_duration_s: float) -> float:
    """Seconds decoded at most: the limit plus a margin (a container's duration is an
    estimate for some formats, so the exact check is on the decoded samples)."""
    return float(max_duration_s) * 1.05 + 5.0


def _too_long(label: str, duration_s: float, max_duration_s: float) -> str:
    length = (f"{duration_s / 3600:.1f} h" if duration_s >= 2 * 3600
              else f"{duration_s / 60:.1f} min")
    return (f"{label} is too long ({length}); the limit is {max_duration_s / 60:.0f} min. "
            "Trim it, or raise the limit.")


def write_wav(path: str | os.PathLike, audio: np.ndarray, sr: int = SAMPLE_RATE,
              subtype: str = "PCM_16") -> Path:
    """Write ``audio`` (shape (channels, samples) or (samples,)) as a WAV file.

    Samples are clipped to [-1, 1] for integer subtypes. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, _frames(audio, subtype), sr, subtype=subtype, format="WAV")
    return path


def wav_bytes(audio: np.ndarray, sr: int = SAMPLE_RATE, subtype: str = "PCM_16") -> bytes:
    """The bytes of a WAV file holding ``audio`` (shape (channels, samples) or (samples,))."""
    buf = io.BytesIO()
    sf.write(buf, _frames(audio, subtype), sr, subtype=subtype, format="WAV")
    return buf.getvalue()


def _frames(audio: np.ndarray, subtype: str) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    frames = audio.T if audio.ndim == 2 else audio
    if subtype.startswith("PCM"):
        frames = np.clip(frames, -1.0, 1.0)
    return frames


def ogg_bytes(audio: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    """Ogg Vorbis bytes of ``audio`` (shape (channels, samples) or (samples,)).

    About ten times smaller than 16-bit WAV: for the page's audio players, while downloads
    stay WAV.
    """
    buf = io.BytesIO()
    frames = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    frames = frames.T if frames.ndim == 2 else frames
    channels = 1 if frames.ndim == 1 else frames.shape[1]
    # in blocks: libsndfile's Vorbis encoder crashes (SIGSEGV) on a minutes-long single write
    with sf.SoundFile(buf, "w", sr, channels, format="OGG", subtype="VORBIS") as f:
        for start in range(0, len(frames), 1 << 16):
            f.write(frames[start:start + (1 << 16)])
    return buf.getvalue()

def zip_bytes(files: Mapping[str, bytes]) -> bytes:
    """A ZIP archive (stored, not compressed: WAV hardly compresses) of ``{name: bytes}``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()
