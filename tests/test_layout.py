"""Binary loop layouts (bench.layout), on planted data."""

from __future__ import annotations

import numpy as np
import pytest

from bench.layout import best_layout, fit_layout
from unmixer.errors import UnmixerError


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
