"""Convolutive NMF (unmixer.lab.nmfd): monotone loss, planted patches recovered, resynthesis."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from unmixer.errors import UnmixerError
from unmixer.lab.nmfd import convolve, iter_components, nmfd


def planted(seed=0, F=60, N=400, K=3, T=6):
    """V = Σ_τ W_τ shift_τ(H) with harmonic sounds gliding down a bin per frame and decaying
    (no patch is one spectrum times an envelope), started by sparse activations."""
    rng = np.random.default_rng(seed)
    f, t = np.arange(F)[:, None], np.arange(T)[None, :]
    W0 = np.zeros((K, F, T))
    for k in range(K):
        f0 = 8 + 5 * k + rng.integers(0, 3)
        for h in (1, 2, 3):
            W0[k] += np.exp(-0.5 * (f - (h * f0 - t)) ** 2) / h
        W0[k] *= np.exp(-t / 3.0)
    H0 = rng.random((K, N)) * (rng.random((K, N)) < 0.04)
    return convolve(W0, H0), W0, H0


def matched_corr(A, B):
    """Correlations of the best one-to-one matching of the rows of A and B."""
    A = A - A.mean(1, keepdims=True)
    B = B - B.mean(1, keepdims=True)
    C = (A / np.linalg.norm(A, axis=1, keepdims=True)) @ (B / np.linalg.norm(B, axis=1, keepdims=True)).T
    r, c = linear_sum_assignment(-C)
    return C[r, c], c


@pytest.mark.parametrize("beta", [0.0, 1.0, 1.5, 2.0])
def test_loss_never_increases(beta):
    V, _, _ = planted(seed=3, F=30, N=150)
    V = V + 0.05 * np.random.default_rng(3).random(V.shape).astype(np.float32)
    res = nmfd(V, 3, 5, beta=beta, n_iter=60, init="random", random_state=1)
    assert res.loss.shape == (61,) and res.n_iter == 60
    assert np.all(np.diff(res.loss) <= 1e-6 * res.loss[1:]), np.diff(res.loss).max()
    assert res.loss[-1] < 0.5 * res.loss[0]
    from unmixer.lab.nmf import beta_divergence

    assert beta_divergence(V, convolve(res.W, res.H), beta) == pytest.approx(res.loss[-1], rel=1e-3)


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_planted_templates_are_recovered(beta):
    V, W0, H0 = planted(seed=1)
    res = nmfd(V + 1e-3, 3, 6, beta=beta, n_iter=400)
    corr, match = matched_corr(W0.reshape(3, -1), res.W.reshape(3, -1))
    assert corr.min() >= 0.95, corr
    h_corr = np.array([np.corrcoef(H0[i], res.H[j])[0, 1] for i, j in enumerate(match)])
    assert h_corr.min() >= 0.9, h_corr  # the same matching explains the activations
    np.testing.assert_allclose(np.linalg.norm(res.W.reshape(3, -1), axis=1), 1.0, rtol=1e-5)


def test_one_frame_is_plain_nmf():
    from unmixer.lab.nmf import beta_nmf

    rng = np.random.default_rng(0)
    V = (rng.random((20, 3)) @ rng.random((3, 80))).astype(np.float32)
    W0 = rng.random((20, 3)).astype(np.float32) + 0.1
    H0 = rng.random((3, 80)).astype(np.float32) + 0.1
    a = nmfd(V, 3, 1, beta=1.0, W=W0.T[:, :, None], H=H0, n_iter=30)
    b = beta_nmf(V, 3, beta=1.0, W=W0, H=H0, n_iter=30, tol=0)
    np.testing.assert_allclose(convolve(a.W, a.H), b.W @ b.H, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-3)


def test_fixed_templates_stay_and_components_sum_to_the_clip():
    from unmixer.core.spectrum import stft

    sr = 44100
    t = np.arange(int(1.5 * sr)) / sr
    a = 0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-8 * (t % 0.5))
    b = 0.2 * np.sin(2 * np.pi * 1300 * t) * (t % 0.3 < 0.1)
    mix = np.stack([a + b, 0.5 * a + b]).astype(np.float32)
    spec = stft(mix)
    V = np.abs(spec).mean(0)
    res = nmfd(V, 2, 4, n_iter=30)
    comps = np.stack(list(iter_components(mix, res, spec=spec)))
    assert comps.shape == (2, 2, mix.shape[1])
    np.testing.assert_allclose(comps.sum(0), mix, atol=1e-4)
    fixed = nmfd(V, 2, 4, W=res.W, update_W=False, n_iter=10)
    np.testing.assert_array_equal(fixed.W, res.W)
    with pytest.raises(UnmixerError, match="do not match"):
        list(iter_components(mix[:, :sr], res))


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_frames=0), "template length"),
    (dict(n_frames=65), "template length"),
    (dict(n_frames=50), "longer than the clip"),
    (dict(beta=3.0), "beta"),
    (dict(n_components=0), "n_components"),
    (dict(init="svd"), "init"),
    (dict(W=np.ones((2, 4, 3))), "W must have shape"),
    (dict(update_H=False), "needs the fixed activations"),
])
def test_bad_input_raises_one_clear_error(kwargs, match):
    args = dict(V=np.ones((5, 40)), n_components=2, n_frames=3)
    args.update(kwargs)
    with pytest.raises(UnmixerError, match=match):
        nmfd(args.pop("V"), args.pop("n_components"), args.pop("n_frames"), **args)
