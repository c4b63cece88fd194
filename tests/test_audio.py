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


# ------------------------------------------------------------ hostile files (issue 18)
def _pcm_wav_header(claimed_frames: int, channels: int, bits: int, sr: int, rf64: bool) -> bytes:
    """A PCM WAV (or RF64) header whose data chunk claims ``claimed_frames`` frames."""
    import struct

    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, sr, sr * block, block, bits)
    size = claimed_frames * block
    if rf64:
        ds64 = struct.pack("<QQQI", size + 36 + len(fmt), size, claimed_frames, 0)
        return (b"RF64" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"ds64"
                + struct.pack("<I", len(ds64)) + ds64 + b"fmt " + struct.pack("<I", len(fmt))
                + fmt + b"data" + struct.pack("<I", 0xFFFFFFFF))
    return (b"RIFF" + struct.pack("<I", min(size + 36, 0xFFFFFFFF)) + b"WAVE" + b"fmt "
            + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", min(size, 0xFFFFFFFF)))


@pytest.mark.parametrize("rf64", [False, True])
def test_a_wav_whose_header_claims_2_to_the_32_samples_decodes_only_what_it_holds(rf64):
    """The header says 2^32 frames (27 hours); the file holds 10 s. Only those 10 s are
    decoded (libsndfile counts frames from the data present), with no big allocation."""
    import tracemalloc

    pcm = (tone(44100, 10.0, 2) * 32767).astype("<i2").tobytes()
    data = _pcm_wav_header(2**32, 2, 16, 44100, rf64) + pcm
    tracemalloc.start()
    try:
        audio = load_audio(data, name="liar.wav")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert audio.shape == (2, 441000)
    assert peak < 60e6                      # 10 s of float32 stereo is 3.5 MB


@pytest.fixture(scope="module")
def six_hours(tmp_path_factory):
    """Six-hour files small enough for a test: an 8-bit mono WAV at 1 kHz (21.6 MB, read by
    libsndfile) and an 8 kbit/s AAC in M4A (22 MB, by ffmpeg): one minute, copied 360 times."""
    folder = tmp_path_factory.mktemp("six_hours")
    wav = folder / "six_hours.wav"
    with sf.SoundFile(wav, "w", 1000, 1, "PCM_U8") as f:
        minute = (0.5 * np.sin(2 * np.pi * 50 * np.arange(60_000) / 1000)).astype(np.float32)
        for _ in range(360):
            f.write(minute)
    m4a = folder / "six_hours.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=8000:duration=60", "-c:a", "aac",
                    "-b:a", "8k", str(folder / "minute.m4a")], check=True)
    (folder / "list.txt").write_text("file 'minute.m4a'\n" * 360)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i",
                    str(folder / "list.txt"), "-c", "copy", str(m4a)], check=True)
    return {"wav": wav, "m4a": m4a}


@pytest.mark.parametrize("kind", ["wav", "m4a"])
def test_a_six_hour_file_is_refused_from_its_header_before_it_is_decoded(six_hours, kind,
                                                                      monkeypatch):
    """Read the duration first (libsndfile's header, or ffprobe's container duration):
    nothing is decoded, neither by libsndfile nor by ffmpeg."""
    import unmixer.core.audio as audio_mod

    decoded = []
    real_read, real_run = sf.SoundFile.read, subprocess.run

    def read(self, frames=-1, *args, **kwargs):
        decoded.append(("libsndfile", frames))
        return real_read(self, frames, *args, **kwargs)

    def run(cmd, *args, **kwargs):
        if cmd[0] == "ffmpeg":
            decoded.append(("ffmpeg", cmd))
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", read)
    monkeypatch.setattr(audio_mod.subprocess, "run", run)
    path = six_hours[kind]
    with pytest.raises(UnmixerError) as err:
        load_audio(path.read_bytes(), name=path.name)
    message = str(err.value)
    assert message == f"{path.name} is too long (6.0 h); the limit is 15 min. Trim it, or " \
                      "raise the limit."
    assert decoded == []


def test_no_more_than_the_limit_is_decoded_when_the_container_does_not_say(tmp_path,
                                                                          monkeypatch):
    """A stream without a duration in its container (raw ADTS AAC, piped): ffmpeg stops at
    the limit, and the decoded length is what is refused."""
    import unmixer.core.audio as audio_mod

    wav = tmp_path / "in.wav"
    sf.write(wav, tone(8000, 30.0, 1), 8000)
    aac = tmp_path / "song.aac"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-c:a", "aac", "-f", "adts",
                    str(aac)], check=True)
    monkeypatch.setattr(audio_mod, "_probe_ffmpeg", lambda path: (8000, 1, None))
    with pytest.raises(UnmixerError, match=r"song.aac is too long \(0.3 min\); the limit is 0 min"):
        load_audio(aac.read_bytes(), name="song.aac", max_duration_s=10.0, min_duration_s=1.0)
