"""Separation and layout metrics.

BSS Eval (SDR/SIR/SAR) comes from fast_bss_eval (Scheibler, "SDR - medium rare with fast
computations", ICASSP 2022), which matches museval/mir_eval's bss_eval_sources with
a 512-tap distortion filter. SI-SDR follows Le Roux et al., "SDR - half-baked or well done?",
ICASSP 2019. Layout scores follow Smith & Goto, ICASSP 2018, §4: the loop map is scaled to
0-1 per loop, thresholded at 0.5 and compared with the true layout under the best
permutation of loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from unmixer.errors import UnmixerError


def _as_sources(x: np.ndarray) -> np.ndarray:
    """(K, samples) float64 from (K, samples) or (K, channels, samples) (channels averaged)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 3:
        x = x.mean(axis=1)
    if x.ndim == 1:
        x = x[None]
    return x


def si_sdr(reference: np.ndarray, estimate: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Scale-invariant SDR (dB) of each estimate against its reference.

    Parameters
    ----------
    reference, estimate : np.ndarray, shape=(K, samples) or (K, channels, samples)
        Channels, if any, are averaged first.

    Returns
    -------
    np.ndarray, shape=(K,), dB

    Source: Le Roux, Wisdom, Erdogan & Hershey, ICASSP 2019, eq. (2).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.standard_normal((1, 44100))
    >>> round(float(si_sdr(ref, 0.5 * ref + 0.1 * rng.standard_normal(ref.shape))[0]))  # 25/1 in power
    14
    """
    ref, est = _as_sources(reference), _as_sources(estimate)
    if ref.shape != est.shape:
        raise UnmixerError(f"reference {ref.shape} and estimate {est.shape} differ in shape")
    alpha = np.sum(est * ref, axis=-1, keepdims=True) / (np.sum(ref * ref, axis=-1, keepdims=True) + eps)
    target = alpha * ref
    noise = est - target
    return 10 * np.log10((np.sum(target**2, axis=-1) + eps) / (np.sum(noise**2, axis=-1) + eps))


def si_sdr_matrix(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """SI-SDR (dB) of every estimate against every reference, shape=(K_ref, K_est)."""
    ref, est = _as_sources(reference), _as_sources(estimate)
    out = np.empty((ref.shape[0], est.shape[0]))
    for i in range(ref.shape[0]):
        out[i] = si_sdr(np.repeat(ref[i : i + 1], est.shape[0], axis=0), est)
    return out


def match_sources(score: np.ndarray) -> np.ndarray:
    """Best one-to-one assignment of estimates to references.

    Parameters
    ----------
    score : np.ndarray, shape=(K_ref, K_est), higher is better

    Returns
    -------
    np.ndarray, shape=(K_ref,), int: the estimate matched to each reference, or -1 where
    there are fewer estimates than references.
    """
    rows, cols = linear_sum_assignment(-np.asarray(score))
    match = np.full(score.shape[0], -1, dtype=int)
    match[rows] = cols
    return match


@dataclass
class BssScores:
    """BSS Eval scores of matched sources (dB), each shape=(K_ref,), and the matching."""

    sdr: np.ndarray
    sir: np.ndarray
    sar: np.ndarray
    si_sdr: np.ndarray
    match: np.ndarray


def bss_eval(reference: np.ndarray, estimate: np.ndarray, *, match: np.ndarray | None = None,
             max_seconds: float | None = None, sr: int = 44100) -> BssScores:
    """SDR/SIR/SAR and SI-SDR (dB) of estimates against references, best permutation.

    Parameters
    ----------
    reference : np.ndarray, shape=(K_ref, samples) or (K_ref, channels, samples)
    estimate : np.ndarray, shape=(K_est, samples) or (K_est, channels, samples)
        K_est >= K_ref; the estimates that match no reference are ignored.
    match : np.ndarray, shape=(K_ref,), optional
        A given assignment; by default the one maximising the total SI-SDR.
    max_seconds : float, optional
        Evaluate only the first ``max_seconds`` s (BSS Eval is O(K^2 n log n)).

    Returns
    -------
    BssScores (dB, capped to ±100 dB: an estimate with no interference has SIR 100)

    Raises
    ------
    UnmixerError
        If there are fewer estimates than references or the lengths differ.

    Source: Vincent, Gribonval & Févotte, IEEE TASLP 2006 (bss_eval_sources), computed with
    fast_bss_eval; SI-SDR as in :func:`si_sdr`.
    """
    import fast_bss_eval

    ref, est = _as_sources(reference), _as_sources(estimate)
    if est.shape[0] < ref.shape[0]:
        raise UnmixerError(f"{est.shape[0]} estimates for {ref.shape[0]} references")
    if ref.shape[1] != est.shape[1]:
        raise UnmixerError(f"length mismatch: {ref.shape[1]} vs {est.shape[1]} samples")
    if max_seconds is not None:
        n = int(max_seconds * sr)
        ref, est = ref[:, :n], est[:, :n]
    if match is None:
        match = match_sources(si_sdr_matrix(ref, est))
    matched = est[match]
    # fast_bss_eval fails on exactly silent references; a tiny dither keeps it defined.
    rng = np.random.default_rng(0)
    ref_d = ref + 1e-9 * rng.standard_normal(ref.shape)
    est_d = matched + 1e-9 * rng.standard_normal(matched.shape)
    # The direct solver of fast_bss_eval 0.1.4 breaks on numpy 2 (np.linalg.solve with a
    # stacked vector); its conjugate-gradient solver does not and agrees to ~0.01 dB.
    sdr, sir, sar = fast_bss_eval.bss_eval_sources(ref_d, est_d, compute_permutation=False,
                                                   use_cg_iter=30)
    # An estimate with no interference at all has an infinite SIR: cap the scores at 100 dB.
    sdr, sir, sar = (np.clip(np.nan_to_num(np.asarray(x), posinf=100.0, neginf=-100.0), -100, 100)
                     for x in (sdr, sir, sar))
    return BssScores(sdr, sir, sar,
                     si_sdr(ref, matched), match)


@dataclass
class LayoutScores:
    """Loop-map scores: accuracy and F1 over all (loop, bar) cells, and the matching."""

    accuracy: float
    f1: float
    match: np.ndarray


def layout_scores(true_layout: np.ndarray, activations: np.ndarray,
                  threshold: float = 0.5) -> LayoutScores:
    """Compare an estimated loop map with the true layout, best permutation.

    Parameters
    ----------
    true_layout : np.ndarray, shape=(K_true, n_bars), 0/1: loop k plays in bar b
    activations : np.ndarray, shape=(K_est, n_bars), nonnegative loop map
        Each row is scaled to a maximum of 1 and thresholded at ``threshold``.

    Returns
    -------
    LayoutScores; estimates that match no true loop are ignored, true loops that match no
    estimate count as all-zero estimates.

    Source: Smith & Goto, ICASSP 2018, §4.
    """
    truth = np.asarray(true_layout) > 0.5
    act = np.asarray(activations, dtype=np.float64)
    n = min(truth.shape[1], act.shape[1])
    truth, act = truth[:, :n], act[:, :n]
    scaled = act / np.maximum(act.max(axis=1, keepdims=True), 1e-12)
    est = scaled >= threshold
    agree = (truth[:, None, :] == est[None, :, :]).mean(axis=-1)  # (K_true, K_est)
    match = match_sources(agree)
    est_m = np.zeros_like(truth)
    ok = match >= 0
    est_m[ok] = est[match[ok]]
    accuracy = float((est_m == truth).mean())
    tp = float(np.sum(est_m & truth))
    fp = float(np.sum(est_m & ~truth))
    fn = float(np.sum(~est_m & truth))
    f1 = 2 * tp / max(2 * tp + fp + fn, 1.0)
    return LayoutScores(accuracy, f1, match)


__all__ = ["si_sdr", "si_sdr_matrix", "match_sources", "bss_eval", "BssScores",
           "layout_scores", "LayoutScores"]


# ----------------------------------------------------------------------------- grouped SI-SDR

SI_SDR_CAP_DB = 60.0
"""Every SI-SDR in :func:`grouped_si_sdri` is clipped to ±60 dB: a perfect estimate (no
error at all) would score +∞, and 60 dB is below float32 rounding of real signals yet far
above any separation (the ideal ratio mask on real stems scores 5-25 dB)."""


@dataclass
class GroupedScore:
    """Grouped SI-SDR improvement of a separation (see :func:`grouped_si_sdri`).

    Attributes
    ----------
    score_db : float, the mean improvement over the groups, dB (0 for a single group)
    n_groups : int
    groups : list of (stem indices, track indices) tuples, one per group, ordered by their
        first stem
    per_group_db : np.ndarray, shape=(n_groups,), SI-SDR(reference, estimate) -
        SI-SDR(reference, mixture) of each group, dB
    estimate_db, mixture_db : np.ndarray, shape=(n_groups,), the two terms, dB
    """

    score_db: float
    n_groups: int
    groups: list[tuple[tuple[int, ...], tuple[int, ...]]]
    per_group_db: np.ndarray
    estimate_db: np.ndarray
    mixture_db: np.ndarray


def _flat_signals(x: np.ndarray, name: str, single: bool = False) -> np.ndarray:
    """(n_signals, channels · samples) float32 view of (n, channels, samples) or (n, samples)
    input (one signal, (channels, samples) or (samples,), when ``single``)."""
    from unmixer.errors import UnmixerError

    x = np.asarray(x)
    if single:
        x = x[None]
    if x.ndim not in (2, 3) or x.shape[0] == 0 or x.shape[-1] == 0:
        shape = "(channels, samples) or (samples,)" if single else "(n, channels, samples) or (n, samples)"
        raise UnmixerError(f"{name} must have shape {shape}, not {np.shape(x)[int(single):]}.")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise UnmixerError(f"{name} must hold finite numbers.")
    return x.reshape(x.shape[0], -1).astype(np.float32, copy=False)


def signal_gram(*signals: np.ndarray, block: int = 1 << 18) -> np.ndarray:
    """Inner products of every pair of signals, accumulated in float64 over blocks.

    Parameters
    ----------
    *signals : np.ndarray, each shape=(n_i, length), float32; all the same length
    block : int, samples per block (memory O(n · block))

    Returns
    -------
    np.ndarray, shape=(Σ n_i, Σ n_i), float64: G[i, j] = <x_i, x_j>
    """
    n = signals[0].shape[-1]
    total = sum(s.shape[0] for s in signals)
    gram = np.zeros((total, total))
    for a in range(0, n, block):
        x = np.concatenate([s[:, a:a + block] for s in signals]).astype(np.float64)
        gram += x @ x.T
    return gram


def _si_sdr_from_products(rr: np.ndarray, ee: np.ndarray, re: np.ndarray, cap_db: float) -> np.ndarray:
    """SI-SDR (dB) from <r, r>, <e, e> and <r, e>, clipped to ±cap_db.

    With α = <e, r> / <r, r>: target energy <r, e>² / <r, r>, error energy <e, e> minus it
    (Le Roux et al., ICASSP 2019, eq. 2).
    """
    target = re * re / np.maximum(rr, 1e-300)
    error = np.maximum(ee - target, 0.0)
    with np.errstate(divide="ignore"):
        db = 10 * (np.log10(target) - np.log10(error))
    return np.clip(np.nan_to_num(db, nan=-cap_db, posinf=cap_db, neginf=-cap_db), -cap_db, cap_db)


def grouped_si_sdri_from_gram(gram: np.ndarray, n_stems: int, n_tracks: int, *,
                              cap_db: float = SI_SDR_CAP_DB) -> GroupedScore:
    """:func:`grouped_si_sdri` from the inner products of [stems, tracks, mixture].

    Parameters
    ----------
    gram : np.ndarray, shape=(n_stems + n_tracks + 1,) * 2, float64: the Gram matrix of the
        stems, then the tracks, then the mixture (as :func:`signal_gram` gives it); lets long
        pieces be scored block by block without holding every signal
    n_stems, n_tracks : int

    Returns, raises and source: as :func:`grouped_si_sdri`.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from unmixer.errors import UnmixerError

    S, K = int(n_stems), int(n_tracks)
    gram = np.asarray(gram, dtype=np.float64)
    if S < 1 or K < 1 or gram.shape != (S + K + 1, S + K + 1):
        raise UnmixerError(f"The Gram matrix must be {(S + K + 1,) * 2} for {S} stems and {K} tracks, not {gram.shape}.")
    energy = np.diag(gram)
    scale = max(float(energy[-1]), 1e-300)
    if energy[-1] <= 0:
        raise UnmixerError("The mixture is silent.")
    silent = energy <= 1e-20 * scale
    if np.any(silent[:S]):
        raise UnmixerError(f"Stem {int(np.flatnonzero(silent[:S])[0])} is silent.")
    live = np.flatnonzero(~silent[S:S + K])  # silent tracks belong to no group
    if live.size == 0:
        raise UnmixerError("Every track is silent.")
    norm = np.sqrt(energy[:S + K])
    corr = gram[:S, S:S + K][:, live] / np.outer(norm[:S], norm[S + live])  # (S, K_live) cosine
    stem_to_track = live[np.argmax(corr, axis=1)]
    track_to_stem = np.argmax(corr, axis=0)
    edges_a = np.r_[np.arange(S), track_to_stem]
    edges_b = np.r_[S + stem_to_track, S + live]
    graph = coo_matrix((np.ones(edges_a.size), (edges_a, edges_b)), shape=(S + K, S + K))
    _, label = connected_components(graph, directed=False)
    stem_label = label[:S]
    order = list(dict.fromkeys(stem_label))  # groups in order of their first stem
    A = (stem_label[None, :] == np.array(order)[:, None]).astype(np.float64)  # (G, S)
    B = np.zeros((len(order), K))
    B[:, live] = label[S + live][None, :] == np.array(order)[:, None]  # (G, K)
    g_ss, g_tt, g_st, g_sm = gram[:S, :S], gram[S:S + K, S:S + K], gram[:S, S:S + K], gram[:S, -1]
    rr = np.einsum("gs,st,gt->g", A, g_ss, A)
    ee = np.einsum("gk,kl,gl->g", B, g_tt, B)
    re = np.einsum("gs,sk,gk->g", A, g_st, B)
    estimate_db = _si_sdr_from_products(rr, ee, re, cap_db)
    mixture_db = _si_sdr_from_products(rr, np.full_like(rr, gram[-1, -1]), A @ g_sm, cap_db)
    per_group = estimate_db - mixture_db
    groups = [(tuple(int(i) for i in np.flatnonzero(a)), tuple(int(k) for k in np.flatnonzero(b)))
              for a, b in zip(A, B)]
    score = 0.0 if len(groups) == 1 else float(per_group.mean())
    return GroupedScore(score, len(groups), groups, per_group, estimate_db, mixture_db)


def grouped_si_sdri(stems: np.ndarray, tracks: np.ndarray, mixture: np.ndarray, *,
                    cap_db: float = SI_SDR_CAP_DB) -> GroupedScore:
    """Grouped SI-SDR improvement: separation scored on the groups of sources it tells apart.

    A loop may rightly hold several instruments that always play together, so estimates are
    not matched one to one. Each stem is linked to the track it correlates with most, and
    each track to the stem it correlates with most (normalised inner product of the whole
    signals, channels concatenated). Every connected component of that bipartite graph is a
    group: its stems summed are the reference r, its tracks summed the estimate e. The score
    is the mean over the groups of SI-SDR(r, e) − SI-SDR(r, mixture); a single group (nothing
    separated) scores 0. Each SI-SDR is taken over the channels concatenated (one scale for
    both) and clipped to ±``cap_db``, so the stems themselves as tracks score the ideal
    mean over stems of (cap_db − SI-SDR(stem, mixture)), one group per stem.

    Parameters
    ----------
    stems : np.ndarray, shape=(n_stems, channels, samples) or (n_stems, samples), the true
        sources, none silent
    tracks : np.ndarray, shape=(n_tracks, channels, samples) or (n_tracks, samples), the
        estimates (silent ones belong to no group); need not sum to the mixture
    mixture : np.ndarray, shape=(channels, samples) or (samples,)
    cap_db : float, the clip of every SI-SDR, dB (:data:`SI_SDR_CAP_DB`)

    Returns
    -------
    GroupedScore (dB)

    Raises
    ------
    UnmixerError
        If the shapes disagree, a value is not finite, a stem or the mixture is silent, or
        every track is.

    Source: SI-SDR: Le Roux, Wisdom, Erdogan & Hershey, "SDR - half-baked or well done?",
    ICASSP 2019; the grouping: issue 14 of this project.
    """
    from unmixer.errors import UnmixerError

    s = _flat_signals(stems, "stems")
    t = _flat_signals(tracks, "tracks")
    m = _flat_signals(mixture, "mixture", single=True)
    if not (s.shape[1] == t.shape[1] == m.shape[1]) or np.ndim(stems) != np.ndim(tracks) \
            or np.shape(stems)[1:] != np.shape(mixture):
        raise UnmixerError(f"stems {np.shape(stems)}, tracks {np.shape(tracks)} and mixture "
                           f"{np.shape(mixture)} must share their channels and samples.")
    return grouped_si_sdri_from_gram(signal_gram(s, t, m), s.shape[0], t.shape[0], cap_db=cap_db)


__all__ += ["GroupedScore", "SI_SDR_CAP_DB", "grouped_si_sdri", "grouped_si_sdri_from_gram", "signal_gram"]
