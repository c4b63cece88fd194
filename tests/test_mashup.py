"""unmixer.mashup: time-stretch to a target tempo, bar grid, gains, bar-aligned sum, exports."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import soundfile as sf

from unmixer import mashup
from unmixer.core.audio import ogg_bytes, zip_bytes
from unmixer.errors import UnmixerError

SR = 44100


def _click_clip(n_bars: int, bpm: float, meter: int = 4, tone_hz: float = 0.0) -> np.ndarray:
    """A loop of `n_bars` bars at `bpm`: a short click on every beat (louder on downbeats)."""
    n = mashup.loop_samples(n_bars, bpm, meter, SR)
    clip = np.zeros((2, n), np.float32)
    if tone_hz:
        clip += 0.05 * np.sin(2 * np.pi * tone_hz * np.arange(n) / SR).astype(np.float32)
    beat = n / (n_bars * meter)
    burst = (np.hanning(256) * np.sin(2 * np.pi * 2000 * np.arange(256) / SR)).astype(np.float32)
    for k in range(n_bars * meter):
        start = int(round(k * beat))
        clip[:, start:start + 256] += (0.9 if k % meter == 0 else 0.5) * burst
    return clip


def _onsets(signal: np.ndarray, threshold: float) -> np.ndarray:
    """Sample positions where the envelope first rises above `threshold` after a quiet gap."""
    env = np.abs(signal)
    above = np.flatnonzero(env > threshold)
    if above.size == 0:
        return above
    gaps = np.diff(above) > 2000
    return np.concatenate([[above[0]], above[1:][gaps]])


def test_bar_grid_in_samples():
    assert mashup.bar_samples(120, 4) == 88200          # 4 beats x 0.5 s
    assert mashup.bar_samples(90, 3) == 88200           # 3 beats x 0.667 s
    assert mashup.loop_samples(2, 100, 4) == 2 * 105840
    with pytest.raises(UnmixerError):
        mashup.bar_samples(500, 4)
    with pytest.raises(UnmixerError):
        mashup.loop_samples(0, 120, 4)


def test_stretch_from_100_to_120_bpm_has_the_right_length_and_beat_positions():
    clip = _click_clip(2, 100.0)
    assert clip.shape[-1] == 211680
    out = mashup.stretch_to_bpm(clip, loop_bars=2, meter=4, bpm=120.0)
    assert out.shape == (2, 176400)                      # 2 bars x 4 beats x 0.5 s x 44.1 kHz
    assert out.dtype == np.float32
    onsets = _onsets(out[0], 0.2)
    expected = np.arange(8) * 176400 / 8                 # one click per beat, now every 0.5 s
    assert len(onsets) == 8
    assert np.max(np.abs(onsets - expected)) < 0.012 * SR  # within 12 ms of the new grid


def test_stretch_keeps_pitch():
    n = mashup.loop_samples(1, 100, 4)
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(n) / SR).astype(np.float32)
    out = mashup.stretch_loop(np.stack([tone, tone]), mashup.loop_samples(1, 125, 4))
    spectrum = np.abs(np.fft.rfft(out[0] * np.hanning(out.shape[-1])))
    peak_hz = np.argmax(spectrum) * SR / out.shape[-1]
    assert abs(peak_hz - 440.0) < 2.0


def test_stretched_loop_has_no_click_at_its_seam():
    # 440 Hz fits a whole number of cycles both in 2 bars at 100 BPM and at 120 BPM, so a
    # seamless stretch must join its end to its start as smoothly as any other two samples.
    n_in = mashup.loop_samples(2, 100, 4)
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(n_in) / SR).astype(np.float32)
    out = mashup.stretch_to_bpm(np.stack([tone, tone]), 2, 4, 120.0)[0]
    steps = np.abs(np.diff(out))
    seam = abs(float(out[0]) - float(out[-1]))
    assert seam < 2 * np.percentile(steps, 99)


def test_stretch_rejects_bad_input():
    with pytest.raises(UnmixerError):
        mashup.stretch_loop(np.zeros((2, 0), np.float32), 100)
    with pytest.raises(UnmixerError):
        mashup.stretch_loop(np.ones((2, 1000), np.float32), 10)     # x100: too far
    bad = np.ones((2, 1000), np.float32)
    bad[0, 5] = np.nan
    with pytest.raises(UnmixerError):
        mashup.stretch_loop(bad, 1200)


def test_render_mix_is_bar_aligned_with_gains():
    bar = mashup.bar_samples(120, 4)
    one_bar = np.zeros((2, bar), np.float32)
    one_bar[:, 0] = 1.0
    two_bars = np.zeros((2, 2 * bar), np.float32)
    two_bars[:, 10] = 1.0
    mix = mashup.render_mix([one_bar, two_bars], [-6.0, 0.0], 4 * bar, ceiling_dbfs=None)
    assert mix.shape == (2, 4 * bar)
    hits = np.flatnonzero(mix[0])
    np.testing.assert_array_equal(hits, [0, 10, bar, 2 * bar, 2 * bar + 10, 3 * bar])
    np.testing.assert_allclose(mix[0, [0, bar, 2 * bar, 3 * bar]], 10 ** (-6 / 20), rtol=1e-5)
    np.testing.assert_allclose(mix[0, [10, 2 * bar + 10]], 1.0)


def test_render_mix_cuts_on_the_bar_grid_and_keeps_headroom():
    bar = mashup.bar_samples(100, 4)
    loud = np.full((2, 2 * bar), 0.8, np.float32)
    mix = mashup.render_mix([loud, loud], [0.0, 0.0], bar)    # 1 bar of a 2-bar loop
    assert mix.shape == (2, bar)
    np.testing.assert_allclose(np.max(np.abs(mix)), 10 ** (-1 / 20), rtol=1e-5)
    silent = mashup.render_mix([], [], bar)
    assert silent.shape == (2, bar) and not silent.any()
    with pytest.raises(UnmixerError):
        mashup.render_mix([loud], [0.0, 1.0], bar)


def test_mono_clip_is_mixed_on_both_channels():
    bar = mashup.bar_samples(120, 4)
    mono = np.zeros(bar, np.float32)
    mono[0] = 0.5
    mix = mashup.render_mix([mono], [0.0], 2 * bar)
    assert mix[0, 0] == mix[1, 0] == pytest.approx(0.5)
    assert mix[0, bar] == pytest.approx(0.5)


def test_preview_wav_is_light_mono_and_keeps_duration():
    clip = _click_clip(1, 120.0)
    data = mashup.preview_wav(clip)
    audio, sr = sf.read(io.BytesIO(data))
    assert sr == mashup.PREVIEW_SAMPLE_RATE and audio.ndim == 1
    assert len(audio) == clip.shape[-1] // 2
    assert len(data) < clip.shape[-1] * 1.1                # 2 bytes x half the samples


def test_ogg_bytes_decode():
    clip = _click_clip(1, 120.0, tone_hz=220.0)
    audio, sr = sf.read(io.BytesIO(ogg_bytes(clip)))
    assert sr == SR and audio.shape == (clip.shape[-1], 2)


def test_file_names_and_zip():
    assert mashup.loop_filename("Vibe Ace.ogg", 3, "vocal-like", 119.6) == \
        "Vibe-Ace_loop03_vocal-like_120bpm.wav"
    assert mashup.loop_filename("Vibe Ace.ogg", 3, "loop", 120) == "Vibe-Ace_loop03_120bpm.wav"  # unsure: no label
    assert mashup.loop_filename("../../etc/pass wd.mp3", 12, "drums", 90) == \
        "etc-pass-wd_loop12_drums_90bpm.wav"
    assert mashup.slug("???") == "song"
    data = zip_bytes({"a.wav": b"123", "b/c.wav": b"45"})
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["a.wav", "b/c.wav"]
        assert archive.read("b/c.wav") == b"45"


class _Loop:
    def __init__(self, index, label, clip):
        self.index, self.label, self.clip = index, label, clip


class _Extraction:
    """What loops_archive reads of an Extraction."""

    bpm, meter, loop_bars = 100.0, 4, 2

    def __init__(self):
        self.loops = [_Loop(1, "drums", _click_clip(2, 100.0)),
                      _Loop(2, "bass", _click_clip(2, 100.0, tone_hz=110.0))]

    def summary(self):
        return {"bpm": self.bpm, "labels": [loop.label for loop in self.loops]}


def test_loops_archive_holds_every_loop_at_both_tempos_and_the_map():
    data = mashup.loops_archive("My Song.mp3", _Extraction(), bpm=120.0)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = sorted(archive.namelist())
        assert names == sorted([
            "at-song-tempo_100bpm/My-Song_loop01_drums_100bpm.wav",
            "at-song-tempo_100bpm/My-Song_loop02_bass_100bpm.wav",
            "at-120bpm/My-Song_loop01_drums_120bpm.wav",
            "at-120bpm/My-Song_loop02_bass_120bpm.wav",
            "loop_map.json"])
        original, sr = sf.read(io.BytesIO(archive.read(names[-2])))
        fast, _ = sf.read(io.BytesIO(archive.read("at-120bpm/My-Song_loop02_bass_120bpm.wav")))
        assert sr == SR and original.shape == (211680, 2) and fast.shape == (176400, 2)
        assert b'"drums"' in archive.read("loop_map.json")
    without = mashup.loops_archive("My Song.mp3", _Extraction())
    with zipfile.ZipFile(io.BytesIO(without)) as archive:
        assert not [n for n in archive.namelist() if n.startswith("at-120")]


def test_loop_file_names_carry_the_key_of_pitched_loops():
    assert mashup.loop_filename("Vibe Ace.ogg", 2, "bass", 120, "F# minor") == \
        "Vibe-Ace_loop02_bass_120bpm_F#m.wav"
    assert mashup.loop_filename("Vibe Ace.ogg", 2, "chords", 120, "Bb major") == \
        "Vibe-Ace_loop02_chords_120bpm_Bb.wav"
    ext = _Extraction()
    ext.key = "A minor"
    drums, bass = ext.loops
    bass.pitched = drums.pitched = True
    assert mashup.loop_key(ext, bass) == "A minor"
    assert mashup.loop_key(ext, drums) is None          # drums carry no key
    bass.pitched = False
    assert mashup.loop_key(ext, bass) is None           # nor does an unpitched loop
    with pytest.raises(UnmixerError):
        mashup.loop_filename("x", 1, "bass", 120, "H minor")


def test_stems_start_at_bar_one_last_the_mix_and_sum_to_it():
    bar = mashup.bar_samples(120, 4)
    one = np.zeros((2, bar), np.float32)
    one[:, 0] = 0.9
    two = np.zeros((2, 2 * bar), np.float32)
    two[:, 5] = 0.9
    stems = mashup.render_stems([one, two], [0.0, -6.0], 4 * bar)
    mix = mashup.render_mix([one, two], [0.0, -6.0], 4 * bar)
    assert [s.shape for s in stems] == [(2, 4 * bar)] * 2
    np.testing.assert_allclose(stems[0] + stems[1], mix, atol=1e-6)
    np.testing.assert_array_equal(np.flatnonzero(stems[0][0]), [0, bar, 2 * bar, 3 * bar])
    np.testing.assert_array_equal(np.flatnonzero(stems[1][0]), [5, 2 * bar + 5])
    loud = np.full((2, bar), 0.8, np.float32)         # the sum peaks at 1.6: both scaled down
    stems = mashup.render_stems([loud, loud], [0.0, 0.0], bar)
    np.testing.assert_allclose(np.abs(stems[0] + stems[1]).max(), 10 ** (-1 / 20), rtol=1e-5)


def test_daw_archive_holds_equal_wavs_from_bar_one_and_a_readme():
    bar = mashup.bar_samples(120, 4)
    clips = [_click_clip(2, 120.0), _click_clip(1, 120.0, tone_hz=220.0)]
    stems = mashup.render_stems(clips, [0.0, -3.0], 8 * bar)
    data = mashup.daw_archive([mashup.Stem("My Song", 1, "drums", stems[0]),
                               mashup.Stem("Other", 3, "bass", stems[1], -3.0, 2, "A minor")],
                              120.0, 4, 8, key="A minor")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        assert names == ["01_My-Song_loop01_drums_120bpm.wav", "02_Other_loop03_bass_120bpm_Am.wav",
                         "README.txt"]
        tracks = [sf.read(io.BytesIO(archive.read(n)))[0] for n in names[:2]]
        readme = archive.read("README.txt").decode()
    assert {t.shape for t in tracks} == {(8 * bar, 2)}
    scale = np.abs(tracks[0]).max() / np.abs(clips[0]).max()   # the mix's peak ceiling
    assert 0.5 < scale <= 1.0
    for start in (0, 2 * bar, 6 * bar):      # bar 1 is the loop's start, and it repeats on
        np.testing.assert_allclose(tracks[0][start:start + 2 * bar], scale * clips[0].T, atol=2e-4)
    assert "Tempo: 120.00 BPM, 4/4" in readme and "Key: A minor · 8A" in readme
    assert f"Length: 8 bars = 16.000 s = {8 * bar} samples" in readme
    assert "transposed +2 semitones" in readme
    with pytest.raises(UnmixerError, match="empty"):
        mashup.daw_archive([], 120.0, 4, 8)
