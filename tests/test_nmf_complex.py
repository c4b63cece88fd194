"""Complex NMF (unmixer.lab.complex_nmf): monotone objective, components that sum to the clip."""

import numpy as np
import pytest

from unmixer.errors import UnmixerError
from unmixer.lab.complex_nmf import complex_nmf, resynthesise, wiener_components


def two_notes(seconds=1.5, sr=44100):
    t = np.arange(int(seconds * sr)) / sr
    a = 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    b = 0.3 * np.sin(2 * np.pi * 1250 * t) * (np.sin(2 * np.pi * 1.1 * t) > 0)
    return a, b, np.stack([a + b, 0.8 * a + 1.2 * b]).astype(np.float32)


def test_objective_never_increases_and_components_sum_to_the_stft():
    from unmixer.core.spectrum import stft

    _, _, mix = two_notes()
    spec = stft(mix)
    res = complex_nmf(spec, 3, n_iter=25, init_iter=5)
    assert res.loss.shape == (26,) and res.components.shape == (3,) + spec.shape
    assert np.all(np.diff(res.loss) <= 1e-5 * res.loss[1:]), np.diff(res.loss).max()
    assert res.loss[-1] < res.loss[0]
    np.testing.assert_allclose(res.components.sum(0), spec, atol=1e-4 * np.abs(spec).max())
    # every component has its own phase (not the mixture's)
    mixture_phase = np.angle(spec[0])
    loud = np.abs(res.components[0, 0]) > 0.1 * np.abs(res.components[0, 0]).max()
    assert np.abs(np.angle(res.components[0, 0][loud]) - mixture_phase[loud]).max() > 0.1


def test_resynthesis_sums_to_the_clip_and_separates_two_notes():
    from unmixer.core.metrics import match_sources, si_sdr_matrix
    from unmixer.core.spectrum import stft

    a, b, mix = two_notes(2.0)
    spec = stft(mix)
    res = complex_nmf(spec, 2, n_iter=30)
    comps = resynthesise(res, mix.shape[1])
    assert comps.shape == (2, 2, mix.shape[1]) and comps.dtype == np.float32
    np.testing.assert_allclose(comps.sum(0), mix, atol=1e-4)  # own phases, still the clip
    refs = np.stack([np.stack([a, 0.8 * a]), np.stack([b, 1.2 * b])])
    score = si_sdr_matrix(refs, comps)
    assert score[[0, 1], match_sources(score)].min() > 10, score
    masked = wiener_components(mix, res, spec=spec)
    np.testing.assert_allclose(masked.sum(0), mix, atol=1e-4)


def test_sparsity_and_mono_input():
    rng = np.random.default_rng(0)
    Y = (rng.standard_normal((30, 50)) + 1j * rng.standard_normal((30, 50))).astype(np.complex64)
    res = complex_nmf(Y, 2, n_iter=10, sparsity=0.5)
    assert res.components.shape == (2, 1, 30, 50)
    np.testing.assert_allclose(res.components.sum(0)[0], Y, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(res.W, axis=0), 1.0, rtol=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(spec=np.zeros((1, 4, 5), np.complex64)), "all zero"),
    (dict(spec=np.ones(5, np.complex64)), "STFT"),
    (dict(n_components=0), "n_components"),
    (dict(p=2.0), "p must"),
    (dict(sparsity=-1.0), "sparsity"),
    (dict(n_components=10**9), "fewer components"),
])
def test_bad_input_raises_one_clear_error(kwargs, match):
    args = dict(spec=np.ones((1, 4, 5), np.complex64), n_components=2)
    args.update(kwargs)
    with pytest.raises(UnmixerError, match=match):
        complex_nmf(args.pop("spec"), args.pop("n_components"), **args)
