"""Let-it-Bee mosaicing (unmixer.lab.mosaic): diagonal filter, self-mosaic, length and onsets."""

import numpy as np
import pytest
from scipy.ndimage import correlate

from unmixer.errors import UnmixerError
from unmixer.lab.mosaic import diagonal_filter, mosaic, mosaic_activations

SR = 44100


def tone_bursts(onsets_s, pitches_hz, dur_s, length_s, seed=0):
    """Stereo clip of decaying harmonic notes starting at the given onsets."""
    t = np.arange(int(length_s * SR)) / SR
    x = np.zeros_like(t)
    rng = np.random.default_rng(seed)
    for on, f0 in zip(onsets_s, pitches_hz):
        seg = (t >= on) & (t < on + dur_s)
        tt = t[seg] - on
        note = sum(np.sin(2 * np.pi * f0 * h * tt + rng.uniform(0, 6)) / h for h in range(1, 6))
        x[seg] += 0.3 * note * np.exp(-6 * tt)
    return np.stack([x, 0.9 * x]).astype(np.float32)


def onset_envelope(x):
    """Onset strength (hop 23 ms), smoothed by a Gaussian of 2 frames: ±50 ms tolerance,
    about the mosaic's own time resolution (hop 46 ms)."""
    import librosa
    from scipy.ndimage import gaussian_filter1d

    env = librosa.onset.onset_strength(y=np.asarray(x).mean(0), sr=SR, hop_length=1024)
    return gaussian_filter1d(env, 2.0)


def test_diagonal_filter_is_correlation_with_identity_kernel():
    P = np.random.default_rng(0).random((40, 55)).astype(np.float32)
    for c in (0, 1, 3):
        expect = correlate(P, np.eye(2 * c + 1, dtype=np.float32), mode="constant")
        np.testing.assert_allclose(diagonal_filter(P, c), expect, rtol=1e-5, atol=1e-6)


def test_self_mosaic_plays_the_source_frames_in_order():
    """With target == source, the diagonal H (frame m plays at frame m) is the answer."""
    rng = np.random.default_rng(1)
    W = rng.random((64, 80)).astype(np.float32) ** 3  # distinct random spectra per frame
    H, loss, times = mosaic_activations(W / W.sum(0), W, n_iter=20)
    assert H.shape == (80, 80) and loss.shape == (21,) and times.shape == (21,)
    assert np.mean(np.argmax(H, axis=0) == np.arange(80)) > 0.9
    assert loss[-1] < 0.1 * loss[0]


def test_mosaic_has_target_length_and_follows_its_onsets():
    rng = np.random.default_rng(7)
    onsets = np.sort(rng.uniform(0.1, 3.6, 9))
    target = tone_bursts(onsets, rng.choice([220, 262, 330, 392], 9), 0.3, 4.0, seed=2)
    # the source: different notes at a steady, different rhythm
    source = tone_bursts(np.arange(0.05, 5.0, 0.45), [147, 175, 196, 233, 294, 349] * 2, 0.4,
                         5.2, seed=3)
    res = mosaic(source, target, n_iter=20, griffin_lim_iter=5)
    assert res.audio.shape == target.shape and res.audio.dtype == np.float32
    assert np.all(np.isfinite(res.audio)) and np.abs(res.audio).max() <= 1.0
    env_t, env_m = onset_envelope(target), onset_envelope(res.audio)
    env_s = onset_envelope(source[:, : target.shape[1]])
    corr_m = np.corrcoef(env_t, env_m)[0, 1]
    corr_s = np.corrcoef(env_t, env_s)[0, 1]
    assert corr_m > 0.6 and corr_m > corr_s + 0.3, (corr_m, corr_s)
    assert np.all(np.diff(res.loss) < 0.05 * res.loss[0])  # restrictions damp, never explode
    assert res.loss[-1] < res.loss[0]


def test_mosaic_rejects_bad_input():
    good = tone_bursts([0.1], [220], 0.3, 1.0)
    with pytest.raises(UnmixerError, match="too short"):
        mosaic(good[:, :100], good)
    with pytest.raises(UnmixerError, match="silent"):
        mosaic(np.zeros_like(good), good)
    with pytest.raises(UnmixerError, match="n_iter"):
        mosaic_activations(np.ones((4, 3)), np.ones((4, 5)), n_iter=0)
