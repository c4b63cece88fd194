"""Audio in/out: formats, sample rates, channel counts, and every kind of bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO

from unmixer.core.audio import SAMPLE_RATE, load_audio, wav_bytes, write_wav
from unmixer.errors import UnmixerError


def tone(sr: int, seconds: float, channels: int) -> np.ndarray:
    """(samples, channels): a 440 Hz tone, channel c scaled by 1/(c+1)."""
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * 440 * t)
    return np.stack([x / (c + 1) for c in range(channels)], axis=1).astype(np.float32)


@pytest.mark.parametrize("fmt,subtype,ext", [("WAV", "PCM_16", "wav"), ("FLAC", "PCM_24", "flac"),
                                             ("OGG", "VORBIS", "ogg"), ("AIFF", "PCM_16", "aiff")])
def test_reads_soundfile_formats(tmp_path, fmt, subtype, ext):
    path = tmp_path / f"song.{ext}"
    sf.write(path, tone(44100, 9.0, 2), 44100, format=fmt, subtype=subtype)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.shape[0] == 2
    assert abs(audio.shape[1] - 9.0 * SAMPLE_RATE) < 2048
    # the right channel is half the left one
    assert np.allclose(audio[1], audio[0] / 2, atol=0.02)


@pytest.mark.parametrize("codec,ext", [("libmp3lame", "mp3"), ("aac", "m4a")])
def test_reads_ffmpeg_formats(tmp_path, codec, ext):
    wav = tmp_path / "in.wav"
    sf.write(wav, tone(44100, 9.0, 2), 44100)
    out = tmp_path / f"song.{ext}"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-c:a", codec, str(out)], check=True)
    audio = load_audio(out)
    assert audio.shape[0] == 2 and abs(audio.shape[1] / SAMPLE_RATE - 9.0) < 0.1
    peak_hz = np.argmax(np.abs(np.fft.rfft(audio[0, :SAMPLE_RATE])))  # 1-s window: bin = Hz
    assert abs(peak_hz - 440) < 3


@pytest.mark.parametrize("sr", [8000, 22050, 48000, 96000])
def test_resamples_to_44k1(tmp_path, sr):
    path = tmp_path / "song.wav"
    sf.write(path, tone(sr, 9.0, 1), sr)
    audio = load_audio(path)
    assert audio.shape == (2, int(round(9.0 * SAMPLE_RATE)))
    spectrum = np.abs(np.fft.rfft(audio[0, :SAMPLE_RATE]))
    assert abs(np.argmax(spectrum) - 440) < 3  # 1-s window: bin = Hz


def test_mono_is_duplicated_and_surround_downmixed(tmp_path):
    sf.write(tmp_path / "mono.wav", tone(44100, 9.0, 1), 44100)
    mono = load_audio(tmp_path / "mono.wav")
    assert np.array_equal(mono[0], mono[1])
    sf.write(tmp_path / "six.wav", tone(44100, 9.0, 6), 44100)
    six = load_audio(tmp_path / "six.wav")
    expected = tone(44100, 9.0, 6).mean(axis=1)
    assert six.shape[0] == 2 and np.allclose(six[0], expected, atol=1e-4)


def test_bytes_and_file_objects(tmp_path):
    data = wav_bytes(tone(44100, 9.0, 2).T)
    assert load_audio(data).shape[0] == 2
    with open(write_wav(tmp_path / "x.wav", tone(44100, 9.0, 2).T), "rb") as f:
        assert load_audio(f).shape[0] == 2


def bad_inputs(tmp_path):
    """(name, path, expected words in the message) for every bad-input case."""
    cases = []
    (tmp_path / "empty.wav").write_bytes(b"")
    cases.append(("empty", tmp_path / "empty.wav", "empty"))
    (tmp_path / "notes.mp3").write_text("this is not audio at all\n" * 50)
    cases.append(("not audio", tmp_path / "notes.mp3", "not a readable audio file"))
    good = wav_bytes(tone(44100, 9.0, 2).T)
    garbage = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    (tmp_path / "corrupt.wav").write_bytes(good[:12] + b"fmt " + b"\x00" * 4 + garbage)
    cases.append(("corrupt", tmp_path / "corrupt.wav", "not a readable audio file"))
    sf.write(tmp_path / "silent.wav", np.zeros((44100 * 10, 2), np.float32), 44100)
    cases.append(("silent", tmp_path / "silent.wav", "silent"))
    sf.write(tmp_path / "short.wav", tone(44100, 3.0, 2), 44100)
    cases.append(("too short", tmp_path / "short.wav", "too short"))
    cases.append(("missing", tmp_path / "nope.wav", None))
    return cases


def test_bad_input_raises_one_line_error(tmp_path):
    for name, path, words in bad_inputs(tmp_path):
        with pytest.raises(UnmixerError) as info:
            load_audio(path)
        message = str(info.value)
        assert "\n" not in message and message, name
        if words:
            assert words in message, (name, message)


def test_too_long_is_configurable(tmp_path):
    sf.write(tmp_path / "long.wav", tone(8000, 30.0, 1), 8000)
    with pytest.raises(UnmixerError, match="too long"):
        load_audio(tmp_path / "long.wav", max_duration_s=20)
    assert load_audio(tmp_path / "long.wav", max_duration_s=60).shape[0] == 2


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    long_path = tmp_path / "long.wav"
    sf.write(long_path, tone(8000, 70.0, 1), 8000)
    cases = bad_inputs(tmp_path) + [("too long", long_path, "too long")]
    for name, path, words in cases:
        args = [sys.executable, "-m", "unmixer", "extract", str(path), "--out", str(tmp_path / "o"), "-q"]
        if name == "too long":
            args += ["--max-minutes", "1"]
        proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=120)
        assert proc.returncode == 2, (name, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, proc.stderr)
        assert "Traceback" not in proc.stderr
        if words:
            assert words in lines[0], (name, lines[0])
