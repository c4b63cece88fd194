"""The loop count chosen from the song (unmixer.loops.loopcount, extract_loops(n_loops="auto"))."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_song

from unmixer.core.audio import load_audio
from unmixer.core.spectrum import stft
from unmixer.datasets.synth import make_song
from unmixer.errors import UnmixerError
from unmixer.loops.beats import track_beats
from unmixer.loops.loopcount import choose_count, estimate_loop_count, heldout_errors
from unmixer.loops.pipeline import extract_loops


def _planted(K: int, S: int = 24, N: int = 600, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """Segments that are sums of K nonnegative templates switched on and off (distinct layouts)."""
    rng = np.random.default_rng(seed)
    while True:
        D = (rng.random((S, K)) < 0.5).astype(np.float32)
        if np.linalg.matrix_rank(D) == K:
            break
    P = rng.gamma(0.5, 1.0, (K, N)).astype(np.float32)
    return np.maximum(D @ P + noise * rng.random((S, N)).astype(np.float32), 0)


@pytest.mark.parametrize("K", [2, 3, 5, 7])
def test_planted_matrix_gives_its_rank(K):
    assert choose_count(heldout_errors(_planted(K, seed=K), 10)) == K


def test_choose_count_takes_the_smallest_count_near_the_best_error():
    errors = np.array([1.0, 0.5, 0.2, 0.05, 0.049, 0.048, 0.05])
    assert choose_count(errors) == 4
    assert choose_count(errors, tolerance=0.0) == 6


def test_too_few_segments_is_one_clear_error():
    with pytest.raises(UnmixerError, match="Too few segments"):
        heldout_errors(np.ones((2, 50), np.float32))


@pytest.mark.parametrize("spec", [
    dict(seed=11, n_loops=4, family="composed", loop_bars=1, n_bars=24, block_bars=2, bpm=120.0),
    dict(seed=12, n_loops=4, family="factorial", loop_bars=2, n_bars=30, block_bars=2, bpm=132.0, meter=3),
    dict(seed=13, n_loops=6, family="composed", loop_bars=2, n_bars=20, block_bars=2, bpm=110.0),
])
def test_generated_songs_with_true_downbeats_within_one(spec):
    song = make_song(**spec)
    magnitude = np.abs(stft(song.mix)).mean(axis=0)
    k = estimate_loop_count(magnitude, song.downbeats_s, song.meter, spec["loop_bars"])
    assert abs(k - spec["n_loops"]) <= 1, k


def test_extract_loops_auto_and_bad_counts():
    song = make_song(seed=21, n_loops=4, family="composed", loop_bars=1, n_bars=20, block_bars=2, bpm=125.0)
    result = extract_loops(song.mix, "auto", loop_bars=1, downbeats_s=song.downbeats_s,
                           meter=song.meter, tracks=False, refine_iter=0)
    assert 3 <= len(result.loops) <= 5
    for bad in ("many", 0, 13):
        with pytest.raises(UnmixerError, match="'auto' or between 1 and 12"):
            extract_loops(song.mix, bad)


@pytest.mark.slow
def test_real_song_gets_a_plausible_count():
    audio = load_audio(shared_song("vibe_ace.ogg"))
    grid = track_beats(audio)
    magnitude = np.abs(stft(audio)).mean(axis=0)
    k = estimate_loop_count(magnitude, grid.downbeats_s, grid.meter, 2)
    assert 3 <= k <= 8  # measured: 6 or 7 with the bar phases tried (bench/RESULTS_loopcount.md)
