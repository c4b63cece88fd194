"""β-NMF (unmixer.lab.nmf): monotone MU, planted-factor recovery, options, errors, sklearn agreement."""

import numpy as np
import pytest

from unmixer.errors import UnmixerError
from unmixer.lab import nmf as nmf_module
from unmixer.lab.nmf import beta_divergence, beta_nmf, component_models


def planted(F=40, N=300, K=4, seed=0, sparse=True):
    """V = W0 H0 with sparse, well-separated nonnegative factors (the ground truth)."""
    rng = np.random.default_rng(seed)
    W0 = rng.random((F, K)) ** 4  # peaky spectra
    H0 = rng.random((K, N)) * (rng.random((K, N)) < (0.3 if sparse else 1.0))
    return (W0 @ H0).astype(np.float32), W0, H0


def col_corr(A, B):
    """|corr| of every column of A with every column of B, shape=(K_A, K_B)."""
    A = (A - A.mean(0)) / (A.std(0) + 1e-12)
    B = (B - B.mean(0)) / (B.std(0) + 1e-12)
    return np.abs(A.T @ B) / A.shape[0]


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 1.5, 2.0])
@pytest.mark.parametrize("init", ["random", "nndsvda"])
def test_mu_never_increases_divergence(beta, init):
    V, _, _ = planted(F=30, N=120, seed=3)
    V = V + 0.05 * np.random.default_rng(3).random(V.shape).astype(np.float32)  # not exact
    res = beta_nmf(V, 5, beta=beta, init=init, n_iter=150, tol=0)
    assert res.n_iter == 150 and res.loss.shape == (151,) and res.times_s.shape == (151,)
    steps = np.diff(res.loss)
    assert np.all(steps <= 1e-6 * res.loss[1:]), steps.max()
    assert res.loss[-1] < 0.5 * res.loss[0]
    assert np.all(np.diff(res.times_s) >= 0)
    # the recorded loss is the divergence of the returned factors
    assert beta_divergence(V, res.W @ res.H, beta) == pytest.approx(res.loss[-1], rel=1e-4)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_supervised_h_update_with_l1_is_monotone(beta):
    V, W0, _ = planted()
    res = beta_nmf(V + 0.01, 4, beta=beta, W=W0, update_W=False, l1_H=0.5, n_iter=100, tol=0)
    assert np.all(np.diff(res.loss) <= 1e-6 * res.loss[1:])
    np.testing.assert_array_equal(res.W, W0.astype(np.float32))  # fixed W returned untouched


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_planted_factors_recovered_up_to_permutation_and_scale(beta):
    V, W0, H0 = planted(seed=1)
    res = beta_nmf(V, 4, beta=beta, n_iter=1000, tol=1e-9, init="nndsvda")
    rel = np.linalg.norm(V - res.W @ res.H) / np.linalg.norm(V)
    assert rel < 0.02
    cw = col_corr(W0, res.W)
    ch = col_corr(H0.T, res.H.T)
    from scipy.optimize import linear_sum_assignment

    r, c = linear_sum_assignment(-cw)
    assert cw[r, c].min() > 0.95, cw
    assert ch[r, c].min() > 0.95, ch  # same permutation explains H
    np.testing.assert_allclose(np.linalg.norm(res.W, axis=0), 1.0, rtol=1e-5)  # unit L2 columns


def test_semi_supervised_keeps_fixed_columns_and_learns_the_rest():
    V, W0, H0 = planted(seed=2)
    rng = np.random.default_rng(0)
    W_init = np.concatenate([W0[:, :2], rng.random((V.shape[0], 2))], axis=1).astype(np.float32)
    res = beta_nmf(V, 4, beta=1.0, W=W_init, fixed_W_columns=[0, 1], n_iter=800, tol=0)
    np.testing.assert_array_equal(res.W[:, :2], W_init[:, :2])
    cw = col_corr(W0[:, 2:], res.W[:, 2:])
    assert max(cw[0, 0] + cw[1, 1], cw[0, 1] + cw[1, 0]) > 1.9, cw


