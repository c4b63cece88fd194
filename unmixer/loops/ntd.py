"""Nonnegative Tucker decomposition (NTD) of the spectral cube, and core purification.

Model: X ≈ G ×₁ W ×₂ H ×₃ D, with X the (n_freq, n_steps, n_segments) cube, W the sound
templates (n_freq, r_sound), H the rhythm templates (n_steps, r_rhythm), D the loop templates
(n_segments, r_loop) and G the core tensor (r_sound, r_rhythm, r_loop); everything is
nonnegative. Smith & Goto, ICASSP 2018, eq. (1); Smith, Kawasaki & Goto, ISMIR 2019, §3.

Two solvers fit the same model to the same objective ½‖X − G ×₁ W ×₂ H ×₃ D‖² (+ an
optional L1 penalty λ‖G‖₁ on the core):

* :func:`ntd_tensorly`: TensorLy's ``non_negative_tucker_hals``, the reference.
* :func:`ntd_hals`: ours. Hierarchical ALS for the factors (Cichocki & Phan, IEICE 2009),
  with repeated inner sweeps as in accelerated HALS (Gillis & Glineur, Neural Computation
  2012), and a monotone FISTA step for the core (Beck & Teboulle, IEEE TIP 2009, MFISTA).
  Each iteration touches the cube twice (X ×₃ Dᵀ and X ×₁ Wᵀ); everything else works on
  the small projected tensors, and the loss comes from Gram matrices and the core
  (‖X‖² − 2⟨P, G⟩ + ⟨G ×₁ WᵀW ×₂ HᵀH ×₃ DᵀD, G⟩), never from rebuilding X. It is written
  with TensorLy's backend operations, so ``tl.set_backend("pytorch")`` runs it on a GPU.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import tensorly as tl

from unmixer.errors import UnmixerError
from unmixer.loops.cube import previous_segment

DEFAULT_RANKS = (50, 40, 30)
"""(sound, rhythm, loop) ranks of Unmixer's production setting (ISMIR 2019, §3)."""


@dataclass
class NTDResult:
    """A nonnegative Tucker decomposition.

    Attributes
    ----------
    core : array, shape=(r_sound, r_rhythm, r_loop)
    factors : list of 3 arrays
        [W (n_freq, r_sound), H (n_steps, r_rhythm), D (n_segments, r_loop)].
    errors : list of float
        Relative error ‖X − X̂‖ / ‖X‖ after the initialisation and after each iteration.
    times_s : list of float
        Cumulative seconds at the same points.
    n_iter : int
        Iterations run so far (over every call that continued this result).
    """

    core: object
    factors: list
    errors: list = field(default_factory=list)
    times_s: list = field(default_factory=list)
    n_iter: int = 0

    @property
    def ranks(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in tl.shape(self.core))

    def reconstruct(self) -> np.ndarray:
        """The full model tensor, shape=(n_freq, n_steps, n_segments) (memory: as big as X)."""
        return tl.to_numpy(tl.tucker_to_tensor((self.core, self.factors)))


def default_ranks(shape: tuple[int, int, int], ranks: tuple[int, int, int] = DEFAULT_RANKS
                  ) -> tuple[int, int, int]:
    """Ranks clipped to the cube's shape (n_freq, n_steps, n_segments): min(rank, size)."""
    return tuple(int(max(1, min(r, s))) for r, s in zip(ranks, shape))


def loop_ranks(shape: tuple[int, int, int], n_loops: int,
               ranks: tuple[int, int, int] = DEFAULT_RANKS) -> tuple[int, int, int]:
    """The engine's ranks for K loops: (min(50, 4K + 8), min(40, 4K + 8), min(30, K + 2,
    max(K + 1, S - 1))) for S segments, clipped to the cube's shape.

    Unmixer's production ranks (50, 40, 30) are the ceiling; below it the ranks follow the
    loop count, and core purification then condenses the K + 2 loop templates to K. On
    generated songs with ground truth (BENCHMARKS.md, "Choice of ranks", bench/ranks.py) this
    separated better (10.3 dB mean SI-SDR with core L1 0.3) than the production ranks with
    purification (8.6 dB) or loop rank K without it (8.1-8.4 dB): with fewer than 30 segments
    the production loop mode is full rank, and segments get "loops" of their own.

    The same happens with K + 2 on few segments (a short song cut into 4-bar segments: K = 4
    loops, 6 segments, loop rank 6 = full): there the loop rank stays under the segment count
    if it can still exceed K (purification needs more loop templates than loops). On a 24-bar
    song of 1- and 2-bar loops in 4-bar segments (K = 4) loop rank 5 took the mean SI-SDRi
    from 12.4 to 18.5 dB; on another (K = 5, 6 segments) rank K = 5 lost 6 dB against 6, so
    the rank never drops to K (issue 13's cliff between segment lengths; BENCHMARKS.md, "Bar
    grid and loop length").

    Parameters
    ----------
    shape : (n_freq, n_steps, n_segments), the spectral cube's shape
    n_loops : int, K
    ranks : the ceiling (sound, rhythm, loop)

    Returns
    -------
    (sound, rhythm, loop) ranks, each at least 1
    """
    k = int(n_loops)
    n_segments = int(shape[2])
    wanted = (min(ranks[0], 4 * k + 8), min(ranks[1], 4 * k + 8),
              min(ranks[2], k + 2, max(k + 1, n_segments - 1)))
    return default_ranks(shape, wanted)


