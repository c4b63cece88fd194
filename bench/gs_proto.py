"""Prototype of the grid hypothesis search (issue 13): BCV of the loop model on a half-beat cube."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from unmixer.core.spectrum import HOP_LENGTH, stft  # noqa: E402
from unmixer.loops.bargrid import _band_pool  # noqa: E402
from unmixer.loops.cube import make_grid, spectral_cube  # noqa: E402


def half_beat_grid(beats_s, duration_s):
    b = np.asarray(beats_s, dtype=np.float64)
    period = float(np.median(np.diff(b)))
    mids = 0.5 * (b[:-1] + b[1:])
    h = np.sort(np.concatenate([b, mids]))
    half = period / 2
    before = h[0] - half * np.arange(int(h[0] / half), 0, -1)
    after = h[-1] + half * np.arange(1, int((duration_s - h[-1]) / half) + 1)
    return np.concatenate([before, h, after])


def halfbeat_cube(magnitude, H, q, sr=44100, n_bands=48):
    bands = _band_pool(magnitude, n_bands)
    grid = make_grid(H, sr, HOP_LENGTH, n_steps=q)
    Z = spectral_cube(bands, grid)  # (bands, q, n_half - 1)
    return Z / max(float(Z.max()), 1e-30)


def svd_bcv(Zt, N, o, k, n_folds=4, seed=0):
    """Relative bi-cross-validation error of a rank-k SVD of the segment matrix (Owen & Perry 2009)."""
    n, C = Zt.shape
    S = (n - o) // N
    X = Zt[o:o + S * N].reshape(S, N * C).astype(np.float64)
    rng = np.random.default_rng([seed, N, o])
    test = rng.random(X.shape[1]) < 0.5
    Xf, Xt = X[:, ~test], X[:, test]
    G, H = Xf @ Xf.T, Xt @ Xt.T
    folds = np.array_split(rng.permutation(S), min(n_folds, S))
    err = 0.0
    for I in folds:
        Ic = np.setdiff1d(np.arange(S), I)
        lam, U = np.linalg.eigh(G[np.ix_(Ic, Ic)])
        kk = min(k, len(Ic))
        lam, U = lam[::-1][:kk], U[:, ::-1][:, :kk]
        ok = lam > lam[0] * 1e-9
        lam, U = lam[ok], U[:, ok]
        M = G[np.ix_(I, Ic)] @ U @ np.diag(1 / lam) @ U.T
        err += np.trace(H[np.ix_(I, I)]) - 2 * np.sum(M * H[np.ix_(I, Ic)]) + np.sum((M @ H[np.ix_(Ic, Ic)]) * M)
    return err / max(np.trace(H), 1e-30)


def hypotheses(meters=(3, 4), lengths=(1, 2, 4), factors=(0.5, 1.0, 2.0)):
    Ns = {}
    for m in meters:
        for L in lengths:
            for f in factors:
                N = int(round(2 * m * L * f))
                Ns.setdefault(N, []).append((m, L, f))
    return Ns


def search(magnitude, beats_s, duration_s, k, q=3, n_bands=48, seed=0, min_segments=4, verbose=False):
    H = half_beat_grid(beats_s, duration_s)
    Z = halfbeat_cube(magnitude, H, q, n_bands=n_bands)  # (B, q, n)
    Zt = np.ascontiguousarray(np.moveaxis(Z, 2, 0).reshape(Z.shape[2], -1))  # (n, B*q)
    n = Zt.shape[0]
    results = []
    for N, interp in sorted(hypotheses().items()):
        if n // N < min_segments + 1:
            continue
        for o in range(N):
            e = svd_bcv(Zt, N, o, k, seed=seed)
            results.append((e, N, o, interp))
    results.sort(key=lambda r: r[0])
    return results, H


if __name__ == "__main__":
    from grid import FAMILIES, describe, load_song, madmom_grid, perturbed_grid, song_specs

    from unmixer.datasets.synth import make_song

    fams = sys.argv[1:] or list(FAMILIES)
    for fam in fams:
        for spec in song_specs(fam, 3):
            song = load_song(spec)
            mag = np.abs(stft(song.mix)).mean(axis=0)
            true_bar = spec["meter"] * 60 / spec["bpm"]
            for gname in ("true", "madmom", "half_beat", "double", "meter"):
                try:
                    g = perturbed_grid(song, gname, madmom_grid(song, spec))
                except Exception as err:
                    print(fam, gname, "grid failed", err)
                    continue
                t0 = time.perf_counter()
                res, H = search(mag, g.beats_s, song.mix.shape[-1] / song.sr, spec["n_loops"])
                dt = time.perf_counter() - t0
                half = float(np.median(np.diff(H)))
                top = []
                for e, N, o, interp in res[:4]:
                    seg_s = N * half
                    start = H[o]
                    bars = seg_s / true_bar
                    phase = ((start - song.downbeats_s[0]) / true_bar) % 1
                    top.append(f"{e:.3f} N={N} o={o} ({bars:.2f} bars, phase {phase:.2f})")
                print(f"{fam} {gname:>9} [{dt:.1f}s] {describe(spec)} :: " + " | ".join(top), flush=True)