def test_l1_makes_activations_sparser():
    V, _, _ = planted(seed=4, sparse=False)
    dense = beta_nmf(V, 6, beta=1.0, n_iter=200)
    sparse = beta_nmf(V, 6, beta=1.0, n_iter=200, l1_H=5.0)

    def hoyer(H):  # Hoyer 2004 sparseness in [0, 1]
        n = H.size
        return (np.sqrt(n) - np.abs(H).sum() / np.sqrt((H**2).sum())) / (np.sqrt(n) - 1)

    assert hoyer(sparse.H) > hoyer(dense.H) + 0.05


def test_seeded_deterministic_and_tol_stops_early():
    V, _, _ = planted(seed=5)
    a = beta_nmf(V, 3, beta=1.0, init="random", random_state=7, n_iter=50)
    b = beta_nmf(V, 3, beta=1.0, init="random", random_state=7, n_iter=50)
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.H, b.H)
    c = beta_nmf(V, 3, beta=1.0, init="random", random_state=8, n_iter=50)
    assert not np.array_equal(a.W, c.W)
    early = beta_nmf(V, 3, beta=2.0, n_iter=5000, tol=1e-3)
    assert early.n_iter < 5000 and early.loss.shape == (early.n_iter + 1,)
    last = (early.loss[-2] - early.loss[-1]) / early.loss[-2]
    assert last < 1e-3


def test_tiny_and_wide_matrices_and_more_components_than_rows():
    rng = np.random.default_rng(0)
    V = rng.random((30, 2000)).astype(np.float32)
    for K in (1, 10, 40):
        res = beta_nmf(V, K, beta=2.0, n_iter=30)
        assert res.W.shape == (30, K) and res.H.shape == (K, 2000)
        assert res.W.dtype == np.float32 and res.H.dtype == np.float32
        assert np.all(np.isfinite(res.W)) and np.all(res.W >= 0) and np.all(res.H >= 0)