def _check(X, ranks) -> None:
    if tl.ndim(X) != 3:
        raise UnmixerError("The spectral cube must have 3 dimensions.")
    if any(r < 1 for r in ranks):
        raise UnmixerError(f"NTD ranks must be positive, got {tuple(ranks)}.")
    if float(tl.min(X)) < 0:
        raise UnmixerError("The spectral cube must be nonnegative.")


# ----------------------------------------------------------------------------- threads
_CONTROLLER = None
_BIG = 8_000_000
"""Cubes with more cells than this use every core for the passes over the cube."""


def _blas_threads(n: int | None):
    """Limit numpy's BLAS to ``n`` threads (None: all) inside a ``with`` block.

    OpenBLAS threads make the many small products on the core 50x slower than one thread
    when the cores are busy; only the two passes over the cube profit from threads.
    """
    global _CONTROLLER
    if tl.get_backend() != "numpy":
        return contextlib.nullcontext()
    from threadpoolctl import ThreadpoolController

    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    infos = [i for i in _CONTROLLER.info() if i.get("user_api") == "blas"]
    if not infos:
        return contextlib.nullcontext()
    if n is None:
        n = max(1, len(__import__("os").sched_getaffinity(0)))
    return _CONTROLLER.limit(limits=n, user_api="blas")


# ----------------------------------------------------------------------------- contractions
# X has shape (F, T, S); C-order reshapes are views, so the big products are single GEMMs.

def _x_mode3(X, C):
    """X ×₃ Cᵀ, shape (F, T, R3): one GEMM over the cube."""
    F, T, S = tl.shape(X)
    with _blas_threads(None if F * T * S > _BIG else 1):
        return tl.reshape(tl.dot(tl.reshape(X, (F * T, S)), C), (F, T, tl.shape(C)[1]))


def _x_mode1(X, A):
    """X ×₁ Aᵀ, shape (R1, T, S): one GEMM over the cube."""
    F, T, S = tl.shape(X)
    with _blas_threads(None if F * T * S > _BIG else 1):
        return tl.reshape(tl.dot(tl.transpose(A), tl.reshape(X, (F, T * S))), (tl.shape(A)[1], T, S))


def _mode2_t(Y, B):
    """Y ×₂ Bᵀ for Y of shape (a, T, c): shape (a, R2, c)."""
    return tl.matmul(tl.transpose(B), Y)


def _mode3_t(Y, C):
    """Y ×₃ Cᵀ for Y of shape (a, b, S): shape (a, b, R3)."""
    a, b, s = tl.shape(Y)
    return tl.reshape(tl.dot(tl.reshape(Y, (a * b, s)), C), (a, b, tl.shape(C)[1]))


def _mode1_t(Y, A):
    """Y ×₁ Aᵀ for Y of shape (F, b, c): shape (R1, b, c)."""
    f, b, c = tl.shape(Y)
    return tl.reshape(tl.dot(tl.transpose(A), tl.reshape(Y, (f, b * c))), (tl.shape(A)[1], b, c))


def _unfold_dot(Y, G, mode):
    """⟨Y, G⟩ over every axis but ``mode``: Y_(mode) G_(mode)ᵀ."""
    return tl.dot(tl.unfold(Y, mode), tl.transpose(tl.unfold(G, mode)))


def _multi_gram(G, grams):
    """G ×₁ grams[0] ×₂ grams[1] ×₃ grams[2] (grams symmetric)."""
    out = _mode1_t(G, grams[0])
    out = _mode2_t(out, grams[1])
    return _mode3_t(out, grams[2])


# ----------------------------------------------------------------------------- updates

def _hals_columns(A, XM, MtM, n_sweeps: int, eps: float = 1e-12):
    """HALS: minimise ‖X_(n) − A Mᵀ‖² over A ≥ 0 one column at a time, ``n_sweeps`` times.

    A[:, r] ← max(0, A[:, r] + (XM[:, r] − A MtM[:, r]) / MtM[r, r])  (Cichocki & Phan 2009, eq. 12).
    """
    be = tl.backend.BackendManager.current_backend()  # skip per-call dispatch in the hot loop
    R = tl.shape(A)[1]
    diag = [float(MtM[r, r]) for r in range(R)]
    for _ in range(n_sweeps):
        for r in range(R):  # loop over components (ranks), vectorised over rows
            if diag[r] <= eps:
                continue
            col = A[:, r] + (XM[:, r] - be.dot(A, MtM[:, r])) / diag[r]
            A[:, r] = be.clip(col, 0, None)
    return A


def _normalise(A, G, mode, kind: str = "l2"):
    """Scale the columns of A to unit norm ("l2" or "max") and the core by the inverse.

    The model is unchanged. With max-normalised loop templates the core carries each loop's
    level where it plays, so an L1 penalty on the core favours small, part-like templates.
    """
    norms = tl.max(A, axis=0) if kind == "max" else tl.sqrt(tl.sum(A * A, axis=0))
    norms = tl.where(norms > 0, norms, tl.ones(tl.shape(norms), **tl.context(norms)))
    A = A / norms
    shape = [1, 1, 1]
    shape[mode] = -1
    return A, G * tl.reshape(norms, tuple(shape))


