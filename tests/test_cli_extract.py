"""`python -m unmixer extract` on the real songs: every file of the contract."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, shared_song

from unmixer.loops.key import Key


@pytest.mark.slow
@pytest.mark.parametrize("name,loops", [("vibe_ace.ogg", 5), ("choice_drum_bass.ogg", 4)])
def test_extract_writes_the_contract(tmp_path, name, loops):
    song = shared_song(name)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "unmixer", "extract", str(song), "--loops", str(loops),
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "total" in proc.stdout and "decomposition" in proc.stdout  # closing summary with stage times
    assert "barely repeats" not in proc.stdout  # loop music: no warning

    info = json.loads((out / "loop_map.json").read_text())
    for key in ("bpm", "meter", "downbeats_s", "loop_bars", "activations", "chosen_bar", "labels",
                "timings_s", "key", "key_camelot", "key_confidence", "pitched"):
        assert key in info, key
    assert info["barely_repeats"] is False and info["explained"] > 0.5
    # the key (madmom's key CNN): E for Vibe Ace, G for Choice's bass line (measured; the mode
    # of both is close to a tie, BENCHMARKS.md "Keys"), shown in the summary line
    key = Key.parse(info["key"])
    assert key.tonic == {"vibe_ace.ogg": 4, "choice_drum_bass.ogg": 7}[name]
    assert info["key_camelot"] == key.camelot and 1 / 24 < info["key_confidence"] <= 1
    assert f"{key.name} · {key.camelot} (" in proc.stdout
    assert len(info["pitched"]) == loops and all(isinstance(v, bool) for v in info["pitched"])
    assert not any(p for p, label in zip(info["pitched"], info["labels"]) if label == "drums")
    n_bars = len(info["downbeats_s"]) - 1
    L = info["loop_bars"]  # chosen from the song (--loop-bars auto, the default)
    assert L in (1, 2, 4) and info["loop_bars_auto"] is True and info["meter"] in (3, 4)
    assert len(info["activations"]) == loops and all(len(a) == n_bars for a in info["activations"])
    assert all(0.0 <= v <= 1.0 for a in info["activations"] for v in a)
    assert len(info["chosen_bar"]) == loops and len(info["labels"]) == loops
    # the BPM agrees with the bar lines: one bar = meter beats
    bar_s = float(np.median(np.diff(info["downbeats_s"])))
    assert abs(bar_s - info["meter"] * 60.0 / info["bpm"]) / bar_s < 0.03

    song_info = sf.info(song)
    tracks = sorted((out / "tracks").iterdir())
    assert [p.name for p in tracks] == [f"loop_{k:02d}.wav" for k in range(1, loops + 1)]
    total = None
    for k in range(1, loops + 1):
        clip, sr = sf.read(out / "loops" / f"loop_{k:02d}.wav", always_2d=True)
        assert sr == 44100 and clip.shape[1] == 2
        bar = info["chosen_bar"][k - 1]
        expected = (info["downbeats_s"][bar + L] - info["downbeats_s"][bar]) * sr
        assert abs(clip.shape[0] - expected) <= 2  # exactly L bars, cut at the downbeats
        assert np.sqrt(np.mean(clip**2)) > 1e-3  # not silent
        track, sr = sf.read(tracks[k - 1], always_2d=True)
        assert abs(track.shape[0] / sr - song_info.duration) < 0.01
        total = track if total is None else total + track
    mix, _ = sf.read(song, always_2d=True)
    n = min(len(mix), len(total))
    snr = 10 * np.log10(np.sum(mix[:n] ** 2) / np.sum((mix[:n] - total[:n]) ** 2))
    assert snr > 30  # the tracks sum to the song (16-bit files)
    png = (out / "loop_map.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


@pytest.mark.parametrize("value", ["0", "13", "many", "4.5"])
def test_bad_loop_count_exits_2_with_one_line(tmp_path, value):
    song = shared_song("choice_drum_bass.ogg")
    proc = subprocess.run([sys.executable, "-m", "unmixer", "extract", str(song), "--loops", value,
                           "--out", str(tmp_path / "out"), "-q"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --loops must be 'auto' or a number from 1 to 12, not '{value}'."]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["3", "0", "two"])
def test_bad_loop_length_exits_2_with_one_line(tmp_path, value):
    song = shared_song("choice_drum_bass.ogg")
    proc = subprocess.run([sys.executable, "-m", "unmixer", "extract", str(song), "--loop-bars", value,
                           "--out", str(tmp_path / "out"), "-q"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: --loop-bars must be 'auto', 1, 2 or 4, not '{value}'."]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_auto_loop_count_is_reported(tmp_path):
    song = shared_song("choice_drum_bass.ogg")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "unmixer", "extract", str(song), "--loops", "auto",
                           "--out", str(out), "-q"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((out / "loop_map.json").read_text())
    k = len(info["activations"])
    assert 3 <= k <= 8  # measured: 5 (bench/RESULTS_loopcount.md)
    L = info["loop_bars"]
    assert info["loop_bars_auto"] is True and L in (1, 2, 4) and isinstance(info["grid"], str)
    assert f"choice_drum_bass.ogg: {k} loops (auto) of {L} bar{'s' if L > 1 else ''} (auto)," in proc.stdout
    assert len(list((out / "loops").glob("loop_*.wav"))) == k
