"""BSS Eval of long signals with many sources in bounded memory (for bench/quality.py).

:func:`bss_eval_blocks` equals :func:`unmixer.core.metrics.bss_eval` (fast_bss_eval) up to
rounding; it accumulates fast_bss_eval's correlation statistics over time blocks, then uses
its public conjugate-gradient solvers (``fast_bss_eval.numpy.cgd``).
"""

from __future__ import annotations

import numpy as np

from unmixer.core.metrics import BssScores, _as_sources, match_sources, si_sdr, si_sdr_matrix
from unmixer.errors import UnmixerError


def _block_correlations(ref: np.ndarray, est: np.ndarray, lags: int, block: int,
                        pairwise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """BSS Eval statistics accumulated over time blocks (memory O(K² · block)).

    Returns
    -------
    acf : np.ndarray, shape=(2 lags, K_ref, K_ref): a[l, c, d] = Σ_t ref_c[t + l] ref_d[t] for
        l = 0 .. lags-1, then l = -lags .. -1 (the layout of fast_bss_eval's ``compute_stats_2``);
        with ``pairwise=False`` only c = d, shape=(2 lags, K)
    xcorr : np.ndarray, shape=(lags, K_ref, K_est): x[l, c, d] = Σ_t ref_c[t] est_d[t + l];
        with ``pairwise=False`` only c = d, shape=(lags, K)
    """
    k_ref, n = ref.shape
    n_fft = 1 << int(np.ceil(np.log2(block + lags + 1)))
    pos = np.zeros((lags + 1, k_ref, k_ref) if pairwise else (lags + 1, k_ref))
    xcorr = np.zeros((lags, k_ref, est.shape[0]) if pairwise else (lags, k_ref))
    for a in range(0, n, block):
        head = ref[:, a:a + block]
        ref_ext, est_ext = ref[:, a:a + block + lags + 1], est[:, a:a + block + lags + 1]
        H = np.fft.rfft(head, n=n_fft, axis=-1).conj()
        R = np.fft.rfft(ref_ext, n=n_fft, axis=-1)
        E = np.fft.rfft(est_ext, n=n_fft, axis=-1)
        if pairwise:  # Σ_{t in block} head_d[t] ref_c[t + l] -> index (l, c, d)
            pos += np.fft.irfft(np.einsum("dn,cn->ncd", H, R), n=n_fft, axis=0)[: lags + 1]
            xcorr += np.fft.irfft(np.einsum("cn,dn->ncd", H, E), n=n_fft, axis=0)[:lags]
        else:
            pos += np.fft.irfft(H * R, n=n_fft, axis=-1)[:, : lags + 1].T
            xcorr += np.fft.irfft(H * E, n=n_fft, axis=-1)[:, :lags].T
    if not pairwise:
        return np.concatenate([pos[:lags], pos[lags:0:-1]], axis=0), xcorr
    # negative lag -m: Σ_t ref_c[t - m] ref_d[t] = Σ_u ref_d[u + m] ref_c[u] = pos[m, d, c]
    neg = pos[lags:0:-1].transpose(0, 2, 1)  # lags -lags .. -1
    return np.concatenate([pos[:lags], neg], axis=0), xcorr


def bss_eval_blocks(reference: np.ndarray, estimate: np.ndarray, *, match: np.ndarray | None = None,
                    filter_length: int = 512, block: int = 1 << 16, cg_iter: int = 30,
                    sir_sar: bool = True) -> BssScores:
    """:func:`bss_eval` for long signals and many sources, in bounded memory.

    fast_bss_eval computes its correlation statistics with one FFT over the whole signal and
    all K² source pairs at once (about 16 · K² · 2n bytes: 7 GB for 10 sources of 64 s); here
    the same statistics are summed over time blocks, then fast_bss_eval's own conjugate-
    gradient solvers give the distortion filters. The result equals :func:`bss_eval` up to
    floating-point rounding.

    Parameters
    ----------
    reference : np.ndarray, shape=(K_ref, samples) or (K_ref, channels, samples)
    estimate : np.ndarray, shape=(K_est, samples) or (K_est, channels, samples), K_est >= K_ref
    match : np.ndarray, shape=(K_ref,), optional; default: the assignment maximising SI-SDR
    filter_length : int, taps of the allowed distortion filter (512 as in BSS Eval v3)
    block : int, samples per block
    cg_iter : int, conjugate-gradient iterations (as ``use_cg_iter`` of fast_bss_eval)
    sir_sar : bool
        False: only the SDR (and SI-SDR), from each reference with its own estimate (K
        correlations instead of K²); SIR and SAR are then NaN.

    Returns
    -------
    BssScores, as :func:`bss_eval` (which also lists the UnmixerError raised on bad shapes)

    Source: Vincent, Gribonval & Févotte, IEEE TASLP 2006; Scheibler, ICASSP 2022.
    """
    from fast_bss_eval.numpy.cgd import block_toeplitz_conjugate_gradient, toeplitz_conjugate_gradient

    ref, est = _as_sources(reference), _as_sources(estimate)
    if est.shape[0] < ref.shape[0]:
        raise UnmixerError(f"{est.shape[0]} estimates for {ref.shape[0]} references")
    if ref.shape[1] != est.shape[1]:
        raise UnmixerError(f"length mismatch: {ref.shape[1]} vs {est.shape[1]} samples")
    if match is None:
        match = match_sources(si_sdr_matrix(ref, est))
    matched = est[match]
    rng = np.random.default_rng(0)  # the same dither as bss_eval
    ref_d = ref + 1e-9 * rng.standard_normal(ref.shape)
    est_d = matched + 1e-9 * rng.standard_normal(matched.shape)
    ref_d /= np.maximum(np.linalg.norm(ref_d, axis=-1, keepdims=True), 1e-6)
    est_d /= np.maximum(np.linalg.norm(est_d, axis=-1, keepdims=True), 1e-6)
    L = int(filter_length)
    acf, xcorr = _block_correlations(ref_d, est_d, L, int(block), pairwise=sir_sar)
    if not sir_sar:
        sol = toeplitz_conjugate_gradient(acf.T[:, :L], xcorr.T, n_iter=cg_iter)
        coh = np.clip(np.einsum("kl,kl->k", xcorr.T, sol), 0.0, 1.0)
        nan = np.full(len(coh), np.nan)
        return BssScores(_coherence_db(np.minimum(coh, 1 - 1e-16)), nan, nan,
                         si_sdr(ref, matched), match)
    diag = np.arange(ref.shape[0])
    acf_sdr = acf[:, diag, diag].T[:, :L]  # (K, L)
    xcorr_sdr = xcorr[:, diag, diag].T  # (K, L)
    sol = toeplitz_conjugate_gradient(acf_sdr, xcorr_sdr, n_iter=cg_iter)
    coh_sdr = np.einsum("kl,kl->k", xcorr_sdr, sol)
    xc = xcorr.reshape(-1, xcorr.shape[-1])  # (L · K_ref, K_est)
    sol = block_toeplitz_conjugate_gradient(acf, xc, n_iter=cg_iter)
    coh_sar = np.einsum("lc,lc->c", xc, sol)
    sdr, sir, sar = (_coherence_db(c) for c in (coh_sdr, coh_sdr / coh_sar, coh_sar))
    return BssScores(sdr, sir, sar, si_sdr(ref, matched), match)


def _coherence_db(coh: np.ndarray) -> np.ndarray:
    """BSS Eval's ratio in dB from a squared cosine: 10 log10(c / (1 − c)) (fast_bss_eval's
    SDR mapping, Scheibler ICASSP 2022, eq. 4; no clamping, as with its ``clamp_db=None``)."""
    coh = np.asarray(coh, dtype=np.float64)
    return 10 * np.log10(coh / (1 - coh))