def _core_update(G, P, grams, l1: float, n_steps: int):
    """Monotone FISTA on ½⟨G ×grams, G⟩ − ⟨P, G⟩ + λ‖G‖₁ over G ≥ 0 (Beck & Teboulle 2009).

    The quadratic term Q(G) = G ×₁ WᵀW ×₂ HᵀH ×₃ DᵀD is linear, so Q at the extrapolated
    point comes from Q at the last two iterates: one multi-mode product per step.
    """
    lipschitz = 1.0
    for g in grams:  # λ_max of a Kronecker product is the product of the λ_max
        lipschitz *= float(np.max(np.linalg.eigvalsh(tl.to_numpy(g).astype(np.float64))))  # python float keeps float32
    if lipschitz <= 0:
        return G

    def objective(x, qx):
        return 0.5 * float(tl.sum(qx * x)) - float(tl.sum(P * x)) + l1 * float(tl.sum(x))

    x = G
    qx = _multi_gram(x, grams)
    y, qy, t = x, qx, 1.0
    fx = objective(x, qx)
    for _ in range(n_steps):
        z = tl.clip(y - (qy - P + l1) / lipschitz, 0, None)
        qz = _multi_gram(z, grams)
        fz = objective(z, qz)
        t_next = 0.5 * (1 + math.sqrt(1 + 4 * t * t))
        if fz <= fx:
            beta = (t - 1) / t_next
            y, qy = z + beta * (z - x), qz + beta * (qz - qx)
            x, qx, fx = z, qz, fz
        else:  # MFISTA: keep x, extrapolate towards z
            beta = t / t_next
            y, qy = x + beta * (z - x), qx + beta * (qz - qx)
        t = t_next
    return x


def _top_eigvecs(gram, rank):
    """|leading eigenvectors| of a symmetric PSD matrix, shape (n, rank)."""
    values, vectors = tl.eigh(gram)
    order = np.argsort(tl.to_numpy(values))[::-1][:rank].copy()
    return tl.abs(vectors[:, order])


def _top_left_vectors(M, rank: int, seed: int = 0):
    """|leading left singular vectors| of M (n, m), shape (n, rank).

    Up to 700 rows, or on other backends: the eigenvectors of the Gram matrix M Mᵀ; more
    rows: scikit-learn's randomized SVD (Halko, Martinsson & Tropp, SIAM Review 2011), seeded.
    """
    if tl.get_backend() == "numpy" and tl.shape(M)[0] > 700:
        from sklearn.utils.extmath import randomized_svd

        u, _, _ = randomized_svd(M, rank, n_oversamples=10, n_iter=4, random_state=seed)
        return np.abs(u).astype(M.dtype)
    return _top_eigvecs(tl.dot(M, tl.transpose(M)), rank)


def _hosvd_init(X, ranks, seed: int = 0):
    """Sequentially truncated HOSVD with absolute values (nonnegative), modes 3, 2, 1.

    Each mode's singular vectors are taken on the cube already projected on the previous
    modes, so the cost stays about one pass over X (Vannieuwenhoven, Vandebril & Meerbergen,
    SIAM J. Sci. Comput. 2012).
    """
    F, T, S = tl.shape(X)
    Xs = tl.reshape(X, (F * T, S))
    with _blas_threads(None if F * T * S > _BIG else 1):
        C = _top_eigvecs(tl.dot(tl.transpose(Xs), Xs), ranks[2])
    with _blas_threads(1):
        Y = _x_mode3(X, C)  # (F, T, R3)
        B = _top_left_vectors(tl.reshape(tl.transpose(Y, (1, 0, 2)), (T, F * ranks[2])), ranks[1], seed)
        Y = _mode2_t(Y, B)  # (F, R2, R3)
        A = _top_left_vectors(tl.reshape(Y, (F, ranks[1] * ranks[2])), ranks[0], seed)
        core = _mode1_t(Y, A)  # (R1, R2, R3), nonnegative since X, A, B, C are
    return core, [A, B, C]


def initialise(X, ranks, init: str = "svd", seed: int = 0) -> NTDResult:
    """A nonnegative starting point for NTD.

    Parameters
    ----------
    X : array, shape=(n_freq, n_steps, n_segments), nonnegative, float32
    ranks : (r_sound, r_rhythm, r_loop)
    init : "svd" (truncated HOSVD, absolute values) or "random" (uniform, seeded)

    Returns
    -------
    NTDResult with no iterations, the core scaled to the least-squares optimal level.
    """
    ctx = tl.context(X)
    if init == "svd":
        core, factors = _hosvd_init(X, ranks, seed)
    elif init == "random":
        rng = np.random.default_rng(seed)
        shapes = [(tl.shape(X)[n], ranks[n]) for n in range(3)]
        factors = [tl.tensor(rng.random(s, dtype=np.float32), **ctx) for s in shapes]
        core = tl.tensor(rng.random(tuple(ranks), dtype=np.float32), **ctx)
    else:
        raise UnmixerError(f"Unknown NTD initialisation {init!r}: use 'svd' or 'random'.")
    for mode in range(3):
        factors[mode], core = _normalise(factors[mode], core, mode)
    # Optimal scale of the core: argmin_a ‖X − a·model‖ = ⟨X, model⟩ / ‖model‖².
    P = _mode3_t(_mode2_t(_x_mode1(X, factors[0]), factors[1]), factors[2])
    grams = [tl.dot(tl.transpose(f), f) for f in factors]
    num = float(tl.sum(P * core))
    den = float(tl.sum(_multi_gram(core, grams) * core))
    if den > 0 and num > 0:
        core = core * (num / den)
    return NTDResult(core, factors)


