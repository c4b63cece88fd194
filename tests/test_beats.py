"""Downbeats, meter and tempo with madmom, on generated songs with known bars."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synth_song

from unmixer.errors import UnmixerError
from unmixer.loops.beats import grid_from_downbeats, track_beats


@pytest.mark.parametrize("bpm,meter,loop_bars", [(120.0, 4, 2), (100.0, 3, 1)])
def test_tempo_meter_and_beats_of_a_generated_song(bpm, meter, loop_bars):
    song = synth_song(seed=21 if meter == 4 else 22, bpm=bpm, meter=meter, loop_bars=loop_bars,
                      n_bars=16, instruments=("drums", "bass", "pad", "lead"))
    grid = track_beats(song.mix)
    assert abs(grid.bpm - bpm) / bpm < 0.02
    assert grid.meter == meter
    beat_s = 60.0 / bpm
    true_beats = np.arange(0, song.mix.shape[1] / song.sr, beat_s)
    # every tracked downbeat lies on a true beat (the bar phase of drum loops can be ambiguous)
    err = np.abs(grid.downbeats_s[:-1, None] - true_beats[None, :]).min(axis=1)
    assert np.median(err) < 0.05
    assert np.allclose(np.diff(grid.downbeats_s), meter * beat_s, rtol=0.05)
    assert grid.n_bars >= 13


@pytest.mark.parametrize("kind", ["sine", "noise"])
def test_no_beat_raises(kind):
    sr = 44100
    t = np.arange(20 * sr) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) if kind == "sine" else \
        0.1 * np.random.default_rng(0).standard_normal(len(t))
    with pytest.raises(UnmixerError, match="beat"):
        track_beats(np.stack([x, x]).astype(np.float32))


def test_grid_from_known_downbeats():
    grid = grid_from_downbeats(np.arange(9) * 2.0, 4)
    assert grid.n_bars == 8 and grid.bpm == pytest.approx(120.0)
    assert len(grid.beats_s) == 32
    with pytest.raises(UnmixerError):
        grid_from_downbeats(np.array([0.0, 2.0, 4.0]), 4)


def test_worker_processes_give_madmoms_serial_result(monkeypatch):
    """The pool runs madmom's own processors: activations (to rounding) and grid equal the serial ones."""
    import unmixer.loops.beats as beats

    song = synth_song(seed=21, bpm=120.0, meter=4, loop_bars=2, n_bars=8,
                      instruments=("drums", "bass", "pad", "lead"))
    if beats._workers() is None:
        pytest.skip("one CPU: no worker processes")
    act_pool = beats.downbeat_activations(song.mix)
    grid_pool = track_beats(song.mix)
    monkeypatch.setattr(beats, "_pool", False)  # as after a broken pool: serial in this process
    assert beats._workers() is None
    # equal to float32 rounding: a worker may sum in another order (its own BLAS/ONNX threads)
    np.testing.assert_allclose(beats.downbeat_activations(song.mix), act_pool, rtol=1e-5, atol=1e-6)
    grid = track_beats(song.mix)
    assert np.array_equal(grid.downbeats_s, grid_pool.downbeats_s) and grid.meter == grid_pool.meter
