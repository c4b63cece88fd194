"""The bar-synchronous spectral cube and its explicit mapping to STFT frames."""

from __future__ import annotations

import numpy as np
import pytest

from unmixer.errors import UnmixerError
from unmixer.loops.cube import CubeGrid, cube_to_frames, make_grid, segment_boundaries_s, spectral_cube


def test_cells_sample_the_right_frames():
    # a "spectrogram" whose value is its own frame index: the cube must hold cell positions
    n_frames = 400
    ramp = np.tile(np.arange(n_frames, dtype=np.float32), (3, 1))
    grid = CubeGrid(np.array([10.0, 110.0, 230.0, 330.0]), n_steps=50)
    cube = spectral_cube(ramp, grid)
    assert cube.shape == (3, 50, 3)
    expected = grid.cell_frames().T  # (n_steps, n_segments)
    assert np.allclose(cube[0], expected, atol=1e-3)
    # segment 1 is 120 frames long, resampled to 50 steps: step j is at 110 + 2.4 j
    assert np.isclose(cube[0, 25, 1], 110 + 2.4 * 25, atol=1e-3)


def test_frames_map_back_to_their_cells():
    grid = CubeGrid(np.array([10.0, 110.0, 230.0, 330.0]), n_steps=50)
    seg, step = grid.frame_cells(400)
    assert seg[10] == 0 and step[10] == 0
    assert seg[170] == 1 and np.isclose(step[170], (170 - 110) / 120 * 50)
    assert seg[329] == 2 and seg[330] == 2  # after the last boundary: the last segment
    # outside the bars the step position continues periodically
    assert np.isclose(step[335], (335 - 330) / 100 * 50)
    assert np.isclose(step[5], 50 - 5 / 100 * 50)


def test_round_trip_is_identity_for_loop_periodic_content():
    # content that repeats exactly each segment (a loop) survives cube -> frames unchanged
    bar_frames = 96.0
    grid = CubeGrid(np.arange(5) * bar_frames + 7.0, n_steps=96)
    t = np.arange(int(7 + 4 * bar_frames))
    phase = ((t - 7) % bar_frames) / bar_frames
    spec = np.stack([np.sin(2 * np.pi * phase) + 2, np.cos(4 * np.pi * phase) + 2]).astype(np.float32)
    back = cube_to_frames(spectral_cube(spec, grid), grid, spec.shape[1])
    assert back.shape == spec.shape
    assert np.max(np.abs(back[:, 7:] - spec[:, 7:])) < 0.05


def test_tempo_drift_is_resampled_not_zero_padded():
    # segments of different lengths all become n_steps steps with no zeros
    grid = make_grid(np.array([0.0, 2.0, 4.2, 6.5]), sr=44100, hop_length=512)
    assert grid.n_steps == int(round(np.median(np.diff(grid.boundaries))))
    spec = np.ones((4, 600), np.float32)
    cube = spectral_cube(spec, grid)
    assert cube.min() == 1.0


def test_segment_boundaries_use_every_loop_bars_downbeat():
    db = np.arange(11) * 2.0  # 10 bars
    assert np.array_equal(segment_boundaries_s(db, 2), db[::2])
    assert len(segment_boundaries_s(np.arange(10) * 2.0, 2)) == 5  # 9 bars: 4 full segments
    with pytest.raises(UnmixerError):
        segment_boundaries_s(np.arange(4) * 2.0, 2)
    with pytest.raises(UnmixerError):
        segment_boundaries_s(db, 3)


def test_log_bands_pool_orthonormally():
    from unmixer.loops.cube import log_bands, pool_cube

    pool = log_bands(1025, 128)
    assert pool.shape[1] == 1025 and 64 < pool.shape[0] <= 128
    assert np.allclose(pool @ pool.T, np.eye(len(pool)), atol=1e-6)
    assert np.all((pool > 0).sum(axis=0) == 1)  # every bin in exactly one band
    widths = (pool > 0).sum(axis=1)
    assert widths[0] <= 2 and widths[-1] > 20 and np.all(np.diff(widths) >= -1)  # log-spaced (rounded)
    cube = np.random.default_rng(0).random((1025, 6, 4)).astype(np.float32)
    flat = pool.T @ (pool @ cube.reshape(1025, -1))  # band-flat: pooling keeps its norm
    small = pool_cube(flat.reshape(cube.shape), pool)
    assert small.shape == (len(pool), 6, 4)
    assert np.isclose(np.linalg.norm(small), np.linalg.norm(flat), rtol=1e-5)
    with pytest.raises(UnmixerError):
        log_bands(1025, 0)
