"""Complex NMF: NMF of the complex STFT with a phase per component and time-frequency cell.

Y_c,ω,t ≈ Σ_k F_k,c,ω,t,   F_k = W[ω, k] H[k, t] e^{j φ_k,c,ω,t},

with Y (channels, n_freq, n_frames) the complex STFT, templates W ≥ 0 and activations H ≥ 0
shared by the channels, and a phase φ per component, channel and cell (Kameoka, Ono, Kashino &
Sagayama, "Complex NMF: a new sparse representation for acoustic signals", ICASSP 2009, eq.
(1)). It minimises

    f = Σ |Y - Σ_k F_k|² + 2λ Σ_kt H[k, t]^p       (eq. (2), 0 < p < 2)

with the auxiliary-function updates of their §3: auxiliary components X̄_k with Σ_k X̄_k = Y
and weights β_k = W_k H_k / Σ_l W_l H_l (Σ_k β_k = 1) make f⁺ = Σ_k |X̄_k - F_k|² / β_k + the
majorised penalty an upper bound that touches f; every step below minimises f⁺ in one set
of variables, so f never increases:

    X̄_k = F_k + β_k (Y - Σ_l F_l)                    (eq. (9), f⁺ = f)
    φ_k = arg X̄_k                                      (eq. (10))
    W[ω, k] = Σ_ct H |X̄_k| / β_k / Σ_ct H² / β_k       (eq. (11))
    H[k, t] = Σ_cω W |X̄_k| / β_k / (Σ_cω W² / β_k + λ p H̄^(p-2))   (eq. (12))

(H̄: H before the update). W's columns are renormalised to unit L2 norm after every iteration
when λ > 0 (the paper's normalisation, §3), where f is then monotone only up to that
heuristic. The components are the final X̄_k: each has its own phase and they sum exactly to
Y, so their inverse STFTs sum to the clip (no Wiener mask and no borrowed phase).

The phases make the model K x channels x n_freq x n_frames complex values (8 bytes each):
``MAX_CELLS`` caps it. Components are processed one at a time (a loop over K, no loop over
bins or frames); float32 / complex64 throughout, losses accumulated in float64.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from unmixer.errors import UnmixerError
from unmixer.lab.nmf import _is_count, _record, beta_nmf

MAX_CELLS = 200_000_000
"""Largest K x channels x n_freq x n_frames (1.6 GB of complex64 phases) accepted."""

_TINY = np.float32(1e-12)


@dataclass
class ComplexNMFResult:
    """Result of :func:`complex_nmf`.

    Attributes
    ----------
    W : np.ndarray, float32, shape=(n_freq, K), templates (unit L2 columns)
    H : np.ndarray, float32, shape=(K, n_frames), activations
    components : np.ndarray, complex64, shape=(K, channels, n_freq, n_frames)
        The final auxiliary components X̄_k (own phase); they sum to the input STFT.
    loss : np.ndarray, float64, shape=(n_iter + 1,)
        f = Σ |Y - Σ_k F_k|² + 2λ Σ H^p after the initialisation and after each iteration.
    times_s : np.ndarray, float64, shape=(n_iter + 1,), cumulative seconds
    n_iter : int
    """

    W: np.ndarray
    H: np.ndarray
    components: np.ndarray
    loss: np.ndarray
    times_s: np.ndarray
    n_iter: int


def _residual(Y: np.ndarray, X: np.ndarray, A: list[np.ndarray], out: np.ndarray) -> np.ndarray:
    """R = Y - Σ_k A_k e^{j arg X_k} into ``out`` (complex64, Y's shape)."""
    np.copyto(out, Y)
    for k in range(X.shape[0]):  # one component at a time: memory stays at a few STFTs
        out -= X[k] * (A[k][None] / np.maximum(np.abs(X[k]), _TINY))
    return out


def complex_nmf(spec: np.ndarray, n_components: int, *, n_iter: int = 50,
                sparsity: float = 0.0, p: float = 1.0, init_iter: int = 30,
                tol: float = 0.0, random_state: int | None = 0) -> ComplexNMFResult:
    """Complex NMF of a (multichannel) complex STFT with the auxiliary-function updates.

    Parameters
    ----------
    spec : np.ndarray, complex, shape=(channels, n_freq, n_frames) or (n_freq, n_frames)
        The mixture's STFT (:func:`unmixer.core.spectrum.stft`).
    n_components : int ≥ 1
        K.
    n_iter : int ≥ 0
        Iterations of the updates (eq. (9)-(12)).
    sparsity : float ≥ 0
        λ of the penalty 2λ Σ H^p, relative to the mixture's mean power per frame
        (0: plain complex NMF).
    p : float in (0, 2)
        Exponent of the sparsity penalty (1: L1).
    init_iter : int ≥ 0
        Euclidean β-NMF iterations on the channel-mean magnitude that start W and H. The
        phases start random (seeded): from the mixture's phase every X̄_k would stay β_k Y,
        a fixed point of the updates that is plain ratio masking.
    tol : float ≥ 0
        Stop when the relative decrease of f in an iteration falls below ``tol`` (0: never).
    random_state : int or None
        Seed of the β-NMF start and of the initial phases.

    Returns
    -------
    ComplexNMFResult

    Raises
    ------
    UnmixerError
        If ``spec`` is not a finite complex array of 2 or 3 dimensions, is all zero, a count
        or parameter is out of range, or the model would exceed :data:`MAX_CELLS`.

    Source: Kameoka, Ono, Kashino & Sagayama, ICASSP 2009, eq. (1)-(2) and (9)-(12).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> Y = (rng.standard_normal((1, 40, 60)) + 1j * rng.standard_normal((1, 40, 60)))
    >>> res = complex_nmf(Y.astype(np.complex64), 3, n_iter=20)
    >>> bool(np.allclose(res.components.sum(0), Y, atol=1e-4)), bool(res.loss[-1] <= res.loss[0])
    (True, True)
    """
    t0 = time.perf_counter()
    Y = np.asarray(spec)
    if Y.ndim == 2:
        Y = Y[None]
    if Y.ndim != 3 or Y.size == 0 or not np.issubdtype(Y.dtype, np.number):
        raise UnmixerError(f"spec must be a (channels, n_freq, n_frames) STFT, got shape {Y.shape}")
    Y = Y.astype(np.complex64)
    if not np.all(np.isfinite(Y)):
        raise UnmixerError("spec contains NaN or infinite values")
    if not _is_count(n_components) or n_components < 1:
        raise UnmixerError(f"n_components must be a positive integer, got {n_components!r}")
    for name, value in (("n_iter", n_iter), ("init_iter", init_iter)):
        if not _is_count(value) or value < 0:
            raise UnmixerError(f"{name} must be a nonnegative integer, got {value!r}")
    sparsity, p, tol = float(sparsity), float(p), float(tol)
    if not (np.isfinite(sparsity) and sparsity >= 0):
        raise UnmixerError(f"sparsity must be a finite number >= 0, got {sparsity}")
    if not 0 < p < 2:
        raise UnmixerError(f"p must be in (0, 2), got {p}")
    if not (np.isfinite(tol) and tol >= 0):
        raise UnmixerError(f"tol must be a finite number >= 0, got {tol}")
    K = int(n_components)
    C, F, N = Y.shape
    if K * C * F * N > MAX_CELLS:
        raise UnmixerError(f"complex NMF keeps a phase per component and cell: {K} components x "
                           f"{C} channels x {F} bins x {N} frames is more than "
                           f"{MAX_CELLS / 1e6:.0f} M cells; use fewer components or a shorter clip")
    scale = float(np.abs(Y).max())
    if scale <= 0:
        raise UnmixerError("spec is all zero: nothing to factorise (silent input?)")
    Y = Y / np.float32(scale)
    lam = np.float32(sparsity * float(np.mean(np.abs(Y) ** 2)) * F * C)

    start = beta_nmf(np.abs(Y).mean(axis=0), K, beta=2.0, n_iter=int(init_iter), tol=0.0,
                     random_state=random_state, loss_every=max(int(init_iter), 1))
    W = np.ascontiguousarray(start.W, dtype=np.float32)
    H = np.ascontiguousarray(start.H, dtype=np.float32)
    # Random phases: started from the mixture's phase, X̄_k = β_k Y at every iteration (a
    # fixed point of eq. (9)-(10) that is ratio masking), so each component starts its own.
    rng = np.random.default_rng(random_state)
    X = np.empty((K, C, F, N), dtype=np.complex64)
    for k in range(K):
        X[k] = np.exp(1j * rng.uniform(-np.pi, np.pi, (C, F, N))).astype(np.complex64)
        X[k] *= np.outer(W[:, k], H[k])[None]
    R = np.empty_like(Y)

    def models() -> list[np.ndarray]:  # A_k = W_k H_k, (F, N) each
        return [np.outer(W[:, k], H[k]).astype(np.float32) for k in range(K)]

    def penalty() -> float:
        if lam <= 0:
            return 0.0
        return 2.0 * float(lam) * float(np.sum(H.astype(np.float64) ** p))

    def objective(A: list[np.ndarray]) -> float:  # R = Y - Σ F_k into R, then f
        _residual(Y, X, A, R)
        return float(np.sum(R.real.astype(np.float64) ** 2 + R.imag.astype(np.float64) ** 2)) \
            + penalty()

    A = models()
    losses, times = [objective(A)], [time.perf_counter() - t0]
    done = 0
    ratios = np.empty((K, F, N), dtype=np.float32)  # Σ_c |X̄_k| / β_k
    for it in range(1, int(n_iter) + 1):
        S = np.maximum(sum(A), _TINY)  # Σ_l A_l, (F, N)
        num_W = np.empty((F, K), dtype=np.float32)
        den_W = np.empty((F, K), dtype=np.float32)
        for k in range(K):  # auxiliary variables, then W's sums, one component at a time
            beta_k = np.maximum(A[k] / S, _TINY)
            Xk = X[k]
            Xk *= A[k][None] / np.maximum(np.abs(Xk), _TINY)  # F_k = A_k e^{j arg X̄_k}
            Xk += beta_k[None] * R  # X̄_k = F_k + β_k R (eq. 9); its phase is φ_k (eq. 10)
            np.divide(np.abs(Xk).sum(axis=0), beta_k, out=ratios[k])
            num_W[:, k] = ratios[k] @ H[k]
            den_W[:, k] = (C / beta_k) @ (H[k] * H[k])
        W = num_W / np.maximum(den_W, _TINY)  # eq. (11)
        num_H = np.empty((K, N), dtype=np.float32)
        den_H = np.empty((K, N), dtype=np.float32)
        for k in range(K):  # H with the new W and the same auxiliary variables
            num_H[k] = W[:, k] @ ratios[k]
            den_H[k] = (W[:, k] * W[:, k]) @ (C / np.maximum(A[k] / S, _TINY))
        if lam > 0:
            den_H += lam * np.float32(p) * np.maximum(H, _TINY) ** np.float32(p - 2.0)
        H = num_H / np.maximum(den_H, _TINY)  # eq. (12)
        if lam > 0:
            norms = np.maximum(np.linalg.norm(W, axis=0), _TINY)
            W /= norms
            H *= norms[:, None]
        A = models()
        done = it
        if _record(losses, times, objective(A), t0, tol):
            break
    del ratios
    # the components at the final parameters: X̄_k = F_k + β_k R, which sum to Y exactly
    S = np.maximum(sum(A), _TINY)
    for k in range(K):
        X[k] *= A[k][None] / np.maximum(np.abs(X[k]), _TINY)
        X[k] += (A[k] / S)[None] * R
    X *= np.float32(scale)
    norms = np.linalg.norm(W, axis=0)
    ok = norms > 0
    W[:, ok] /= norms[ok]
    H[ok] *= norms[ok][:, None]
    return ComplexNMFResult(W=W, H=H * np.float32(scale), components=X,
                            loss=np.asarray(losses, dtype=np.float64) * scale**2,
                            times_s=np.asarray(times, dtype=np.float64), n_iter=done)


def resynthesise(result: ComplexNMFResult, length: int, hop_length: int | None = None) -> np.ndarray:
    """Audio of each complex-NMF component from its own phase (inverse STFT of X̄_k).

    Parameters
    ----------
    result : ComplexNMFResult
    length : int, samples of each output (the clip's length)
    hop_length : int, samples, optional (default :data:`unmixer.core.spectrum.HOP_LENGTH`)

    Returns
    -------
    np.ndarray, float32, shape=(K, channels, length); the outputs sum to the clip (up to the
    STFT round trip), because the components sum to its STFT.
    """
    from unmixer.core import spectrum

    hop = spectrum.HOP_LENGTH if hop_length is None else int(hop_length)
    out = np.empty((result.components.shape[0], result.components.shape[1], int(length)),
                   dtype=np.float32)
    for k in range(out.shape[0]):  # one component at a time
        out[k] = spectrum.istft(result.components[k], int(length), hop)
    return out


def wiener_components(audio: np.ndarray, result: ComplexNMFResult, *,
                      spec: np.ndarray | None = None, power: float = 2.0) -> np.ndarray:
    """The same W, H resynthesised the usual way: Wiener masks of W_k H_k on the mixture's
    STFT (:func:`unmixer.lab.nmf.iter_components`), to compare with :func:`resynthesise`.

    Returns
    -------
    np.ndarray, float32, shape=(K, channels, samples)
    """
    from unmixer.lab.nmf import resynthesise_components

    return resynthesise_components(audio, result.W, result.H, spec=spec, power=power)


__all__ = ["ComplexNMFResult", "complex_nmf", "resynthesise", "wiener_components", "MAX_CELLS"]
