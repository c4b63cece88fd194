"""Loop activations as a layout: each loop is either on or off in each segment.

The purified NTD gives soft loop activations D′ (n_segments, K) and low-rank loop templates
P_k (n_freq, n_steps). In loop-based music a loop plays in a bar at its one level or not at
all, so the activations are refitted as a binary layout B (n_segments, K) by alternating

* a **layout step**: for every segment s, the subset of loops b ∈ {0, 1}^K that minimises
  ‖x_s − Σ_k b_k P_k‖², searched exhaustively (2^K subsets; the cost of every subset comes
  from the Gram matrix P Pᵀ and the projections P x_s, so the search is two small matrix
  products);
* a **template step**: full-resolution templates P ≥ 0 (every cube cell its own value)
  refitted to the cube with B fixed, by multiplicative β-NMF updates warm-started from the
  previous templates (the NTD's low-rank templates in the first round, which keeps the
  split of loops that always play together as the NTD found it).

The layout starts as the activations thresholded at half of each loop's peak (the loop map's
threshold). The loss ‖X_(3) − B P‖² never increases in the layout step (an exact minimisation) and, for
β = 2, not in the template step either (multiplicative updates are monotone).
"""

from __future__ import annotations

import numpy as np

from unmixer.errors import UnmixerError

MAX_EXHAUSTIVE_LOOPS = 14
"""Above this many loops the layout step is a coordinate search instead of exhaustive."""


def _subsets(K: int) -> np.ndarray:
    """Every binary vector of length K, shape=(2^K, K), float32."""
    codes = np.arange(2**K, dtype=np.int64)[:, None]
    return ((codes >> np.arange(K)[None, :]) & 1).astype(np.float32)


def best_layout(X: np.ndarray, P: np.ndarray) -> np.ndarray:
    """The binary layout minimising ‖X − B P‖² segment by segment.

    Parameters
    ----------
    X : np.ndarray, shape=(n_segments, n_cells), the segment-unfolded cube X_(3)
    P : np.ndarray, shape=(K, n_cells), loop templates (at the level each loop plays at)

    Returns
    -------
    np.ndarray, float32, shape=(n_segments, K), entries 0 or 1

    For K ≤ :data:`MAX_EXHAUSTIVE_LOOPS` every subset is tried (cost of subset b in segment
    s: bᵀ(P Pᵀ)b − 2 bᵀ P x_s); otherwise loops are switched one at a time while that lowers
    the cost (from the rounded least-squares layout).
    """
    X = np.asarray(X, dtype=np.float32)
    P = np.asarray(P, dtype=np.float32)
    K = P.shape[0]
    G = (P.astype(np.float64) @ P.T.astype(np.float64))  # (K, K)
    C = (P.astype(np.float64) @ X.T.astype(np.float64))  # (K, S)
    if K <= MAX_EXHAUSTIVE_LOOPS:
        B = _subsets(K).astype(np.float64)
        cost = np.einsum("bk,kl,bl->b", B, G, B)[:, None] - 2.0 * (B @ C)  # (2^K, S)
        return B[np.argmin(cost, axis=0)].astype(np.float32)
    layout = (np.linalg.lstsq(G, C, rcond=None)[0].T > 0.5).astype(np.float64)  # (S, K)
    diag = np.diag(G)
    for _ in range(4 * K):
        grad = layout @ G - C.T  # ½ ∂cost/∂b, (S, K)
        # change of the cost when loop k flips: ±2 grad + G_kk (sign by the flip direction)
        delta = np.where(layout > 0, -2.0 * grad + diag, 2.0 * grad + diag)
        k = np.argmin(delta, axis=1)
        rows = np.arange(len(layout))
        improve = delta[rows, k] < -1e-12
        if not improve.any():
            break
        layout[rows[improve], k[improve]] = 1.0 - layout[rows[improve], k[improve]]
    return layout.astype(np.float32)


