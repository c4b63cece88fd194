"""Variants of Unmixer's loop extraction, composed from the engine's building blocks.

Used by ``bench/quality.py levers`` to measure candidate improvements one at a time without
touching the engine. With default :class:`Options` the composition is exactly
``unmixer.loops.pipeline.extract_loops`` given known downbeats (checked by ``quality.py check``).

Levers (each an :class:`Options` field):

* ``mask_power``: exponent of the Wiener masks (α-Wiener, Liutkus & Badeau, ICASSP 2015);
* ``kl_iter``: multiplicative-update iterations of a Kullback-Leibler NTD started from the
  Euclidean HALS solution (β-divergence NTD, Marmoret et al., ISMIR 2020 / Kim & Choi,
  CVPR 2007 for the updates);
* ``purify_beta``: β of the core-purification NMF (2: Euclidean as in the engine, 1: KL);
* ``merge``: purify to K + merge loops, then merge the pairs whose activations agree most
  (duplicate loops: one loop split into two parts) until K remain;
* ``hpss``: the cube is built from the harmonic and the percussive magnitude spectrograms
  (median-filtering HPSS, Fitzgerald DAFx 2010) stacked along frequency, so sound
  templates are either harmonic or percussive; a loop's model is the sum of its two halves;
* ``refine_iter``: full-resolution loop templates. After purification each loop's template
  is the low-rank W G′_k Hᵀ; here the unfolded cube X_(3) (n_segments, n_freq·n_steps) is
  refit as D′ P with P (K, n_freq·n_steps) free (every cell its own value), started from
  the NTD's templates and activations, by β-NMF multiplicative updates (``refine_beta``;
  ``refine_activations=False`` keeps D′ fixed): the average spectrogram of each loop where
  it plays, rather than its low-rank sketch;
* ``oracle_layout`` (a ceiling, not a lever): the true layout as the loop activations, each
  loop's template fitted to it as with ``refine_iter`` (D′ fixed): what the loop model
  separates once the activations are right;
* ``seed``: the seed of the NTD's randomized SVD start and of the purification (its spread
  is the noise level of a lever);
* ``layout_rounds``: binary activations (:func:`bench.layout.fit_layout`): each loop on
  or off in each segment, alternated with full-resolution templates (``layout_iter``
  multiplicative updates per round, ``layout_beta``; ``layout_gains``: a level per
  segment where the loop is on);
* ``starts``: NTDs from that many seeds (0 .. starts − 1), keeping the one whose loop model
  (after purification, and after the layout fit when there is one) fits the cube best
  (``select="error"``) or whose activations are the most on/off (``select="binary"``,
  :func:`activation_ambiguity`);
* ``rough_starts``: that many 10-iteration NTDs (seeds 0 ..), the one with the most on/off
  purified activations continued to ``n_iter`` (a multi-start on the rough pass only);
* ``loop_rank``: the NTD's loop rank r3 as a multiple of K (0: the engine's K + 2), purified to K;
* ``bar_phase`` (estimated downbeats only): the bar grid chosen by
  :func:`unmixer.loops.bargrid.search_grid` from the tracker's grid, at the given loop length;
* ``bar_choice``: which segment becomes each loop's clip ("dm": activation × mask share as
  in the engine; "argmax": the largest activation, as loopextractor; "share": the largest
  mask share among segments where the loop plays at ≥ half its peak; "dm2": activation ×
  share²).

Loop length and loop count selection from data are functions of their own
(:func:`choose_loop_bars`, :func:`auto_loop_count`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from bench.baselines import Separation
from bench.layout import fit_layout
from unmixer.core.audio import SAMPLE_RATE
from unmixer.core.spectrum import istft, stft
from unmixer.errors import UnmixerError
from unmixer.loops.beats import grid_from_downbeats
from unmixer.loops.cube import make_grid, segment_boundaries_s, spectral_cube
from unmixer.loops.masks import (
    choose_segments,
    cut_loop,
    frame_models,
    loop_templates,
    mask_shares,
    segment_map_to_bars,
)
from unmixer.loops.ntd import (
    NTDResult,
    loop_ranks,
    ntd_hals,
    purify_core,
    refine_loop_tails,
    refine_loop_templates,
)


@dataclass(frozen=True)
class Options:
    """One configuration of the composed pipeline (defaults: the engine's)."""

    mask_power: float = 2.0
    kl_iter: int = 0
    purify_beta: float = 2.0
    merge: int = 0
    merge_by: str = "act"
    hpss: bool = False
    bar_choice: str = "dm"
    refine_iter: int = 0
    refine_beta: float = 2.0
    refine_activations: bool = True
    oracle_layout: bool = False
    n_iter: int = 100
    core_l1: float = 0.3
    core_sparsity: float = 6.0
    seed: int = 0
    layout_rounds: int = 0
    layout_iter: int = 30
    layout_beta: float = 2.0
    layout_gains: bool = False
    starts: int = 1
    bar_phase: bool = False
    loop_rank: int = 0
    select: str = "error"
    rough_starts: int = 0
    tails: bool = False
    purify_starts: int = 1

    def ntd_key(self) -> dict:
        """The fields the NTD depends on (for caching the model)."""
        return {"kl_iter": self.kl_iter, "hpss": self.hpss, "n_iter": self.n_iter,
                "core_l1": self.core_l1, **({"seed": self.seed} if self.seed else {}),
                **({"bar_phase": 2} if self.bar_phase else {}),
                **({"loop_rank": self.loop_rank} if self.loop_rank else {}),
                **({"rough_starts": self.rough_starts} if self.rough_starts else {})}

    def changed(self) -> dict:
        """The fields that differ from the defaults."""
        base = asdict(Options())
        return {k: v for k, v in asdict(self).items() if base[k] != v}


@dataclass
class Prepared:
    """The song cut into its cube."""

    cube: np.ndarray
    grid: object
    boundaries: np.ndarray
    mix_spec: np.ndarray
    n_bars: int
    n_freq: int


def prepare(mix: np.ndarray, downbeats_s: np.ndarray, meter: int, loop_bars: int,
            hpss: bool = False, sr: int = SAMPLE_RATE) -> Prepared:
    """The bar-synchronous cube of a song, as in ``extract_loops`` (optionally HPSS-stacked)."""
    grid_beats = grid_from_downbeats(downbeats_s, meter)
    boundaries = segment_boundaries_s(grid_beats.downbeats_s, loop_bars)
    mix_spec = stft(mix)
    magnitude = np.abs(mix_spec).mean(axis=0)
    grid = make_grid(boundaries, sr)
    if hpss:
        import librosa

        harmonic, percussive = librosa.decompose.hpss(magnitude, kernel_size=31)
        cube = np.concatenate([spectral_cube(harmonic, grid), spectral_cube(percussive, grid)], axis=0)
    else:
        cube = spectral_cube(magnitude, grid)
    cube /= float(cube.max())
    return Prepared(cube, grid, boundaries, mix_spec, grid_beats.n_bars, magnitude.shape[0])


# ----------------------------------------------------------------------------- KL NTD

def _normalise_model(G, W, H, D):
    """Unit-L2 sound and rhythm templates, max-normalised loop templates; scale into the core."""
    for mode, kind in ((0, "l2"), (1, "l2"), (2, "max")):
        A = (W, H, D)[mode]
        n = A.max(axis=0) if kind == "max" else np.sqrt((A * A).sum(axis=0))
        n = np.where(n > 0, n, 1).astype(A.dtype)
        A /= n
        shape = [1, 1, 1]
        shape[mode] = -1
        G *= n.reshape(shape)
    return G, W, H, D


def ntd_kl(X: np.ndarray, start: NTDResult, n_iter: int, eps: float = 1e-12) -> NTDResult:
    """Refine an NTD under the Kullback-Leibler divergence with multiplicative updates.

    Each factor A of mode n: A ← A ⊙ [(X / X̂)_(n) M] / [1_(n) M], M the unfolded product of
    the core with the other factors; the core: G ← G ⊙ [(X / X̂) ×₁ Wᵀ ×₂ Hᵀ ×₃ Dᵀ] /
    [1 ×₁ Wᵀ ×₂ Hᵀ ×₃ Dᵀ]. X̂ is rebuilt before every update (4 per iteration).

    Parameters
    ----------
    X : np.ndarray, shape=(n_freq, n_steps, n_segments), nonnegative
    start : NTDResult, the starting point (e.g. the Euclidean HALS solution)
    n_iter : int

    Returns
    -------
    NTDResult with the engine's normalisation (unit-L2 W and H, max-normalised D).

    Source: Kim & Choi, CVPR 2007 (NTD multiplicative updates); Févotte & Idier, Neural
    Computation 2011 (β = 1); Marmoret, Cohen, Bertin & Bimbot, ISMIR 2020 (β-NTD of music).
    """
    G = np.array(start.core, dtype=np.float32)
    W, H, D = (np.array(f, dtype=np.float32) for f in start.factors)
    X = np.asarray(X, dtype=np.float32)
    eps = np.float32(eps)
    for _ in range(n_iter):
        Y = np.einsum("abc,tb,sc->ats", G, H, D, optimize=True)  # (R1, T, S)
        Q = X / (np.tensordot(W, Y, 1) + eps)
        W *= np.tensordot(Q, Y, axes=([1, 2], [1, 2])) / (Y.sum(axis=(1, 2))[None] + eps)
        Y = np.einsum("abc,fa,sc->fbs", G, W, D, optimize=True)  # (F, R2, S)
        Q = X / (np.einsum("fbs,tb->fts", Y, H, optimize=True) + eps)
        H *= np.einsum("fts,fbs->tb", Q, Y, optimize=True) / (Y.sum(axis=(0, 2))[None] + eps)
        Y = np.einsum("abc,fa,tb->ftc", G, W, H, optimize=True)  # (F, T, R3)
        Q = X / (np.tensordot(Y, D.T, 1) + eps)
        D *= np.einsum("fts,ftc->sc", Q, Y, optimize=True) / (Y.sum(axis=(0, 1))[None] + eps)
        Q = X / (np.einsum("abc,fa,tb,sc->fts", G, W, H, D, optimize=True) + eps)
        num = np.einsum("fts,fa,tb,sc->abc", Q, W, H, D, optimize=True)
        den = np.einsum("a,b,c->abc", W.sum(0), H.sum(0), D.sum(0))
        G *= num / (den + eps)
        G, W, H, D = _normalise_model(G, W, H, D)
    return NTDResult(G, [W, H, D], list(start.errors), list(start.times_s), start.n_iter + n_iter)


def fit_ntd(prep: Prepared, n_loops: int, opts: Options, seed: int = 0,
            ranks_loops: int | None = None) -> NTDResult:
    """The engine's NTD (HALS, ranks of :func:`unmixer.loops.ntd.loop_ranks`), then optional KL refinement."""
    ranks = loop_ranks(prep.cube.shape, ranks_loops or n_loops)
    if opts.loop_rank:
        ranks = (ranks[0], ranks[1], min(opts.loop_rank * n_loops, prep.cube.shape[2]))
    if opts.rough_starts:  # 10 iterations from each seed, continue the most on/off one
        rough = [ntd_hals(prep.cube, ranks, n_iter=10, tol=1e-4, init="svd", seed=s, core_l1=opts.core_l1)
                 for s in range(opts.rough_starts)]
        model = most_binary_start(rough, n_loops, sparsity=opts.core_sparsity, seed=seed)
        if model.n_iter == 10:
            model = ntd_hals(prep.cube, ranks, n_iter=opts.n_iter - 10, tol=1e-4, init=model,
                             core_l1=opts.core_l1)
    else:
        model = ntd_hals(prep.cube, ranks, n_iter=opts.n_iter, tol=1e-4, init="svd", seed=seed,
                         core_l1=opts.core_l1)
    if opts.kl_iter:
        model = ntd_kl(prep.cube, model, opts.kl_iter)
    return model


# ----------------------------------------------------------------------------- purification

def purify(model: NTDResult, n_loops: int, opts: Options, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Core purification to ``n_loops`` loops; β = 2 is the engine's :func:`purify_core`.

    With another β the same sparse NMF of the unfolded core G_(3) runs under that divergence.
    Returns (core (r1, r2, K), activations (n_segments, K)).
    """
    if opts.purify_beta == 2.0:
        return purify_core(model, n_loops, sparsity=opts.core_sparsity, seed=seed,
                           n_starts=opts.purify_starts)
    from unmixer.lab.nmf import beta_nmf

    core = np.asarray(model.core, dtype=np.float32)
    D = np.asarray(model.factors[2], dtype=np.float32)
    r1, r2, r3 = core.shape
    unfolded = np.ascontiguousarray(np.moveaxis(core, 2, 0).reshape(r3, r1 * r2))
    scale = float(unfolded.mean()) or 1.0
    fit = beta_nmf(unfolded / scale, n_loops, beta=opts.purify_beta, n_iter=300, init="nndsvda",
                   l1_H=opts.core_sparsity, random_state=seed)
    new_core = np.moveaxis((fit.H * scale).astype(np.float32).reshape(n_loops, r1, r2), 0, 2)
    return np.ascontiguousarray(new_core), (D @ fit.W.astype(np.float32))


def merge_groups(templates: np.ndarray, activations: np.ndarray, n_loops: int,
                 by: str = "act") -> list[list[int]]:
    """Greedily merge loops whose activations agree most until ``n_loops`` groups remain.

    A group's activation is the energy-weighted sum of its members' (template energy ×
    activation); similarity is the cosine of two groups' activations ("act"), times the
    cosine of their templates' spectra ("act*spec", 1 minus it: parts of one loop sound
    different, so a low spectral similarity favours merging).
    """
    energy = np.sqrt((templates.astype(np.float64) ** 2).sum(axis=(1, 2)))
    acts = activations.T.astype(np.float64) * energy[:, None]  # (L, S)
    spectra = templates.sum(axis=2).astype(np.float64)  # (L, F)
    groups = [[k] for k in range(len(acts))]
    while len(groups) > n_loops:
        ga = np.stack([acts[g].sum(axis=0) for g in groups])
        ga /= np.maximum(np.linalg.norm(ga, axis=1, keepdims=True), 1e-30)
        sim = ga @ ga.T
        if by == "act*spec":
            gs = np.stack([spectra[g].sum(axis=0) for g in groups])
            gs /= np.maximum(np.linalg.norm(gs, axis=1, keepdims=True), 1e-30)
            sim = sim * (1.0 - 0.5 * (gs @ gs.T))
        np.fill_diagonal(sim, -np.inf)
        i, j = np.unravel_index(np.argmax(sim), sim.shape)
        groups[min(i, j)] += groups[max(i, j)]
        del groups[max(i, j)]
    return groups


def refine_templates(cube: np.ndarray, templates: np.ndarray, activations: np.ndarray,
                     opts: Options) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution templates: X_(3) ≈ D′ P by β-NMF started from the NTD's (D′, P).

    With ``opts.refine_activations=False`` this is :func:`unmixer.loops.ntd.refine_loop_templates`;
    otherwise D′ is refitted too. Returns (templates (K, F, T), activations (S, K)), float32.

    Source: multiplicative β-NMF updates (Févotte & Idier, Neural Computation 2011), i.e.
    NMF of the segment-unfolded cube (Smith & Goto, ICASSP 2018, §2) started from the NTD.
    """
    from unmixer.lab.nmf import beta_nmf

    if not opts.refine_activations:
        return refine_loop_templates(cube, templates, activations, n_iter=opts.refine_iter,
                                     beta=opts.refine_beta), activations
    K, F, T = templates.shape
    V = cube.reshape(F * T, cube.shape[2]).T  # (S, F·T)
    W0 = np.maximum(activations, 1e-6).astype(np.float32)
    H0 = np.maximum(templates.reshape(K, F * T), 1e-9 * float(templates.max())).astype(np.float32)
    fit = beta_nmf(V, K, beta=opts.refine_beta, n_iter=opts.refine_iter, W=W0, H=H0,
                   tol=0.0, loss_every=opts.refine_iter)
    return fit.H.reshape(K, F, T).astype(np.float32), fit.W.astype(np.float32)


# ----------------------------------------------------------------------------- tracks and clips

def model_tracks(prep: Prepared, templates: np.ndarray, activations: np.ndarray,
                 groups: list[list[int]], power: float, length: int,
                 tails: np.ndarray | None = None) -> np.ndarray:
    """Wiener-mask tracks of groups of loop models (one group per loop: the engine's tracks)."""
    n_frames = prep.mix_spec.shape[-1]
    model = frame_models(templates, activations, prep.grid, n_frames, tails)
    scale = max(float(templates.max()) * float(activations.max()), 1e-30)
    L = templates.shape[0]
    denom = np.zeros(prep.mix_spec.shape[1:], dtype=np.float32)
    for k in range(L):
        denom += (model(k) / scale) ** power
    eps = np.float32(1e-9)
    denom += eps
    tracks = np.empty((len(groups), prep.mix_spec.shape[0], length), dtype=np.float32)
    for g, members in enumerate(groups):
        mask = sum(((model(k) / scale) ** power + eps / L) for k in members) / denom
        tracks[g] = istft(prep.mix_spec * mask[None], length)
    return tracks


def choose_bars(templates: np.ndarray, activations: np.ndarray, cube: np.ndarray,
                groups: list[list[int]], power: float, how: str) -> np.ndarray:
    """The clip segment of every group, by the rule ``how`` (see the module docstring)."""
    share = mask_shares(templates, activations, cube, power)  # (S, L)
    energy = np.sqrt((templates.astype(np.float64) ** 2).sum(axis=(1, 2)))
    act = np.stack([(activations[:, g] * energy[g]).sum(axis=1) for g in groups], axis=1)
    act = act / np.maximum(act.max(axis=0, keepdims=True), 1e-30)
    sh = np.stack([share[:, g].sum(axis=1) for g in groups], axis=1)
    if how == "argmax":
        score = act
    elif how == "dm":
        score = act * sh
    elif how == "dm2":
        score = act * sh**2
    elif how == "share":
        score = np.where(act >= 0.5, sh, -1.0)
    else:
        raise ValueError(f"unknown bar choice {how!r}")
    return np.argmax(score, axis=0)


def loop_model(prep: Prepared, model: NTDResult, n_loops: int, opts: Options,
               seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Purified templates (K, F, T) and activations (S, K) of one NTD, optionally refitted as a
    binary layout, and their relative error ‖X_(3) − D′ P‖ / ‖X‖ on the cube."""
    core, activations = purify(model, n_loops + opts.merge, opts, seed)
    sound, rhythm = (np.asarray(f, dtype=np.float32) for f in model.factors[:2])
    templates = loop_templates(core, sound, rhythm)
    ambiguity = activation_ambiguity(activations)
    if opts.layout_rounds:
        templates, activations, err = fit_layout(
            prep.cube, templates, activations, n_rounds=opts.layout_rounds,
            template_iter=opts.layout_iter, beta=opts.layout_beta, gains=opts.layout_gains)
    else:
        K = templates.shape[0]
        X = prep.cube.reshape(-1, prep.cube.shape[2]).T
        err = float(np.linalg.norm(X - activations @ templates.reshape(K, -1)) / np.linalg.norm(X))
    return templates, activations, (ambiguity if opts.select == "binary" else err)


def run_variant(mix: np.ndarray, n_loops: int, downbeats_s: np.ndarray, meter: int,
                loop_bars: int, opts: Options = Options(), *, seed: int = 0,
                model: NTDResult | list[NTDResult] | None = None, prep: Prepared | None = None,
                layout: np.ndarray | None = None, sr: int = SAMPLE_RATE) -> tuple[Separation, NTDResult]:
    """Loops of a song with the options' levers; returns (separation, the NTD model used).

    ``model`` (and ``prep``) may be given to skip the NTD (cached runs), a list of models
    for ``starts``; ``layout`` (K, n_bars), the true layout, is needed by ``oracle_layout``.
    """
    seed = opts.seed or seed
    length = mix.shape[-1]
    if prep is None:
        prep = prepare(mix, downbeats_s, meter, loop_bars, opts.hpss, sr)
    if model is None:
        model = [fit_ntd(prep, n_loops, opts, seed + s) for s in range(opts.starts)]
    models = model if isinstance(model, list) else [model]
    best = None
    for i, m in enumerate(models):
        fitted = loop_model(prep, m, n_loops, opts, seed + i if len(models) > 1 else seed)
        if best is None or fitted[2] < best[2]:
            best, model = fitted, m
    templates, activations, _ = best
    tails = None
    if opts.oracle_layout:
        S = prep.cube.shape[2]
        activations = np.ascontiguousarray(layout[:, ::loop_bars][:, :S].T, dtype=np.float32)
        templates, activations = refine_templates(prep.cube, templates, activations,
                                                  Options(refine_iter=100, refine_activations=False))
    elif opts.tails:
        templates, tails = refine_loop_tails(prep.cube, templates, activations, n_iter=opts.refine_iter)
    elif opts.refine_iter:
        templates, activations = refine_templates(prep.cube, templates, activations, opts)
    cube = prep.cube
    if opts.hpss:  # the loop's model is the sum of its harmonic and percussive halves
        F = prep.n_freq
        templates = templates[:, :F] + templates[:, F:]
        cube = cube[:F] + cube[F:]
    if opts.merge:
        groups = merge_groups(templates, activations, n_loops, opts.merge_by)
    else:
        groups = [[k] for k in range(n_loops)]
    if opts.bar_choice == "dm" and not opts.merge:
        chosen = choose_segments(templates, activations, cube, opts.mask_power, tails)
    else:
        chosen = choose_bars(templates, activations, cube, groups, opts.mask_power, opts.bar_choice)
    tracks = model_tracks(prep, templates, activations, groups, opts.mask_power, length, tails)
    energy = np.sqrt((templates.astype(np.float64) ** 2).sum(axis=(1, 2)))
    group_act = np.stack([(activations[:, g] * energy[g]).sum(axis=1) for g in groups], axis=1)
    loop_map = segment_map_to_bars(group_act, loop_bars, prep.n_bars)
    starts = np.round(prep.boundaries * sr).astype(np.int64)
    spans = np.stack([starts[chosen], starts[chosen + 1]], axis=1)
    clips = [cut_loop(tracks[k], int(a), int(b)) for k, (a, b) in enumerate(spans)]
    return Separation(tracks, loop_map, clips, spans), model


# ----------------------------------------------------------------------------- model selection

def bar_similarity(mix: np.ndarray, downbeats_s: np.ndarray, meter: int, lags=(1, 2, 4),
                   sr: int = SAMPLE_RATE) -> dict[int, float]:
    """Mean cosine similarity of each bar's spectrogram with the bar ``lag`` bars later.

    Bars are resampled to the same number of steps (the 1-bar cube); a pattern of L bars
    makes lag L (and its multiples) more similar than shorter lags.
    """
    prep = prepare(mix, downbeats_s, meter, 1, sr=sr)
    bars = np.log1p(100 * prep.cube).reshape(-1, prep.cube.shape[-1]).T  # (n_bars, F·T)
    bars = bars / np.maximum(np.linalg.norm(bars, axis=1, keepdims=True), 1e-30)
    out = {}
    for lag in lags:
        if lag < len(bars):
            out[lag] = float(np.mean(np.sum(bars[:-lag] * bars[lag:], axis=1)))
    return out


def choose_loop_bars(mix: np.ndarray, downbeats_s: np.ndarray, meter: int, margin: float = 0.02,
                     sr: int = SAMPLE_RATE) -> tuple[int, dict[int, float]]:
    """The loop length (1, 2 or 4 bars) from the bar similarity at lags 1, 2, 4.

    The longer length is taken only if its lag is more similar than the shorter one's by
    ``margin``: a 2-bar pattern raises lag 2 above lag 1, a 4-bar pattern lag 4 above lag 2.
    """
    sim = bar_similarity(mix, downbeats_s, meter, sr=sr)
    n_bars = len(downbeats_s) - 1
    L = 1
    for longer in (2, 4):
        if longer in sim and n_bars // longer >= 4 and sim[longer] > sim[L] + margin:
            L = longer
    return L, sim


def auto_loop_count(model: NTDResult, max_loops: int, threshold: float = 0.9,
                    seed: int = 0) -> int:
    """The loop count from the data: purify to ``max_loops`` loops, then merge the pairs whose
    energy-weighted activations have a cosine similarity above ``threshold``; the groups left
    are the loops."""
    core, activations = purify_core(model, max_loops, seed=seed)
    sound, rhythm = (np.asarray(f, dtype=np.float32) for f in model.factors[:2])
    templates = loop_templates(core, sound, rhythm)
    energy = np.sqrt((templates.astype(np.float64) ** 2).sum(axis=(1, 2)))
    keep = energy > 1e-3 * energy.max()  # loops the purification left empty do not count
    acts = activations.T[keep].astype(np.float64) * energy[keep, None]
    groups = [a for a in acts]
    while len(groups) > 1:
        ga = np.stack(groups)
        ga = ga / np.maximum(np.linalg.norm(ga, axis=1, keepdims=True), 1e-30)
        sim = ga @ ga.T
        np.fill_diagonal(sim, -np.inf)
        i, j = np.unravel_index(np.argmax(sim), sim.shape)
        if sim[i, j] < threshold:
            break
        groups[min(i, j)] = groups[i] + groups[j]
        del groups[max(i, j)]
    return len(groups)


def activation_ambiguity(activations: np.ndarray, low: float = 0.15, high: float = 0.6) -> float:
    """How far loop activations are from switching cleanly on and off.

    Parameters
    ----------
    activations : np.ndarray, shape=(n_segments, K), D′ (nonnegative)
    low, high : float, fractions of each loop's peak activation

    Returns
    -------
    float in [0, 1]: the share of (segment, loop) activations, scaled to each loop's peak,
    that are neither clearly off (< ``low``) nor clearly on (> ``high``). A loop plays in a
    segment or it does not, so a decomposition into real loops scores low; loops that are
    mixtures of several (or halves of one) play at in-between levels.

    Source: the binary loop layouts of Smith & Goto, ICASSP 2018 (ground truth) and
    Ramires et al., ISMIR 2020; the thresholds were set on bench/quality.py's songs.
    """
    a = np.asarray(activations, dtype=np.float64)
    a = a / np.maximum(a.max(axis=0, keepdims=True), 1e-30)
    return float(np.mean((a > low) & (a < high)))


def most_binary_start(starts: list[NTDResult], n_loops: int, *, sparsity: float = 0.1,
                      seed: int = 0) -> NTDResult:
    """Of several (rough) NTDs of one cube, the one whose purified loops switch most cleanly.

    Each start is purified to ``n_loops`` loops (:func:`purify_core`) and scored with
    :func:`activation_ambiguity`; the lowest score wins (the first one on ties). The
    reconstruction error is no guide here: on the benchmark's dense songs the starts with the
    lowest error split the song into section-like "loops" and separate worst.

    Parameters
    ----------
    starts : list of NTDResult (e.g. 10 HALS iterations from different seeds)
    n_loops : int, K
    sparsity, seed : as in :func:`purify_core`

    Returns
    -------
    NTDResult, one of ``starts``

    Raises
    ------
    UnmixerError
        If ``starts`` is empty.

    Source: multi-start selection; measured in BENCHMARKS.md, "Separation quality against
    baselines" (levers "select",
    "select2", "rough_starts"): it helped one song with true downbeats and none with
    estimated ones, so the engine keeps one start.
    """
    if not starts:
        raise UnmixerError("No NTD start to choose from.")
    scores = [activation_ambiguity(purify_core(m, n_loops, sparsity=sparsity, seed=seed)[1]) for m in starts]
    return starts[int(np.argmin(scores))]
