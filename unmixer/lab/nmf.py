"""β-divergence nonnegative matrix factorisation with multiplicative updates.

V ≈ W H with V (n_features, n_frames) ≥ 0, templates W (n_features, K) ≥ 0 and activations
H (K, n_frames) ≥ 0, minimising

    D_β(V | W H) + l1_H · Σ H,   D_β(V | Y) = Σ_fn d_β(v_fn | y_fn),

    d_β(x | y) = (x^β + (β-1) y^β - β x y^(β-1)) / (β (β-1))   for β ∉ {0, 1},
    d_1(x | y) = x log(x/y) - x + y                               (Kullback-Leibler),
    d_0(x | y) = x/y - log(x/y) - 1                                (Itakura-Saito),
    d_2(x | y) = (x - y)² / 2                                      (Euclidean, half squared).

The updates are the majorisation-minimisation (MM) multiplicative updates of Févotte & Idier,
"Algorithms for nonnegative matrix factorization with the β-divergence", Neural Computation
23(9), 2011, eq. (4.2)-(4.3) and Table 2 (the exponent γ(β) = 1/(2-β) for β < 1 and 1 for
1 ≤ β ≤ 2, which makes every update non-increasing in D_β); β = 2 and β = 1 are the rules of
Lee & Seung, "Algorithms for non-negative matrix factorization", NIPS 2000. The L1 penalty on H
adds ``l1_H`` to the denominator of the H update (Févotte & Idier 2011, §5.2).

Everything runs in float32 on whole matrices (a handful of matrix products and element-wise
operations per iteration, no loops over bins or frames); losses are accumulated in float64.
The β = 2 updates use Gram matrices only (WᵀV, WᵀW, VHᵀ, HHᵀ); its loss is still computed
from the residual V - W H, because the Gram form ‖V‖² - 2⟨WᵀV, H⟩ + ⟨WᵀW, HHᵀ⟩ loses about
1e-6·‖V‖² to float32 cancellation, which on a good fit of a spectrogram (‖V - WH‖² ≈ 1e-2·‖V‖²)
is enough to fake increases and stop the ``tol`` test early. Set ``loss_every`` to evaluate
the loss less often. Internally V is scaled to a maximum of 1, so the ε guards (1e-12) are
relative to the data; results are returned in the input's scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from unmixer.core.spectrum import MASK_EPS
from unmixer.errors import UnmixerError

EPS = np.float32(1e-12)
"""Floor of W H and of update denominators, relative to max(V) = 1 (internal scale)."""

IS_FLOOR = np.float32(1e-10)
"""Floor of V for β = 0 (Itakura-Saito is undefined at v = 0), relative to max(V)."""

INITS = ("random", "nndsvd", "nndsvda")


@dataclass
class NMFResult:
    """Result of :func:`beta_nmf`.

    Attributes
    ----------
    W : np.ndarray, float32, shape=(n_features, K)
        Templates. Learned columns have unit L2 norm (unless H was fixed, which cannot absorb
        the scale); fixed columns are returned as given.
    H : np.ndarray, float32, shape=(K, n_frames)
        Activations, in the scale that keeps W @ H unchanged by the normalisation.
    loss : np.ndarray, float64, shape=(n_iter + 1,)
        D_β(V | W H) + l1_H · Σ H after the initialisation (entry 0) and after each iteration
        (NaN after iterations where it was not evaluated, see ``loss_every``; never the last).
    times_s : np.ndarray, float64, shape=(n_iter + 1,)
        Cumulative seconds at the same points (entry 0: initialisation).
    n_iter : int
        Iterations done (fewer than asked when the relative loss decrease fell below ``tol``).
    """

    W: np.ndarray
    H: np.ndarray
    loss: np.ndarray
    times_s: np.ndarray
    n_iter: int


# --------------------------------------------------------------------------- validation


def _check_beta(beta: float) -> float:
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        raise UnmixerError(f"beta must be a number in [0, 2], got {beta!r}") from None
    if not 0.0 <= beta <= 2.0:
        raise UnmixerError(f"beta must be in [0, 2] (2: Euclidean, 1: KL, 0: Itakura-Saito), got {beta}")
    return beta


def _check_nonneg(name: str, X, ndim: int = 2) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != ndim:
        raise UnmixerError(f"{name} must be a {ndim}-D array, got shape {X.shape}")
    if X.size == 0:
        raise UnmixerError(f"{name} is empty (shape {X.shape})")
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise UnmixerError(f"{name} must be real-valued, got dtype {X.dtype}")
    X = X.astype(np.float32)
    if not np.all(np.isfinite(X)):
        raise UnmixerError(f"{name} contains NaN or infinite values")
    if X.min() < 0:
        raise UnmixerError(f"{name} has negative entries (min {X.min():.3g}); NMF needs nonnegative data")
    return X


def _is_count(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _gamma(beta: float) -> float:
    """MM exponent γ(β) of Févotte & Idier 2011, Table 2 (β in [0, 2])."""
    return 1.0 / (2.0 - beta) if beta < 1.0 else 1.0


# --------------------------------------------------------------------------- divergence


def _mu_terms(V: np.ndarray, WH: np.ndarray, beta: float, num: np.ndarray | None = None,
              den: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """V ⊙ Λ^(β-2) and Λ^(β-1) (None for β = 1, where it is all ones), Λ = WH ≥ EPS.

    The two F x N terms of both multiplicative updates (Févotte & Idier 2011, eq. (4.2)-(4.3))
    and, reused, of :func:`_beta_divergence`. ``num`` and ``den`` are optional output buffers
    of V's shape. Not used for β = 2, whose updates need Gram matrices only.
    """
    if beta == 1.0:
        return np.divide(V, WH, out=num), None
    if beta == 0.0:
        den = np.divide(np.float32(1.0), WH, out=den)
        num = np.multiply(V, den, out=num)
        num *= den
        return num, den
    den = np.power(WH, np.float32(beta - 1.0), out=den)
    num = np.multiply(V, den, out=num)
    num /= WH
    return num, den


def _beta_divergence(V: np.ndarray, WH: np.ndarray, beta: float, *, terms: tuple | None = None,
                     v_beta: float | None = None, out: np.ndarray | None = None) -> float:
    """D_β(V | WH), the one loss of every solver here (Févotte & Idier 2011, eq. (2.1)-(2.3)).

    Parameters
    ----------
    V, WH : np.ndarray, float32, shape=(F, N); WH already floored at EPS when β < 2 (and V
        at IS_FLOOR when β = 0)
    beta : float in [0, 2]
    terms : the :func:`_mu_terms` of this WH, optional (saves one power or logarithm per cell)
    v_beta : Σ V^β, optional (constant over the iterations; β ∉ {0, 1, 2})
    out : np.ndarray, float32, shape=(F, N), optional work array; may be WH itself when
        β = 2 (it is overwritten)

    Returns
    -------
    float, accumulated in float64.
    """
    if beta == 2.0:  # from the residual: the Gram form loses ~1e-6 ‖V‖² to cancellation
        R = np.subtract(WH, V, out=out)
        np.square(R, out=R)
        return 0.5 * float(np.sum(R, dtype=np.float64))
    if terms is None:
        terms = _mu_terms(V, WH, beta)
    if out is None:
        out = np.empty_like(V)
    num, den = terms
    if beta == 1.0:  # num = V / WH: Σ V log(V / WH) - V + WH
        np.maximum(num, np.float32(1e-30), out=out)
        np.log(out, out=out)
        out *= V
        return float(np.sum(out, dtype=np.float64) - np.sum(V, dtype=np.float64)
                     + np.sum(WH, dtype=np.float64))
    if beta == 0.0:  # den = 1 / WH: Σ r - log r - 1 with r = V / WH
        ratio = np.multiply(V, den, out=out)
        total = float(np.sum(ratio, dtype=np.float64)) - V.size
        return total - float(np.sum(np.log(ratio, out=ratio), dtype=np.float64))
    if v_beta is None:
        v_beta = float(np.sum(V ** np.float32(beta), dtype=np.float64))
    cross = float(np.sum(np.multiply(WH, den, out=out), dtype=np.float64))
    total = v_beta + (beta - 1.0) * cross - beta * np.sum(np.multiply(V, den, out=out),
                                                          dtype=np.float64)
    return float(total / (beta * (beta - 1.0)))


def beta_divergence(V: np.ndarray, WH: np.ndarray, beta: float) -> float:
    """β-divergence D_β(V | WH) summed over all entries.

    Parameters
    ----------
    V : np.ndarray, shape=(n_features, n_frames), nonnegative
        The data, e.g. a magnitude spectrogram.
    WH : np.ndarray, shape=(n_features, n_frames), nonnegative
        The model.
    beta : float in [0, 2]
        2: half squared Euclidean distance, 1: Kullback-Leibler, 0: Itakura-Saito.

    Returns
    -------
    float
        D_β(V | WH) ≥ 0 (0 iff V == WH). Entries of WH below 1e-12·max(V) are floored there,
        and for β = 0 entries of V below 1e-10·max(V) too (IS is infinite at v = 0).

    Raises
    ------
    UnmixerError
        If the shapes differ, an input is negative or not finite, or β is outside [0, 2].

    Source: Févotte & Idier, Neural Computation 2011, eq. (2.1)-(2.3).
    """
    beta = _check_beta(beta)
    V = _check_nonneg("V", V)
    WH = _check_nonneg("WH", WH)
    if V.shape != WH.shape:
        raise UnmixerError(f"V {V.shape} and WH {WH.shape} differ in shape")
    scale = float(V.max())
    if scale <= 0:
        scale = float(WH.max()) or 1.0
    Vn = V / np.float32(scale)
    if beta == 0.0:
        Vn = np.maximum(Vn, IS_FLOOR)
    WHn = WH / np.float32(scale)
    if beta < 2.0:
        WHn = np.maximum(WHn, EPS)
    return _beta_divergence(Vn, WHn, beta) * scale**beta


# --------------------------------------------------------------------------- initialisation


def _nndsvd(V: np.ndarray, K: int, variant: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """NNDSVD(a) initialisation (Boutsidis & Gallopoulos, Pattern Recognition 41, 2008, Table 1).

    Components beyond the rank min(F, N) are filled with small random values (nndsvda: with
    the mean of V), so any K works. The leading singular triplets come from LAPACK for small
    matrices and otherwise from scikit-learn's ``randomized_svd`` (Halko, Martinsson & Tropp,
    SIAM Review 53(2), 2011, Algorithms 4.4 and 5.1: 10 oversamples, 7 QR-normalised power
    iterations), seeded from ``rng``.
    """
    F, N = V.shape
    r = min(K, F, N)
    if r >= min(F, N) or min(F, N) <= 64:
        U, S, Vt = np.linalg.svd(V.astype(np.float64), full_matrices=False)
        U, S, Vt = U[:, :r], S[:r], Vt[:r]
    else:
        from sklearn.utils.extmath import randomized_svd

        U, S, Vt = randomized_svd(V, r, n_oversamples=10, n_iter=7,
                                  power_iteration_normalizer="QR",
                                  random_state=int(rng.integers(2**31 - 1)))
        U, S, Vt = U.astype(np.float64), S.astype(np.float64), Vt.astype(np.float64)
    W = np.zeros((F, K), dtype=np.float64)
    H = np.zeros((K, N), dtype=np.float64)
    W[:, 0] = np.sqrt(S[0]) * np.abs(U[:, 0])
    H[0] = np.sqrt(S[0]) * np.abs(Vt[0])
    if r > 1:
        x, y = U[:, 1:r].T, Vt[1:r]  # (r-1, F), (r-1, N): all components at once
        xp, xn = np.maximum(x, 0), np.maximum(-x, 0)
        yp, yn = np.maximum(y, 0), np.maximum(-y, 0)
        nxp, nxn = np.linalg.norm(xp, axis=1), np.linalg.norm(xn, axis=1)
        nyp, nyn = np.linalg.norm(yp, axis=1), np.linalg.norm(yn, axis=1)
        mp, mn = nxp * nyp, nxn * nyn
        pos = mp > mn
        u = np.where(pos[:, None], xp / np.maximum(nxp, 1e-300)[:, None], xn / np.maximum(nxn, 1e-300)[:, None])
        v = np.where(pos[:, None], yp / np.maximum(nyp, 1e-300)[:, None], yn / np.maximum(nyn, 1e-300)[:, None])
        sigma = np.where(pos, mp, mn)
        lbd = np.sqrt(S[1:r] * sigma)
        W[:, 1:r] = (lbd[:, None] * u).T
        H[1:r] = lbd[:, None] * v
    mean = float(V.mean())
    if K > r:
        W[:, r:] = rng.uniform(0.0, 1.0, (F, K - r)) * np.sqrt(mean / K)
        H[r:] = rng.uniform(0.0, 1.0, (K - r, N)) * np.sqrt(mean / K)
    if variant == "nndsvda":
        W[W < 1e-12] = mean
        H[H < 1e-12] = mean
    else:
        W[W < 1e-12] = 0.0
        H[H < 1e-12] = 0.0
    return W.astype(np.float32), H.astype(np.float32)


def _init_factors(V: np.ndarray, K: int, init: str, W, H, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """W, H on the internal scale (max V = 1); given factors are used as they are."""
    F, N = V.shape
    if W is None and H is None:
        if init == "random":
            s = np.sqrt(V.mean() / K)
            return ((s * np.abs(rng.standard_normal((F, K)))).astype(np.float32),
                    (s * np.abs(rng.standard_normal((K, N)))).astype(np.float32))
        return _nndsvd(V, K, init, rng)
    mean_v = float(V.mean())
    if H is None:  # scale random activations so that mean(W H) = mean(V)
        H = rng.uniform(0.5, 1.5, (K, N)).astype(np.float32)
        H *= np.float32(mean_v / max(float((W @ H).mean()), 1e-30))
    if W is None:
        W = rng.uniform(0.5, 1.5, (F, K)).astype(np.float32)
        W *= np.float32(mean_v / max(float((W @ H).mean()), 1e-30))
    return W, H


# --------------------------------------------------------------------------- the solver


@dataclass
class _Problem:
    """The checked inputs of :func:`beta_nmf` (see there), before scaling."""

    V: np.ndarray
    K: int
    beta: float
    n_iter: int
    init: str
    W: np.ndarray | None
    H: np.ndarray | None
    update_H: bool
    free: np.ndarray  # learned W columns
    l1_H: float
    tol: float
    loss_every: int
    normalize_every_iteration: bool

    @property
    def learn_W(self) -> bool:
        return self.free.size > 0

    @property
    def can_normalise(self) -> bool:
        """W can be renormalised only if H may absorb the scale (H fixed: W as learned)."""
        return self.learn_W and self.update_H


def _check_params(V, n_components, beta, n_iter, init, W, H, update_W, update_H,
                  fixed_W_columns, l1_H, tol, loss_every, normalize_every_iteration) -> _Problem:
    """Validate every argument of :func:`beta_nmf` once; raises UnmixerError (see there)."""
    beta = _check_beta(beta)
    V = _check_nonneg("V", V)
    F, N = V.shape
    if not _is_count(n_components) or n_components < 1:
        raise UnmixerError(f"n_components must be a positive integer, got {n_components!r}")
    K = int(n_components)
    if not _is_count(n_iter) or n_iter < 0:
        raise UnmixerError(f"n_iter must be a nonnegative integer, got {n_iter!r}")
    if init not in INITS:
        raise UnmixerError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    l1_H = float(l1_H)
    tol = float(tol)
    if not (np.isfinite(l1_H) and l1_H >= 0):
        raise UnmixerError(f"l1_H must be a finite number >= 0, got {l1_H}")
    if not (np.isfinite(tol) and tol >= 0):
        raise UnmixerError(f"tol must be a finite number >= 0, got {tol}")
    if not _is_count(loss_every) or loss_every < 1:
        raise UnmixerError(f"loss_every must be a positive integer, got {loss_every!r}")
    if W is not None:
        W = _check_nonneg("W", W)
        if W.shape != (F, K):
            raise UnmixerError(f"W must have shape {(F, K)} (n_features, n_components), "
                               f"got {W.shape}")
    if H is not None:
        H = _check_nonneg("H", H)
        if H.shape != (K, N):
            raise UnmixerError(f"H must have shape {(K, N)} (n_components, n_frames), "
                               f"got {H.shape}")
    if not update_W and W is None:
        raise UnmixerError("update_W=False needs the fixed templates W")
    if not update_H and H is None:
        raise UnmixerError("update_H=False needs the fixed activations H")
    fixed = np.zeros(K, dtype=bool)
    if fixed_W_columns is not None:
        idx = np.asarray(fixed_W_columns).reshape(-1)
        if idx.size:
            if W is None:
                raise UnmixerError("fixed_W_columns needs W (the templates to keep)")
            if not np.issubdtype(idx.dtype, np.integer) or idx.min() < -K or idx.max() >= K:
                raise UnmixerError(f"fixed_W_columns must be column indices in [0, {K}), "
                                   f"got {idx.tolist()}")
            fixed[idx] = True
    if not update_W:
        fixed[:] = True
    if normalize_every_iteration is None:
        normalize_every_iteration = l1_H > 0
    if float(V.max()) <= 0:
        raise UnmixerError("V is all zero: nothing to factorise (silent input?)")
    return _Problem(V=V, K=K, beta=beta, n_iter=int(n_iter), init=init, W=W, H=H,
                    update_H=bool(update_H), free=np.flatnonzero(~fixed), l1_H=l1_H, tol=tol,
                    loss_every=int(loss_every),
                    normalize_every_iteration=bool(normalize_every_iteration))


def _apply_ratio(X: np.ndarray, num: np.ndarray, den: np.ndarray, gamma: np.float32) -> None:
    """X ← X ⊙ (num / max(den, EPS))^γ in place (num and den are overwritten)."""
    np.maximum(den, EPS, out=den)
    np.divide(num, den, out=num)
    if gamma != 1.0:
        np.power(num, gamma, out=num)
    X *= num


def _multiplicative_update_w(V: np.ndarray, W: np.ndarray, H: np.ndarray, beta: float,
                             gamma: np.float32, free: np.ndarray, terms: tuple | None) -> None:
    """MM update of the learned columns ``free`` of W, in place.

        W ← W ⊙ [((V ⊙ Λ^(β-2)) Hᵀ) / (Λ^(β-1) Hᵀ)]^γ(β),   Λ = W H,

    Févotte & Idier, Neural Computation 2011, eq. (4.3) (the H update of eq. (4.2) applied to
    Vᵀ ≈ Hᵀ Wᵀ), with the exponent γ(β) of their Table 2; non-increasing in D_β. For β = 2 it
    is Lee & Seung's rule W ← W ⊙ (V Hᵀ) / (W H Hᵀ) (NIPS 2000, Theorem 1), from Gram
    matrices only; otherwise ``terms`` are the :func:`_mu_terms` of the current Λ.
    """
    all_free = free.size == W.shape[1]
    Hf = H if all_free else H[free]
    if beta == 2.0:
        HHt = H @ H.T
        num = V @ Hf.T
        den = W @ (HHt if all_free else HHt[:, free])
    else:
        num = terms[0] @ Hf.T
        den = (np.broadcast_to(Hf.sum(axis=1), (W.shape[0], Hf.shape[0])).copy()
               if terms[1] is None else terms[1] @ Hf.T)
    if all_free:
        _apply_ratio(W, num, den, gamma)
    else:
        Wf = W[:, free]
        _apply_ratio(Wf, num, den, gamma)
        W[:, free] = Wf


def _multiplicative_update_h(V: np.ndarray, W: np.ndarray, H: np.ndarray, beta: float,
                             gamma: np.float32, l1_H: np.float32, terms: tuple | None) -> None:
    """MM update of H, in place.

        H ← H ⊙ [(Wᵀ (V ⊙ Λ^(β-2))) / (Wᵀ Λ^(β-1) + l1_H)]^γ(β),   Λ = W H,

    Févotte & Idier, Neural Computation 2011, eq. (4.2) with the exponent γ(β) of Table 2 and
    the L1 penalty l1_H Σ H added to the denominator (§5.2); non-increasing in
    D_β + l1_H Σ H. For β = 2: Lee & Seung's H ← H ⊙ (Wᵀ V) / (Wᵀ W H + l1_H), from Gram
    matrices; otherwise ``terms`` are the :func:`_mu_terms` of the current Λ.
    """
    if beta == 2.0:
        num = W.T @ V
        den = (W.T @ W) @ H
    else:
        num = W.T @ terms[0]
        den = (np.broadcast_to(W.sum(axis=0)[:, None], H.shape).copy()
               if terms[1] is None else W.T @ terms[1])
    if l1_H > 0:
        den += l1_H
    _apply_ratio(H, num, den, gamma)


def _penalty(l1_H: np.float32, H: np.ndarray) -> float:
    """l1_H Σ H (float64 sum), the L1 term of the objective."""
    return float(l1_H) * float(np.sum(H, dtype=np.float64)) if l1_H > 0 else 0.0


def _normalise(W: np.ndarray, H: np.ndarray, free: np.ndarray) -> None:
    """Learned columns of W to unit L2 norm, in place; H's rows compensate (W H unchanged)."""
    norms = np.linalg.norm(W[:, free], axis=0)
    ok = norms > 0
    cols = free[ok]
    W[:, cols] /= norms[ok]
    H[cols] *= norms[ok][:, None]