def _template_step(X: np.ndarray, B: np.ndarray, P: np.ndarray, n_iter: int, beta: float) -> np.ndarray:
    """Multiplicative β-NMF updates of P in X ≈ B P with B fixed (rows of unused loops kept)."""
    eps = np.float32(1e-12)
    used = B.sum(axis=0) > 0
    P = P.copy()
    BtX, BtB = B.T @ X, B.T @ B
    for _ in range(n_iter):
        if beta == 2.0:
            num, den = BtX, BtB @ P
        else:
            Y = B @ P + eps
            num = B.T @ (X * Y ** (beta - 2.0))
            den = B.T @ (Y ** (beta - 1.0))
        P[used] *= num[used] / (den[used] + eps)
    return P


def fit_layout(cube: np.ndarray, templates: np.ndarray, activations: np.ndarray, *,
               n_rounds: int = 3, template_iter: int = 30, beta: float = 2.0,
               gains: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Binary loop activations and full-resolution templates, from a purified NTD.

    Parameters
    ----------
    cube : np.ndarray, shape=(n_freq, n_steps, n_segments), X, nonnegative
    templates : np.ndarray, shape=(K, n_freq, n_steps), the NTD's loop templates P_k
    activations : np.ndarray, shape=(n_segments, K), the NTD's loop activations D′
    n_rounds : int ≥ 1, layout/template alternations
    template_iter : int, multiplicative updates of the templates per round
    beta : float, β of the template updates (2: Euclidean, 1: Kullback-Leibler)
    gains : bool
        If True, a last multiplicative update pass lets each (segment, loop) where the loop
        is on take its own level (zeros stay zero), for loops that change level.

    Returns
    -------
    templates : np.ndarray, float32, shape=(K, n_freq, n_steps)
    activations : np.ndarray, float32, shape=(n_segments, K), in {0, 1} (or ≥ 0 on the
        layout's support with ``gains``)
    loss : float, ‖X_(3) − B P‖ / ‖X‖ after the last round

    Raises
    ------
    UnmixerError
        If the shapes disagree.

    Source: the loop model of Smith & Goto, ICASSP 2018 (X_(3) ≈ D P with the templates
    of a Tucker model), with a binary layout as in their layout ground truth; the layout
    step is exhaustive least squares, the template step multiplicative β-NMF (Févotte &
    Idier, Neural Computation 2011).
    """
    templates = np.asarray(templates, dtype=np.float32)
    activations = np.asarray(activations, dtype=np.float32)
    K, F, T = templates.shape
    if cube.shape[:2] != (F, T) or activations.shape != (cube.shape[2], K):
        raise UnmixerError("Cube, templates and activations disagree in shape.")
    X = np.ascontiguousarray(cube.reshape(F * T, -1).T, dtype=np.float32)  # (S, F·T)
    # start: the loop is on where its activation reaches half its peak, at its mean level there
    peak = np.maximum(activations.max(axis=0), 1e-30)
    B = (activations >= 0.5 * peak).astype(np.float32)
    level = (activations * B).sum(axis=0) / np.maximum(B.sum(axis=0), 1)
    P = templates.reshape(K, F * T) * level[:, None]
    floor = np.float32(1e-6 * float(P.max(initial=0.0)) + 1e-30)
    P = np.maximum(P, floor)  # multiplicative updates cannot move exact zeros
    norm_x = float(np.linalg.norm(X)) or 1.0
    for _ in range(n_rounds):
        P = _template_step(X, B, P, template_iter, beta)
        B = best_layout(X, P)
    A = B
    if gains:
        eps = np.float32(1e-12)
        A = B.copy()
        for _ in range(template_iter):
            A *= (X @ P.T) / (A @ (P @ P.T) + eps)
    loss = float(np.linalg.norm(X - A @ P)) / norm_x
    return P.reshape(K, F, T).astype(np.float32), A.astype(np.float32), loss