def test_scale_equivariance():
    V, _, _ = planted(seed=6)
    a = beta_nmf(V, 4, beta=1.0, n_iter=50)
    b = beta_nmf(V * 1000.0, 4, beta=1.0, n_iter=50)
    np.testing.assert_allclose(b.W, a.W, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(b.H, 1000.0 * a.H, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(b.loss, 1000.0 * a.loss, rtol=1e-4)


def test_component_models_sum_to_reconstruction():
    V, _, _ = planted(seed=7)
    res = beta_nmf(V, 4, n_iter=20)
    models = component_models(res.W, res.H)
    np.testing.assert_allclose(models.sum(0), res.W @ res.H, rtol=1e-4, atol=1e-6)
    grouped = component_models(res.W, res.H, [[0, 2], [1], [3]])
    np.testing.assert_allclose(grouped[0], models[0] + models[2], rtol=1e-5, atol=1e-7)
    with pytest.raises(UnmixerError):
        component_models(res.W, res.H, [[0, 9]])


@pytest.mark.parametrize("kwargs, match", [
    (dict(V=-np.ones((4, 5))), "negative"),
    (dict(V=np.ones(5)), "2-D"),
    (dict(V=np.zeros((4, 5))), "all zero"),
    (dict(V=np.full((4, 5), np.nan)), "NaN"),
    (dict(beta=2.5), "beta"),
    (dict(beta=-0.1), "beta"),
    (dict(n_components=0), "n_components"),
    (dict(init="svd"), "init"),
    (dict(W=np.ones((3, 2))), "W must have shape"),
    (dict(H=np.ones((2, 3))), "H must have shape"),
    (dict(update_W=False), "needs the fixed templates"),
    (dict(fixed_W_columns=[0]), "needs W"),
    (dict(W=np.ones((4, 2)), fixed_W_columns=[5]), "column indices"),
    (dict(l1_H=-1.0), "l1_H"),
])
def test_bad_input_raises_one_clear_error(kwargs, match):
    args = dict(V=np.ones((4, 5)), n_components=2)
    args.update(kwargs)
    with pytest.raises(UnmixerError, match=match):
        beta_nmf(args.pop("V"), args.pop("n_components"), **args)


def test_beta_divergence_known_values():
    x = np.array([[1.0, 2.0]])
    y = np.array([[2.0, 2.0]])
    assert beta_divergence(x, y, 2.0) == pytest.approx(0.5)
    assert beta_divergence(x, y, 1.0) == pytest.approx(np.log(0.5) - 1 + 2, rel=1e-6)
    assert beta_divergence(x, y, 0.0) == pytest.approx(0.5 - np.log(0.5) - 1, rel=1e-6)
    b = 0.5
    expect = (1 + (b - 1) * 2**b - b * 1 * 2 ** (b - 1)) / (b * (b - 1))
    assert beta_divergence(x, y, b) == pytest.approx(expect, rel=1e-5)
    assert beta_divergence(y, y, 1.5) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(UnmixerError, match="shape"):
        beta_divergence(x, np.ones((2, 2)), 1.0)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("beta", [2.0, 1.0])
def test_agrees_with_sklearn_mu_at_matched_iterations(beta):
    from sklearn.decomposition import NMF

    V, _, _ = planted(F=60, N=250, seed=8)
    V = V + 0.05 * np.random.default_rng(8).random(V.shape).astype(np.float32)
    rng = np.random.default_rng(9)
    W0 = (rng.random((60, 5)) + 0.1).astype(np.float32)
    H0 = (rng.random((5, 250)) + 0.1).astype(np.float32)
    ours = beta_nmf(V, 5, beta=beta, W=W0, H=H0, n_iter=100, tol=0)
    sk = NMF(5, init="custom", solver="mu", beta_loss=beta, max_iter=100, tol=0)
    W_sk = sk.fit_transform(V, W=W0.copy(), H=H0.copy())
    assert sk.n_iter_ == 100
    ref = W_sk @ sk.components_
    np.testing.assert_allclose(ours.W @ ours.H, ref, rtol=0, atol=1e-4 * ref.max())
    assert ours.loss[-1] == pytest.approx(beta_divergence(V, ref, beta), rel=1e-4)


def test_wiener_resynthesis_sums_to_the_mixture_and_separates_planted_notes():
    from unmixer.core.spectrum import stft
    from unmixer.lab.nmf import resynthesise_components

    sr = 44100
    t = np.arange(2 * sr) / sr
    a = 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    b = 0.3 * np.sin(2 * np.pi * 1250 * t) * (np.sin(2 * np.pi * 1.1 * t) > 0)
    mix = np.stack([a + b, 0.8 * a + 1.2 * b]).astype(np.float32)
    spec = stft(mix)
    res = beta_nmf(np.abs(spec).mean(0), 2, beta=1.0, n_iter=100)
    comps = resynthesise_components(mix, res.W, res.H, spec=spec)
    assert comps.shape == (2, 2, mix.shape[1])
    np.testing.assert_allclose(comps.sum(0), mix, atol=1e-4)
    refs = np.stack([np.stack([a, 0.8 * a]), np.stack([b, 1.2 * b])])
    from unmixer.core.metrics import match_sources, si_sdr_matrix

    score = si_sdr_matrix(refs, comps)
    match = match_sources(score)
    assert score[[0, 1], match].min() > 15, score
    # groups: one group holding component 0, the rest pooled; `which` selects outputs
    grouped = resynthesise_components(mix, res.W, res.H, [[0]], spec=spec)
    np.testing.assert_allclose(grouped, comps, atol=1e-5)
    only_rest = resynthesise_components(mix, res.W, res.H, [[0]], which=[1], spec=spec)
    np.testing.assert_allclose(only_rest[0], comps[1], atol=1e-5)
    with pytest.raises(UnmixerError, match="does not match"):
        resynthesise_components(mix[:, : sr], res.W, res.H)


def test_hpss_nmf_puts_drums_and_bass_in_their_stems():
    from unmixer.core.spectrum import stft
    from unmixer.lab.hpss import hpss_nmf
    from unmixer.lab.nmf import resynthesise_components

    sr = 44100
    rng = np.random.default_rng(0)
    t = np.arange(3 * sr) / sr
    # bass and melody with their own rhythms (co-active sources are one NMF component)
    bass = (0.3 * np.sin(2 * np.pi * 55 * t) + 0.1 * np.sin(2 * np.pi * 110 * t)) * (t % 1.0 < 0.6)
    melody = 0.15 * sum(np.sin(2 * np.pi * 880 * h * t) / h for h in (1, 2, 3)) * (t % 0.75 > 0.3)
    drums = 0.5 * rng.standard_normal(t.size) * np.exp(-40 * ((t * 4) % 1.0))
    mix = np.stack([bass + melody + drums] * 2).astype(np.float32)
    spec = stft(mix)
    res = hpss_nmf(np.abs(spec).mean(0), 3, 2, n_iter=60)
    groups = res.stem_groups()
    assert set(groups) == {"drums", "bass", "melody"}
    stems = resynthesise_components(mix, res.W, res.H, list(groups.values()), spec=spec)
    np.testing.assert_allclose(stems.sum(0), mix, atol=1e-4)
    from unmixer.core.metrics import si_sdr

    refs = {"drums": drums, "bass": bass, "melody": melody}
    scores = {name: si_sdr(refs[name][None], stem.mean(0)[None])[0]
              for name, stem in zip(groups, stems)}
    assert min(scores.values()) > 8, scores


def test_loss_every_skips_evaluations_without_changing_the_factors():
    V, _, _ = planted(seed=10)
    every = beta_nmf(V, 4, beta=1.0, n_iter=25, tol=0)
    sparse = beta_nmf(V, 4, beta=1.0, n_iter=25, tol=0, loss_every=10)
    np.testing.assert_array_equal(sparse.W, every.W)
    evaluated = np.isfinite(sparse.loss)
    assert evaluated.tolist() == [i in (0, 10, 20, 25) for i in range(26)]
    np.testing.assert_allclose(sparse.loss[evaluated], every.loss[evaluated], rtol=1e-12)


def test_sklearn_curve_is_exactly_chained_iterations():
    from sklearn.decomposition import NMF

    V, _, _ = planted(seed=11)
    start = beta_nmf(V, 4, beta=2.0, n_iter=0)
    curve = nmf_module.sklearn_nmf_curve(V, start.W, start.H, beta=2.0, solver="cd", n_iter=30,
                                         checkpoints=[5, 10])
    assert curve.iterations.tolist() == [0, 5, 10, 30]
    assert np.all(np.diff(curve.loss) <= 0) and np.all(np.diff(curve.times_s) >= 0)
    one = NMF(4, init="custom", solver="cd", max_iter=30, tol=0, shuffle=False)
    W1 = one.fit_transform(V, W=start.W.copy(), H=start.H.copy())
    np.testing.assert_allclose(curve.W @ curve.H, W1 @ one.components_, rtol=1e-4, atol=1e-5)
    with pytest.raises(UnmixerError, match="beta = 2"):
        nmf_module.sklearn_nmf_curve(V, start.W, start.H, beta=1.0, solver="cd")


def test_fixed_activations_learn_the_templates_and_stay_untouched():
    V, W0, H0 = planted(seed=12)
    res = beta_nmf(V, 4, beta=2.0, H=H0, update_H=False, n_iter=300, tol=0)
    np.testing.assert_array_equal(res.H, H0.astype(np.float32))
    assert np.all(np.diff(res.loss) <= 1e-6 * res.loss[1:])
    np.testing.assert_allclose(res.W, W0, atol=0.02 * W0.max())  # H is the truth: W follows