class _Model:
    """Λ = max(W H, EPS) and its update terms in F x N buffers allocated once (fresh 10-40 MB
    temporaries every iteration cost more, in page faults, than the matrix products)."""

    def __init__(self, V: np.ndarray, beta: float):
        self.V, self.beta = V, beta
        self.scratch = np.empty(V.shape, dtype=np.float32)
        self.v_beta = (float(np.sum(V ** np.float32(beta), dtype=np.float64))
                       if beta not in (0.0, 1.0, 2.0) else None)
        self.terms = None
        if beta != 2.0:
            self.WH = np.empty(V.shape, dtype=np.float32)
            self.bufs = (np.empty(V.shape, dtype=np.float32),
                         None if beta == 1.0 else np.empty(V.shape, dtype=np.float32))

    def refresh(self, W: np.ndarray, H: np.ndarray) -> tuple | None:
        """The :func:`_mu_terms` of the current factors (None for β = 2)."""
        if self.beta != 2.0:
            np.maximum(np.matmul(W, H, out=self.WH), EPS, out=self.WH)
            self.terms = _mu_terms(self.V, self.WH, self.beta, *self.bufs)
        return self.terms

    def loss(self, W: np.ndarray, H: np.ndarray) -> float:
        """D_β(V | W H) of the factors the terms were last refreshed with."""
        if self.beta == 2.0:
            return _beta_divergence(self.V, np.matmul(W, H, out=self.scratch), 2.0,
                                    out=self.scratch)
        return _beta_divergence(self.V, self.WH, self.beta, terms=self.terms,
                                v_beta=self.v_beta, out=self.scratch)