def ntd_hals(
    X,
    ranks: tuple[int, int, int] | None = None,
    *,
    n_iter: int = 100,
    tol: float = 1e-5,
    time_budget_s: float | None = None,
    init: str | NTDResult = "svd",
    core_l1: float = 0.0,
    inner_sweeps: int = 8,
    core_steps: int = 20,
    seed: int = 0,
    callback: Callable[[NTDResult], None] | None = None,
) -> NTDResult:
    """Fit X ≈ G ×₁ W ×₂ H ×₃ D with all factors nonnegative (our fast solver).

    Parameters
    ----------
    X : array, shape=(n_freq, n_steps, n_segments), nonnegative
        The cube, in float32 (other dtypes are kept: float64 gives exact monotonicity).
    ranks : (r_sound, r_rhythm, r_loop), default :data:`DEFAULT_RANKS` clipped to X's shape.
    n_iter : int
        Maximum number of iterations (one iteration updates W, H, D and G once).
    tol : float
        Stop when the relative decrease of the loss over one iteration falls below ``tol``.
    time_budget_s : float, optional
        Stop after the iteration that passes this many seconds.
    init : "svd", "random" or an :class:`NTDResult` to continue from (e.g. a quick first pass).
    core_l1 : float
        λ of the L1 penalty λ‖G‖₁ on the core, relative to ‖X‖ / (size of the core).
    inner_sweeps : int
        HALS sweeps over the columns of each factor per iteration (accelerated HALS).
    core_steps : int
        MFISTA steps for the core per iteration.
    seed : int
        Seed of the random initialisation.
    callback : callable, optional
        Called with the current result after every iteration.

    Returns
    -------
    NTDResult; ``errors`` holds ‖X − X̂‖/‖X‖ after the initialisation and every iteration
    (for a continued result, the history is extended).

    Raises
    ------
    UnmixerError
        If X is not a nonnegative 3-way array or a rank is not positive.

    Source: Cichocki & Phan, IEICE Trans. 2009 (HALS for NTD); Gillis & Glineur, Neural
    Computation 2012 (accelerated HALS); Beck & Teboulle, IEEE TIP 2009 (MFISTA).
    """
    if ranks is None:
        ranks = default_ranks(tl.shape(X)) if not isinstance(init, NTDResult) else init.ranks
    ranks = tuple(int(r) for r in ranks)
    _check(X, ranks)
    start = time.perf_counter()
    if isinstance(init, NTDResult):
        state = NTDResult(tl.copy(init.core), [tl.copy(f) for f in init.factors],
                          list(init.errors), list(init.times_s), init.n_iter)
        t_offset = state.times_s[-1] if state.times_s else 0.0
    else:
        state = initialise(X, ranks, init, seed)
        t_offset = 0.0
    norm_x2 = float(tl.sum(X * X))
    if norm_x2 <= 0:
        raise UnmixerError("The spectral cube is all zeros (silent audio).")
    l1 = float(core_l1 * math.sqrt(norm_x2) / np.prod(ranks))
    A, B, C = state.factors
    G = state.core

    def loss_of(G, P, grams):
        fit = norm_x2 - 2 * float(tl.sum(P * G)) + float(tl.sum(_multi_gram(G, grams) * G))
        return max(fit, 0.0)

    if not state.errors:
        grams = [tl.dot(tl.transpose(f), f) for f in (A, B, C)]
        P = _mode3_t(_mode2_t(_x_mode1(X, A), B), C)
        state.errors.append(float(np.sqrt(loss_of(G, P, grams) / norm_x2)))
        state.times_s.append(time.perf_counter() - start)
    previous = state.errors[-1] ** 2 * norm_x2
    with _blas_threads(1):  # small products: one thread; the cube passes take all
        for _ in range(n_iter):
            # --- sound templates W: XM = X_(1) (D ⊗ H) G_(1)ᵀ, via X ×₃ Dᵀ ×₂ Hᵀ (one pass over X)
            BtB, CtC = tl.dot(tl.transpose(B), B), tl.dot(tl.transpose(C), C)
            Y = _mode2_t(_x_mode3(X, C), B)  # (F, R2, R3)
            XM = _unfold_dot(Y, G, 0)  # (F, R1)
            GB = _mode3_t(_mode2_t(G, BtB), CtC)
            MtM = _unfold_dot(GB, G, 0)
            A = _hals_columns(A, XM, MtM, inner_sweeps)
            A, G = _normalise(A, G, 0)
            AtA = tl.dot(tl.transpose(A), A)
            # --- one more pass over X: Z = X ×₁ Wᵀ serves H, D and the core
            Z = _x_mode1(X, A)  # (R1, T, S)
            # rhythm templates H
            ZC = _mode3_t(Z, C)  # (R1, T, R3)
            XM = _unfold_dot(ZC, G, 1)  # (T, R2)
            MtM = _unfold_dot(_mode3_t(_mode1_t(G, AtA), CtC), G, 1)
            B = _hals_columns(B, XM, MtM, inner_sweeps)
            B, G = _normalise(B, G, 1)
            BtB = tl.dot(tl.transpose(B), B)
            # loop templates D
            ZB = _mode2_t(Z, B)  # (R1, R2, S)
            XM = _unfold_dot(ZB, G, 2)  # (S, R3)
            MtM = _unfold_dot(_mode2_t(_mode1_t(G, AtA), BtB), G, 2)
            C = _hals_columns(C, XM, MtM, inner_sweeps)
            C, G = _normalise(C, G, 2, "max")
            CtC = tl.dot(tl.transpose(C), C)
            # core
            P = _mode3_t(ZB, C)  # X ×₁ Wᵀ ×₂ Hᵀ ×₃ Dᵀ
            grams = [AtA, BtB, CtC]
            G = _core_update(G, P, grams, l1, core_steps)
            loss = loss_of(G, P, grams)
            state.core, state.factors = G, [A, B, C]
            state.n_iter += 1
            state.errors.append(float(np.sqrt(loss / norm_x2)))
            elapsed = time.perf_counter() - start
            state.times_s.append(t_offset + elapsed)
            if callback is not None:
                callback(state)
            if previous > 0 and (previous - loss) / previous < tol:
                break
            previous = loss
            if time_budget_s is not None and elapsed >= time_budget_s:
                break
    state.core, state.factors = G, [A, B, C]
    return state


