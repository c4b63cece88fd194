"""Binary loop layouts (bench.layout) and the bar phase choice (unmixer.loops.bargrid), on planted data."""

from __future__ import annotations

import numpy as np
import pytest

from bench.layout import best_layout, fit_layout
from unmixer.core.spectrum import HOP_LENGTH
from unmixer.errors import UnmixerError
from unmixer.loops.bargrid import choose_bar_phase, shifted_grid
from unmixer.loops.beats import grid_from_beats

SR = 44100


def planted_cube(seed=0, K=4, F=40, T=16, S=24):
    """X = Σ_k B[s, k] P_k with sparse random templates and a random binary layout."""
    rng = np.random.default_rng(seed)
    P = (rng.random((K, F, T)) * (rng.random((K, F, T)) < 0.3)).astype(np.float32)
    B = (rng.random((S, K)) < 0.5).astype(np.float32)
    B[:K] = np.eye(K)  # every loop alone once
    X = np.tensordot(B, P, axes=(1, 0))  # (S, F, T)
    return np.ascontiguousarray(np.moveaxis(X, 0, 2)), P, B


def test_best_layout_is_exact_on_planted_templates():
    cube, P, B = planted_cube()
    X = cube.reshape(-1, cube.shape[2]).T
    assert np.array_equal(best_layout(X, P.reshape(len(P), -1)), B)


def test_coordinate_search_for_many_loops_matches_planted_layout():
    cube, P, B = planted_cube(seed=1, K=16, F=60, T=20, S=40)
    X = cube.reshape(-1, cube.shape[2]).T
    assert np.mean(best_layout(X, P.reshape(len(P), -1)) == B) > 0.97


def test_fit_layout_recovers_layout_from_soft_noisy_start():
    cube, P, B = planted_cube(seed=2)
    rng = np.random.default_rng(3)
    # a rough start: blurred templates at another level, soft activations
    start_P = P * rng.uniform(0.6, 1.4, P.shape).astype(np.float32) * 3.0
    start_A = (0.6 * B + 0.25 * rng.random(B.shape)).astype(np.float32)
    flip = rng.random(B.shape) < 0.1  # and a tenth of the layout wrong
    start_A[flip] = 0.85 - start_A[flip]
    assert np.mean((start_A >= 0.5 * start_A.max(axis=0)) != B) > 0.05
    templates, activations, loss = fit_layout(cube, start_P, start_A, n_rounds=3, template_iter=50)
    assert np.array_equal(activations, B)
    assert loss < 0.05
    assert templates.shape == P.shape and templates.dtype == np.float32 and templates.min() >= 0
    with pytest.raises(UnmixerError):
        fit_layout(cube, P[:, :-1], start_A)


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


@pytest.mark.parametrize("meter", [3, 4])
def test_bar_phase_moves_a_misplaced_bar_line_onto_the_loops(meter):
    mag, beats, bar_s = planted_bars(meter=meter)
    duration = mag.shape[1] * HOP_LENGTH / SR
    numbers = (np.arange(len(beats)) - 2) % meter + 1  # the tracker's bar line 2 beats late
    wrong = grid_from_beats(beats, numbers, duration)
    assert not np.allclose(np.mod(wrong.downbeats_s / bar_s + 0.5, 1) - 0.5, 0, atol=0.01)
    chosen = choose_bar_phase(wrong, mag, n_loops=3, loop_bars=1)
    assert np.allclose(np.mod(chosen.downbeats_s / bar_s + 0.5, 1) - 0.5, 0, atol=0.01)
    # a right bar line is kept as it is
    right = shifted_grid(wrong, meter - 2, duration)
    assert choose_bar_phase(right, mag, n_loops=3, loop_bars=1) is right


def test_extend_back_fills_the_song_start_with_whole_segments():
    from unmixer.loops.bargrid import extend_back

    bar = 2.0
    db = 2 * bar - 0.01 + bar * np.arange(8)  # first loop start 2 bars in, a hair early
    out = extend_back(db, meter=4, loop_bars=2)
    assert len(out) == len(db) + 2 and out[0] == 0.0 and np.all(np.diff(out) > 0)
    assert np.allclose(out[1], bar - 0.01)
    late = bar + 0.3 * bar + bar * np.arange(8)  # 1.3 bars: no whole 2-bar segment fits
    assert np.array_equal(extend_back(late, meter=4, loop_bars=2), late)