def beta_nmf(V: np.ndarray, n_components: int, *, beta: float = 2.0, n_iter: int = 200,
             init: str = "nndsvda", W: np.ndarray | None = None, H: np.ndarray | None = None,
             update_W: bool = True, update_H: bool = True,
             fixed_W_columns: Sequence[int] | np.ndarray | None = None, l1_H: float = 0.0,
             tol: float = 1e-6, random_state: int | None = 0,
             callback: Callable[[int, float], bool | None] | None = None,
             normalize_every_iteration: bool | None = None, loss_every: int = 1) -> NMFResult:
    """Factorise V ≈ W H with multiplicative β-divergence updates.

    Parameters
    ----------
    V : np.ndarray, shape=(n_features, n_frames), nonnegative
        E.g. a magnitude spectrogram (n_features = frequency bins).
    n_components : int ≥ 1
        K, the number of templates.
    beta : float in [0, 2]
        2: Euclidean, 1: Kullback-Leibler, 0: Itakura-Saito; anything in between.
    n_iter : int ≥ 0
        Maximum number of iterations (one W update then one H update each).
    init : {"random", "nndsvd", "nndsvda"}
        Initialisation of the factors that are not given (seeded by ``random_state``).
        "random": |N(0, 1)|·sqrt(mean(V)/K) as in scikit-learn; "nndsvd": Boutsidis &
        Gallopoulos 2008; "nndsvda": the same with zeros replaced by mean(V) (zeros never
        move under multiplicative updates). With only W (or H) given, the other factor
        starts uniform in [0.5, 1.5], scaled so that mean(W H) = mean(V).
    W : np.ndarray, shape=(n_features, K), optional
        Initial (or, with ``update_W=False``, fixed) templates.
    H : np.ndarray, shape=(K, n_frames), optional
        Initial (or, with ``update_H=False``, fixed) activations.
    update_W, update_H : bool
        ``update_W=False`` with W given is supervised (template) NMF: only H is learned.
    fixed_W_columns : sequence of int, optional
        Indices of columns of the given W kept fixed while the others are learned
        (semi-supervised NMF).
    l1_H : float ≥ 0
        Weight of the L1 sparsity penalty Σ H (in the units of D_β). With l1_H > 0 the learned
        W columns are renormalised to unit L2 norm after every iteration, so the penalty
        cannot be dodged by scaling W up and H down.
    tol : float ≥ 0
        Stop when (loss[i-1] - loss[i]) / loss[i-1] < tol (0: always run ``n_iter``, unless
        the loss reaches exactly 0).
    random_state : int or None
        Seed of the initialisation; the same inputs and seed give the same result.
    callback : callable(iteration: int, loss: float) -> bool or None, optional
        Called after every iteration (loss NaN where not evaluated, see ``loss_every``);
        returning True stops early (e.g. for a progress bar).
    normalize_every_iteration : bool, optional
        Renormalise W after every iteration (default: only when l1_H > 0).
    loss_every : int ≥ 1
        Evaluate the loss (an F x N pass, for β = 1 a logarithm per cell) only every this many
        iterations and at the last one; the other entries of ``loss`` are NaN and the ``tol``
        test uses the mean decrease per iteration since the last evaluation. 1 (default)
        records every iteration; scikit-learn evaluates every 10.

    Returns
    -------
    NMFResult
        W (F, K) and H (K, N) float32 with the learned W columns at unit L2 norm (H rows
        rescaled so that W @ H is unchanged; fixed columns as given), the loss and the
        cumulative time after the initialisation and after each iteration.

    Raises
    ------
    UnmixerError
        If V is not a finite nonnegative 2-D array or is all zero, shapes of W/H disagree with
        V and K, β is outside [0, 2], ``init`` is unknown, a count is out of range, or a factor
        is fixed without being given.

    Notes
    -----
    Updates (Févotte & Idier 2011, eq. (4.2)-(4.3), MM exponent γ(β) of Table 2):

        W ← W ⊙ [((V ⊙ Λ^(β-2)) Hᵀ) / (Λ^(β-1) Hᵀ)]^γ,
        H ← H ⊙ [(Wᵀ (V ⊙ Λ^(β-2))) / (Wᵀ Λ^(β-1) + l1_H)]^γ,   Λ = W H,

    with γ = 1/(2-β) for β < 1 and 1 otherwise; each is non-increasing in D_β (and the H
    update in D_β + l1_H Σ H). The per-iteration renormalisation used with l1_H > 0 is the
    usual heuristic of sparse NMF (Le Roux, Weninger & Hershey, "Sparse NMF – half-baked or
    well done?", MERL TR2015-023), under which the penalised loss is no longer guaranteed
    to be monotone.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> V = rng.random((30, 4)) @ rng.random((4, 200))
    >>> res = beta_nmf(V, 4, beta=1.0, n_iter=100)
    >>> res.W.shape, res.H.shape, bool(res.loss[-1] < res.loss[0])
    ((30, 4), (4, 200), True)
    """
    t0 = time.perf_counter()
    p = _check_params(V, n_components, beta, n_iter, init, W, H, update_W, update_H,
                      fixed_W_columns, l1_H, tol, loss_every, normalize_every_iteration)
    beta, free = p.beta, p.free
    scale = float(p.V.max())
    s32 = np.float32(scale)
    V = p.V / s32
    if beta == 0.0:
        V = np.maximum(V, IS_FLOOR)
    # D_β(sV | s W H) = s^β D_β(V | W H): penalty in internal units, H on the internal scale.
    lam = np.float32(p.l1_H * scale ** (1.0 - beta))
    loss_scale = scale**beta
    rng = np.random.default_rng(random_state)
    W, H = _init_factors(V, p.K, p.init, p.W, None if p.H is None else p.H / s32, rng)
    W = np.ascontiguousarray(W, dtype=np.float32)
    H = np.ascontiguousarray(H, dtype=np.float32)
    gamma = np.float32(_gamma(beta))

    model = _Model(V, beta)
    model.refresh(W, H)
    loss = [model.loss(W, H) + _penalty(lam, H)]
    times = [time.perf_counter() - t0]
    done, last = 0, 0  # iterations done; the last iteration whose loss was computed
    for it in range(1, p.n_iter + 1):
        if p.learn_W:
            _multiplicative_update_w(V, W, H, beta, gamma, free, model.terms)
            model.refresh(W, H)
        if p.update_H:
            _multiplicative_update_h(V, W, H, beta, gamma, lam, model.terms)
        if p.normalize_every_iteration and p.can_normalise:
            _normalise(W, H, free)
        model.refresh(W, H)
        done = it
        if it % p.loss_every == 0 or it == p.n_iter:
            cur = model.loss(W, H) + _penalty(lam, H)
            prev, gap, last = loss[last], it - last, it
            stop = cur <= 0 or (p.tol > 0 and (prev - cur) / prev / gap < p.tol)
        else:
            cur, stop = float("nan"), False
        loss.append(cur)
        times.append(time.perf_counter() - t0)
        if callback is not None and callback(it, cur * loss_scale):
            stop = True
        if stop:
            break
    if np.isnan(loss[-1]):  # stopped by the callback between two loss evaluations
        loss[-1] = model.loss(W, H) + _penalty(lam, H)

    if p.can_normalise:
        _normalise(W, H, free)
    H = p.H.copy() if not p.update_H else H * s32
    return NMFResult(W=W.astype(np.float32, copy=False), H=H.astype(np.float32, copy=False),
                     loss=np.asarray(loss, dtype=np.float64) * loss_scale,
                     times_s=np.asarray(times, dtype=np.float64), n_iter=done)