def ntd_tensorly(X, ranks: tuple[int, int, int] | None = None, *, n_iter: int = 100,
                 tol: float = 1e-8, init: str | NTDResult = "svd", seed: int = 0,
                 core_l1: float = 0.0) -> NTDResult:
    """Fit the same model with TensorLy's ``non_negative_tucker_hals`` (the reference solver).

    Parameters are as in :func:`ntd_hals`; the cube is kept in its dtype (float32 by default).
    ``errors`` holds TensorLy's own error history (it rebuilds X every iteration).

    Raises
    ------
    UnmixerError
        As :func:`ntd_hals`.

    Source: TensorLy (Kossaifi et al., JMLR 2019), ``tensorly.decomposition.non_negative_tucker_hals``,
    after Phan & Cichocki, NOLTA 2011 (HALS with FISTA core updates).
    """
    from tensorly.decomposition import non_negative_tucker_hals

    if ranks is None:
        ranks = default_ranks(tl.shape(X)) if not isinstance(init, NTDResult) else init.ranks
    ranks = tuple(int(r) for r in ranks)
    _check(X, ranks)
    if isinstance(init, NTDResult):
        tl_init = tl.tucker_tensor.TuckerTensor((tl.copy(init.core), [tl.copy(f) for f in init.factors]))
    else:
        tl_init = init
    start = time.perf_counter()
    sparsity = None if core_l1 == 0 else core_l1
    (core, factors), errors = non_negative_tucker_hals(
        X, list(ranks), n_iter_max=n_iter, init=tl_init, tol=tol, random_state=seed,
        core_sparsity_coefficient=sparsity, return_errors=True)
    elapsed = time.perf_counter() - start
    errors = [float(e) for e in errors]
    times = list(np.linspace(0, elapsed, len(errors) + 1)[1:])
    return NTDResult(core, list(factors), errors, times, len(errors))


