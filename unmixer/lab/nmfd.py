"""Convolutive NMF (NMFD): templates that are short spectrogram patches.

V ≈ Λ = Σ_τ W_τ · shift_τ(H),  τ = 0 .. T-1,

with V (n_features, n_frames) ≥ 0, the templates W (K, n_features, T) ≥ 0 (component k's
template W[k] is an F x T spectrogram patch, e.g. a drum hit's decay or a note's vibrato) and
the activations H (K, n_frames) ≥ 0 (where each patch starts); shift_τ moves the columns of H
τ frames to the right, filling with zeros. T = 1 is plain NMF.

The updates are the β-divergence multiplicative updates of Smaragdis, "Non-negative matrix
factor deconvolution; extraction of multiple sound sources from monophonic inputs", ICA 2004
(§3, eq. (5)-(6), Euclidean and KL) in their β-divergence form (Schmidt & Mørup,
"Nonnegative matrix factor 2-D deconvolution for blind single channel source separation",
ICA 2006, whose NMF2D with one pitch shift is this model). Λ is linear in H and in the stack
of all W_τ, so the majorisation-minimisation argument of Févotte & Idier (Neural Computation
2011, eq. (4.2)-(4.3) with γ(β) of Table 2) holds as it is: every W_τ is updated at once from
one Λ, and H with the sum over τ of the shifted terms (not Smaragdis' average of per-τ
updates), so each update is non-increasing in D_β for every β in [0, 2].

Vectorised: the T shifted copies of H are stacked into one (T·K, n_frames) matrix, so Λ, both
numerators and both denominators are one matrix product each; the only Python loop is over
the T template frames (slices, no arithmetic per bin or frame). float32 throughout, the loss
(:func:`unmixer.lab.nmf._beta_divergence`, shared with β-NMF) accumulated in float64.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from unmixer.errors import UnmixerError
from unmixer.lab.nmf import (EPS, IS_FLOOR, _apply_ratio, _beta_divergence, _check_beta,
                             _check_nonneg, _gamma, _is_count, _mu_terms, _record, beta_nmf)

MAX_FRAMES = 64
"""Longest template (frames) accepted."""


@dataclass
class NMFDResult:
    """Result of :func:`nmfd`.

    Attributes
    ----------
    W : np.ndarray, float32, shape=(K, n_features, T)
        Templates, each an F x T patch of unit Frobenius norm.
    H : np.ndarray, float32, shape=(K, n_frames)
        Activations (the scale the normalisation took from W).
    loss : np.ndarray, float64, shape=(n_iter + 1,)
        D_β(V | Λ) after the initialisation and after each iteration.
    times_s : np.ndarray, float64, shape=(n_iter + 1,), cumulative seconds
    n_iter : int, iterations done
    """

    W: np.ndarray
    H: np.ndarray
    loss: np.ndarray
    times_s: np.ndarray
    n_iter: int

    def component_models(self) -> np.ndarray:
        """Λ_k = Σ_τ W[k, :, τ] shift_τ(H[k]), float32, shape=(K, n_features, n_frames)."""
        return convolve(self.W, self.H, per_component=True)


def _stack_shifts(H: np.ndarray, T: int, out: np.ndarray | None = None) -> np.ndarray:
    """[shift_0(H); shift_1(H); …; shift_{T-1}(H)], shape=(T·K, N): row τ·K + k is H[k]
    delayed by τ frames (zeros first)."""
    K, N = H.shape
    if out is None:
        out = np.zeros((T * K, N), dtype=H.dtype)
    for tau in range(T):  # T slices; no arithmetic per frame
        block = out[tau * K:(tau + 1) * K]
        block[:, :tau] = 0.0
        block[:, tau:] = H[:, :N - tau]
    return out


def _unshift_sum(G: np.ndarray, T: int, K: int) -> np.ndarray:
    """Σ_τ shift_{-τ}(G_τ) for G of shape (T·K, N), G_τ its rows τ·K .. τ·K + K - 1: the
    adjoint of :func:`_stack_shifts`, shape=(K, N)."""
    N = G.shape[1]
    out = G[:K].copy()
    for tau in range(1, T):
        out[:, :N - tau] += G[tau * K:(tau + 1) * K, tau:]
    return out


def _flat(W: np.ndarray) -> np.ndarray:
    """(K, F, T) templates -> (F, T·K), column τ·K + k = W[k, :, τ]."""
    K, F, T = W.shape
    return np.ascontiguousarray(W.transpose(1, 2, 0).reshape(F, T * K))


def _unflat(Wf: np.ndarray, K: int) -> np.ndarray:
    F, TK = Wf.shape
    return np.ascontiguousarray(Wf.reshape(F, TK // K, K).transpose(2, 0, 1))


def convolve(W: np.ndarray, H: np.ndarray, per_component: bool = False) -> np.ndarray:
    """The NMFD model Λ = Σ_τ W_τ shift_τ(H).

    Parameters
    ----------
    W : np.ndarray, shape=(K, n_features, T)
    H : np.ndarray, shape=(K, n_frames)
    per_component : bool
        Return each component's model Λ_k (shape (K, n_features, n_frames)) instead of Λ.

    Returns
    -------
    np.ndarray, float32, shape=(n_features, n_frames) (or (K, n_features, n_frames))

    Raises
    ------
    UnmixerError
        If W and H disagree in K.
    """
    W = np.asarray(W, dtype=np.float32)
    H = np.asarray(H, dtype=np.float32)
    if W.ndim != 3 or H.ndim != 2 or W.shape[0] != H.shape[0]:
        raise UnmixerError(f"W {W.shape} (K, F, T) and H {H.shape} (K, N) disagree")
    K, F, T = W.shape
    Hs = _stack_shifts(H, T)
    if not per_component:
        return _flat(W) @ Hs
    out = np.empty((K, F, H.shape[1]), dtype=np.float32)
    for k in range(K):  # one (F, T) @ (T, N) product per component
        out[k] = W[k] @ Hs[k::K]
    return out


def _check_templates(W, K: int, F: int, T: int) -> np.ndarray:
    W = _check_nonneg("W", W, ndim=3)
    if W.shape != (K, F, T):
        raise UnmixerError(f"W must have shape {(K, F, T)} (n_components, n_features, "
                           f"n_frames_template), got {W.shape}")
    return W


def nmfd(V: np.ndarray, n_components: int, n_frames: int = 8, *, beta: float = 1.0,
         n_iter: int = 100, init: str = "nndsvda", W: np.ndarray | None = None,
         H: np.ndarray | None = None, update_W: bool = True, update_H: bool = True,
         tol: float = 0.0, random_state: int | None = 0) -> NMFDResult:
    """Convolutive NMF (NMF deconvolution): V ≈ Σ_τ W_τ shift_τ(H), β-divergence updates.

    Parameters
    ----------
    V : np.ndarray, shape=(n_features, n_frames), nonnegative
        E.g. a magnitude spectrogram.
    n_components : int ≥ 1
        K, the number of templates.
    n_frames : int in [1, 64]
        T, the length of every template (frames; 8 frames at hop 512 is 93 ms).
    beta : float in [0, 2]
        2: Euclidean, 1: Kullback-Leibler (default), 0: Itakura-Saito.
    n_iter : int ≥ 0
        Maximum iterations (one update of all W_τ, then one of H).
    init : {"nndsvda", "random"}
        "nndsvda": H and a spectrum per component from β-NMF's NNDSVDa start, every frame
        of the patch that spectrum / T with a gentle decay; "random": uniform in [0.5, 1.5]
        (seeded). Both are scaled so that mean(Λ) = mean(V).
    W : np.ndarray, shape=(K, n_features, T), optional
        Initial (or, with ``update_W=False``, fixed) templates.
    H : np.ndarray, shape=(K, n_frames), optional
        Initial (or, with ``update_H=False``, fixed) activations.
    update_W, update_H : bool
    tol : float ≥ 0
        Stop when the relative loss decrease of an iteration falls below ``tol`` (0: never).
    random_state : int or None

    Returns
    -------
    NMFDResult, with the learned templates at unit Frobenius norm (H rescaled so that Λ is
    unchanged).

    Raises
    ------
    UnmixerError
        If V is not a finite nonnegative 2-D array or is all zero, a count or β is out of
        range, T is longer than the clip, ``init`` is unknown, or W/H have the wrong shape
        or are fixed without being given.

    Notes
    -----
    With P = V ⊙ Λ^(β-2), Q = Λ^(β-1) and γ = γ(β) (Févotte & Idier 2011, Table 2):

        W_τ ← W_τ ⊙ [(P shift_τ(H)ᵀ) / (Q shift_τ(H)ᵀ)]^γ   for all τ at once,
        H   ← H ⊙ [(Σ_τ W_τᵀ shift_{-τ}(P)) / (Σ_τ W_τᵀ shift_{-τ}(Q))]^γ.

    Source: Smaragdis, ICA 2004, eq. (5)-(6); Schmidt & Mørup, ICA 2006 (NMF2D); Févotte &
    Idier, Neural Computation 2011 (β-divergence MM updates).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> W0 = rng.random((2, 20, 4)); H0 = rng.random((2, 300)) * (rng.random((2, 300)) < 0.05)
    >>> res = nmfd(convolve(W0, H0) + 1e-3, 2, 4, n_iter=50)
    >>> res.W.shape, res.H.shape, bool(res.loss[-1] < res.loss[0])
    ((2, 20, 4), (2, 300), True)
    """
    t0 = time.perf_counter()
    beta = _check_beta(beta)
    V = _check_nonneg("V", V)
    F, N = V.shape
    if not _is_count(n_components) or n_components < 1:
        raise UnmixerError(f"n_components must be a positive integer, got {n_components!r}")
    if not _is_count(n_frames) or not 1 <= n_frames <= MAX_FRAMES:
        raise UnmixerError(f"the template length (frames) must be an integer in 1..{MAX_FRAMES}, "
                           f"got {n_frames!r}")
    if n_frames > N:
        raise UnmixerError(f"templates of {n_frames} frames are longer than the clip ({N} frames)")
    if not _is_count(n_iter) or n_iter < 0:
        raise UnmixerError(f"n_iter must be a nonnegative integer, got {n_iter!r}")
    if init not in ("nndsvda", "random"):
        raise UnmixerError(f"init must be 'nndsvda' or 'random', got {init!r}")
    tol = float(tol)
    if not (np.isfinite(tol) and tol >= 0):
        raise UnmixerError(f"tol must be a finite number >= 0, got {tol}")
    K, T = int(n_components), int(n_frames)
    if W is not None:
        W = _check_templates(W, K, F, T)
    if H is not None:
        H = _check_nonneg("H", H)
        if H.shape != (K, N):
            raise UnmixerError(f"H must have shape {(K, N)}, got {H.shape}")
    if not update_W and W is None:
        raise UnmixerError("update_W=False needs the fixed templates W")
    if not update_H and H is None:
        raise UnmixerError("update_H=False needs the fixed activations H")
    scale = float(V.max())
    if scale <= 0:
        raise UnmixerError("V is all zero: nothing to factorise (silent input?)")

    s32 = np.float32(scale)
    V = V / s32
    if beta == 0.0:
        V = np.maximum(V, IS_FLOOR)
    H_given = H
    Wf, H = _init(V, K, T, init, W, None if H is None else H / s32, random_state)
    gamma = np.float32(_gamma(beta))
    Hs = _stack_shifts(H, T)
    WH = np.empty((F, N), dtype=np.float32)
    scratch = np.empty((F, N), dtype=np.float32)
    bufs = (np.empty((F, N), dtype=np.float32), np.empty((F, N), dtype=np.float32))
    v_beta = (float(np.sum(V ** np.float32(beta), dtype=np.float64))
              if beta not in (0.0, 1.0, 2.0) else None)

    def terms() -> tuple:  # Λ into WH (floored for β < 2) and P, Q
        np.matmul(Wf, Hs, out=WH)
        if beta == 2.0:
            return V, WH  # P = V, Q = Λ
        np.maximum(WH, EPS, out=WH)
        num, den = _mu_terms(V, WH, beta, *bufs)
        return num, (None if beta == 1.0 else den)

    def loss(P_Q: tuple) -> float:
        if beta == 2.0:
            return _beta_divergence(V, WH, 2.0, out=scratch)
        return _beta_divergence(V, WH, beta, terms=P_Q, v_beta=v_beta, out=scratch)

    P_Q = terms()
    losses, times = [loss(P_Q)], [time.perf_counter() - t0]
    done = 0
    for it in range(1, int(n_iter) + 1):
        if update_W:
            P, Q = P_Q
            num = P @ Hs.T
            den = (np.broadcast_to(Hs.sum(axis=1), num.shape).copy() if Q is None
                   else Q @ Hs.T)
            _apply_ratio(Wf, num, den, gamma)
            P_Q = terms()
        if update_H:
            P, Q = P_Q
            num = _unshift_sum(Wf.T @ P, T, K)
            den = (_unshift_sum(np.broadcast_to(Wf.sum(axis=0)[:, None], (T * K, N)), T, K)
                   if Q is None else _unshift_sum(Wf.T @ Q, T, K))
            _apply_ratio(H, num, den, gamma)
            _stack_shifts(H, T, out=Hs)
            P_Q = terms()
        done = it
        if _record(losses, times, loss(P_Q), t0, tol):
            break

    W = _unflat(Wf, K)
    if update_W and update_H:
        norms = np.sqrt(np.sum(W.astype(np.float64) ** 2, axis=(1, 2))).astype(np.float32)
        ok = norms > 0
        W[ok] /= norms[ok][:, None, None]
        H[ok] *= norms[ok][:, None]
    H = H_given.copy() if not update_H else H * s32
    return NMFDResult(W=W.astype(np.float32, copy=False), H=H.astype(np.float32, copy=False),
                      loss=np.asarray(losses, dtype=np.float64) * scale**beta,
                      times_s=np.asarray(times, dtype=np.float64), n_iter=done)


def _init(V: np.ndarray, K: int, T: int, init: str, W, H, random_state) -> tuple[np.ndarray, np.ndarray]:
    """Flat templates (F, T·K) and H (K, N) on the internal scale (max V = 1)."""
    F, N = V.shape
    rng = np.random.default_rng(random_state)
    given_W, given_H = W is not None, H is not None
    if not given_W:
        if init == "nndsvda":
            start = beta_nmf(V, K, beta=2.0, n_iter=0, init="nndsvda", random_state=random_state)
            decay = np.exp(-np.arange(T, dtype=np.float32) / max(T / 2.0, 1.0))
            W = start.W.T[:, :, None] * (decay / decay.sum())[None, None, :]
            if not given_H:
                H = start.H
        else:
            W = rng.uniform(0.5, 1.5, (K, F, T))
    if H is None:
        H = rng.uniform(0.5, 1.5, (K, N))
    Wf = _flat(np.asarray(W, dtype=np.float32))
    H = np.ascontiguousarray(H, dtype=np.float32)
    if given_W and given_H:
        return Wf, H
    ratio = float(V.mean()) / max(float((Wf @ _stack_shifts(H, T)).mean()), 1e-30)
    if given_W:  # scale only what was not given, so that mean(Λ) = mean(V)
        return Wf, (H * np.float32(ratio)).astype(np.float32)
    if given_H:
        return (Wf * np.float32(ratio)).astype(np.float32), H
    gain = np.float32(np.sqrt(ratio))
    return (Wf * gain).astype(np.float32), (H * gain).astype(np.float32)


def iter_components(audio: np.ndarray, result: NMFDResult, *, spec: np.ndarray | None = None,
                    which: list[int] | None = None, power: float = 2.0,
                    hop_length: int | None = None):
    """Audio of each NMFD component by Wiener masks on the mixture's STFT, one at a time.

    The components' models Λ_k = Σ_τ W[k, :, τ] shift_τ(H[k]) go through the lab's one
    Wiener-mask resynthesis (:func:`unmixer.lab.nmf.masked_outputs`), so every output keeps
    the mixture's phase and the outputs sum to the clip.

    Parameters
    ----------
    audio : np.ndarray, shape=(channels, samples), the clip the factorisation came from
    result : NMFDResult, with n_frames those of ``stft(audio)``
    spec : np.ndarray, complex, shape=(channels, n_freq, n_frames), optional, its STFT
    which : list of int, optional, only these components (all still compete in the masks)
    power : float, mask exponent
    hop_length : int, samples, optional

    Returns
    -------
    iterator of np.ndarray, float32, shape=(channels, samples), one per component

    Raises
    ------
    UnmixerError
        If the model does not have the shape of the audio's STFT.
    """
    from unmixer.lab.nmf import _mixture_stft, masked_outputs

    audio, spec, hop = _mixture_stft(audio, spec, hop_length)
    K, F, T = result.W.shape
    if F != spec.shape[1] or result.H.shape[1] != spec.shape[2]:
        raise UnmixerError(f"templates {result.W.shape} and H {result.H.shape} do not match the "
                           f"STFT ({spec.shape[1]} bins x {spec.shape[2]} frames)")
    scale = np.float32(max(float(convolve(result.W, result.H).max()), 1e-30))
    W = result.W / scale
    outputs = list(range(K)) if which is None else [int(i) for i in which]
    if any(not 0 <= i < K for i in outputs):
        raise UnmixerError(f"which must index the {K} components, got {outputs}")
    return masked_outputs(lambda m: convolve(W[m], result.H[m]), [[k] for k in range(K)],
                          outputs, spec, audio.shape[-1], power=power, hop_length=hop)


__all__ = ["NMFDResult", "nmfd", "convolve", "iter_components", "MAX_FRAMES"]
