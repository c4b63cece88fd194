"""FastICA of stereo instantaneous mixtures (unmixer.lab.ica)."""

import numpy as np
import pytest

from unmixer.core.metrics import bss_eval
from unmixer.errors import UnmixerError
from unmixer.lab.ica import fastica_stereo

SR = 44100


def two_sources(seconds=3.0, seed=0):
    """A square-wave melody and decaying noise bursts (drum-like): independent, non-Gaussian."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = np.array([220.0, 247.0, 262.0, 294.0])[(t * 2).astype(int) % 4]
    melody = 0.4 * np.sign(np.sin(2 * np.pi * np.cumsum(f0) / SR))
    drums = 0.6 * rng.standard_normal(t.size) * np.exp(-25 * ((t * 4) % 1.0))
    return np.stack([melody, drums])


@pytest.mark.filterwarnings("ignore:divide by zero")  # SIR is +inf when interference is 0
@pytest.mark.parametrize("variant", ["time", "tf"])
def test_fastica_separates_instantaneous_stereo_mix(variant):
    S = two_sources()
    A = np.array([[0.9, 0.45], [0.35, 0.8]])  # amplitude panning, no delays
    X = (A @ S).astype(np.float32)
    res = fastica_stereo(X, 2, variant=variant)
    scores = bss_eval(S, res.sources, max_seconds=2.0)
    assert np.all(scores.sir > 20), scores.sir
    # the stereo images sum back to the (mean-removed) mixture
    np.testing.assert_allclose(res.images.sum(0), X - X.mean(1, keepdims=True), atol=1e-4)
    # the estimated mixing matrix matches A up to order and scale of its columns
    est = res.mixing[:, scores.match]
    cos = np.abs(np.sum(est * A, axis=0)) / (np.linalg.norm(est, axis=0) * np.linalg.norm(A, axis=0))
    assert np.all(cos > 0.999), cos


def test_fastica_refuses_what_it_cannot_separate():
    S = two_sources(1.0)
    with pytest.raises(UnmixerError, match="multichannel"):
        fastica_stereo(S[0], 1)
    with pytest.raises(UnmixerError, match="dual mono"):
        fastica_stereo(np.stack([S[0], S[0]]), 2)
    with pytest.raises(UnmixerError, match="at most as many sources as channels"):
        fastica_stereo(S, 3)
