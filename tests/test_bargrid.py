"""The grid search (unmixer.loops.bargrid): planted grid errors are corrected, right grids are
kept, and the loop length follows the loops."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synth_song

from unmixer.core.spectrum import HOP_LENGTH, stft
from unmixer.loops.bargrid import (HeldoutScorer, extend_back, half_beat_times, readings, search_grid,
                                   shifted_grid, tempo_cost)
from unmixer.loops.beats import grid_from_beats, grid_from_downbeats

SR = 44100


def planted_bars(meter=4, n_bars=16, beat_frames=40, K=3, F=48, seed=0):
    """A magnitude spectrogram of K bar-long loops switched per bar, and its beat times (s)."""
    rng = np.random.default_rng(seed)
    bar = meter * beat_frames
    loops = (rng.random((K, F, bar)) * (rng.random((K, F, bar)) < 0.2)).astype(np.float32)
    layout = (rng.random((K, n_bars)) < 0.5).astype(np.float32)
    layout[:, ::3] = 1  # some full bars
    mag = np.concatenate([np.tensordot(layout[:, b], loops, axes=(0, 0)) for b in range(n_bars)], axis=1)
    beat_s = beat_frames * HOP_LENGTH / SR
    beats = np.arange(n_bars * meter) * beat_s
    return mag + 1e-3, beats, beat_s * meter


def _on_bar_lines(downbeats, bar_s, first=0.0, tol_s=0.03):
    phase = np.mod((np.asarray(downbeats) - first) / bar_s + 0.5, 1) - 0.5
    return np.allclose(phase * bar_s, 0, atol=tol_s)


@pytest.mark.parametrize("meter", [3, 4])
def test_a_bar_line_on_the_wrong_beat_moves_onto_the_loops(meter):
    mag, beats, bar_s = planted_bars(meter=meter)
    duration = mag.shape[1] * HOP_LENGTH / SR
    numbers = (np.arange(len(beats)) - 2) % meter + 1  # the tracker's bar line 2 beats late
    wrong = grid_from_beats(beats, numbers, duration)
    assert not _on_bar_lines(wrong.downbeats_s, bar_s)
    choice = search_grid(mag, wrong, 3, 1, duration_s=duration)
    assert _on_bar_lines(choice.grid.downbeats_s, bar_s) and choice.grid.meter == meter
    assert choice.loop_bars == 1 and "bar lines moved" in choice.describe(wrong)
    right = shifted_grid(wrong, meter - 2, duration)  # a right bar line is kept as it is
    kept = search_grid(mag, right, 3, 1, duration_s=duration)
    assert np.allclose(kept.grid.downbeats_s, right.downbeats_s) and kept.describe(right) == "as tracked"


# Generated songs of 2-bar loops in 4-bar blocks (the synthesised instruments only: fast).
SONGS = [dict(seed=s, n_loops=4, n_bars=24, bpm=bpm, meter=4, loop_bars=(2, 2, 1, 2), block_bars=4,
              family="composed", instruments=("drums", "bass", "pad", "lead")) for s, bpm in ((31, 112), (32, 126))]


def _perturbed(song, name):
    true = grid_from_downbeats(song.downbeats_s, song.meter)
    beats, m, duration = np.asarray(true.beats_s), song.meter, song.mix.shape[-1] / SR
    period = float(np.median(np.diff(beats)))
    if name == "half_beat":  # every beat half a beat late: bar lines on the off-beats
        return grid_from_beats(beats + period / 2, np.arange(len(beats)) % m + 1, duration)
    if name == "one_beat":  # bar lines one beat late
        return grid_from_beats(beats, (np.arange(len(beats)) - 1) % m + 1, duration)
    if name == "double":  # twice the tempo: every "bar" half a bar
        doubled = np.sort(np.concatenate([beats, beats + period / 2]))
        return grid_from_beats(doubled, np.arange(len(doubled)) % m + 1, duration)
    return true


@pytest.mark.parametrize("spec", SONGS, ids=["112 BPM", "126 BPM"])
@pytest.mark.parametrize("error", ["half_beat", "one_beat", "double"])
def test_planted_grid_errors_on_generated_songs_are_corrected(spec, error):
    song = synth_song(**spec)
    mag = np.abs(stft(song.mix)).mean(axis=0)
    wrong = _perturbed(song, error)
    bar_s = song.meter * 60.0 / song.bpm
    assert not (_on_bar_lines(wrong.downbeats_s, bar_s) and abs(wrong.bpm - song.bpm) < 1)
    choice = search_grid(mag, wrong, spec["n_loops"], "auto", duration_s=song.mix.shape[-1] / SR)
    got = choice.grid
    assert abs(got.bpm - song.bpm) < 1.0 and got.meter == 4
    assert choice.loop_bars == 2  # the song's loops are 2 bars long
    # segments start on the song's loop starts (even bars: the layout's blocks are 4 bars)
    assert _on_bar_lines(got.downbeats_s[::2], 2 * bar_s)
    assert choice.describe(wrong) != "as tracked"


@pytest.mark.parametrize("spec", SONGS, ids=["112 BPM", "126 BPM"])
def test_auto_loop_length_never_chooses_1_bar_for_2_bar_loops(spec):
    song = synth_song(**spec)
    mag = np.abs(stft(song.mix)).mean(axis=0)
    true = grid_from_downbeats(song.downbeats_s, song.meter)
    for n_loops in (3, 4, 5):
        choice = search_grid(mag, true, n_loops, "auto", duration_s=song.mix.shape[-1] / SR)
        assert choice.loop_bars == 2, n_loops
        assert choice.describe(true) == "as tracked"
    # with the bar lines known, only the length is chosen
    known = search_grid(mag, true, 4, "auto", fixed_bar_lines=True, duration_s=song.mix.shape[-1] / SR)
    assert known.loop_bars == 2 and np.allclose(known.grid.downbeats_s, true.downbeats_s)


def test_the_held_out_error_is_lowest_on_the_planted_segment_length():
    """Rows of a planted rank-2 loop song of 8 half-beats per bar: the right length and
    phase predict held-out cells best; a wrong phase, half bars and 1.5 bars do worse."""
    rng = np.random.default_rng(4)
    loops = rng.random((2, 8, 30)) * (rng.random((2, 8, 30)) < 0.4)  # 2 loops, 8 half-beats each
    layout = np.repeat(rng.random((2, 12)) < 0.6, 2, axis=1)  # 24 bars, 2-bar blocks
    layout[:, :2] = 1
    rows = np.concatenate([np.tensordot(layout[:, b].astype(float), loops, axes=(0, 0)) for b in range(24)])
    rows = rows + 1e-3 * rng.random(rows.shape)
    scorer = HeldoutScorer(rows, seed=0)
    right = scorer.error(8, 0, 2)
    assert right < 0.5 * min(scorer.error(8, 3, 2), scorer.error(4, 0, 2), scorer.error(12, 0, 2))
    assert scorer.error(8, 0, 2) == scorer.error(8, 0, 2)  # deterministic
    assert scorer.error(64, 0, 2) == float("inf")  # too few segments to score


def test_readings_and_tempo_plausibility():
    assert sorted(readings(16)) == [(4, 1, 2.0), (4, 2, 1.0), (4, 4, 0.5)]
    assert readings(12, loop_bars=2) == [(3, 2, 1.0)]
    assert readings(12, loop_bars=4) == [(3, 4, 0.5)]
    assert tempo_cost(100.0, 2.0) < tempo_cost(200.0, 1.0)  # the 200-for-101 BPM case
    assert tempo_cost(170.0, 1.0) < tempo_cost(85.0, 2.0)  # a fast song keeps its tempo
    times = half_beat_times(np.arange(1.0, 9.0, 0.5), 10.0)
    assert np.allclose(np.diff(times), 0.25) and times[0] >= 0 and times[-1] <= 10.0


def test_extend_back_fills_the_song_start_with_whole_segments():
    bar = 2.0
    db = 2 * bar - 0.01 + bar * np.arange(8)  # first loop start 2 bars in, a hair early
    out = extend_back(db, meter=4, loop_bars=2)
    assert len(out) == len(db) + 2 and out[0] == 0.0 and np.all(np.diff(out) > 0)
    assert np.allclose(out[1], bar - 0.01)
    late = bar + 0.3 * bar + bar * np.arange(8)  # 1.3 bars: no whole 2-bar segment fits
    assert np.array_equal(extend_back(late, meter=4, loop_bars=2), late)


def test_a_forced_length_on_a_short_song_keeps_the_tempo():
    """8 bars at 160 BPM with 5 loops forced to 2 bars: too few 2-bar segments to score, and
    reading 1-bar segments as 2-bar loops at 320 BPM is not allowed: the tracker's grid stays."""
    song = synth_song(seed=301, n_bars=8, bpm=160)
    mag = np.abs(stft(song.mix)).mean(axis=0)
    duration = song.mix.shape[-1] / SR
    tracked = grid_from_downbeats(song.downbeats_s, song.meter)
    choice = search_grid(mag, tracked, 5, 2, duration_s=duration)
    assert choice.loop_bars == 2 and abs(choice.grid.bpm - tracked.bpm) < 1
    assert choice.n_scored == 0 and choice.describe(tracked) == "as tracked (too few bars to search)"
    assert readings(8, 2, tracked.bpm) == []  # 2-bar loops of 8 half-beats: 320 BPM
    auto = search_grid(mag, tracked, 5, "auto", duration_s=duration)  # 1-bar loops are readable
    assert abs(auto.grid.bpm - tracked.bpm) < 1 and auto.n_scored > 0