def reconstruct(result: NMFResult) -> np.ndarray:
    """W @ H, shape=(n_features, n_frames), float32."""
    return result.W @ result.H


def component_models(W: np.ndarray, H: np.ndarray,
                     groups: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Per-component (or per-group) models W[:, k] H[k] for Wiener masks.

    Parameters
    ----------
    W : np.ndarray, shape=(n_features, K)
    H : np.ndarray, shape=(K, n_frames)
    groups : list of lists of component indices, optional
        Each group's model is the sum of its components' models (default: one per component).

    Returns
    -------
    np.ndarray, float32, shape=(n_groups, n_features, n_frames)

    Raises
    ------
    UnmixerError
        If a group is empty or names a component outside [0, K).
    """
    W = np.asarray(W, dtype=np.float32)
    H = np.asarray(H, dtype=np.float32)
    K = W.shape[1]
    if groups is None:
        return W.T[:, :, None] * H[:, None, :]
    out = np.empty((len(groups), W.shape[0], H.shape[1]), dtype=np.float32)
    for g, members in enumerate(groups):  # a handful of groups, each a matrix product
        idx = np.asarray(list(members), dtype=int)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= K:
            raise UnmixerError(f"group {g + 1} must list components in 1..{K}, got {[int(i) + 1 for i in idx]}")
        out[g] = W[:, idx] @ H[idx]
    return out


def resynthesise_components(audio: np.ndarray, W: np.ndarray, H: np.ndarray,
                            groups: Sequence[Sequence[int]] | None = None, *,
                            which: Sequence[int] | None = None, power: float = 2.0,
                            spec: np.ndarray | None = None, hop_length: int | None = None,
                            eps: float = MASK_EPS) -> np.ndarray:
    """Audio of NMF components (or groups of them) by Wiener masks on the mixture STFT.

    Each group's model Λ_g = W_g H_g gives the soft mask M_g = Λ_g^p / Σ_g' Λ_g'^p, applied
    to the mixture's complex STFT, so every output keeps the mixture's phase (not W·H with a
    borrowed phase), and the outputs sum to the input up to the STFT round trip. Masks are made
    one group at a time, so memory stays at a few spectrograms whatever K.

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples)
        The mixture the factorisation was computed from.
    W : np.ndarray, shape=(n_freq, K)
    H : np.ndarray, shape=(K, n_frames), n_frames those of ``stft(audio)``
    groups : list of lists of component indices, optional
        Default: one output per component. Components in no group are pooled into one more
        output ("the rest"), so the outputs always sum to the mixture.
    which : list of int, optional
        Return only these outputs (indices into the groups, the rest last); masks still
        compete with all of them.
    power : float
        Mask exponent p (2: Wiener filter on magnitudes, 1: ratio masks).
    spec : np.ndarray, complex, shape=(channels, n_freq, n_frames), optional
        The mixture's STFT (:func:`unmixer.core.spectrum.stft`), if already computed.
    hop_length : int, samples, optional
        STFT hop (default :data:`unmixer.core.spectrum.HOP_LENGTH`).

    Returns
    -------
    np.ndarray, float32, shape=(n_outputs, channels, samples)

    Raises
    ------
    UnmixerError
        If W @ H does not have the shape of the audio's STFT, or a group is bad.

    Source: Liutkus & Badeau, "Generalized Wiener filtering with fractional power
    spectrograms", ICASSP 2015, eq. (7)-(9).
    """
    outputs = list(iter_components(audio, W, H, groups, which=which, power=power, spec=spec,
                                   hop_length=hop_length, eps=eps))
    return np.stack(outputs).astype(np.float32, copy=False)


def iter_components(audio: np.ndarray, W: np.ndarray, H: np.ndarray,
                    groups: Sequence[Sequence[int]] | None = None, *,
                    which: Sequence[int] | None = None, power: float = 2.0,
                    spec: np.ndarray | None = None, hop_length: int | None = None,
                    eps: float = MASK_EPS) -> Iterator[np.ndarray]:
    """:func:`resynthesise_components` one output at a time.

    Same parameters; yields np.ndarray, float32, shape=(channels, samples) per output, so a
    caller can encode or write each one before the next is made. The inputs are checked
    before the first output is yielded (raises UnmixerError as there).
    """
    audio, spec, hop = _mixture_stft(audio, spec, hop_length)
    W = np.asarray(W, dtype=np.float32)
    H = np.asarray(H, dtype=np.float32)
    if W.shape[0] != spec.shape[1] or H.shape[1] != spec.shape[2] or W.shape[1] != H.shape[0]:
        raise UnmixerError(f"W {W.shape} @ H {H.shape} does not match the STFT "
                           f"({spec.shape[1]} bins x {spec.shape[2]} frames)")
    K = W.shape[1]
    if groups is None:
        groups = [[k] for k in range(K)]
    else:
        groups = [[int(i) for i in g] for g in groups]
        for g, members in enumerate(groups):
            if not members or min(members) < 0 or max(members) >= K:
                raise UnmixerError(f"group {g + 1} must list components in 1..{K}, "
                                   f"got {[i + 1 for i in members]}")
        used = {i for g in groups for i in g}
        rest = [k for k in range(K) if k not in used]
        if rest:
            groups.append(rest)
    outputs = list(range(len(groups))) if which is None else [int(i) for i in which]
    if any(not 0 <= i < len(groups) for i in outputs):
        raise UnmixerError(f"which must index the {len(groups)} outputs, got {list(outputs)}")
    return _masked_outputs(audio.shape[-1], W, H, groups, outputs, power, spec, hop, eps)


def _mixture_stft(audio: np.ndarray, spec: np.ndarray | None,
                  hop_length: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """(audio as float32 (channels, samples), its STFT (given or computed), the hop)."""
    from unmixer.core import spectrum

    hop = spectrum.HOP_LENGTH if hop_length is None else int(hop_length)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if spec is None:
        spec = spectrum.stft(audio, hop_length=hop)
    return audio, spec, hop


def _record(losses: list, times: list, cur: float, t0: float, tol: float) -> bool:
    """Append an iteration's loss and cumulative time; True when it stops the solver (the
    loss reached 0 or decreased by less than ``tol`` relative)."""
    prev = losses[-1]
    losses.append(cur)
    times.append(time.perf_counter() - t0)
    return cur <= 0 or (tol > 0 and (prev - cur) / prev < tol)


def _masked_outputs(length: int, W: np.ndarray, H: np.ndarray, groups: list[list[int]],
                    outputs: list[int], power: float, spec: np.ndarray, hop: int,
                    eps: float) -> Iterator[np.ndarray]:
    scale = np.float32(max(float((W @ H).max()), 1e-30))
    return masked_outputs(lambda members: (W[:, members] / scale) @ H[members], groups,
                          outputs, spec, length, power=power, hop_length=hop, eps=eps)


def masked_outputs(model: Callable[[list[int]], np.ndarray], groups: list[list[int]],
                   outputs: Sequence[int], spec: np.ndarray, length: int, *,
                   power: float = 2.0, hop_length: int | None = None,
                   eps: float = MASK_EPS) -> Iterator[np.ndarray]:
    """The one Wiener-mask resynthesis of the NMF Lab's models, one output at a time.

    Every group's model Λ_g = model(groups[g]) competes in the masks
    M_g = Λ_g^p / Σ_g' Λ_g'^p (:func:`unmixer.core.spectrum.wiener_mask`) applied to the
    mixture's STFT; β-NMF (W H), NMFD (Σ_τ W_τ shift_τ(H)) and complex NMF's magnitude model
    all go through here.

    Parameters
    ----------
    model : callable(list of int) -> np.ndarray, float32, shape=(n_freq, n_frames)
        The nonnegative model of a group of components, scaled so that the largest value of
        the full model is about 1 (which makes ``eps`` relative).
    groups : list of lists of component indices (covering every component)
    outputs : the groups to resynthesise
    spec : np.ndarray, complex, shape=(channels, n_freq, n_frames), the mixture's STFT
    length : int, samples of each output
    power : float, mask exponent p
    hop_length : int, samples, optional

    Yields
    ------
    np.ndarray, float32, shape=(channels, length) per output; over all groups they sum to
    the mixture (up to the STFT round trip).

    Source: Liutkus & Badeau, ICASSP 2015, eq. (7)-(9).
    """
    from unmixer.core import spectrum

    hop = spectrum.HOP_LENGTH if hop_length is None else int(hop_length)
    p = np.float32(power)
    denom = np.zeros(spec.shape[1:], dtype=np.float32)
    for members in groups:  # one F x N model at a time
        denom += model(members) ** p
    for g in outputs:
        mask = spectrum.wiener_mask(model(groups[g]) ** p, denom, len(groups), eps)
        yield spectrum.istft(spec * mask[None], length, hop)


@dataclass
class LossCurve:
    """Loss of a solver against iterations and time (see :func:`sklearn_nmf_curve`).

    Attributes
    ----------
    iterations : np.ndarray, int, shape=(n_points,)
    loss : np.ndarray, float64, shape=(n_points,), D_β(V | W H)
    times_s : np.ndarray, float64, shape=(n_points,), cumulative seconds of the solver alone
    W, H : np.ndarray, float32, the final factors
    """

    iterations: np.ndarray
    loss: np.ndarray
    times_s: np.ndarray
    W: np.ndarray
    H: np.ndarray


def sklearn_nmf_curve(V: np.ndarray, W: np.ndarray, H: np.ndarray, *, beta: float = 2.0,
                      solver: str = "mu", n_iter: int = 200,
                      checkpoints: Sequence[int] | None = None) -> LossCurve:
    """Run scikit-learn's ``NMF`` from the given factors and record its loss curve.

    scikit-learn reports no per-iteration loss, but both of its solvers keep no state besides
    W and H (``cd`` with ``shuffle=False``), so ``max_iter = a`` followed by a warm restart
    (``init="custom"``) for ``b`` more iterations is exactly ``a + b`` iterations. The run is
    cut at the checkpoints; only the solver's own time is counted (the loss is computed
    outside the clock with :func:`beta_divergence`).

    Parameters
    ----------
    V : np.ndarray, shape=(n_features, n_frames), nonnegative
    W, H : np.ndarray, shapes (n_features, K) and (K, n_frames)
        Initial factors (e.g. ``beta_nmf(V, K, n_iter=0)``'s W, H for the same init as ours).
    beta : float
        β of the loss; ``cd`` supports only 2 (Frobenius).
    solver : {"mu", "cd"}
    n_iter : int
        Total iterations.
    checkpoints : sequence of int, optional
        Iteration counts at which to record the loss (default: about 25 log-spaced ones).

    Returns
    -------
    LossCurve, starting at iteration 0 (the initial factors, time 0).

    Raises
    ------
    UnmixerError
        If ``solver`` is unknown or ``cd`` is asked for a β other than 2.

    Source: scikit-learn's ``sklearn.decomposition.NMF`` (Févotte & Idier 2011 for ``mu``;
    Cichocki & Phan 2009, Hsieh & Dhillon 2011 for ``cd``).
    """
    import warnings

    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    if solver not in ("mu", "cd"):
        raise UnmixerError(f"solver must be 'mu' or 'cd', got {solver!r}")
    beta = _check_beta(beta)
    if solver == "cd" and beta != 2.0:
        raise UnmixerError("scikit-learn's 'cd' solver handles only beta = 2 (Frobenius)")
    V = _check_nonneg("V", V)
    W = _check_nonneg("W", W).copy()
    H = _check_nonneg("H", H).copy()
    if checkpoints is None:
        checkpoints = np.unique(np.geomspace(1, max(n_iter, 1), 25).astype(int))
    points = sorted({int(c) for c in checkpoints if 0 < c <= n_iter} | {n_iter})
    iters, losses, times = [0], [beta_divergence(V, W @ H, beta)], [0.0]
    elapsed, done = 0.0, 0
    for target in points:
        if target <= done:
            continue
        model = NMF(W.shape[1], init="custom", solver=solver, beta_loss=beta,
                    max_iter=target - done, tol=0.0, shuffle=False, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            W = model.fit_transform(V, W=W, H=H).astype(np.float32, copy=False)
            elapsed += time.perf_counter() - t0
        H = model.components_.astype(np.float32, copy=False)
        done = target
        iters.append(done)
        losses.append(beta_divergence(V, W @ H, beta))
        times.append(elapsed)
    return LossCurve(np.asarray(iters), np.asarray(losses, dtype=np.float64),
                     np.asarray(times, dtype=np.float64), W, H)


__all__ = ["NMFResult", "beta_nmf", "beta_divergence", "reconstruct", "component_models",
           "resynthesise_components", "iter_components", "masked_outputs", "sklearn_nmf_curve", "LossCurve", "EPS"]