def purify_core(result: NTDResult, n_loops: int, *, sparsity: float = 0.1, n_iter: int = 300,
                seed: int = 0, n_starts: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Condense the loop mode of the core to ``n_loops`` loops with a sparse NMF.

    The core is unfolded along the loop mode, G_(3) (r_loop, r_sound·r_rhythm), and
    factorised as G_(3) ≈ W_C H_C with W_C (r_loop, K) and an L1 penalty on H_C; H_C refolds
    into the purified core G′ (r_sound, r_rhythm, K), and the loop templates become
    D′ = D·W_C (n_segments, K), so that X ≈ G′ ×₁ W ×₂ H ×₃ D′.

    The sparse NMF has local optima in which one loop glues parts of two instruments
    together; with ``n_starts`` > 1 it is run from the NNDSVDa start and ``n_starts`` − 1
    random starts (seeded by ``seed``), and the one with the lowest objective
    ‖G_(3) − W_C H_C‖² + λ Σ H_C is kept. The core is small (r_loop × r_sound·r_rhythm), so
    each start costs milliseconds.

    Parameters
    ----------
    result : NTDResult
    n_loops : int, K >= 1
    sparsity : float
        L1 weight on H_C, relative to the mean of G_(3).
    n_iter : int
        NMF iterations.
    seed : int, seed of the random starts (``seed``, ``seed`` + 1, ...)
    n_starts : int >= 1, NMF starts (the first is NNDSVDa)

    Returns
    -------
    core : np.ndarray, float32, shape=(r_sound, r_rhythm, K)
    loop_templates : np.ndarray, float32, shape=(n_segments, K)

    Raises
    ------
    UnmixerError
        If ``n_loops`` < 1.

    Source: Smith, Kawasaki & Goto, ISMIR 2019, §3.2.
    """
    from unmixer.lab.nmf import beta_nmf

    if n_loops < 1:
        raise UnmixerError(f"The number of loops must be at least 1, not {n_loops}.")
    core = np.asarray(tl.to_numpy(result.core), dtype=np.float32)
    D = np.asarray(tl.to_numpy(result.factors[2]), dtype=np.float32)
    r1, r2, r3 = core.shape
    unfolded = np.ascontiguousarray(np.moveaxis(core, 2, 0).reshape(r3, r1 * r2))
    scale = float(unfolded.mean()) or 1.0
    fits = [beta_nmf(unfolded / scale, n_loops, beta=2.0, n_iter=n_iter,
                     init="nndsvda" if start == 0 else "random", l1_H=sparsity,
                     random_state=seed + max(start - 1, 0))
            for start in range(max(int(n_starts), 1))]
    fit = min(fits, key=lambda f: float(np.nanmin(f.loss)))
    W_c, H_c = fit.W.astype(np.float32), (fit.H * scale).astype(np.float32)
    new_core = np.moveaxis(H_c.reshape(n_loops, r1, r2), 0, 2)
    return np.ascontiguousarray(new_core), (D @ W_c).astype(np.float32)


def _checked_templates(cube: np.ndarray, templates: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """The templates as float32 (K, n_freq, n_steps), after checking that the cube
    (n_freq, n_steps, n_segments) and the activations (n_segments, K) agree with them."""
    templates = np.asarray(templates, dtype=np.float32)
    K, F, T = templates.shape
    if cube.shape[:2] != (F, T) or activations.shape != (cube.shape[2], K):
        raise UnmixerError("Cube, templates and activations disagree in shape.")
    return templates


def refine_loop_templates(cube: np.ndarray, templates: np.ndarray, activations: np.ndarray, *,
                          n_iter: int = 20, beta: float = 1.0) -> np.ndarray:
    """Full-resolution loop templates fitted to the cube with the activations held fixed.

    After purification each loop's template is the low-rank P_k = W G′_k Hᵀ. Here the
    segment-unfolded cube X_(3) (n_segments, n_freq·n_steps) is refitted as D′ P with D′
    fixed and P (K, n_freq·n_steps) free (every cell its own value), started from the NTD's
    templates: each loop's template becomes the average spectrogram of the loop where it
    plays, rather than its low-rank sketch.

    Parameters
    ----------
    cube : np.ndarray, shape=(n_freq, n_steps, n_segments), X, nonnegative
    templates : np.ndarray, shape=(K, n_freq, n_steps), P (from
        :func:`unmixer.loops.masks.loop_templates`)
    activations : np.ndarray, shape=(n_segments, K), D′ (from :func:`purify_core`)
    n_iter : int, multiplicative updates
    beta : float, β-divergence of the fit (1: Kullback-Leibler)

    Returns
    -------
    np.ndarray, float32, shape=(K, n_freq, n_steps), nonnegative

    Raises
    ------
    UnmixerError
        If the shapes disagree.

    Source: multiplicative β-NMF updates with one factor fixed (Févotte & Idier, Neural
    Computation 2011), i.e. the NMF of the segment-unfolded cube (Smith & Goto, ICASSP 2018,
    §2) started from the purified NTD (Smith, Kawasaki & Goto, ISMIR 2019).
    """
    from unmixer.lab.nmf import beta_nmf

    templates = _checked_templates(cube, templates, activations)
    K, F, T = templates.shape
    V = cube.reshape(F * T, cube.shape[2]).T  # (S, F·T), a view
    W0 = np.maximum(activations, 1e-6).astype(np.float32)
    H0 = np.maximum(templates.reshape(K, F * T), 1e-9 * float(templates.max(initial=0.0)) + 1e-30)
    fit = beta_nmf(V, K, beta=beta, n_iter=n_iter, W=W0, H=H0, update_W=False, tol=0.0,
                   loss_every=max(int(n_iter), 1))
    return fit.H.reshape(K, F, T).astype(np.float32)


def refine_loop_tails(cube: np.ndarray, templates: np.ndarray, activations: np.ndarray, *,
                      n_iter: int = 10, tail_start: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution loop templates and tail templates, fitted with the activations fixed.

    A loop's sound does not stop at the segment line: releases, echoes and reverb ring on
    into the next segment, and a segment where a loop starts lacks the tail of the loop's
    previous repetition. Each loop therefore gets a second template, its tail Q_k, that
    sounds in the segment after every segment where the loop plays:

        X(:, :, s) ≈ Σ_k D′[s, k] P_k + D′[s − 1, k] Q_k     (D′[−1, k] = 0).

    With D′ fixed this is a nonnegative least-squares problem in [P; Q], solved by HALS row
    updates of X_(3) ≈ [D′, D′_prev] [P; Q] (every cell of P and Q its own value), started
    from the NTD's templates (and tails at ``tail_start`` times them). In a run of segments
    where the loop plays throughout, P_k + Q_k is its spectrogram; where it starts, P_k;
    in the segment after it stops, Q_k.

    Parameters
    ----------
    cube : np.ndarray, shape=(n_freq, n_steps, n_segments), X, nonnegative
    templates : np.ndarray, shape=(K, n_freq, n_steps), P (from
        :func:`unmixer.loops.masks.loop_templates`)
    activations : np.ndarray, shape=(n_segments, K), D′ (from :func:`purify_core`)
    n_iter : int ≥ 0, HALS sweeps over the 2K rows
    tail_start : float ≥ 0, initial tails as a fraction of the templates

    Returns
    -------
    templates : np.ndarray, float32, shape=(K, n_freq, n_steps), P, nonnegative
    tails : np.ndarray, float32, shape=(K, n_freq, n_steps), Q, nonnegative

    Raises
    ------
    UnmixerError
        If the shapes disagree.

    Source: the loop model of Smith & Goto (ICASSP 2018, §2: X_(3) ≈ D P) with a second,
    one-segment-delayed activation per loop, i.e. a two-tap convolutive NMF along the
    segment axis (Smaragdis, ICA 2004, with the activations fixed); HALS updates as in
    Cichocki & Phan (IEICE Trans. 2009), eq. 7.
    """
    templates = _checked_templates(cube, templates, activations)
    K, F, T = templates.shape
    D = np.maximum(np.asarray(activations, dtype=np.float32), 0)
    A = np.concatenate([D, previous_segment(D)], axis=1)  # (S, 2K)
    V = cube.reshape(F * T, cube.shape[2])  # (F·T, S), a view
    AtV = (V @ A).T  # (2K, F·T)
    AtA = A.T @ A  # (2K, 2K)
    H = np.concatenate([templates.reshape(K, F * T), float(tail_start) * templates.reshape(K, F * T)])
    for _ in range(int(n_iter)):
        for j in range(2 * K):  # one row of [P; Q] at a time (rows, not bins or frames)
            if AtA[j, j] <= 0:  # silent before the last segment: no tail to fit
                H[j] = 0
                continue
            row = H[j] + (AtV[j] - AtA[j] @ H) / AtA[j, j]
            np.maximum(row, 0, out=H[j])
    return H[:K].reshape(K, F, T).copy(), H[K:].reshape(K, F, T).copy()


ON_OFF = 0.2
"""A loop is "on" in a segment where its purified activation exceeds this fraction of its
peak (:func:`on_off_activations`). Any threshold from 0.1 to 0.2 gave the same segments on
the grid benchmark's songs; 0.35 cut real ones (a mixed loop's 0.35 level)."""


def on_off_activations(activations: np.ndarray, threshold: float = ON_OFF) -> np.ndarray:
    """Each loop switched on or off per segment, at one level: its median activation where on.

    Loop music switches loops on and off; it rarely plays one at another level. The loop
    model cannot tell that apart from a mix of loops: where two loops nearly always play
    together, ``D1 P1 + D2 P2`` with P2 holding part of loop 1 and D1 at a fraction (0.35
    here) where both play fits the cube as well as the true loops do, and the purification
    finds either, depending on a few milliseconds of the bar lines (grid benchmark, one_bar
    family: 8.9 against 15.8 dB SI-SDRi for bar lines 4 ms apart). Fitting the templates to
    on/off activations removes that freedom: a segment where loop 1 plays takes all of it.

    Parameters
    ----------
    activations : np.ndarray, shape=(n_segments, K), D′ ≥ 0 (from :func:`purify_core`)
    threshold : float in (0, 1), the fraction of each loop's peak above which it is on

    Returns
    -------
    np.ndarray, float32, shape=(n_segments, K): D′ where on replaced by the loop's median
    there, 0 where off (a loop never on stays 0)

    Raises
    ------
    UnmixerError
        If ``threshold`` is not in (0, 1) or the activations are not a 2-D array.

    Source: the binary layout of loop-based music (Smith & Goto, ICASSP 2018, §2: each
    segment a sum of the loops that play in it); the ambiguity it removes is the scaling and
    mixing freedom of NMF between co-occurring sources (Donoho & Stodden, NIPS 2003).
    """
    D = np.asarray(activations, dtype=np.float32)
    if D.ndim != 2:
        raise UnmixerError(f"activations must be (n_segments, K), not shape {D.shape}.")
    if not 0 < threshold < 1:
        raise UnmixerError(f"The on/off threshold must lie in (0, 1), not {threshold}.")
    D = np.maximum(D, 0)
    on = D > threshold * D.max(axis=0, keepdims=True)  # never on where a loop's peak is 0
    levels = np.ma.median(np.ma.masked_array(D, ~on), axis=0).filled(0.0)
    return np.where(on, levels[None], 0).astype(np.float32)


def refit_activations(cube: np.ndarray, templates: np.ndarray, tails: np.ndarray,
                      activations: np.ndarray, *, n_iter: int = 10) -> np.ndarray:
    """Activations refitted with the loop and tail templates fixed.

    The least-squares fit of X(:, :, s) ≈ Σ_k D′[s, k] P_k + D′[s − 1, k] Q_k in D′ ≥ 0, by
    HALS updates of one loop's column at a time (all segments at once: D′[s, k] enters
    segment s through P_k and segment s + 1 through Q_k). After :func:`on_off_activations`
    and :func:`refine_loop_tails`, this gives back each loop's level per segment (a loop
    that plays softer in one section), now with templates that hold one loop each.

    Parameters
    ----------
    cube : np.ndarray, shape=(n_freq, n_steps, n_segments), X, nonnegative
    templates, tails : np.ndarray, shape=(K, n_freq, n_steps), P and Q (from
        :func:`refine_loop_tails`)
    activations : np.ndarray, shape=(n_segments, K), the start
    n_iter : int ≥ 0, sweeps over the K columns

    Returns
    -------
    np.ndarray, float32, shape=(n_segments, K), D′ ≥ 0

    Raises
    ------
    UnmixerError
        If the shapes disagree.

    Source: the model of :func:`refine_loop_tails`; HALS as in Cichocki & Phan (IEICE Trans.
    2009), eq. 7, on the activation side.
    """
    _checked_templates(cube, templates, activations)
    if np.shape(tails) != np.shape(templates):
        raise UnmixerError(f"tails {np.shape(tails)} and templates {np.shape(templates)} differ in shape.")
    K = templates.shape[0]
    D = np.maximum(np.asarray(activations, dtype=np.float32), 0).copy()
    H = np.concatenate([templates.reshape(K, -1), tails.reshape(K, -1)]).astype(np.float32)  # (2K, F·T)
    G = H @ H.T  # (2K, 2K)
    C = (H @ cube.reshape(H.shape[1], cube.shape[2])).T  # (S, 2K)
    for _ in range(int(n_iter)):
        for k in range(K):  # one loop's column at a time (loops, not bins or frames)
            hess = G[k, k] + G[K + k, K + k]
            if hess <= 0:
                continue
            g = np.concatenate([D, previous_segment(D)], axis=1) @ G - C  # (S, 2K)
            grad = g[:, k].copy()
            grad[:-1] += g[1:, K + k]
            np.maximum(D[:, k] - grad / hess, 0, out=D[:, k])
    return D


def lift_sound_factor(result: NTDResult, X, pool: np.ndarray, *, n_sweeps: int = 20) -> NTDResult:
    """An NTD fitted on a frequency-compressed cube, lifted to the full-resolution cube.

    The decomposition of the pooled cube ``pool ×₁ X`` has sound templates W_b
    (n_bands, r_sound); here the full-resolution W (n_freq, r_sound) is fitted to X with the
    core, H and D held fixed: the nonnegative least-squares problem of one HALS update of W
    in :func:`ntd_hals` (X_(1) ≈ W (G ×₂ H ×₃ D)_(1)), ``n_sweeps`` sweeps over its columns
    started from ``poolᵀ W_b`` (each band's value spread over its bins). It costs one pass
    over X. The rhythm templates, loop templates and core are the compressed fit's (the
    core rescaled by W's column norms).

    Parameters
    ----------
    result : NTDResult of the pooled cube, W of shape (n_bands, r_sound)
    X : array, shape=(n_freq, n_steps, n_segments), the full-resolution cube
    pool : np.ndarray, shape=(n_bands, n_freq), the pooling that made the compressed cube
        (:func:`unmixer.loops.cube.log_bands`)
    n_sweeps : int, HALS sweeps over the columns of W

    Returns
    -------
    NTDResult with W of shape (n_freq, r_sound); errors, times and n_iter as ``result``'s.

    Raises
    ------
    UnmixerError
        If the shapes disagree.

    Source: HALS update of one factor (Cichocki & Phan, IEICE Trans. 2009, eq. 12), i.e.
    "decompose small, resynthesise big": the factorisation on a compressed axis, the
    full-resolution factor refitted once at the end.
    """
    A_small, B, C = result.factors
    G = result.core
    if tl.shape(A_small)[0] != pool.shape[0] or pool.shape[1] != tl.shape(X)[0]:
        raise UnmixerError("The pooling, the compressed model and the cube disagree in shape.")
    A = tl.tensor(np.maximum(pool.T @ tl.to_numpy(A_small), 0).astype(np.float32), **tl.context(A_small))
    with _blas_threads(1):
        Y = _mode2_t(_x_mode3(X, C), B)  # (F, R2, R3): the one pass over X
        XM = _unfold_dot(Y, G, 0)
        GB = _mode3_t(_mode2_t(G, tl.dot(tl.transpose(B), B)), tl.dot(tl.transpose(C), C))
        MtM = _unfold_dot(GB, G, 0)
        A = _hals_columns(A, XM, MtM, int(n_sweeps))
        A, G = _normalise(A, G, 0)
    return NTDResult(G, [A, B, C], list(result.errors), list(result.times_s), result.n_iter)