def test_a_forced_length_does_not_double_the_tempo_of_one_bar_loops():
    """1-bar loops at 103 BPM with 2 bars forced: the segments may not be read as 2 bars at
    206 BPM (the deck would play them at half speed); auto reads them as 1 bar at 103."""
    song = synth_song(seed=41, n_loops=3, n_bars=24, bpm=103, meter=4, loop_bars=1, block_bars=4,
                      family="sparse", instruments=("drums", "bass", "pad"))
    mag = np.abs(stft(song.mix)).mean(axis=0)
    duration = song.mix.shape[-1] / SR
    true = grid_from_downbeats(song.downbeats_s, song.meter)
    forced = search_grid(mag, true, 3, 2, duration_s=duration)
    assert forced.loop_bars == 2 and abs(forced.grid.bpm - true.bpm) < 1
    assert "tempo" not in forced.describe(true)
    auto = search_grid(mag, true, 3, "auto", duration_s=duration)
    assert auto.loop_bars == 1 and abs(auto.grid.bpm - true.bpm) < 1


def test_jittered_tracker_beats_still_find_the_bar_lines(monkeypatch):
    """Beats within ±12 ms of the truth (a tracker's jitter, about one STFT frame) on 2-bar
    loops whose tracker bar line is two beats late: scored on the steadied half-beat times,
    the search cuts the true 2-bar segments, on the tracker's own beat times; on the raw
    jittered times (steady_times switched off) it did not, or only with a far worse error."""
    import unmixer.loops.bargrid as bargrid

    song = synth_song(**SONGS[1])
    mag = np.abs(stft(song.mix)).mean(axis=0)
    duration = song.mix.shape[-1] / SR
    true = grid_from_downbeats(song.downbeats_s, song.meter)
    beats = np.asarray(true.beats_s) + np.random.default_rng(3).uniform(-0.012, 0.012, len(true.beats_s))
    numbers = (np.arange(len(beats)) - 2) % song.meter + 1  # bar lines two beats late
    tracked = grid_from_beats(beats, numbers, duration)
    bar_s = 60.0 / song.bpm * song.meter

    def found(choice):
        return choice.loop_bars == 2 and _on_bar_lines(choice.grid.downbeats_s[::2], 2 * bar_s, tol_s=0.04)

    steadied = search_grid(mag, tracked, 4, "auto", duration_s=duration)
    assert found(steadied)
    db = steadied.grid.downbeats_s
    inner = db[(db >= beats[0]) & (db <= beats[-1])]
    assert np.min(np.abs(inner[:, None] - beats[None]), axis=1).max() < 1e-9  # cut on the tracker's beats
    monkeypatch.setattr(bargrid, "steady_times", lambda t, window=17: np.asarray(t, dtype=float))
    raw = search_grid(mag, tracked, 4, "auto", duration_s=duration)
    assert not found(raw) or raw.error > 5 * steadied.error
